package watch_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/pg"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/poller"
	"github.com/ingestd/ingestd/internal/poller/watch"
	"github.com/ingestd/ingestd/internal/publish"
	"github.com/ingestd/ingestd/internal/retry"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
	"github.com/ingestd/ingestd/internal/storage"
	"github.com/ingestd/ingestd/internal/watchlist"
)

// BenchmarkBTSSchedule compares the adaptive schedule with a fixed 1-minute
// one on the simulator and prints two tables. It runs the real poller,
// client, PostgreSQL store and outbox; only the network between client and
// simulator is replaced by an in-process transport. Time may be compressed:
// the simulator's Speed divides every upstream dwell, and the schedule's
// intervals are divided by the same factor; delays are reported in upstream
// time (real delay x Speed), so compression inflates every real cost
// (claiming, committing, publishing) by the factor.
//
//   - Part 1, full lifecycles: both schedules poll their orders from
//     creation to a terminal status, side by side; API calls per lifecycle
//     are exact. Delays run to the event's observation. Beside them run
//     the adaptive schedule with webhooks (issue 13): the simulator calls
//     a real doorbell on every status change, cleanly and with the issue's
//     faulty delivery; see webhook_bench_test.go for what is measured and
//     in which unit.
//   - Part 2, scale: 100,000 active orders for each schedule, backdated so
//     that they are spread over every status, polled for a steady-state
//     window and published through the real publisher to an in-process
//     Kafka broker. Calls per lifecycle are calls per active order-hour
//     times the mean lifecycle; delays run from the upstream change to the
//     Kafka record's timestamp. The two runs take turns, each with the
//     machine to itself: the fixed schedule's 100,000 orders need ~1,700
//     requests/s at real time, so it runs at Speed 1 (no compression), and
//     the adaptive one at Speed 50.
//
// Run it once (it takes about 30 minutes):
//
//	go test -run XXX -bench BenchmarkBTSSchedule -benchtime 1x -timeout 60m ./internal/poller/watch/
//
// Environment: INGESTD_BTS_BENCH_ORDERS (adaptive orders of part 1, default
// 2000; 0 skips part 1), INGESTD_BTS_BENCH_FIXED_ORDERS (fixed-schedule
// orders of part 1, default 100: a fixed schedule costs ~16 times more calls
// per order), INGESTD_BTS_BENCH_SPEED (part 1, default 1000),
// INGESTD_BTS_BENCH_SCALE_ORDERS (part 2, default 100000; 0 skips it),
// INGESTD_BTS_BENCH_SCALE_SPEED and INGESTD_BTS_BENCH_SCALE_WINDOW (the
// adaptive run of part 2, default 50 and 60s of real time),
// INGESTD_BTS_BENCH_FIXED_SCALE_SPEED and INGESTD_BTS_BENCH_FIXED_SCALE_WINDOW
// (the fixed run of part 2, default 1 and 10m),
// INGESTD_BTS_BENCH_WEBHOOK_ORDERS (orders of each webhook scenario of part
// 1, default INGESTD_BTS_BENCH_ORDERS; 0 skips them),
// INGESTD_BTS_BENCH_WEBHOOK_STRETCH (comma-separated WebhookStretch factors,
// one clean webhook scenario each, default 4) and
// INGESTD_BTS_BENCH_WEBHOOK_FAULTY (1, the default, adds the faulty
// delivery at the default stretch; 0 leaves it out). Every scenario of part
// 1 runs at once, and compression multiplies the claim lag by the speed: on
// a two-CPU machine shared with other work, INGESTD_BTS_BENCH_ORDERS=500
// and INGESTD_BTS_BENCH_FIXED_ORDERS=25 keep it in check
// (docs/performance.md, "BTS webhooks").
func BenchmarkBTSSchedule(b *testing.B) {
	for range b.N {
		reportBTSSchedule(b)
	}
}

// TestBTSScheduleReport is the benchmark as a test, for environments that
// run tests only; it runs when INGESTD_BTS_BENCH=1.
func TestBTSScheduleReport(t *testing.T) {
	if os.Getenv("INGESTD_BTS_BENCH") != "1" {
		t.Skip("set INGESTD_BTS_BENCH=1 to run the BTS schedule benchmark (minutes)")
	}
	reportBTSSchedule(t)
}

