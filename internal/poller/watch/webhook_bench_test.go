package watch_test

// The webhook scenarios of BenchmarkBTSSchedule's part 1 (issue 13): the
// adaptive schedule, and the simulator calls a real doorbell.Doorbell on
// every status change (RunWebhooks; in-process, through handlerTransport,
// as the client reaches the simulator), whose ring callback is the
// scenario's watch.Poller.Ring. The doorbell writes its batches with the
// real watchlist.Store.Ring, the poller stretches its schedule while the
// webhooks flow, and the events go through the real publisher to an
// in-process Kafka broker.
//
// Units. The schedule's intervals are compressed by Speed, so a change the
// schedule finds is late by an interval's share of real time, reported in
// upstream time (real x Speed) as everywhere in part 1. A change a webhook
// rings is late by real costs that no compression shrinks (the call, the
// doorbell's 20 ms batch, a claim, the track call, a commit, the publish):
// multiplying those by Speed would be wrong, so they are reported as
// measured, in real time. The webhook's quiet time, a span of upstream
// time ("no webhook for 10 minutes": they stopped), is divided by Speed
// like the intervals; unscaled, 10 real minutes would be a week of upstream
// time at 1000x. With the webhooks flowing from start to end it changes
// nothing in the first hours of the run; at its tail, when few orders are
// left and webhooks come seldom, the scaled quiet time lets the schedule
// fall back to its normal intervals as it would upstream.
//
// How a change was seen. A change none of whose genuine calls the doorbell
// accepted (lost, or failed) was found by the schedule, the safety net,
// whatever made the poll that saw it. A delivered one came by webhook when
// the poll that saw it (the last claim of the order before the
// observation) was claimed after a ring of the order written after the
// change (a claim that started while the ring was being written counts as
// scheduled); otherwise the schedule found it first. That race is a
// compression artefact: the stretched 30 s interval of an order out for
// delivery is 120 ms of real time at 1000x, against tens of milliseconds
// for the webhook's path (and up to 300 ms more for a delayed call), while
// upstream the webhook wins nearly always. The changes the schedule wins
// are those whose webhook came late, so the delays measured on the changes
// seen by webhook understate the webhook's path. The estimate does not:
// it adds, over every pair, the change-to-acceptance time of every
// delivered change (measured for all, the race's losers included) and the
// acceptance-to-Kafka time of the changes seen by webhook (ingestd's part,
// which does not depend on when the call came; its first 20 ms, the
// doorbell's batch, still does a little).
//
// The production-equivalent delay of a change counts each in its own unit:
// changes whose webhook was delivered in real time (those the schedule
// found first at their real delay, shorter than the webhook's path would
// have been), the others in upstream time.

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/doorbell"
	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/poller/watch"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
	"github.com/ingestd/ingestd/internal/watchlist"
)

// benchWebhookToken is the webhook token of the simulated account and of
// the doorbell's account alike.
const benchWebhookToken = "bench-webhook-token-of-bts-default"

// webhookSetup is how a scenario's webhooks are delivered and how its
// schedule reacts to them.
type webhookSetup struct {
	// stretch is the schedule's WebhookStretch.
	stretch float64
	// faulty names the delivery's faults in the tables.
	faulty bool
	// delivery holds the faults (Loss, Duplicate, Forged, MaxDelay); the
	// run fills in where the calls go.
	delivery sim.BTSWebhookConfig
}

// schedule sets the webhook settings of a schedule compressed by speed:
// the stretch as given, and the default quiet time divided by speed like
// the intervals (see the file comment).
func (w *webhookSetup) schedule(s *bts.Schedule, speed float64) {
	s.WebhookStretch = w.stretch
	s.WebhookQuiet = time.Duration(float64(bts.DefaultWebhookQuiet) / speed)
}

