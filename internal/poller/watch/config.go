package watch

import (
	"errors"
	"fmt"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/poller"
	"github.com/ingestd/ingestd/internal/retry"
)

// Config configures the BTS watch-list poller of one source. New fills
// zero fields with their defaults.
type Config struct {
	// SourceID keys the watch-list in PostgreSQL ("bts/<account>").
	SourceID string
	// Account names the BTS account in events.
	Account string
	// Instance is this instance's id in the instances table (its
	// heartbeat): its claims are freed as soon as the heartbeat expires.
	// Empty: claims last until they time out.
	Instance string
	// Schedule is how often orders are polled and how many requests BTS
	// gets (the INGESTD_BTS_* schedule settings); zero means
	// bts.DefaultSchedule().
	Schedule bts.Schedule
	// Loop holds the backoff, the commit timeout, the backlog bound and the
	// clock. At the backlog bound due orders stay due, so a Kafka outage
	// delays their changes instead of growing the outbox without bound;
	// orders already claimed are still polled and recorded.
	poller.Loop
}

func (c *Config) setDefaults() {
	if c.Schedule.Intervals.IsZero() && c.Schedule.Rate == 0 && c.Schedule.Concurrency == 0 {
		c.Schedule = bts.DefaultSchedule()
	}
	if c.Schedule.WebhookStretch == 0 {
		c.Schedule.WebhookStretch = bts.DefaultWebhookStretch
	}
	if c.Schedule.WebhookQuiet == 0 {
		c.Schedule.WebhookQuiet = bts.DefaultWebhookQuiet
	}
	c.Loop.SetDefaults()
}

// Validate reports every problem at once, each naming its environment
// variable.
func (c Config) Validate() error {
	var errs []error
	add := func(env, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{env}, args...)...))
	}
	if c.SourceID == "" || c.Account == "" {
		add(bts.EnvAccount, "must be set")
	}
	errs = append(errs, c.Schedule.Validate(), c.Loop.Validate())
	errs = append(errs, CheckClaimTimeout(c.Schedule, c.Backoff))
	return errors.Join(errs...)
}

// CheckClaimTimeout reports a claim shorter than the longest backoff: a
// claimed order may wait out a backoff before its request, and must still
// be its poller's when the request is made. The daemon checks it with the
// rest of its configuration, before any poller is built.
func CheckClaimTimeout(s bts.Schedule, b retry.Config) error {
	if s.ClaimTimeout > 0 && s.ClaimTimeout <= b.Max {
		return fmt.Errorf("%s: must be longer than %s (%s), got %s", bts.EnvClaimTimeout, retry.EnvMax, b.Max, s.ClaimTimeout)
	}
	return nil
}