func reportBTSSchedule(tb testing.TB) {
	adaptive := bts.DefaultIntervals()
	fixed, err := bts.ParseIntervals("default=1m")
	require.NoError(tb, err)
	speed := envFloat(tb, "INGESTD_BTS_BENCH_SPEED", 1000)

	var out strings.Builder
	defer func() {
		// Straight to stdout: a benchmark's log is cut to ten lines.
		fmt.Print(out.String())
	}()
	var full *scheduleResult
	if n := envInt(tb, "INGESTD_BTS_BENCH_ORDERS", 2000); n > 0 {
		scenarios := []scheduleScenario{
			{name: "adaptive", orders: n, speed: speed, intervals: adaptive},
			{name: "fixed 1m", orders: envInt(tb, "INGESTD_BTS_BENCH_FIXED_ORDERS", 100), speed: speed, intervals: fixed},
		}
		scenarios = append(scenarios, webhookScenarios(tb, envInt(tb, "INGESTD_BTS_BENCH_WEBHOOK_ORDERS", n), speed, adaptive)...)
		var (
			wg      sync.WaitGroup
			results = make([]scheduleResult, len(scenarios))
			errs    = make([]error, len(scenarios))
			// pgtest.Schema must run on the test's goroutine.
			dsns = make([]string, len(scenarios))
		)
		for i := range dsns {
			dsns[i] = pgtest.Schema(tb)
		}
		// Side by side, so that all see the same machine load.
		for i, sc := range scenarios {
			wg.Go(func() { results[i], errs[i] = runSchedule(dsns[i], sc) })
		}
		wg.Wait()
		for _, err := range errs {
			require.NoError(tb, err)
		}
		fmt.Fprintf(&out, "\nBTS schedule, full lifecycles on the simulator at %gx (delays in upstream time: real delay x %g)\n", speed, speed)
		printLifecycleTable(&out, results)
		a, f := results[0], results[1]
		fmt.Fprintf(&out, "adaptive makes %.1fx fewer calls per lifecycle; p95 delay of changes out for delivery: %s adaptive vs %s fixed\n",
			f.callsPerLifecycle()/a.callsPerLifecycle(), fmtDur(pct(a.outOf1100, 95)), fmtDur(pct(f.outOf1100, 95)))
		if b, ok := tb.(*testing.B); ok {
			b.ReportMetric(a.callsPerLifecycle(), "adaptive-calls/lifecycle")
			b.ReportMetric(f.callsPerLifecycle(), "fixed-calls/lifecycle")
			b.ReportMetric(pct(a.outOf1100, 95).Seconds(), "adaptive-p95-1100-s")
			b.ReportMetric(pct(f.outOf1100, 95).Seconds(), "fixed-p95-1100-s")
		}
		if len(results) > 2 {
			printWebhookReport(&out, a, results[2:])
			reportWebhookMetrics(tb, results[2:])
		}
		full = &a
	}

	if n := envInt(tb, "INGESTD_BTS_BENCH_SCALE_ORDERS", 100_000); n > 0 {
		kc := kafkatest.Start(tb)
		read := func(topic string, want int) []kafkatest.Record {
			return kafkatest.ReadTopic(tb, kc.Addr, topic, want, 5*time.Minute)
		}
		scenarios := []scheduleScenario{
			{
				name: "adaptive", orders: n, speed: envFloat(tb, "INGESTD_BTS_BENCH_SCALE_SPEED", 50), intervals: adaptive,
				backdate: 45 * time.Hour, window: envDuration(tb, "INGESTD_BTS_BENCH_SCALE_WINDOW", time.Minute),
				kafka: kc.Addr, topic: "bts-adaptive", read: read,
			},
			{
				name: "fixed 1m", orders: n, speed: envFloat(tb, "INGESTD_BTS_BENCH_FIXED_SCALE_SPEED", 1), intervals: fixed,
				backdate: 45 * time.Hour, window: envDuration(tb, "INGESTD_BTS_BENCH_FIXED_SCALE_WINDOW", 10*time.Minute),
				kafka: kc.Addr, topic: "bts-fixed", read: read,
			},
		}
		results := make([]scheduleResult, len(scenarios))
		for i, sc := range scenarios {
			r, err := runSchedule(pgtest.Schema(tb), sc)
			require.NoError(tb, err)
			results[i] = r
		}
		printScaleReport(&out, results, full)
		a, f := results[0], results[1]
		if b, ok := tb.(*testing.B); ok {
			b.ReportMetric(a.callsPerLifecycle(), "scale-adaptive-calls/lifecycle")
			b.ReportMetric(f.callsPerLifecycle(), "scale-fixed-calls/lifecycle")
			b.ReportMetric(pct(a.outOf1100, 95).Seconds(), "scale-adaptive-p95-1100-s")
			b.ReportMetric(pct(f.outOf1100, 95).Seconds(), "scale-fixed-p95-1100-s")
		}
	}
}