// webhookScenarios returns part 1's webhook scenarios: one with clean
// delivery per stretch of INGESTD_BTS_BENCH_WEBHOOK_STRETCH (default 4,
// the default stretch), and unless INGESTD_BTS_BENCH_WEBHOOK_FAULTY=0 the
// issue's faulty delivery at the default stretch, as in the daemon's
// acceptance test: 20% of the changes' calls lost, 10% sent twice, each
// delayed up to 300 ms of real time (network delay, which Speed does not
// scale), and 2% forged. Each publishes to its own topic on an in-process
// Kafka broker.
func webhookScenarios(tb testing.TB, orders int, speed float64, intervals bts.Intervals) []scheduleScenario {
	if orders <= 0 {
		return nil
	}
	var setups []*webhookSetup
	for f := range strings.SplitSeq(envString("INGESTD_BTS_BENCH_WEBHOOK_STRETCH", strconv.FormatFloat(bts.DefaultWebhookStretch, 'g', -1, 64)), ",") {
		stretch, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || stretch < 1 {
			tb.Fatalf("INGESTD_BTS_BENCH_WEBHOOK_STRETCH: %q is not a stretch factor of at least 1", f)
		}
		setups = append(setups, &webhookSetup{stretch: stretch})
	}
	if envInt(tb, "INGESTD_BTS_BENCH_WEBHOOK_FAULTY", 1) != 0 {
		setups = append(setups, &webhookSetup{stretch: bts.DefaultWebhookStretch, faulty: true, delivery: sim.BTSWebhookConfig{
			Loss: 0.2, Duplicate: 0.1, Forged: 0.02, MaxDelay: 300 * time.Millisecond,
		}})
	}
	kc := kafkatest.Start(tb)
	var out []scheduleScenario
	for i, w := range setups {
		name := fmt.Sprintf("+webhooks x%g", w.stretch)
		if w.faulty {
			name += " faulty"
		}
		out = append(out, scheduleScenario{
			name: name, orders: orders, speed: speed, intervals: intervals, webhooks: w,
			kafka: kc.Addr, topic: fmt.Sprintf("bts-webhooks-%d", i), read: kafkaReader(kc.Addr),
		})
	}
	return out
}

func envString(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
}

// kafkaReader reads a topic from the start like kafkatest.ReadTopic, but
// may run off the test's goroutine (part 1 runs its scenarios side by
// side): a failure shows as records missing, which readKafkaTimes reports.
// The broker is a single in-process one, so no partition is rewound.
func kafkaReader(addr string) func(topic string, want int) []kafkatest.Record {
	return func(topic string, want int) []kafkatest.Record {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
		if err != nil {
			return nil
		}
		defer cl.Close()
		var recs []kafkatest.Record
		for deadline := time.Now().Add(2 * time.Minute); len(recs) < want && time.Now().Before(deadline); {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			fetches := cl.PollFetches(ctx)
			cancel()
			fetches.EachRecord(func(r *kgo.Record) {
				h := make(map[string]string, len(r.Headers))
				for _, kv := range r.Headers {
					h[kv.Key] = string(kv.Value)
				}
				recs = append(recs, kafkatest.Record{Partition: r.Partition, Offset: r.Offset, Key: string(r.Key), Value: r.Value, Headers: h, Timestamp: r.Timestamp})
			})
		}
		return recs
	}
}

// webhookRun is the webhook side of one scenario's run: the doorbell, the
// simulator's delivery loop, and what they did.
type webhookRun struct {
	setup *webhookSetup
	trace *webhookTrace
	// bell is set by start, before send starts the calls.
	bell   *doorbell.Doorbell
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func newWebhookRun(sc scheduleScenario) *webhookRun {
	return &webhookRun{setup: sc.webhooks, trace: newWebhookTrace()}
}

// simConfig is the simulator's webhook configuration: the setup's faults,
// calls to the doorbell in-process, with the account's token.
func (w *webhookRun) simConfig() sim.BTSWebhookConfig {
	c := w.setup.delivery
	c.URL = "http://ingestd.bench" + doorbell.DefaultPath
	c.Token = benchWebhookToken
	c.Client = &http.Client{Transport: handlerTransport{http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.bell.ServeHTTP(rw, r)
	})}}
	c.OnCall = w.trace.called
	return c
}

