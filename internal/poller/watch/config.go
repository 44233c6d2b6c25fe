package watch

import (
	"errors"
	"fmt"
	"time"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/retry"
)

// DefaultCommitTimeout is Config.CommitTimeout's default.
const DefaultCommitTimeout = 10 * time.Second

// Config configures the BTS watch-list poller of one source. New fills
// zero fields with their defaults.
type Config struct {
	// SourceID keys the watch-list in PostgreSQL ("bts/<account>").
	SourceID string
	// Account names the BTS account in events.
	Account string
	// Schedule is how often orders are polled and how many requests BTS
	// gets (the INGESTD_BTS_* schedule settings); zero means
	// bts.DefaultSchedule().
	Schedule bts.Schedule
	// Backoff bounds the waits after a failure (INGESTD_BACKOFF_*).
	Backoff retry.Config
	// CommitTimeout bounds recording observations already fetched when
	// shutdown began: they are recorded rather than dropped. Default
	// DefaultCommitTimeout.
	CommitTimeout time.Duration
	// MaxBacklog pauses polling while more than this many outbox rows wait
	// for Kafka (the shared INGESTD_OUTBOX_MAX_BACKLOG), like the journal
	// poller: due orders stay due, so a Kafka outage delays their changes
	// instead of growing the outbox without bound. Orders already claimed
	// are still polled and recorded. 0 disables the bound.
	MaxBacklog int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Schedule.Intervals.IsZero() && c.Schedule.Rate == 0 && c.Schedule.Concurrency == 0 {
		c.Schedule = bts.DefaultSchedule()
	}
	if c.Backoff == (retry.Config{}) {
		c.Backoff = retry.DefaultConfig()
	}
	if c.CommitTimeout == 0 {
		c.CommitTimeout = DefaultCommitTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
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
	errs = append(errs, c.Schedule.Validate(), c.Backoff.Validate())
	if c.Schedule.ClaimTimeout > 0 && c.Schedule.ClaimTimeout <= c.Backoff.Max {
		add(bts.EnvClaimTimeout, "must be longer than %s (%s), got %s", retry.EnvMax, c.Backoff.Max, c.Schedule.ClaimTimeout)
	}
	if c.CommitTimeout <= 0 {
		add("INGESTD_SHUTDOWN_TIMEOUT", "must be positive (the BTS commit timeout is derived from it), got %s", c.CommitTimeout)
	}
	if c.MaxBacklog < 0 {
		add("INGESTD_OUTBOX_MAX_BACKLOG", "must be 0 (no bound) or positive, got %d", c.MaxBacklog)
	}
	return errors.Join(errs...)
}
