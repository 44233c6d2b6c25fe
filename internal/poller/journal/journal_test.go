package journal_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/poller"
	"github.com/ingestd/ingestd/internal/poller/journal"
	"github.com/ingestd/ingestd/internal/promtest"
	"github.com/ingestd/ingestd/internal/retry"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
	"github.com/ingestd/ingestd/internal/upstream"
	"github.com/ingestd/ingestd/internal/yandex"
)

const token = "test-token"

// publisher stands in for the publisher, which these tests do not
// exercise: every event goes to partition 0 and hand-overs are counted.
type publisher struct{ notified atomic.Int64 }

func (o *publisher) Partition(string) int      { return 0 }
func (o *publisher) Committed(outbox.Appended) { o.notified.Add(1) }

// env is one poller wired to a real store and a simulated journal.
type env struct {
	store   *pgtest.Stores
	sim     *sim.Yandex
	poller  *journal.Poller
	reg     *prometheus.Registry
	outbox  *publisher
	srvURL  string
	arrived *requestLog
	lease   *lease.Held
	// logs holds what the poller logged.
	logs *observer.ObservedLogs
}

// requestLog records when each journal request arrived.
type requestLog struct {
	mu    sync.Mutex
	times []time.Time
}

func (l *requestLog) add(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.times = append(l.times, t)
}

func (l *requestLog) snapshot() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.times...)
}

func newEnv(t *testing.T, sc sim.YandexConfig, mutate func(*yandex.Config)) *env {
	t.Helper()
	ctx := context.Background()
	store := pgtest.Open(t)

	sc.Token = token
	y, err := sim.NewYandex(sc)
	require.NoError(t, err)
	log := &requestLog{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.add(time.Now())
		y.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	yc := yandex.DefaultConfig()
	yc.Token = secret.New(token)
	yc.BaseURL = srv.URL
	yc.PageLimit = 100
	yc.PollInterval = 20 * time.Millisecond
	if mutate != nil {
		mutate(&yc)
	}
	client, err := yandex.NewClient(yc, srv.Client())
	require.NoError(t, err)

	reg := prometheus.NewRegistry()
	ob := &publisher{}
	core, logs := observer.New(zapcore.DebugLevel)
	p := newPoller(t, journal.Config{
		SourceID:     yc.SourceID(),
		Account:      yc.Account,
		PollInterval: yc.PollInterval,
		Loop:         poller.Loop{Backoff: retry.Config{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond}, CommitTimeout: 5 * time.Second},
	}, client, store, ob, zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core)), reg)
	l, ok, err := store.Leases.TryAcquire(ctx, "source:"+yc.SourceID(), "test", time.Hour)
	require.NoError(t, err)
	require.True(t, ok)
	return &env{store: store, sim: y, poller: p, reg: reg, outbox: ob, srvURL: srv.URL, arrived: log, lease: lease.NewHeld(l, time.Now(), time.Hour), logs: logs}
}

// newPoller is journal.New with the test's store, for a valid cfg.
func newPoller(t *testing.T, cfg journal.Config, client journal.Client, store *pgtest.Stores, ob poller.Outbox, log *zap.Logger, reg prometheus.Registerer) *journal.Poller {
	t.Helper()
	p, err := journal.New(cfg, journal.Deps{
		Client: client, Cursors: store.Cursors, Backlog: store.Outbox, Outbox: ob, Log: log, Metrics: poller.NewMetrics(reg),
	})
	require.NoError(t, err)
	return p
}

// start runs the poller until the test ends or stop is called; stop returns
// what Run returned.
func (e *env) start(t *testing.T) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.poller.Run(ctx, e.lease, nil) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func (e *env) state(t *testing.T) cursor.State {
	t.Helper()
	st, err := e.store.Cursors.Source(context.Background(), "yandex/default")
	require.NoError(t, err)
	return st
}

// waitCursor waits until the stored cursor is the one after n entries.
func (e *env) waitCursor(t *testing.T, n int) {
	t.Helper()
	want := e.sim.CursorAfter(n)
	require.Eventually(t, func() bool { return e.state(t).Cursor == want }, 20*time.Second, 5*time.Millisecond)
}