// start starts the doorbell: it writes to wl and rings p.
func (w *webhookRun) start(ctx context.Context, wl *watchlist.Store, p *watch.Poller) error {
	dc := doorbell.DefaultConfig()
	// Lifecycles compressed 1000 times call thousands of times a second.
	dc.Rate = 1e6
	accounts := []doorbell.Account{{SourceID: btsSrc, Token: secret.New(benchWebhookToken)}}
	bell, err := doorbell.New(dc, func() []doorbell.Account { return accounts }, ringTrace{wl, w.trace},
		func(string) { p.Ring() }, prometheus.NewRegistry(), zap.NewNop())
	if err != nil {
		return err
	}
	w.bell = bell
	return bell.Start(ctx)
}

// send starts the simulator's calls.
func (w *webhookRun) send(ctx context.Context, s *sim.BTS) {
	ctx, w.cancel = context.WithCancel(ctx)
	w.done = make(chan error, 1)
	go func() { w.done <- s.RunWebhooks(ctx) }()
}

// stop ends the calls, then the doorbell (which writes what it queued).
// It may be called more than once.
func (w *webhookRun) stop() {
	w.once.Do(func() {
		if w.cancel != nil {
			w.cancel()
			<-w.done
		}
		if w.bell != nil {
			w.bell.Stop()
		}
	})
}

// result is what the delivery did; measure adds the changes.
func (w *webhookRun) result(s *sim.BTS) *webhookResult {
	r := &webhookResult{
		setup: w.setup,
		sent:  s.WebhooksSent(), lost: s.WebhooksLost(), duplicated: s.WebhooksDuplicated(),
		forged: s.WebhooksForged(), failed: s.WebhooksFailed(),
	}
	r.polls, r.rungPolls = w.trace.polls()
	return r
}

// ringTrace is the doorbell's watch-list, recording when each order's
// ring was written.
type ringTrace struct {
	wl    doorbell.Watchlist
	trace *webhookTrace
}

func (r ringTrace) Ring(ctx context.Context, sourceID string, orderIDs []string, autotrack bool, calls int) (watchlist.Rang, error) {
	rang, err := r.wl.Ring(ctx, sourceID, orderIDs, autotrack, calls)
	if err == nil {
		r.trace.rang(orderIDs, time.Now())
	}
	return rang, err
}

// webhookTrace records, per order, when its rings were written and when
// its claims started (each in time order: one goroutine writes each), and
// when the first genuine call of each change was accepted.
type webhookTrace struct {
	mu       sync.Mutex
	rings    map[string][]time.Time
	claims   map[string][]time.Time
	accepted map[change]time.Time
}

// change is one status of one order.
type change struct {
	orderID string
	code    int
}

func newWebhookTrace() *webhookTrace {
	return &webhookTrace{rings: map[string][]time.Time{}, claims: map[string][]time.Time{}, accepted: map[change]time.Time{}}
}

func (t *webhookTrace) rang(ids []string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range ids {
		t.rings[id] = append(t.rings[id], at)
	}
}

func (t *webhookTrace) claimed(claims []watchlist.Claim, started time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range claims {
		t.claims[c.OrderID] = append(t.claims[c.OrderID], started)
	}
}

// called is the simulator's OnCall: it keeps when the first genuine call
// of each change was accepted (in-process, the call is answered when it is
// sent).
func (t *webhookTrace) called(c sim.BTSWebhookCall) {
	if c.Forgery != sim.BTSWebhookGenuine || c.Err != nil || c.Status < 200 || c.Status > 299 {
		return
	}
	k := change{strconv.FormatInt(c.OrderID, 10), c.Code}
	t.mu.Lock()
	defer t.mu.Unlock()
	if at, ok := t.accepted[k]; !ok || c.SentAt.Before(at) {
		t.accepted[k] = c.SentAt
	}
}

