package watch_test

import (
	"context"
	"errors"
	"hash/crc32"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/poller"
	"github.com/ingestd/ingestd/internal/poller/watch"
	"github.com/ingestd/ingestd/internal/promtest"
	"github.com/ingestd/ingestd/internal/retry"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/service"
	"github.com/ingestd/ingestd/internal/sim"
	"github.com/ingestd/ingestd/internal/upstream"
	"github.com/ingestd/ingestd/internal/watchlist"
)

const (
	btsLogin    = "ingestd-test"
	btsPassword = "s3cret-Pa55"
	btsSrc      = "bts/default"
)

// btsOutbox stands in for the publisher: it spreads keys over four
// partitions and counts wake-ups.
type btsOutbox struct{ notified atomic.Int64 }

func (o *btsOutbox) Partition(key string) int  { return int(crc32.ChecksumIEEE([]byte(key)) % 4) }
func (o *btsOutbox) Committed(outbox.Appended) { o.notified.Add(1) }

// btsEnv is a BTS simulator and a migrated store.
type btsEnv struct {
	store  *pgtest.Stores
	conn   *pgx.Conn
	sim    *sim.BTS
	srv    *httptest.Server
	reg    *prometheus.Registry
	m      *poller.Metrics
	outbox *btsOutbox
}

func newBTSEnv(t *testing.T, sc sim.BTSConfig) *btsEnv {
	t.Helper()
	ctx := context.Background()
	store := pgtest.Open(t)
	dsn := store.DSN
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })

	sc.Login, sc.Password = btsLogin, btsPassword
	s, err := sim.NewBTS(sc)
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	reg := prometheus.NewRegistry()
	return &btsEnv{store: store, conn: conn, sim: s, srv: srv, reg: reg, m: poller.NewMetrics(reg), outbox: &btsOutbox{}}
}

// client returns a BTS client of the simulator.
func (e *btsEnv) client(t *testing.T, mutate func(*bts.Config)) *bts.Client {
	t.Helper()
	cfg := bts.DefaultConfig()
	cfg.BaseURL = e.srv.URL
	cfg.Login = btsLogin
	cfg.Password = secret.New(btsPassword)
	cfg.RequestTimeout = 5 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := bts.NewClient(cfg, e.srv.Client())
	require.NoError(t, err)
	return c
}

// btsTestConfig returns a poller configuration for tests: fast backoff and
// claims.
func btsTestConfig(intervals string) watch.Config {
	cfg := watch.Config{SourceID: btsSrc, Account: "default", Schedule: bts.DefaultSchedule()}
	iv, err := bts.ParseIntervals(intervals)
	if err != nil {
		panic(err)
	}
	cfg.Schedule.Intervals = iv
	cfg.Schedule.Rate = 5000
	cfg.Schedule.Concurrency = 8
	cfg.Schedule.ClaimTimeout = 5 * time.Second
	cfg.Schedule.IdlePoll = 50 * time.Millisecond
	cfg.Backoff = retry.Config{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond}
	cfg.CommitTimeout = 5 * time.Second
	return cfg
}

// newPoller builds a poller on the env's store, registry and outbox.
func (e *btsEnv) newPoller(t *testing.T, cfg watch.Config, client watch.Client, log *zap.Logger) *watch.Poller {
	t.Helper()
	p, err := watch.New(cfg, watch.Deps{
		Client: client, Store: e.store.Watchlist, Halts: e.store.Cursors, Backlog: e.store.Outbox,
		Outbox: e.outbox, Log: log, Metrics: e.m,
	})
	require.NoError(t, err)
	return p
}