// scheduleScenario is one run of the BTS poller on the simulator.
type scheduleScenario struct {
	name   string
	orders int
	// speed is the simulator's time compression; intervals are divided by
	// it too.
	speed     float64
	intervals bts.Intervals
	// backdate spreads the orders' creation before the start.
	backdate time.Duration
	// window, when set, measures a steady state for that long after every
	// order was polled once; otherwise the run lasts until every order is
	// terminal.
	window time.Duration
	// kafka, when set, is a broker address: the run publishes its events
	// to topic through the real publisher, reads them back with read, and
	// measures delays to each event's Kafka record timestamp instead of to
	// its observation. read is called on the test's goroutine.
	kafka string
	topic string
	read  func(topic string, want int) []kafkatest.Record
	// webhooks, when set, has the simulator call a real doorbell on every
	// status change, which rings the poller (webhook_bench_test.go).
	webhooks *webhookSetup
}

// scheduleResult is what a run measured. Delays are in upstream time.
type scheduleResult struct {
	sc   scheduleScenario
	wall time.Duration
	// calls are the track calls made (in the window, for a window run).
	calls int64
	// orderHours is the upstream time orders spent active (in the window).
	orderHours float64
	// meanLifecycle is the mean upstream duration of the orders' lives.
	meanLifecycle time.Duration
	// upstreamChanges and observedChanges count status changes upstream
	// and those published (first observations excluded).
	upstreamChanges, observedChanges int
	// delays: change upstream to its observation (observed_at), for every
	// change, for changes into 1100, and for changes out of 1100 (orders
	// out for delivery).
	all, into1100, outOf1100 []time.Duration
	// commit is observed_at to the outbox row's commit (real time).
	commit []time.Duration
	// publish is observed_at to the Kafka record's timestamp (real time;
	// runs with Kafka only).
	publish []time.Duration
	// claimLags are how late due orders were claimed (real time).
	claimLags []time.Duration
	heapMiB   float64
	// firstPass is how long polling every order once took (window runs).
	firstPass time.Duration
	// commits and commitSecs count the poller's recording transactions
	// and their total duration; recorded counts the polls they recorded
	// (over the whole run).
	commits    uint64
	commitSecs float64
	recorded   int64
	// hooks is what a webhook scenario measured besides.
	hooks *webhookResult
}

// histogram returns the count and sum of a histogram on reg.
func histogram(reg *prometheus.Registry, name string) (uint64, float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, 0, err
	}
	var (
		n   uint64
		sum float64
	)
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
				sum += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return n, sum, nil
}