// How a change was seen.
const (
	// seenByWebhook: its webhook was delivered, and the poll that saw it
	// was claimed after a ring of the order written after the change.
	seenByWebhook = iota
	// seenFirstBySchedule: its webhook was delivered, but a poll claimed
	// before any such ring saw it (the race of the file comment).
	seenFirstBySchedule
	// seenBySchedule: no call of it was delivered (lost, or failed): the
	// safety net, whatever made the poll that saw it.
	seenBySchedule
)

// compareTimes orders times for slices.BinarySearchFunc.
func compareTimes(a, b time.Time) int { return a.Compare(b) }

// how tells how the change of orderID to c, observed at observed, was
// seen, and when its first genuine call was accepted.
func (t *webhookTrace) how(orderID string, c sim.Change, observed time.Time) (way int, accepted time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	accepted, ok := t.accepted[change{orderID, c.Code}]
	if !ok {
		return seenBySchedule, accepted
	}
	claims := t.claims[orderID]
	// The observing poll's claim: the last that started before the
	// observation.
	if j, _ := slices.BinarySearchFunc(claims, observed, compareTimes); j > 0 {
		claim := claims[j-1]
		rings := t.rings[orderID]
		k, _ := slices.BinarySearchFunc(rings, c.At, compareTimes)
		if k < len(rings) && !rings[k].After(claim) {
			return seenByWebhook, accepted
		}
	}
	return seenFirstBySchedule, accepted
}

// polls counts the claims, and those that a ring made due: a ring was
// written after the order's previous claim started and before this one
// (an order's first claim, at the start, was due anyway).
func (t *webhookTrace) polls() (all, rung int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, claims := range t.claims {
		all += len(claims)
		rings := t.rings[id]
		for j := 1; j < len(claims); j++ {
			k, _ := slices.BinarySearchFunc(rings, claims[j-1], compareTimes)
			// Past rings equal to the previous claim's start.
			for k < len(rings) && !rings[k].After(claims[j-1]) {
				k++
			}
			if k < len(rings) && !rings[k].After(claims[j]) {
				rung++
			}
		}
	}
	return all, rung
}

// webhookResult is what a webhook scenario measured besides the common
// figures.
type webhookResult struct {
	setup *webhookSetup
	// The simulator's delivery counters.
	sent, lost, duplicated, forged, failed int64
	// polls are the claims of the whole run; rungPolls those a ring made
	// due.
	polls, rungPolls int
	// Changes out of 1100 (orders out for delivery, to 1200) by how they
	// were seen.
	ways [3]int
	// hookKafka, hookSeen and hookPath: seen by webhook, change to its
	// Kafka record and to its observation, and the webhook's acceptance to
	// the Kafka record, in real time.
	hookKafka, hookSeen, hookPath []time.Duration
	// accepted: every delivered change (by webhook or first by schedule),
	// change to its first genuine call's acceptance, in real time.
	accepted []time.Duration
	// raceSeen: seen first by the schedule although delivered, change to
	// observation, real time.
	raceSeen []time.Duration
	// schedSeen: seen by schedule, no call delivered, change to
	// observation, upstream time.
	schedSeen []time.Duration
}

// add records the change from prev to c of orderID, observed at observed
// and on Kafka at kafka, and returns its production-equivalent delay to
// the observation: in real time when its webhook was delivered, in
// upstream time (real x speed) otherwise.
func (r *webhookResult) add(t *webhookTrace, orderID string, prev, c sim.Change, observed, kafka time.Time, speed float64) time.Duration {
	way, accepted := t.how(orderID, c, observed)
	d := observed.Sub(c.At)
	if way == seenBySchedule {
		d = time.Duration(float64(d) * speed)
	}
	if prev.Code != 1100 {
		return d
	}
	r.ways[way]++
	switch way {
	case seenByWebhook:
		r.hookKafka = append(r.hookKafka, kafka.Sub(c.At))
		r.hookSeen = append(r.hookSeen, d)
		r.hookPath = append(r.hookPath, kafka.Sub(accepted))
	case seenFirstBySchedule:
		r.raceSeen = append(r.raceSeen, d)
	default:
		r.schedSeen = append(r.schedSeen, d)
	}
	if way != seenBySchedule {
		r.accepted = append(r.accepted, accepted.Sub(c.At))
	}
	return d
}

