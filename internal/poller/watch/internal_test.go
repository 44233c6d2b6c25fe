package watch

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/poller"
	"github.com/ingestd/ingestd/internal/retry"
	"github.com/ingestd/ingestd/internal/watchlist"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	valid := func() Config {
		c := Config{SourceID: "bts/default", Account: "default"}
		c.setDefaults()
		return c
	}
	require.NoError(t, valid().Validate())
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantEnv string
	}{
		{"no intervals", func(c *Config) { c.Schedule.Intervals = bts.Intervals{} }, bts.EnvPollIntervals},
		{"zero rate", func(c *Config) { c.Schedule.Rate = 0 }, bts.EnvRate},
		{"claim shorter than backoff", func(c *Config) { c.Schedule.ClaimTimeout = 10 * time.Second }, bts.EnvClaimTimeout},
		{"no account", func(c *Config) { c.Account = "" }, "INGESTD_BTS_ACCOUNT"},
		{"backoff", func(c *Config) { c.Backoff.Initial = 0 }, "INGESTD_BACKOFF_INITIAL"},
		{"commit timeout", func(c *Config) { c.CommitTimeout = -time.Second }, "INGESTD_SHUTDOWN_TIMEOUT"},
		{"negative backlog", func(c *Config) { c.MaxBacklog = -1 }, "INGESTD_OUTBOX_MAX_BACKLOG"},
		{"webhook stretch below 1", func(c *Config) { c.Schedule.WebhookStretch = 0.5 }, bts.EnvWebhookStretch},
		{"webhook stretch huge", func(c *Config) { c.Schedule.WebhookStretch = 1000 }, bts.EnvWebhookStretch},
		{"negative webhook quiet", func(c *Config) { c.Schedule.WebhookQuiet = -time.Second }, bts.EnvWebhookQuiet},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tc.mutate(&c)
			err := c.Validate()
			require.Error(t, err)
			require.True(t, strings.HasPrefix(err.Error(), tc.wantEnv+": "), "%v", err)
		})
	}
}

// TestNewSetsDefaults: a zero configuration but for its source gets the
// documented defaults, which validate.
func TestNewSetsDefaults(t *testing.T) {
	t.Parallel()
	c := Config{SourceID: "bts/default", Account: "default"}
	c.setDefaults()
	require.Equal(t, bts.DefaultSchedule().Intervals.String(), c.Schedule.Intervals.String())
	require.Equal(t, bts.DefaultRate, c.Schedule.Rate)
	require.Equal(t, retry.DefaultConfig(), c.Backoff)
	require.Equal(t, poller.DefaultCommitTimeout, c.CommitTimeout)
	require.NotNil(t, c.Now)
	require.NoError(t, c.Validate())
}

func TestBTSDictionarySkips(t *testing.T) {
	t.Parallel()
	d := newDictionary([]watchlist.Status{
		{Code: 100, Name: "У отправителя", Next: []int{200}},
		{Code: 200, Next: []int{300}},
		{Code: 300, Next: []int{400}},
		{Code: 400, Next: []int{500}},
		{Code: 800, Next: []int{900, 1000, 1100}},
		{Code: 1100, Next: []int{1200}},
		{Code: 1200, Next: []int{}},
		{Code: 1300, Next: []int{}},
	})
	tests := []struct {
		from, to int
		want     bool
	}{
		{100, 200, false},
		{100, 300, true},
		{200, 500, true},
		{800, 1100, false},
		{800, 1000, false},
		{800, 1200, true},
		{100, 0, false},    // cancellation is an exit, not a skip
		{300, 1300, false}, // so is deletion
		{1000, 1200, false},
		{1200, 100, false},
	}
	for _, tc := range tests {
		require.Equal(t, tc.want, d.skipped(tc.from, tc.to), "%d -> %d", tc.from, tc.to)
	}
	require.Equal(t, "У отправителя", d.name(100))
	require.Empty(t, d.name(1000))
	require.False(t, (&dictionary{}).skipped(100, 300), "no dictionary, no judgement")
}

func TestBTSGate(t *testing.T) {
	t.Parallel()
	g := newGate(retry.Config{Initial: 100 * time.Millisecond, Max: time.Second}, time.Now)
	now := time.Now()
	require.False(t, g.ok(), "no failure to recover from")

	d := g.fail(0, now)
	require.InDelta(t, 100*time.Millisecond, d, float64(50*time.Millisecond))
	// Requests already in flight that fail during the pause do not extend it.
	require.Equal(t, d-10*time.Millisecond, g.fail(0, now.Add(10*time.Millisecond)))
	// The server's Retry-After wins.
	require.Equal(t, 3*time.Second, g.fail(3*time.Second, now.Add(20*time.Millisecond)))
	require.WithinDuration(t, now.Add(20*time.Millisecond+3*time.Second), g.until, 0)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, g.wait(ctx), context.Canceled, "a pause ends with the context")

	require.True(t, g.ok())
	g.until = time.Time{}
	require.NoError(t, g.wait(context.Background()))
	d = g.fail(0, time.Now())
	require.LessOrEqual(t, d, 150*time.Millisecond, "a success resets the backoff")
}

// TestSetInstancesSharesTheRate: the request budget is the deployment's,
// so each of n instances polls at rate/n (one at least: n below 1 counts
// as one), with a burst no larger than its share.
func TestSetInstancesSharesTheRate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		instances int
		limit     float64
		burst     int
	}{
		{0, 30, 8},
		{1, 30, 8},
		{3, 10, 8},
		{6, 5, 5},
		{60, 0.5, 1},
	}
	for _, tc := range tests {
		t.Run(strconv.Itoa(tc.instances), func(t *testing.T) {
			t.Parallel()
			p := &Poller{cfg: Config{Schedule: bts.Schedule{Rate: 30, Concurrency: 8}}, lim: rate.NewLimiter(30, 8)}
			p.SetInstances(tc.instances)
			require.InDelta(t, tc.limit, float64(p.lim.Limit()), 1e-9)
			require.Equal(t, tc.burst, p.lim.Burst())
		})
	}
}
