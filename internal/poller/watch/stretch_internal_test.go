package watch

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/bts"
)

// TestScheduleStretchesWhileWebhooksFlow: while a webhook arrived within
// WebhookQuiet, every interval is stretched by WebhookStretch; once none
// has for that long, the normal schedule is back. A ring also wakes the
// claimer.
func TestScheduleStretchesWhileWebhooksFlow(t *testing.T) {
	t.Parallel()
	var now atomic.Int64
	now.Store(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	iv, err := bts.ParseIntervals("800=10m,default=1h")
	require.NoError(t, err)
	cfg := Config{SourceID: "bts/default", Account: "default"}
	cfg.Schedule = bts.DefaultSchedule()
	cfg.Schedule.Intervals = iv
	cfg.Schedule.WebhookStretch = 4
	cfg.Schedule.WebhookQuiet = 5 * time.Minute
	cfg.Now = clock
	p := &Poller{cfg: cfg, kick: make(chan struct{}, 1)}

	within := func(code int, want time.Duration) {
		t.Helper()
		for range 50 {
			d := p.interval(code)
			require.InDelta(t, float64(want), float64(d), float64(want)*jitter+1, "code %d", code)
		}
	}
	within(800, 10*time.Minute)
	require.False(t, p.flowing())

	p.Ring()
	require.Len(t, p.kick, 1, "a ring wakes the claimer")
	p.Ring()
	require.Len(t, p.kick, 1, "without blocking when it is already woken")
	require.True(t, p.flowing())
	within(800, 40*time.Minute)
	within(1100, 4*time.Hour)

	now.Add(int64(5*time.Minute - time.Second))
	within(800, 40*time.Minute)
	now.Add(int64(time.Second))
	require.False(t, p.flowing(), "quiet for WebhookQuiet: back to the normal schedule")
	within(800, 10*time.Minute)
}