// startBTS starts p until the test ends or stop is called; stop stops it
// gracefully and returns what its run returned.
func startBTS(t *testing.T, p *watch.Poller) (stop func() error) {
	t.Helper()
	require.NoError(t, p.Start(context.Background()))
	stop = func() error {
		p.Stop()
		return p.Err()
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// waitHalt waits until p halts and returns the halt.
func waitHalt(t *testing.T, p *watch.Poller) *poller.HaltError {
	t.Helper()
	require.Eventually(t, func() bool { return p.Halted() != nil }, 30*time.Second, time.Millisecond, "the poller did not halt")
	return p.Halted()
}

// track adds orders to the watch-list.
func (e *btsEnv) track(t *testing.T, ids ...string) {
	t.Helper()
	added, err := e.store.Watchlist.Track(context.Background(), btsSrc, ids)
	require.NoError(t, err)
	require.Len(t, added, len(ids))
}

// counts returns the watch-list's counts by state.
func (e *btsEnv) counts(t *testing.T) map[watchlist.State]int64 {
	t.Helper()
	c, err := e.store.Watchlist.Count(context.Background(), btsSrc)
	require.NoError(t, err)
	return c
}

// outboxRow is an outbox row with its decoded event.
type outboxRow struct {
	seq       int64
	partition int
	ev        event.Event
	createdAt time.Time
}

// outboxRows reads the whole outbox in seq order.
func (e *btsEnv) outboxRows(t *testing.T) []outboxRow {
	t.Helper()
	rows, err := e.conn.Query(context.Background(), `SELECT seq, partition, payload, created_at FROM outbox ORDER BY seq`)
	require.NoError(t, err)
	var out []outboxRow
	var payload []byte
	var r outboxRow
	_, err = pgx.ForEachRow(rows, []any{&r.seq, &r.partition, &payload, &r.createdAt}, func() error {
		ev, err := event.ParsePayload(payload)
		if err != nil {
			return err
		}
		r.ev = ev
		out = append(out, r)
		return nil
	})
	require.NoError(t, err)
	return out
}

// metric returns the value of the counter or gauge name whose labels
// include want; 0 when absent.
func metric(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	v, _ := promtest.Sum(t, reg, name, want)
	return v
}

// TestBTSLifecyclesExactlyOnce is the acceptance test of the BTS source:
// 1,000 orders walk their lifecycles to terminal statuses on the simulator,
// polled by two replicas at once through random faults and token expiry;
// the outbox holds each observed status change exactly once, in order per
// order; terminal orders stop being polled.
func TestBTSLifecyclesExactlyOnce(t *testing.T) {
	t.Parallel()
	const (
		orders = 1000
		// speed compresses the simulator's days-long lifecycles (about 45h
		// on average, 130h at most) into 6s on average, 17s at most.
		speed = 27000
	)
	e := newBTSEnv(t, sim.BTSConfig{
		Seed: 42, Orders: orders, Speed: speed, UnknownRate: 0.05,
		// Tokens live 2s, so clients refresh them ahead of expiry several
		// times during the run.
		TokenTTL: 2 * time.Second,
		Faults:   sim.BTSFaultRates{ServerError: 0.01, TooManyRequests: 0.005, Malformed: 0.005},
	})
	ids := e.sim.Orders()
	e.track(t, ids...)

	// Coarse intervals, scaled like the simulator's time: an order is
	// polled about ten times in its life, so many changes happen between
	// two polls and are observed as skips.
	intervals, err := bts.ParseIntervals("100=6h,800=4h,1100=1h,default=6h")
	require.NoError(t, err)
	cfg := btsTestConfig("default=1h")
	cfg.Schedule.Intervals = intervals.Scaled(speed)

	// Two replicas poll the one watch-list, each with its own client.
	clients := []*bts.Client{e.client(t, nil), e.client(t, nil)}
	var stops []func() error
	for i, c := range clients {
		p := e.newPoller(t, cfg, c, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named("replica-"+strconv.Itoa(i)))
		stop := startBTS(t, p)
		stops = append(stops, stop)
	}

	// Mid-run, every access token expires at once.
	require.Eventually(t, func() bool { return e.sim.TotalCalls() > orders*3 }, 30*time.Second, 10*time.Millisecond)
	unauthorizedBefore := e.sim.Unauthorized()
	e.sim.ForceExpireTokens()

	require.Eventually(t, func() bool { return e.counts(t)[watchlist.Active] == 0 }, 60*time.Second, 50*time.Millisecond,
		"every order reaches a terminal status")
	// Terminal orders are not polled any more (the replicas keep running).
	calls := e.sim.TotalCalls()
	require.Never(t, func() bool { return e.sim.TotalCalls() != calls }, 500*time.Millisecond, 20*time.Millisecond)
	for _, stop := range stops {
		require.NoError(t, stop())
	}

	require.Equal(t, map[watchlist.State]int64{watchlist.Active: 0, watchlist.Terminal: orders, watchlist.NotFound: 0}, e.counts(t))

	// Each order's events: a subsequence of its upstream history, in order,
	// revisions 1, 2, 3..., ending with the terminal status; each event
	// observed after the change it reports.
	rows := e.outboxRows(t)
	byOrder := map[string][]event.Event{}
	eventIDs := map[string]bool{}
	unknown, skipped := 0, 0
	for _, r := range rows {
		require.False(t, eventIDs[r.ev.ID], "event %s stored twice", r.ev.ID)
		eventIDs[r.ev.ID] = true
		require.Equal(t, e.outbox.Partition(r.ev.Key()), r.partition)
		byOrder[r.ev.OrderID] = append(byOrder[r.ev.OrderID], r.ev)
	}
	require.Len(t, byOrder, orders)
	for _, id := range ids {
		hist := e.sim.History(id)
		evs := byOrder[id]
		require.NotEmpty(t, evs, "order %s", id)
		h := -1
		for k, ev := range evs {
			require.EqualValues(t, k+1, ev.Revision, "order %s revisions", id)
			code, err := strconv.Atoi(ev.ProviderStatus)
			require.NoError(t, err)
			next := slices.IndexFunc(hist[h+1:], func(c sim.Change) bool { return c.Code == code })
			require.GreaterOrEqual(t, next, 0, "order %s: %d is not later in its history %v", id, code, hist)
			skipped += next
			h += next + 1
			require.False(t, ev.ObservedAt.Before(hist[h].At), "order %s observed %d before it happened", id, code)
			require.Equal(t, ev.ObservedAt, ev.OccurredAt)
			st, terminal := event.BTSStatus(code)
			require.Equal(t, st, ev.Status)
			require.Equal(t, terminal, ev.Terminal)
			require.Equal(t, k == len(evs)-1, ev.Terminal, "order %s: only the last event is terminal", id)
			require.Equal(t, sim.BTSStatusName(code), ev.ProviderStatusName)
			if st == event.StatusUnknown {
				unknown++
			}
		}
		require.Equal(t, len(hist)-1, h, "order %s ends with its terminal status", id)
	}
	require.Positive(t, unknown, "code 1000 is published as unknown")
	require.Positive(t, skipped, "coarse polls observe skips")
	require.Equal(t, float64(len(rows)), metric(t, e.reg, "ingestd_events_ingested_total", map[string]string{"source": btsSrc}))
	require.Positive(t, metric(t, e.reg, "ingestd_bts_status_skips_total", nil))
	require.EqualValues(t, unknown, metric(t, e.reg, "ingestd_bts_unknown_status_total", map[string]string{"code": "1000"}))
	require.Positive(t, e.outbox.notified.Load())
	t.Logf("%d events for %d orders, %d API calls (%.1f per order), %d changes skipped between polls",
		len(rows), orders, e.sim.TotalCalls(), float64(e.sim.TotalCalls())/orders, skipped)

	// Tokens: refreshed ahead of expiry, and after the forced expiry each
	// rejected request was retried after one refresh, so no poll failed.
	require.Greater(t, e.sim.Unauthorized(), unauthorizedBefore, "the forced expiry was noticed")
	for _, c := range clients {
		st := c.AuthStats()
		require.Equal(t, int64(1), st.Logins, "refreshes, not logins")
		require.GreaterOrEqual(t, st.Refreshes, int64(3))
	}
	require.Zero(t, metric(t, e.reg, "ingestd_upstream_errors_total", map[string]string{"class": "auth"}))
	require.Equal(t, float64(e.sim.Faulted()),
		metric(t, e.reg, "ingestd_upstream_errors_total", map[string]string{"class": "retry"})+
			metric(t, e.reg, "ingestd_upstream_errors_total", map[string]string{"class": "rate_limited"}),
		"the only failed polls are the injected faults")
	require.Zero(t, metric(t, e.reg, "ingestd_source_halted", nil))
}

func TestBTSHaltsOnRejectedCredentials(t *testing.T) {
	t.Parallel()
	e := newBTSEnv(t, sim.BTSConfig{Seed: 1, Orders: 3})
	e.track(t, e.sim.Orders()...)
	client := e.client(t, func(c *bts.Config) { c.Password = secret.New("wrong") })
	core, logs := observer.New(zapcore.DebugLevel)
	p := e.newPoller(t, btsTestConfig("default=1s"), client, zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core)))
	stop := startBTS(t, p)

	var err error = waitHalt(t, p)
	var he *poller.HaltError
	require.ErrorAs(t, err, &he)
	require.Equal(t, btsSrc, he.SourceID)
	require.Equal(t, upstream.Auth, upstream.ClassOf(err))
	require.NotContains(t, err.Error(), "wrong", "the password never appears")
	require.Equal(t, 1.0, metric(t, e.reg, "ingestd_source_halted", map[string]string{"source": btsSrc}))
	st, serr := e.store.Cursors.Source(context.Background(), btsSrc)
	require.NoError(t, serr)
	require.NotNil(t, st.HaltedAt)
	require.Contains(t, st.HaltedReason, "Incorrect login or password.")
	require.Zero(t, e.sim.TotalCalls())

	// The halt is logged once, as an error; a halted source idles until it
	// is stopped, and then no longer reports the halt.
	errs := logs.FilterLevelExact(zapcore.ErrorLevel).All()
	require.Len(t, errs, 1, "one error line for the halt")
	require.Contains(t, errs[0].Message, "source halted")
	require.Equal(t, btsSrc, errs[0].ContextMap()["source"])
	require.NoError(t, stop())
	require.Zero(t, metric(t, e.reg, "ingestd_source_halted", map[string]string{"source": btsSrc}))
}

