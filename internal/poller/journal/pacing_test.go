package journal_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/poller"
	"github.com/ingestd/ingestd/internal/poller/journal"
	"github.com/ingestd/ingestd/internal/promtest"
	"github.com/ingestd/ingestd/internal/retry"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
	"github.com/ingestd/ingestd/internal/yandex"
)

// TestPollingDelayIsHonoured walks a journal whose every answer asks for
// 100 ms between requests (X-Polling-Delay-Ms), through a catch-up (with
// the next page prefetched while one commits), an idle period (the poll
// interval, 20 ms, is shorter than the delay) and a sequence of failures
// (backoff from 5 ms, a 429 without Retry-After, a malformed page): no
// request arrives sooner than asked, so the simulator, which refuses an
// early request with 429, never refuses one of the poller's.
func TestPollingDelayIsHonoured(t *testing.T) {
	t.Parallel()
	const (
		n     = 700
		delay = 100 * time.Millisecond
	)
	e := newEnv(t, sim.YandexConfig{Seed: 12, Backlog: n, PollingDelay: delay}, nil)
	stop := e.start(t)
	e.waitCursor(t, n)
	caughtUp := len(e.arrived.snapshot())

	// Idle: empty pages, each followed by the delay rather than the
	// shorter poll interval.
	require.Eventually(t, func() bool { return len(e.arrived.snapshot()) >= caughtUp+5 }, 10*time.Second, 5*time.Millisecond)

	// Failures: each backoff is shorter than the delay.
	idle := len(e.arrived.snapshot())
	e.sim.Inject(
		sim.Fault{Kind: sim.FaultServerError},
		sim.Fault{Kind: sim.FaultServerError, Status: http.StatusBadGateway},
		sim.Fault{Kind: sim.FaultTooManyRequests},
		sim.Fault{Kind: sim.FaultMalformed},
		sim.Fault{Kind: sim.FaultServerError},
	)
	require.Eventually(t, func() bool { return len(e.arrived.snapshot()) >= idle+8 }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, stop())

	times := e.arrived.snapshot()
	for i := 1; i < len(times); i++ {
		// An answer is written after its request arrives, so two arrivals
		// are at least the delay apart.
		require.GreaterOrEqual(t, times[i].Sub(times[i-1]), delay, "request %d of %d came %s after the previous one", i, len(times), times[i].Sub(times[i-1]))
	}
	require.Zero(t, e.sim.TooEarly(), "the simulator refused none of the poller's requests as too early")
	require.GreaterOrEqual(t, counter(t, e.reg, "ingestd_upstream_requests_total", "retry"), 3.0, "the failures were served")
	require.Equal(t, 1.0, counter(t, e.reg, "ingestd_upstream_requests_total", "rate_limited"))
	v, _ := promtest.Sum(t, e.reg, "ingestd_upstream_too_early_total", nil)
	require.Zero(t, v)
	v, series := promtest.Sum(t, e.reg, "ingestd_upstream_polling_delay_seconds", map[string]string{"source": "yandex/default"})
	require.Equal(t, 1, series)
	require.Equal(t, delay.Seconds(), v)
	e.requireExactlyOnce(t, n)
	t.Logf("%d requests: %d in the catch-up, %d idle, %d through the failures; none early", len(times), caughtUp, idle-caughtUp, len(times)-idle)
}

// TestOddPollingDelays: a delay over the cap is waited as the cap, and one
// that is not a number is ignored; each is logged once, not once per page.
func TestOddPollingDelays(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, header, log string
		gauge             float64
	}{
		{"not a number", "soon", "not a number of milliseconds", 0},
		{"negative", "-100", "not a number of milliseconds", 0},
		{"over the cap", "3600000", "over the cap", yandex.MaxPollingDelay.Seconds()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			y, err := sim.NewYandex(sim.YandexConfig{Seed: 3, Token: token, Backlog: 500})
			require.NoError(t, err)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set(yandex.HeaderPollingDelay, tt.header)
				y.ServeHTTP(w, r)
			}))
			t.Cleanup(srv.Close)
			yc := yandex.DefaultConfig()
			yc.Token, yc.BaseURL, yc.PageLimit = secret.New(token), srv.URL, 100
			client, err := yandex.NewClient(yc, srv.Client())
			require.NoError(t, err)
			store := pgtest.Open(t)
			reg := prometheus.NewRegistry()
			core, logs := observer.New(zapcore.WarnLevel)
			p := newPoller(t, journal.Config{
				SourceID: yc.SourceID(), Account: yc.Account, PollInterval: time.Hour,
				Loop: poller.Loop{Backoff: retry.Config{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond}, CommitTimeout: 5 * time.Second},
			}, client, store, &publisher{}, zap.New(core), reg)
			l, ok, err := store.Leases.TryAcquire(t.Context(), "source:"+yc.SourceID(), "test", time.Hour)
			require.NoError(t, err)
			require.True(t, ok)
			e := &env{store: store, sim: y, poller: p, reg: reg, lease: lease.NewHeld(l, time.Now(), time.Hour), logs: logs}
			stop := e.start(t)
			if tt.gauge < 60 {
				// An ignored delay leaves the pace to the journal: the whole
				// backlog, five pages, is read at once.
				e.waitCursor(t, 500)
			} else {
				require.Eventually(t, func() bool { return y.Requests() >= 1 }, 10*time.Second, 5*time.Millisecond)
				require.Eventually(t, func() bool {
					v, series := promtest.Sum(t, reg, "ingestd_upstream_polling_delay_seconds", nil)
					return series == 1 && v == tt.gauge
				}, 10*time.Second, 5*time.Millisecond)
				require.EqualValues(t, 1, y.Requests(), "the capped delay holds the next request back")
			}
			require.NoError(t, stop())
			v, _ := promtest.Sum(t, reg, "ingestd_upstream_polling_delay_seconds", nil)
			require.Equal(t, tt.gauge, v)
			require.Equal(t, 1, logs.FilterMessageSnippet(tt.log).Len(), "logged once: %v", logs.All())
		})
	}
}
