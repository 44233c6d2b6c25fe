package poller

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/watchlist"
)

func TestParseBTSIntervals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    map[int]time.Duration // probes; 0 = use the default
		wantDef time.Duration
		wantErr string
	}{
		{in: "100=2h,800=15m,1100=2m,default=30m", want: map[int]time.Duration{100: 2 * time.Hour, 800: 15 * time.Minute, 1100: 2 * time.Minute, 200: 30 * time.Minute, 0: 30 * time.Minute}, wantDef: 30 * time.Minute},
		{in: " default = 1m , 0=5s ,", want: map[int]time.Duration{0: 5 * time.Second, 1200: time.Minute}, wantDef: time.Minute},
		{in: "default=90ms", want: map[int]time.Duration{100: 90 * time.Millisecond}, wantDef: 90 * time.Millisecond},
		{in: "100=2h", wantErr: "missing default"},
		{in: "", wantErr: "missing default"},
		{in: "default=1m,default=2m", wantErr: "default is given twice"},
		{in: "100=1m,100=2m,default=1m", wantErr: "code 100 is given twice"},
		{in: "100,default=1m", wantErr: `"100" is not code=duration`},
		{in: "abc=1m,default=1m", wantErr: "not a BTS status code"},
		{in: "-100=1m,default=1m", wantErr: "not a BTS status code"},
		{in: "0100=1m,default=1m", wantErr: "not a BTS status code"},
		{in: "100=soon,default=1m", wantErr: "not a duration"},
		{in: "100=0s,default=1m", wantErr: "must be positive"},
		{in: "100=-1m,default=1m", wantErr: "must be positive"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			iv, err := ParseBTSIntervals(tc.in)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			for code, d := range tc.want {
				require.Equal(t, d, iv.For(code), "code %d", code)
			}
			require.Equal(t, tc.wantDef, iv.For(123456))
			again, err := ParseBTSIntervals(iv.String())
			require.NoError(t, err)
			require.Equal(t, iv, again, "String round-trips")
		})
	}
}

func TestBTSIntervalsDefaultsAndScaling(t *testing.T) {
	t.Parallel()
	iv := DefaultBTSIntervals()
	require.Equal(t, time.Hour, iv.For(100))
	require.Equal(t, 30*time.Second, iv.For(1100))
	require.Equal(t, 10*time.Minute, iv.For(1000), "undefined codes after 800 are polled like 800")
	require.Equal(t, 30*time.Minute, iv.For(4242))

	fast := iv.Scaled(3600)
	require.Equal(t, time.Second, fast.For(100))
	require.Equal(t, 8333333*time.Nanosecond, fast.For(1100))
	require.Equal(t, time.Millisecond, iv.Scaled(1e12).For(100), "never below a millisecond")

	var flagged BTSIntervals
	require.True(t, flagged.IsZero())
	require.Empty(t, flagged.String())
	require.NoError(t, flagged.Set("1100=1m,default=10m"))
	require.Equal(t, "1100=1m,default=10m", flagged.String())
	require.Equal(t, DefaultBTSPollIntervals, iv.String(), "the default prints as written, so flag defaults match the docs")
	require.Error(t, flagged.Set("nope"))
	require.Equal(t, time.Minute, flagged.For(1100), "a failed Set keeps the value")
	require.NoError(t, flagged.Set("0=1h30m,1=90s,2=1.5s,3=250ms,default=2h0m1s"))
	require.Equal(t, "0=1h30m,1=1m30s,2=1.5s,3=250ms,default=2h0m1s", flagged.String())
}

func TestBTSConfigValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, DefaultBTSConfig("bts/default", "default").Validate())
	tests := []struct {
		name    string
		mutate  func(*BTSConfig)
		wantEnv string
	}{
		{"no intervals", func(c *BTSConfig) { c.Intervals = BTSIntervals{} }, EnvBTSPollIntervals},
		{"zero rate", func(c *BTSConfig) { c.Rate = 0 }, EnvBTSRate},
		{"huge rate", func(c *BTSConfig) { c.Rate = 1e9 }, EnvBTSRate},
		{"zero concurrency", func(c *BTSConfig) { c.Concurrency = 0 }, EnvBTSConcurrency},
		{"claim shorter than backoff", func(c *BTSConfig) { c.ClaimTimeout = 10 * time.Second }, EnvBTSClaimTimeout},
		{"zero refresh", func(c *BTSConfig) { c.DictionaryRefresh = 0 }, EnvBTSDictionaryRefresh},
		{"zero idle poll", func(c *BTSConfig) { c.IdlePoll = 0 }, EnvBTSIdlePoll},
		{"no account", func(c *BTSConfig) { c.Account = "" }, "INGESTD_BTS_ACCOUNT"},
		{"backoff", func(c *BTSConfig) { c.BackoffInitial = 0 }, "INGESTD_BACKOFF_INITIAL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := DefaultBTSConfig("bts/default", "default")
			tc.mutate(&c)
			err := c.Validate()
			require.Error(t, err)
			require.True(t, strings.HasPrefix(err.Error(), tc.wantEnv+": "), "%v", err)
		})
	}
}

func TestBTSDictionarySkips(t *testing.T) {
	t.Parallel()
	d := newBTSDictionary([]watchlist.Status{
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
	require.False(t, (&btsDictionary{}).skipped(100, 300), "no dictionary, no judgement")
}

func TestBTSGate(t *testing.T) {
	t.Parallel()
	g := newBTSGate(100*time.Millisecond, time.Second)
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