// requireExactlyOnce checks the outbox holds every journal entry once, in
// journal order, and that the cursor history is an unbroken chain: no
// cursor was ever advanced past a page that was not committed.
func (e *env) requireExactlyOnce(t *testing.T, n int) {
	t.Helper()
	ctx := context.Background()
	_, err := e.store.Outbox.Target(ctx, "t", 1)
	require.NoError(t, err)
	rows, err := e.store.Outbox.Pending(ctx, []int64{0}, n+100)
	require.NoError(t, err)
	require.Len(t, rows, n)
	for i, r := range rows {
		ent := e.sim.Entry(i)
		ev, err := event.ParsePayload(r.Msg.Payload)
		require.NoError(t, err)
		require.Equal(t, ent.ClaimID, ev.OrderID, "row %d", i)
		require.Equal(t, ent.Revision, ev.Revision, "row %d", i)
	}
	hist, err := e.store.Cursors.History(ctx, "yandex/default", 100000)
	require.NoError(t, err)
	total := 0
	for i := len(hist) - 1; i >= 0; i-- { // oldest first
		if i < len(hist)-1 {
			require.Equal(t, hist[i+1].Cursor, hist[i].PrevCursor, "history is a chain")
		}
		total += hist[i].EventCount
	}
	require.Equal(t, n, total)
}

func TestJournalWalksEveryEntryOnce(t *testing.T) {
	t.Parallel()
	const n = 1500
	e := newEnv(t, sim.YandexConfig{Seed: 1, Backlog: n, ReplayRate: 0.3, UnknownStatusRate: 0.05}, nil)
	stop := e.start(t)
	e.waitCursor(t, n)
	require.NoError(t, stop())
	e.requireExactlyOnce(t, n)
	require.Positive(t, e.outbox.notified.Load())

	require.Equal(t, float64(n), counter(t, e.reg, "ingestd_events_ingested_total", ""))
	require.Positive(t, counter(t, e.reg, "ingestd_events_duplicate_total", ""), "replayed entries are counted, not stored")
}

func TestUnknownStatusIsPublishedAsUnknown(t *testing.T) {
	t.Parallel()
	const n = 800
	e := newEnv(t, sim.YandexConfig{Seed: 2, Backlog: n, UnknownStatusRate: 0.1}, nil)
	stop := e.start(t)
	e.waitCursor(t, n)
	require.NoError(t, stop())

	ctx := context.Background()
	_, err := e.store.Outbox.Target(ctx, "t", 1)
	require.NoError(t, err)
	rows, err := e.store.Outbox.Pending(ctx, []int64{0}, n)
	require.NoError(t, err)
	unknown := 0
	for i, r := range rows {
		ev, err := event.ParsePayload(r.Msg.Payload)
		require.NoError(t, err)
		raw := e.sim.Entry(i).NewStatus
		if e.sim.IsUnknownStatus(raw) {
			unknown++
			require.Equal(t, event.StatusUnknown, ev.Status)
			require.Equal(t, raw, ev.ProviderStatus, "the raw status is kept")
		} else {
			require.NotEqual(t, event.StatusUnknown, ev.Status, "documented status %q is mapped", raw)
		}
	}
	require.Positive(t, unknown)
}