func TestBTSHaltsOnPermanentError(t *testing.T) {
	t.Parallel()
	e := newBTSEnv(t, sim.BTSConfig{Seed: 1, Orders: 1})
	e.track(t, e.sim.Orders()...)
	// The dictionary fetch succeeds; the order's poll gets a 422.
	e.sim.Inject(sim.BTSFault{Kind: sim.BTSFaultNone}, sim.BTSFault{Kind: sim.BTSFaultValidation})
	p := e.newPoller(t, btsTestConfig("default=1s"), e.client(t, nil), zaptest.NewLogger(t))
	stop := startBTS(t, p)
	var err error = waitHalt(t, p)
	require.Equal(t, upstream.Permanent, upstream.ClassOf(err))
	require.ErrorContains(t, err, "Order Id must be an integer.")

	// The order stays active and shows why the source stopped.
	page, lerr := e.store.Watchlist.List(context.Background(), watchlist.ListQuery{SourceID: btsSrc, Limit: 10})
	require.NoError(t, lerr)
	require.Len(t, page, 1)
	require.Equal(t, watchlist.Active, page[0].State)
	require.Contains(t, page[0].LastError, "Order Id must be an integer.")
	require.Empty(t, e.outboxRows(t))
	require.NoError(t, stop())
}

func TestBTSNotFoundOrdersLeaveTheActiveSet(t *testing.T) {
	t.Parallel()
	e := newBTSEnv(t, sim.BTSConfig{Seed: 3, Orders: 5})
	e.track(t, e.sim.Orders()...)
	e.track(t, "1", "no-such-order")
	p := e.newPoller(t, btsTestConfig("default=1h"), e.client(t, nil), zaptest.NewLogger(t))
	stop := startBTS(t, p)

	require.Eventually(t, func() bool {
		c := e.counts(t)
		return c[watchlist.NotFound] == 2 && len(e.outboxRows(t)) == 5
	}, 20*time.Second, 20*time.Millisecond)
	require.NoError(t, stop())
	require.Equal(t, 2.0, metric(t, e.reg, "ingestd_bts_orders_not_found_total", nil))
	page, err := e.store.Watchlist.List(context.Background(), watchlist.ListQuery{SourceID: btsSrc, State: watchlist.NotFound, Limit: 10})
	require.NoError(t, err)
	require.Equal(t, []string{"1", "no-such-order"}, []string{page[0].OrderID, page[1].OrderID})
	for _, r := range e.outboxRows(t) {
		require.NotEqual(t, "1", r.ev.OrderID)
	}
}