// sumCounter returns the sum of a counter's series on reg.
func sumCounter(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

func (r scheduleResult) callsPerLifecycle() float64 {
	if r.sc.window == 0 {
		return float64(r.calls) / float64(r.sc.orders)
	}
	// Extrapolated from a steady state: calls per active order-hour times
	// the mean lifecycle.
	return float64(r.calls) / r.orderHours * r.meanLifecycle.Hours()
}

// lagStore records how late claims came, from the claims themselves.
type lagStore struct {
	*watchlist.Store
	record atomic.Bool
	mu     sync.Mutex
	lags   []time.Duration
	// trace, when set, records when each order was claimed (webhook
	// scenarios).
	trace *webhookTrace
}

func (s *lagStore) ClaimDue(ctx context.Context, sourceID, holder string, limit int, claimFor time.Duration) ([]watchlist.Claim, error) {
	started := time.Now()
	claims, err := s.Store.ClaimDue(ctx, sourceID, holder, limit, claimFor)
	if s.record.Load() {
		s.mu.Lock()
		for _, c := range claims {
			s.lags = append(s.lags, c.Lag)
		}
		s.mu.Unlock()
	}
	if s.trace != nil {
		s.trace.claimed(claims, started)
	}
	return claims, err
}

// handlerTransport serves requests with an http.Handler in-process: the
// client's whole code path runs, without sockets.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

// runSchedule runs one scenario in the schema of dsn and measures it. It
// returns errors rather than failing the test, because part 1 runs it off
// the test's goroutine.
func runSchedule(dsn string, sc scheduleScenario) (scheduleResult, error) {
	ctx := context.Background()
	// publisherFinish drains the publisher and stops it (Kafka runs only).
	var publisherFinish func() error
	cc := pg.DefaultConfig()
	cc.DatabaseURL = secret.New(dsn)
	if _, err := pg.Migrate(ctx, cc); err != nil {
		return scheduleResult{}, err
	}
	base, err := storage.Open(ctx, cc)
	if err != nil {
		return scheduleResult{}, err
	}
	defer base.Close()
	store := &lagStore{Store: base.Watchlist}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return scheduleResult{}, err
	}
	defer func() { _ = conn.Close(ctx) }()

	simCfg := sim.BTSConfig{Seed: 11, Login: btsLogin, Password: btsPassword, Orders: sc.orders, Speed: sc.speed, Backdate: sc.backdate}
	var hooks *webhookRun
	if sc.webhooks != nil {
		hooks = newWebhookRun(sc)
		store.trace = hooks.trace
		simCfg.Webhooks = hooks.simConfig()
	}
	s, err := sim.NewBTS(simCfg)
	if err != nil {
		return scheduleResult{}, err
	}
	bc := bts.DefaultConfig()
	bc.BaseURL = "http://bts.sim"
	bc.Login, bc.Password = btsLogin, secret.New(btsPassword)
	client, err := bts.NewClient(bc, &http.Client{Transport: handlerTransport{s}})
	if err != nil {
		return scheduleResult{}, err
	}
	ids := s.Orders()
	for chunk := range slices.Chunk(ids, 10_000) {
		if _, err := store.Track(ctx, btsSrc, chunk); err != nil {
			return scheduleResult{}, err
		}
	}

	cfg := watch.Config{SourceID: btsSrc, Account: "default", Schedule: bts.DefaultSchedule()}
	cfg.Schedule.Intervals = sc.intervals.Scaled(sc.speed)
	cfg.Schedule.Rate = 50_000
	cfg.Schedule.Concurrency = 16
	cfg.Schedule.IdlePoll = 10 * time.Millisecond
	cfg.Schedule.ClaimTimeout = time.Minute
	cfg.Backoff = retry.Config{Initial: 5 * time.Millisecond, Max: 100 * time.Millisecond}
	if sc.webhooks != nil {
		sc.webhooks.schedule(&cfg.Schedule, sc.speed)
	}
	reg := prometheus.NewRegistry()
	var outbox poller.Outbox = &btsOutbox{}
	if sc.kafka != "" {
		pub, finish, err := startPublisher(ctx, base, sc)
		if err != nil {
			return scheduleResult{}, err
		}
		// On every early return; the measured path finishes it first.
		defer func() { _ = finish() }()
		outbox, publisherFinish = pub, finish
	}
	p, err := watch.New(cfg, watch.Deps{
		Client: client, Store: store, Halts: base.Cursors, Backlog: base.Outbox,
		Outbox: outbox, Log: zap.NewNop(), Metrics: poller.NewMetrics(reg),
	})
	if err != nil {
		return scheduleResult{}, err
	}

	if hooks != nil {
		if err := hooks.start(ctx, base.Watchlist, p); err != nil {
			return scheduleResult{}, err
		}
		// On every early return; the measured path stops it first.
		defer hooks.stop()
	}

	started := time.Now()
	if err := p.Start(ctx); err != nil {
		return scheduleResult{}, err
	}
	defer p.Stop()
	finished := p.Done()
	if hooks != nil {
		hooks.send(ctx, s)
	}

	count := func(q string) (int64, error) {
		var n int64
		err := conn.QueryRow(ctx, q).Scan(&n)
		return n, err
	}
	// waitFor polls q until it counts nothing, the poller stops or the
	// limit passes.
	waitFor := func(what, q string, limit time.Duration) error {
		deadline := time.Now().Add(limit)
		for {
			n, err := count(q)
			switch {
			case err != nil:
				return err
			case n == 0:
				return nil
			case time.Now().After(deadline):
				return fmt.Errorf("%s: %s did not finish within %s (%d left)", sc.name, what, limit, n)
			case p.Halted() != nil:
				return fmt.Errorf("%s: the poller halted: %w", sc.name, p.Halted())
			}
			select {
			case <-finished:
				return fmt.Errorf("%s: the poller stopped: %v", sc.name, p.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}

	var (
		t0, t1    time.Time
		calls     int64
		firstPass time.Duration
	)
	if sc.window == 0 {
		store.record.Store(true)
		t0 = s.Start()
		if err := waitFor("the lifecycles", `SELECT count(*) FROM bts_orders WHERE state = 'active'`, 30*time.Minute); err != nil {
			return scheduleResult{}, err
		}
		t1, calls = time.Now(), s.TotalCalls()
	} else {
		// Warm up: every order polled once, then one longest interval more,
		// so that the first pass, which polled every order at once, no
		// longer shapes the schedule.
		if err := waitFor("the first pass", `SELECT count(*) FROM bts_orders WHERE state = 'active' AND status_code IS NULL`, 30*time.Minute); err != nil {
			return scheduleResult{}, err
		}
		firstPass = time.Since(started)
		settle := time.Duration(float64(longestInterval(sc.intervals)) / sc.speed * 1.1)
		sleep := func(d time.Duration) error {
			select {
			case <-finished:
				return fmt.Errorf("%s: the poller stopped: %v", sc.name, p.Err())
			case <-time.After(d):
				return nil
			}
		}
		if err := sleep(settle); err != nil {
			return scheduleResult{}, err
		}
		t0, calls = time.Now(), s.TotalCalls()
		store.record.Store(true)
		if err := sleep(sc.window); err != nil {
			return scheduleResult{}, err
		}
		t1, calls = time.Now(), s.TotalCalls()-calls
		store.record.Store(false)
		// Run one longest interval more, so that every change of the
		// window has been observed.
		if err := sleep(settle); err != nil {
			return scheduleResult{}, err
		}
	}
	r := scheduleResult{sc: sc, calls: calls, wall: time.Since(started), firstPass: firstPass}
	if hooks != nil {
		// Calls still pending are abandoned: every order is terminal.
		hooks.stop()
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	r.heapMiB = float64(ms.HeapAlloc) / (1 << 20)
	p.Stop()
	if err := p.Err(); err != nil {
		return scheduleResult{}, err
	}
	if h := p.Halted(); h != nil {
		return scheduleResult{}, h
	}
	store.mu.Lock()
	r.claimLags = store.lags
	store.mu.Unlock()
	if r.commits, r.commitSecs, err = histogram(reg, "ingestd_bts_commit_seconds"); err != nil {
		return scheduleResult{}, err
	}
	r.recorded = int64(sumCounter(reg, "ingestd_bts_polls_total"))
	var kafkaAt map[string]time.Time
	if publisherFinish != nil {
		// Everything committed reaches Kafka before the read.
		if err := publisherFinish(); err != nil {
			return scheduleResult{}, fmt.Errorf("%s: publisher: %w", sc.name, err)
		}
		if kafkaAt, err = readKafkaTimes(conn, sc); err != nil {
			return scheduleResult{}, err
		}
	}
	var trace *webhookTrace
	if hooks != nil {
		trace = hooks.trace
		r.hooks = hooks.result(s)
	}
	return r, r.measure(conn, s, ids, t0, t1, kafkaAt, trace)
}

// startPublisher runs the real publisher on sc.topic, holding the publisher
// lease, and returns it with a function that publishes everything committed,
// then stops it; the function may be called more than once.
func startPublisher(ctx context.Context, store *storage.Stores, sc scheduleScenario) (*publish.Publisher, func() error, error) {
	pc := publish.DefaultConfig()
	pc.Brokers = []string{sc.kafka}
	pc.Topic = sc.topic
	pc.Partitions = 6
	pub, err := publish.New(ctx, pc, store.Outbox, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		return nil, nil, err
	}
	l, ok, err := store.Leases.TryAcquire(ctx, "publisher", "bench", time.Hour)
	if err != nil || !ok {
		_ = pub.Close()
		return nil, nil, fmt.Errorf("acquire the publisher lease: ok=%v err=%v", ok, err)
	}
	var (
		stop      = make(chan struct{})
		done      = make(chan error, 1)
		once      sync.Once
		finishErr error
	)
	go func() { done <- pub.Run(ctx, lease.NewHeld(l, time.Now(), time.Hour), stop) }()
	return pub, func() error {
		once.Do(func() {
			close(stop)
			finishErr = errors.Join(<-done, pub.Close())
		})
		return finishErr
	}, nil
}

// readKafkaTimes reads back every event of the run from Kafka and returns
// each one's record timestamp by event id. Every outbox row must be there
// exactly once.
func readKafkaTimes(conn *pgx.Conn, sc scheduleScenario) (map[string]time.Time, error) {
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		return nil, err
	}
	recs := sc.read(sc.topic, n)
	at := make(map[string]time.Time, len(recs))
	for _, r := range recs {
		id := r.Header("ce_id")
		if _, dup := at[id]; dup {
			return nil, fmt.Errorf("%s: event %s is in Kafka twice", sc.name, id)
		}
		at[id] = r.Timestamp
	}
	if len(at) != n {
		return nil, fmt.Errorf("%s: Kafka holds %d events, the outbox %d", sc.name, len(at), n)
	}
	return at, nil
}

// measure reads the outbox and relates every event to the upstream change
// it reports. With kafkaAt (event id to Kafka record timestamp), delays run
// to Kafka; without, to the event's observation. With trace (a webhook
// scenario), delays run to the observation in the units of
// webhookResult.add, and the changes out of 1100 are measured to Kafka too,
// split by how they were seen.
func (r *scheduleResult) measure(conn *pgx.Conn, s *sim.BTS, ids []string, t0, t1 time.Time, kafkaAt map[string]time.Time, trace *webhookTrace) error {
	ctx := context.Background()
	rows, err := conn.Query(ctx, `SELECT payload, created_at FROM outbox ORDER BY seq`)
	if err != nil {
		return err
	}
	type obs struct {
		ev      event.Event
		created time.Time
	}
	byOrder := make(map[string][]obs, len(ids))
	var (
		payload []byte
		created time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&payload, &created}, func() error {
		ev, err := event.ParsePayload(payload)
		if err != nil {
			return err
		}
		byOrder[ev.OrderID] = append(byOrder[ev.OrderID], obs{ev, created})
		return nil
	})
	if err != nil {
		return err
	}

	up := func(d time.Duration) time.Duration { return time.Duration(float64(d) * r.sc.speed) }
	// Summed in hours: 100,000 lifecycles of two days overflow a Duration.
	var lifeHours float64
	for _, id := range ids {
		hist := s.History(id)
		born, end := hist[0].At, hist[len(hist)-1].At
		lifeHours += end.Sub(born).Hours()
		// Active time within the window, and changes upstream in it.
		if ov := minTime(end, t1).Sub(maxTime(born, t0)); ov > 0 {
			r.orderHours += up(ov).Hours()
		}
		for _, c := range hist[1:] {
			if c.At.After(t0) && !c.At.After(t1) {
				r.upstreamChanges++
			}
		}
		h := -1
		for k, o := range byOrder[id] {
			code, err := strconv.Atoi(o.ev.ProviderStatus)
			if err != nil {
				return err
			}
			next := slices.IndexFunc(hist[h+1:], func(c sim.Change) bool { return c.Code == code })
			if next < 0 {
				return fmt.Errorf("order %s: %d published out of order", id, code)
			}
			h += next + 1
			// The first event is the order's status when first polled, not
			// a change that was waited for. Changes are those that happened
			// in the window, whenever they were observed.
			if k == 0 || hist[h].At.Before(t0) || hist[h].At.After(t1) {
				continue
			}
			r.observedChanges++
			seen := o.ev.ObservedAt
			if kafkaAt != nil {
				at := kafkaAt[o.ev.ID]
				r.publish = append(r.publish, at.Sub(o.ev.ObservedAt))
				if trace == nil {
					seen = at
				}
			}
			d := up(seen.Sub(hist[h].At))
			if trace != nil {
				d = r.hooks.add(trace, id, hist[h-1], hist[h], o.ev.ObservedAt, kafkaAt[o.ev.ID], r.sc.speed)
			}
			r.all = append(r.all, d)
			if code == 1100 {
				r.into1100 = append(r.into1100, d)
			}
			if hist[h-1].Code == 1100 {
				r.outOf1100 = append(r.outOf1100, d)
			}
			r.commit = append(r.commit, o.created.Sub(o.ev.ObservedAt))
		}
	}
	r.meanLifecycle = up(time.Duration(lifeHours / float64(len(ids)) * float64(time.Hour)))
	for _, d := range [][]time.Duration{r.all, r.into1100, r.outOf1100, r.commit, r.publish, r.claimLags} {
		slices.Sort(d)
	}
	if r.hooks != nil {
		r.hooks.sort()
	}
	return nil
}

func printLifecycleTable(out *strings.Builder, rs []scheduleResult) {
	fmt.Fprintf(out, "%-19s %7s %10s %10s %9s %9s %9s %11s %11s %11s %11s %9s\n",
		"schedule", "orders", "calls/life", "changes", "seen", "p50 all", "p95 all",
		"p50 1100->", "p95 1100->", "p50 ->1100", "p95 ->1100", "wall")
	for _, r := range rs {
		fmt.Fprintf(out, "%-19s %7d %10.1f %10d %8.0f%% %9s %9s %11s %11s %11s %11s %9s\n",
			r.sc.name, r.sc.orders, r.callsPerLifecycle(), r.upstreamChanges, 100*float64(r.observedChanges)/float64(r.upstreamChanges),
			fmtDur(pct(r.all, 50)), fmtDur(pct(r.all, 95)), fmtDur(pct(r.outOf1100, 50)), fmtDur(pct(r.outOf1100, 95)),
			fmtDur(pct(r.into1100, 50)), fmtDur(pct(r.into1100, 95)), r.wall.Round(time.Second))
	}
	for _, r := range rs {
		fmt.Fprintf(out, "  %s: real claim lag p50 %s p95 %s (= %s / %s upstream), observed->outbox commit p50 %s p95 %s real\n",
			r.sc.name, fmtReal(pct(r.claimLags, 50)), fmtReal(pct(r.claimLags, 95)),
			fmtDur(time.Duration(float64(pct(r.claimLags, 50))*r.sc.speed)), fmtDur(time.Duration(float64(pct(r.claimLags, 95))*r.sc.speed)),
			fmtReal(pct(r.commit, 50)), fmtReal(pct(r.commit, 95)))
	}
}

func printScaleReport(out *strings.Builder, rs []scheduleResult, full *scheduleResult) {
	fmt.Fprintf(out, "\nScale: %d active orders per schedule (backdated over 45h, so spread over every status), steady-state windows, published to Kafka\n", rs[0].sc.orders)
	fmt.Fprintln(out, "(delays: upstream change to the Kafka record, in upstream time; a run at speed s multiplies its real costs by s)")
	fmt.Fprintf(out, "%-9s %6s %9s %8s %9s %9s %10s %9s %9s %9s %11s %11s %7s\n",
		"schedule", "speed", "window", "active", "req/s", "calls/oh", "calls/life", "changes", "p50 all", "p95 all",
		"p50 1100->", "p95 1100->", "n 1100")
	for _, r := range rs {
		window := time.Duration(float64(r.sc.window) * r.sc.speed)
		active := r.orderHours / window.Hours()
		fmt.Fprintf(out, "%-9s %6g %9s %8.0f %9.0f %9.2f %10.1f %9d %9s %9s %11s %11s %7d\n",
			r.sc.name, r.sc.speed, fmtDur(window), active, float64(r.calls)/window.Seconds(), float64(r.calls)/r.orderHours,
			r.callsPerLifecycle(), r.observedChanges, fmtDur(pct(r.all, 50)), fmtDur(pct(r.all, 95)),
			fmtDur(pct(r.outOf1100, 50)), fmtDur(pct(r.outOf1100, 95)), len(r.outOf1100))
	}
	for _, r := range rs {
		fmt.Fprintf(out, "  %s: mean lifecycle %s; %d of %d upstream changes in the window published; real claim lag p50 %s p95 %s max %s over %d claims;\n",
			r.sc.name, fmtDur(r.meanLifecycle), r.observedChanges, r.upstreamChanges,
			fmtReal(pct(r.claimLags, 50)), fmtReal(pct(r.claimLags, 95)), fmtReal(pct(r.claimLags, 100)), len(r.claimLags))
		fmt.Fprintf(out, "    observed->commit p50 %s p95 %s, observed->Kafka p50 %s p95 %s (real); first pass %s; Go heap after GC %.0f MiB (simulator included)",
			fmtReal(pct(r.commit, 50)), fmtReal(pct(r.commit, 95)), fmtReal(pct(r.publish, 50)), fmtReal(pct(r.publish, 95)),
			r.firstPass.Round(time.Second), r.heapMiB)
		if r.commits > 0 {
			fmt.Fprintf(out, "; %d recording transactions of %.0f polls, %.1fms each", r.commits, float64(r.recorded)/float64(r.commits), 1000*r.commitSecs/float64(r.commits))
		}
		fmt.Fprintln(out)
	}
	a, f := rs[0], rs[1]
	ratio := f.callsPerLifecycle() / a.callsPerLifecycle()
	pa, pf := pct(a.outOf1100, 95), pct(f.outOf1100, 95)
	verdict := "PASS"
	if ratio < 5 || pa > pf {
		verdict = "MISS"
	}
	fmt.Fprintf(out, "at %d orders adaptive makes %.1fx fewer calls per lifecycle (target >= 5x); p95 delay of changes out for delivery %s adaptive vs %s fixed (target: equal or better): %s\n",
		a.sc.orders, ratio, fmtDur(pa), fmtDur(pf), verdict)
	if full != nil {
		fmt.Fprintf(out, "  (part 1 measured %.1f calls per whole lifecycle for adaptive; the scale figure extrapolates a window)\n", full.callsPerLifecycle())
	}
}

// pct returns the p-th percentile of sorted d (p=100: the maximum).
func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(d)))) - 1
	return d[min(max(i, 0), len(d)-1)]
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Hour:
		return fmt.Sprintf("%.1fh", d.Hours())
	case d >= time.Minute:
		return fmt.Sprintf("%.1fm", d.Minutes())
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

func fmtReal(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

// longestInterval returns the longest interval of a schedule.
func longestInterval(iv bts.Intervals) time.Duration {
	longest := iv.For(-1) // the default
	for _, code := range []int{0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200, 1300, 1400} {
		longest = max(longest, iv.For(code))
	}
	return longest
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(tb, err, name)
	return n
}

func envFloat(tb testing.TB, name string, def float64) float64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	require.NoError(tb, err, name)
	return f
}

func envDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	require.NoError(tb, err, name)
	return d
}