func TestOutcomeClasses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fault sim.Fault
		// halts is the class Run stops with, or 0 when the poller must retry
		// and finish the journal.
		halts upstream.Class
	}{
		{"400 bad cursor halts", sim.Fault{Kind: sim.FaultBadCursor}, upstream.BadCursor},
		{"401 halts", sim.Fault{Kind: sim.FaultUnauthorized}, upstream.Auth},
		{"403 halts", sim.Fault{Kind: sim.FaultForbidden}, upstream.Auth},
		{"500 retries", sim.Fault{Kind: sim.FaultServerError, Status: 500}, 0},
		{"502 retries", sim.Fault{Kind: sim.FaultServerError, Status: 502}, 0},
		{"429 without Retry-After retries", sim.Fault{Kind: sim.FaultTooManyRequests}, 0},
		{"truncated body retries", sim.Fault{Kind: sim.FaultMalformed}, 0},
		{"events not an array retries", sim.Fault{Kind: sim.FaultEventsNotArray}, 0},
		{"dropped connection retries", sim.Fault{Kind: sim.FaultDropConnection}, 0},
		{"timeout retries", sim.Fault{Kind: sim.FaultSlow, Delay: 2 * time.Second}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 600
			// The timeout is below the slow fault's 2s, and far above what
			// a page takes on a loaded machine: a good page that timed out
			// would shift the injected faults by one.
			e := newEnv(t, sim.YandexConfig{Seed: 3, Backlog: n}, func(c *yandex.Config) {
				c.RequestTimeout = time.Second
			})
			// Two pages of 100 commit, then the next three requests fail.
			e.sim.Inject(sim.Fault{Kind: sim.FaultNone}, sim.Fault{Kind: sim.FaultNone}, tc.fault, tc.fault, tc.fault)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- e.poller.Run(ctx, e.lease, nil) }()

			if tc.halts == 0 {
				e.waitCursor(t, n)
				cancel()
				require.NoError(t, <-done)
				require.Zero(t, e.sim.Pending(), "every fault was served")
				e.requireExactlyOnce(t, n)
				require.Positive(t, counter(t, e.reg, "ingestd_upstream_errors_total", ""))
				return
			}
			require.Eventually(t, func() bool { return e.poller.Halted() != nil }, 20*time.Second, time.Millisecond, "the source halts")
			var err error = e.poller.Halted()
			var halt *poller.HaltError
			require.ErrorAs(t, err, &halt)
			require.Equal(t, tc.halts, upstream.ClassOf(err))
			st := e.state(t)
			require.Equal(t, e.sim.CursorAfter(200), st.Cursor, "a halt never resets or advances the cursor")
			require.NotNil(t, st.HaltedAt)
			require.NotEmpty(t, st.HaltedReason)
			require.Equal(t, 1.0, counter(t, e.reg, "ingestd_source_halted", ""))
			require.NotContains(t, st.HaltedReason, token, "the token never reaches stored errors")

			// The halt is logged once, as an error naming the source and
			// the cause; nothing else is logged at error level.
			errs := e.logs.FilterLevelExact(zapcore.ErrorLevel).All()
			require.Len(t, errs, 1, "one error line for the halt")
			require.Contains(t, errs[0].Message, "source halted")
			require.Equal(t, "yandex/default", errs[0].ContextMap()["source"])
			require.Contains(t, errs[0].ContextMap()["error"], tc.halts.String())

			// A halted source stays idle, holding on, until it is stopped;
			// then this instance no longer reports it halted.
			select {
			case err := <-done:
				t.Fatalf("Run returned %v while halted", err)
			default:
			}
			cancel()
			require.NoError(t, <-done)
			require.Zero(t, counter(t, e.reg, "ingestd_source_halted", ""))
		})
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		retryAfter func() string
		min        time.Duration
	}{
		{"seconds", func() string { return "1" }, time.Second},
		{"http date", func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) }, time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 300
			e := newEnv(t, sim.YandexConfig{Seed: 4, Backlog: n}, nil)
			e.sim.Inject(sim.Fault{Kind: sim.FaultNone}, sim.Fault{Kind: sim.FaultTooManyRequests, RetryAfter: tc.retryAfter()})
			stop := e.start(t)
			e.waitCursor(t, n)
			require.NoError(t, stop())
			times := e.arrived.snapshot()
			require.GreaterOrEqual(t, len(times), 3)
			// Request 2 got the 429; request 3 must wait for Retry-After
			// (the HTTP-date form has one-second resolution).
			require.GreaterOrEqual(t, times[2].Sub(times[1]), tc.min)
			require.Equal(t, 1.0, counter(t, e.reg, "ingestd_upstream_requests_total", "rate_limited"))
			e.requireExactlyOnce(t, n)
		})
	}
}