func TestBTSBacksOffAndKeepsTheOrderDue(t *testing.T) {
	t.Parallel()
	e := newBTSEnv(t, sim.BTSConfig{Seed: 4, Orders: 1})
	id := e.sim.OrderID(0)
	e.track(t, id)
	// Dictionary fine; then 429 with Retry-After, a 503, a timeout-like
	// dropped connection and a malformed body before the poll succeeds.
	e.sim.Inject(
		sim.BTSFault{Kind: sim.BTSFaultNone},
		sim.BTSFault{Kind: sim.BTSFaultTooManyRequests, RetryAfter: "1"},
		sim.BTSFault{Kind: sim.BTSFaultServerError},
		sim.BTSFault{Kind: sim.BTSFaultMalformed, Malformed: sim.BTSStatusFalse},
		sim.BTSFault{Kind: sim.BTSFaultMalformed, Malformed: sim.BTSHTMLPage},
	)
	var (
		mu    sync.Mutex
		times []time.Time
	)
	inner := e.srv.Config.Handler
	e.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == sim.BTSTrackPath {
			mu.Lock()
			times = append(times, time.Now())
			mu.Unlock()
		}
		inner.ServeHTTP(w, r)
	})
	p := e.newPoller(t, btsTestConfig("default=1h"), e.client(t, nil), zaptest.NewLogger(t))
	stop := startBTS(t, p)
	require.Eventually(t, func() bool { return len(e.outboxRows(t)) == 1 }, 20*time.Second, 20*time.Millisecond)
	require.NoError(t, stop())

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, times, 5, "four failures, then the poll that succeeds")
	require.GreaterOrEqual(t, times[1].Sub(times[0]), time.Second, "Retry-After is honoured")
	require.Equal(t, 1.0, metric(t, e.reg, "ingestd_upstream_errors_total", map[string]string{"class": "rate_limited"}))
	require.Equal(t, 3.0, metric(t, e.reg, "ingestd_upstream_errors_total", map[string]string{"class": "retry"}))
	page, err := e.store.Watchlist.List(context.Background(), watchlist.ListQuery{SourceID: btsSrc, Limit: 1})
	require.NoError(t, err)
	require.Zero(t, page[0].ErrorCount, "a success clears the failures")
	require.EqualValues(t, 1, page[0].ChangeCount)
}