func (r *webhookResult) sort() {
	for _, d := range [][]time.Duration{r.hookKafka, r.hookSeen, r.hookPath, r.accepted, r.raceSeen, r.schedSeen} {
		slices.Sort(d)
	}
}

// estimate is the p-th percentile of change to Kafka by webhook for every
// delivered change out of 1100: of accepted + path over every pair.
func (r *webhookResult) estimate(p float64) time.Duration {
	return pctSum(r.accepted, r.hookPath, p)
}

// pctSum returns the p-th percentile of x+y over every pair of sorted a
// and b.
func pctSum(a, b []time.Duration, p float64) time.Duration {
	if len(a) == 0 || len(b) == 0 {
		return 0
	}
	rank := int64(math.Ceil(p / 100 * float64(len(a)) * float64(len(b))))
	// The smallest s with at least rank pairs summing to s or less.
	lo, hi := a[0]+b[0], a[len(a)-1]+b[len(b)-1]
	for lo < hi {
		mid := lo + (hi-lo)/2
		var n int64
		j := len(b) - 1
		for _, x := range a {
			for j >= 0 && x+b[j] > mid {
				j--
			}
			n += int64(j + 1)
		}
		if n >= rank {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// printWebhookReport prints the webhook scenarios against the adaptive
// schedule of the same run.
func printWebhookReport(out *strings.Builder, a scheduleResult, rs []scheduleResult) {
	fmt.Fprintf(out, "\nBTS webhooks (issue 13): the adaptive schedule, the simulator calling a real doorbell on every change; %d orders each, side by side with the rows above\n", rs[0].sc.orders)
	fmt.Fprintln(out, "(webhook rows above: delays production-equivalent: changes whose webhook was delivered in real time, the others in upstream time)")
	fmt.Fprintln(out, "changes out for delivery (1100 -> 1200), n, by how they were seen: hook (by webhook), race (first by the schedule, webhook delivered), lost (no call delivered: the schedule);")
	fmt.Fprintln(out, "hook->K: change to Kafka record of those seen by webhook, real time; est->K: change to Kafka by webhook estimated for every delivered change, real time; lost: change to observation, upstream time")
	fmt.Fprintf(out, "%-19s %10s %8s %9s %10s %6s %6s %6s %6s %11s %11s %10s %10s %10s %10s\n",
		"scenario", "calls/life", "vs adapt", "rung/life", "hooks/life", "n", "hook", "race", "lost",
		"p50 hook->K", "p95 hook->K", "p95 est->K", "p95 lost", "p50 equiv", "p95 equiv")
	for _, r := range rs {
		h := r.hooks
		fmt.Fprintf(out, "%-19s %10.1f %7.2fx %9.1f %10.1f %6d %6d %6d %6d %11s %11s %10s %10s %10s %10s\n",
			r.sc.name, r.callsPerLifecycle(), r.callsPerLifecycle()/a.callsPerLifecycle(),
			float64(h.rungPolls)/float64(r.sc.orders), float64(h.sent)/float64(r.sc.orders),
			len(r.outOf1100), h.ways[seenByWebhook], h.ways[seenFirstBySchedule], h.ways[seenBySchedule],
			fmtReal(pct(h.hookKafka, 50)), fmtReal(pct(h.hookKafka, 95)), fmtReal(h.estimate(95)),
			fmtDur(pct(h.schedSeen, 95)), fmtEquiv(pct(r.outOf1100, 50)), fmtEquiv(pct(r.outOf1100, 95)))
	}
	for _, r := range rs {
		h := r.hooks
		fmt.Fprintf(out, "  %s: stretch %g, quiet %s real (10m upstream); calls sent %d, lost %d, duplicated %d, forged %d, failed %d; %d polls, %d rung by webhooks;\n",
			r.sc.name, h.setup.stretch, fmtReal(time.Duration(float64(bts.DefaultWebhookQuiet)/r.sc.speed)), h.sent, h.lost, h.duplicated, h.forged, h.failed, h.polls, h.rungPolls)
		fmt.Fprintf(out, "    1100->1200, real: change->call accepted p50 %s p95 %s (every delivered); call->Kafka p50 %s p95 %s, change->observed p50 %s p95 %s, change->Kafka max %s (by webhook); first by schedule: change->observed p50 %s p95 %s",
			fmtReal(pct(h.accepted, 50)), fmtReal(pct(h.accepted, 95)), fmtReal(pct(h.hookPath, 50)), fmtReal(pct(h.hookPath, 95)),
			fmtReal(pct(h.hookSeen, 50)), fmtReal(pct(h.hookSeen, 95)), fmtReal(pct(h.hookKafka, 100)),
			fmtReal(pct(h.raceSeen, 50)), fmtReal(pct(h.raceSeen, 95)))
		if len(h.schedSeen) > 0 {
			fmt.Fprintf(out, "; upstream: lost p50 %s p95 %s", fmtDur(pct(h.schedSeen, 50)), fmtDur(pct(h.schedSeen, 95)))
		}
		fmt.Fprintln(out)
	}
	for _, r := range rs {
		verdict := "PASS"
		if r.callsPerLifecycle() > a.callsPerLifecycle() {
			verdict = "MISS"
		}
		fmt.Fprintf(out, "%s: %.1f calls per lifecycle vs %.1f without webhooks (target: no more): %s; p95 1100->1200 to Kafka by webhook %s measured, %s estimated (real; target <= 2s) vs %s without webhooks (upstream, to observation); production-equivalent p95 %s\n",
			r.sc.name, r.callsPerLifecycle(), a.callsPerLifecycle(), verdict, fmtReal(pct(r.hooks.hookKafka, 95)), fmtReal(r.hooks.estimate(95)),
			fmtDur(pct(a.outOf1100, 95)), fmtEquiv(pct(r.outOf1100, 95)))
	}
}

// reportWebhookMetrics reports the webhook scenarios' headline figures.
func reportWebhookMetrics(tb testing.TB, rs []scheduleResult) {
	b, ok := tb.(*testing.B)
	if !ok {
		return
	}
	for i, r := range rs {
		b.ReportMetric(r.callsPerLifecycle(), fmt.Sprintf("webhooks%d-calls/lifecycle", i))
		b.ReportMetric(float64(pct(r.hooks.hookKafka, 95))/float64(time.Millisecond), fmt.Sprintf("webhooks%d-p95-1100-kafka-ms", i))
	}
}

// fmtEquiv prints a production-equivalent delay: milliseconds below a
// second.
func fmtEquiv(d time.Duration) string {
	if d < time.Second {
		return fmtReal(d)
	}
	return fmtDur(d)
}

func TestPctSum(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		d := make([]time.Duration, len(ns))
		for i, n := range ns {
			d[i] = time.Duration(n) * time.Millisecond
		}
		return d
	}
	a, b := ms(1, 2), ms(10, 20)
	for p, want := range map[float64]int{25: 11, 50: 12, 75: 21, 100: 22} {
		if got := pctSum(a, b, p); got != time.Duration(want)*time.Millisecond {
			t.Errorf("p%g: got %s, want %dms", p, got, want)
		}
	}
	// Against every pair summed and sorted.
	a, b = ms(0, 3, 3, 7, 40, 41, 90), ms(5, 6, 6, 100, 250)
	var all []time.Duration
	for _, x := range a {
		for _, y := range b {
			all = append(all, x+y)
		}
	}
	slices.Sort(all)
	for _, p := range []float64{1, 10, 50, 90, 95, 99, 100} {
		if got, want := pctSum(a, b, p), pct(all, p); got != want {
			t.Errorf("p%g: got %s, want %s", p, got, want)
		}
	}
	if pctSum(nil, b, 95) != 0 {
		t.Error("no pairs: want 0")
	}
}