func TestStopFinishesThePageInFlight(t *testing.T) {
	t.Parallel()
	const n = 5000
	e := newEnv(t, sim.YandexConfig{Seed: 5, Backlog: n}, nil)
	stop := e.start(t)
	require.Eventually(t, func() bool { return e.state(t).EventsTotal >= 1000 }, 20*time.Second, time.Millisecond)
	require.NoError(t, stop())
	first := e.state(t)
	require.Less(t, first.EventsTotal, int64(n), "stopped mid-stream")

	// A new poller on the same database resumes at the stored cursor.
	e.poller = newPoller(t, journal.Config{
		SourceID: "yandex/default", Account: "default", PollInterval: 20 * time.Millisecond,
		Loop: poller.Loop{Backoff: retry.Config{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond}, CommitTimeout: 5 * time.Second},
	}, mustClient(t, e.srvURL), e.store, e.outbox, zaptest.NewLogger(t), prometheus.NewRegistry())
	stop = e.start(t)
	e.waitCursor(t, n)
	require.NoError(t, stop())
	e.requireExactlyOnce(t, n)
}

func mustClient(t *testing.T, url string) *yandex.Client {
	t.Helper()
	yc := yandex.DefaultConfig()
	yc.Token = secret.New(token)
	yc.BaseURL = url
	yc.PageLimit = 100
	c, err := yandex.NewClient(yc, http.DefaultClient)
	require.NoError(t, err)
	return c
}

// counter sums the series of metric name whose outcome label is outcome
// (every series when outcome is empty).
func counter(t *testing.T, reg *prometheus.Registry, name, outcome string) float64 {
	t.Helper()
	var want map[string]string
	if outcome != "" {
		want = map[string]string{"outcome": outcome}
	}
	v, series := promtest.Sum(t, reg, name, want)
	require.Positive(t, series, "metric %s{outcome=%q} not found", name, outcome)
	return v
}

// TestServerErrorStorm serves thirty consecutive 5xx answers mid-journal:
// the poller backs off and retries the same cursor until the storm passes,
// never skipping or advancing.
func TestServerErrorStorm(t *testing.T) {
	t.Parallel()
	const n = 500
	e := newEnv(t, sim.YandexConfig{Seed: 6, Backlog: n}, nil)
	storm := []sim.Fault{{Kind: sim.FaultNone}}
	for i := range 30 {
		storm = append(storm, sim.Fault{Kind: sim.FaultServerError, Status: 500 + 2*(i%3)}) // 500, 502, 504
	}
	e.sim.Inject(storm...)
	stop := e.start(t)
	e.waitCursor(t, n)
	require.NoError(t, stop())
	require.Zero(t, e.sim.Pending())
	require.Equal(t, 30.0, counter(t, e.reg, "ingestd_upstream_requests_total", "retry"))
	e.requireExactlyOnce(t, n)
}

// TestNewSetsDefaultsAndValidates: a configuration with only its source
// gets the documented defaults (a zero commit timeout used to fail every
// commit, a zero poll interval to busy-loop); a bad value is refused,
// naming its variable.
func TestNewSetsDefaultsAndValidates(t *testing.T) {
	t.Parallel()
	store := pgtest.Open(t)
	deps := journal.Deps{
		Client: mustClient(t, "http://127.0.0.1:1"), Cursors: store.Cursors, Backlog: store.Outbox,
		Outbox: &publisher{}, Log: zaptest.NewLogger(t), Metrics: poller.NewMetrics(prometheus.NewRegistry()),
	}
	_, err := journal.New(journal.Config{SourceID: "yandex/default", Account: "default"}, deps)
	require.NoError(t, err, "zero values take the defaults")

	tests := []struct {
		name string
		cfg  journal.Config
		want string
	}{
		{"negative poll interval", journal.Config{SourceID: "yandex/default", Account: "default", PollInterval: -time.Second}, "INGESTD_YANDEX_POLL_INTERVAL"},
		{"negative commit timeout", journal.Config{SourceID: "yandex/default", Account: "default", Loop: poller.Loop{CommitTimeout: -time.Second}}, "INGESTD_SHUTDOWN_TIMEOUT"},
		{"no source", journal.Config{}, "a source id and an account are required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			deps := deps
			deps.Metrics = poller.NewMetrics(prometheus.NewRegistry())
			_, err := journal.New(tc.cfg, deps)
			require.ErrorContains(t, err, tc.want)
		})
	}
	deps.Metrics = poller.NewMetrics(prometheus.NewRegistry())
	deps.Outbox = nil
	_, err = journal.New(journal.Config{SourceID: "yandex/default", Account: "default"}, deps)
	require.ErrorContains(t, err, "every dependency is required")
}