func TestBTSStopReleasesClaimsAndReturnsNil(t *testing.T) {
	t.Parallel()
	e := newBTSEnv(t, sim.BTSConfig{Seed: 5, Orders: 40})
	e.track(t, e.sim.Orders()...)
	// Every poll hangs for a minute: stopping must not wait for them.
	faults := []sim.BTSFault{{Kind: sim.BTSFaultNone}}
	for range 40 {
		faults = append(faults, sim.BTSFault{Kind: sim.BTSFaultSlow, Delay: time.Minute})
	}
	e.sim.Inject(faults...)
	cfg := btsTestConfig("default=1h")
	cfg.Schedule.Concurrency = 2
	p := e.newPoller(t, cfg, e.client(t, nil), zaptest.NewLogger(t))
	stop := startBTS(t, p)
	require.Eventually(t, func() bool { return e.sim.TotalCalls() == 2 }, 10*time.Second, 10*time.Millisecond)
	started := time.Now()
	require.NoError(t, stop(), "a cancelled Run returns nil")
	require.Less(t, time.Since(started), 5*time.Second)

	// Nothing was recorded, and every order is due again at once.
	require.Empty(t, e.outboxRows(t))
	wait, ok, err := e.store.Watchlist.NextDue(context.Background(), btsSrc)
	require.NoError(t, err)
	require.True(t, ok)
	require.LessOrEqual(t, wait, time.Duration(0))
	claims, err := e.store.Watchlist.ClaimDue(context.Background(), btsSrc, "", 100, time.Minute)
	require.NoError(t, err)
	require.Len(t, claims, 40, "claims were released, not left to expire")
}

func TestBTSDictionaryIsStoredAndRefreshed(t *testing.T) {
	t.Parallel()
	e := newBTSEnv(t, sim.BTSConfig{Seed: 6, Orders: 1, StatusPageSize: 5})
	cfg := btsTestConfig("default=1h")
	cfg.Schedule.DictionaryRefresh = 50 * time.Millisecond
	p := e.newPoller(t, cfg, e.client(t, nil), zaptest.NewLogger(t))
	stop := startBTS(t, p)
	require.Eventually(t, func() bool {
		return metric(t, e.reg, "ingestd_bts_dictionary_refresh_total", map[string]string{"result": "ok"}) >= 3
	}, 20*time.Second, 10*time.Millisecond)
	require.NoError(t, stop())
	defs, err := e.store.Watchlist.Statuses(context.Background(), btsSrc)
	require.NoError(t, err)
	require.Len(t, defs, 12, "all three pages")
	require.Equal(t, "Курьер доставляет", defs[8].Name)
	require.Equal(t, []int{900, 1000, 1100}, defs[7].Next)
	require.Positive(t, metric(t, e.reg, "ingestd_bts_auth_total", map[string]string{"kind": "login"}))
}

func TestBTSRunTwiceIsAnError(t *testing.T) {
	t.Parallel()
	e := newBTSEnv(t, sim.BTSConfig{Seed: 7})
	p := e.newPoller(t, btsTestConfig("default=1h"), e.client(t, nil), zaptest.NewLogger(t))
	stop := startBTS(t, p)
	require.Eventually(t, func() bool { return e.sim.Requests() > 0 }, 10*time.Second, 10*time.Millisecond)
	err := p.Start(context.Background())
	require.ErrorIs(t, err, service.ErrStarted)
	require.False(t, errors.As(err, new(*poller.HaltError)))
	require.NoError(t, stop())
}

// TestBTSPausesAtTheBacklogBound leaves the outbox unpublished: polling
// stops near INGESTD_OUTBOX_MAX_BACKLOG with the remaining orders still due,
// and resumes by itself once the rows are published.
func TestBTSPausesAtTheBacklogBound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const orders, bound = 300, 40
	e := newBTSEnv(t, sim.BTSConfig{Seed: 5, Orders: orders})
	e.track(t, e.sim.Orders()...)
	cfg := btsTestConfig("default=1h")
	cfg.MaxBacklog = bound
	// Few orders in flight, so the overshoot past the bound is small: the
	// bound is checked before each claim, and what is claimed is polled.
	cfg.Schedule.Rate, cfg.Schedule.Concurrency = 100, 2
	inFlight := 2*cfg.Schedule.Concurrency + int(cfg.Schedule.Rate/4) + 1
	p := e.newPoller(t, cfg, e.client(t, nil), zaptest.NewLogger(t))
	stop := startBTS(t, p)

	paused := map[string]string{"source": btsSrc}
	require.Eventually(t, func() bool {
		return metric(t, e.reg, "ingestd_polling_paused", paused) == 1
	}, 20*time.Second, 10*time.Millisecond, "polling pauses at the bound")
	// Polls claimed before the pause may still land; after that, nothing.
	var held int
	require.Eventually(t, func() bool {
		n := len(e.outboxRows(t))
		settled := n == held
		held = n
		return settled
	}, 10*time.Second, 300*time.Millisecond)
	require.GreaterOrEqual(t, held, bound)
	require.Less(t, held, bound+inFlight, "the outbox stops growing near the bound")
	require.Less(t, held, orders)
	unpolled := func() int {
		var n int
		require.NoError(t, e.conn.QueryRow(ctx, `SELECT count(*) FROM bts_orders WHERE status_code IS NULL`).Scan(&n))
		return n
	}
	require.Equal(t, orders-held, unpolled(), "each polled order made one event; the rest stay unpolled")

	// Publish everything whenever it pauses (as the publisher would): it
	// resumes each time, and every order is polled in the end.
	_, err := e.store.Outbox.Target(ctx, "events", 4)
	require.NoError(t, err)
	l, ok, err := e.store.Leases.TryAcquire(ctx, "publisher", "test", time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	publishAll := func() {
		var last int64
		require.NoError(t, e.conn.QueryRow(ctx, `SELECT last_seq FROM outbox_seq`).Scan(&last))
		require.NoError(t, e.store.Outbox.MarkPublished(ctx, l, map[int]int64{0: last, 1: last, 2: last, 3: last}))
	}
	resumed := 0
	require.Eventually(t, func() bool {
		if unpolled() == 0 {
			return true
		}
		if metric(t, e.reg, "ingestd_polling_paused", paused) == 1 {
			publishAll()
			resumed++
		}
		return false
	}, 30*time.Second, 20*time.Millisecond)
	require.NoError(t, stop())
	require.Len(t, e.outboxRows(t), orders, "one event per order, none lost while paused")
	require.GreaterOrEqual(t, resumed, 2, "paused again at the bound after resuming")
}
