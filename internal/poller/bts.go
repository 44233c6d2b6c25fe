package poller

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/upstream"
	"github.com/ingestd/ingestd/internal/watchlist"
)

// BTSStore is what the BTS watch-list poller needs of PostgreSQL.
type BTSStore interface {
	ClaimDue(ctx context.Context, sourceID string, limit int, claimFor time.Duration) ([]watchlist.Claim, error)
	NextDue(ctx context.Context, sourceID string) (time.Duration, bool, error)
	RecordObservations(ctx context.Context, sourceID string, obs []watchlist.Observation) ([]watchlist.Outcome, outbox.Appended, error)
	Reschedule(ctx context.Context, sourceID string, rs []watchlist.Retry) error
	ReleaseClaims(ctx context.Context, sourceID string, claims []watchlist.Claim) error
	Count(ctx context.Context, sourceID string) (map[watchlist.State]int64, error)
	SaveStatuses(ctx context.Context, sourceID string, defs []watchlist.Status) error
	Statuses(ctx context.Context, sourceID string) ([]watchlist.Status, error)
}

// BTSClient reads BTS: the status dictionary and one order's status.
type BTSClient interface {
	Statuses(ctx context.Context) ([]bts.StatusDef, error)
	Track(ctx context.Context, orderID string) (bts.Track, error)
}

const (
	// btsJitter spreads polls by ±10% of their interval, so that orders
	// added together do not stay in lockstep and hit BTS in bursts.
	btsJitter = 0.1
	// btsCountsInterval is how often the watch-list is counted for the
	// ingestd_bts_orders gauge.
	btsCountsInterval = 30 * time.Second
	// btsDictionaryRetry bounds the wait before fetching the dictionary
	// again after a failed fetch.
	btsDictionaryRetry = time.Minute
	// btsInFlightWindow is how much of the request budget is claimed ahead,
	// so that the next requests' orders are at hand when the limiter lets
	// them go.
	btsInFlightWindow = 250 * time.Millisecond
	// maxBTSInFlight bounds claimed but unrecorded orders.
	maxBTSInFlight = 2000
)

// BTSPoller polls the orders of a BTS watch-list when they are due and
// records each status change with its event in one transaction.
//
// Its goroutines form a pipeline: a claimer claims due orders in batches
// (never more than are in flight, so the watch-list is never loaded whole),
// Concurrency workers poll them through the global rate limiter, and a
// committer records the results in batched transactions and wakes the
// publisher. Several replicas may run it on one watch-list: claims are
// disjoint and every write is a compare-and-set (see internal/watchlist).
type BTSPoller struct {
	cfg         BTSConfig
	client      BTSClient
	store       BTSStore
	halts       Halts
	outbox      Outbox
	log         *zap.Logger
	m           *Metrics
	bm          *BTSMetrics
	lim         *rate.Limiter
	maxInFlight int
	gate        *btsGate
	now         func() time.Time

	dict atomic.Pointer[btsDictionary]
	// kick wakes the claimer early when a batch rescheduled an order to be
	// due before the claimer would look again; wakeAt is when the sleeping
	// claimer plans to look (unix nanoseconds, 0 while it is not asleep).
	kick   chan struct{}
	wakeAt atomic.Int64

	// backlog pauses claiming while the outbox backlog is over MaxBacklog;
	// only the claimer uses it.
	backlog *backlogBound

	haltOnce  sync.Once
	haltCause error
	stop      context.CancelFunc
	started   atomic.Bool
}

// NewBTS returns a BTS poller; Run starts it. Its own metrics are
// registered on the registry of m.
func NewBTS(cfg BTSConfig, client BTSClient, store BTSStore, halts Halts, backlog Backlog, outbox Outbox, log *zap.Logger, m *Metrics) (*BTSPoller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bts poller: %w", err)
	}
	inFlight := min(2*cfg.Concurrency+int(cfg.Rate*btsInFlightWindow.Seconds())+1, maxBTSInFlight)
	p := &BTSPoller{
		cfg:         cfg,
		client:      client,
		store:       store,
		halts:       halts,
		outbox:      outbox,
		log:         log.With(zap.String("source", cfg.SourceID), zap.String("account", cfg.Account)),
		m:           m,
		bm:          NewBTSMetrics(m.reg),
		lim:         rate.NewLimiter(rate.Limit(cfg.Rate), max(1, min(cfg.Concurrency, int(cfg.Rate)))),
		maxInFlight: inFlight,
		gate:        newBTSGate(cfg.BackoffInitial, cfg.BackoffMax),
		now:         time.Now,
		kick:        make(chan struct{}, 1),
	}
	p.backlog = newBacklogBound(cfg.MaxBacklog, backlog, m, cfg.SourceID, p.log)
	p.dict.Store(&btsDictionary{})
	if as, ok := client.(interface{ AuthStats() bts.AuthStats }); ok {
		// The client counts its logins and refreshes; exporting them shows
		// token trouble before it becomes a halt.
		for kind, get := range map[string]func(bts.AuthStats) int64{
			"login":           func(s bts.AuthStats) int64 { return s.Logins },
			"refresh":         func(s bts.AuthStats) int64 { return s.Refreshes },
			"refresh_failure": func(s bts.AuthStats) int64 { return s.RefreshFailures },
		} {
			register(m.reg, prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name:        "ingestd_bts_auth_total",
				Help:        "BTS logins, token refreshes and refreshes that failed and fell back to a login.",
				ConstLabels: prometheus.Labels{"source": cfg.SourceID, "kind": kind},
			}, func() float64 { return float64(get(as.AuthStats())) }))
		}
	}
	return p, nil
}

// btsResult is what became of one claimed order, for the committer.
type btsResult struct {
	claim watchlist.Claim
	// Exactly one of obs, retry and release applies.
	obs     *watchlist.Observation
	retry   *watchlist.Retry
	release bool
}

// Run polls until ctx is cancelled (returning nil) or the source halts on an
// error only an operator can fix (returning a *HaltError). Transient
// failures are retried with backoff, forever; observations already fetched
// when ctx ends are still recorded, within CommitTimeout. Run may be called
// once.
func (p *BTSPoller) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return errors.New("bts poller: Run called twice")
	}
	src := p.cfg.SourceID
	p.m.halted.WithLabelValues(src).Set(0)
	p.m.backoff.WithLabelValues(src).Set(0)
	p.m.paused.WithLabelValues(src).Set(0)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	p.stop = stop

	p.loadDictionary(runCtx)
	if err := p.refreshDictionary(runCtx); err != nil && upstream.ClassOf(err).Halts() {
		return p.halt(ctx, err)
	}
	p.log.Info("polling BTS watch-list",
		zap.Stringer("intervals", p.cfg.Intervals), zap.Float64("rate", p.cfg.Rate),
		zap.Int("concurrency", p.cfg.Concurrency), zap.Int("max_in_flight", p.maxInFlight))

	var (
		work    = make(chan watchlist.Claim)
		results = make(chan btsResult, p.maxInFlight)
		// slots holds one token per claimed order not yet recorded.
		slots   = make(chan struct{}, p.maxInFlight)
		workers sync.WaitGroup
		loops   errgroup.Group
	)
	loops.Go(func() error { p.dictionaryLoop(runCtx); return nil })
	loops.Go(func() error { p.countLoop(runCtx); return nil })
	loops.Go(func() error { p.claimLoop(runCtx, slots, work, results); return nil })
	for range p.cfg.Concurrency {
		workers.Go(func() {
			for c := range work {
				results <- p.poll(runCtx, c)
			}
		})
	}
	committed := make(chan struct{})
	go func() {
		defer close(committed)
		p.commitLoop(ctx, results, slots)
	}()

	// The claimer closes work when runCtx ends; the workers then finish the
	// orders they hold; after them nothing sends results, so the committer
	// can drain and stop.
	_ = loops.Wait()
	workers.Wait()
	close(results)
	<-committed

	if p.haltCause != nil {
		return p.halt(ctx, p.haltCause)
	}
	return nil
}

// triggerHalt stops the poller because of err, which needs an operator.
func (p *BTSPoller) triggerHalt(err error) {
	p.haltOnce.Do(func() {
		p.haltCause = err
		p.stop()
	})
}

// halt records the halt and returns the error that stops this source.
func (p *BTSPoller) halt(ctx context.Context, cause error) error {
	src := p.cfg.SourceID
	p.m.halted.WithLabelValues(src).Set(1)
	p.log.Error("BTS source halted; fix the cause (credentials, base URL) and restart", zap.Error(cause))
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.CommitTimeout)
	defer cancel()
	if err := p.halts.Halt(hctx, src, cause.Error()); err != nil {
		p.log.Error("could not record the halt in PostgreSQL", zap.Error(err))
	}
	return &HaltError{SourceID: src, Err: cause}
}

// claimLoop claims due orders while there is room in flight and hands them
// to the workers. It closes work when ctx ends.
func (p *BTSPoller) claimLoop(ctx context.Context, slots chan struct{}, work chan<- watchlist.Claim, results chan<- btsResult) {
	defer close(work)
	src := p.cfg.SourceID
	bo := newBackoff(p.cfg.BackoffInitial, p.cfg.BackoffMax)
	for {
		// Wait for room for one order, then take what else is free.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		if ok, err := p.backlog.room(ctx); !ok {
			<-slots
			wait := p.cfg.IdlePoll
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				wait = bo.NextBackOff()
				p.log.Warn("checking the outbox backlog failed; retrying", zap.Error(err), zap.Duration("backoff", wait))
			}
			if !sleepCtx(ctx, wait, nil) {
				return
			}
			continue
		}
		n := 1
	fill:
		for n < p.maxInFlight {
			select {
			case slots <- struct{}{}:
				n++
			default:
				break fill
			}
		}
		claims, err := p.store.ClaimDue(ctx, src, n, p.cfg.ClaimTimeout)
		for range n - len(claims) {
			<-slots
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d := bo.NextBackOff()
			p.log.Warn("claiming due BTS orders failed; retrying", zap.Error(err), zap.Duration("backoff", d))
			if !sleepCtx(ctx, d, nil) {
				return
			}
			continue
		}
		bo.Reset()
		for i, c := range claims {
			p.bm.claimLag.WithLabelValues(src).Observe(c.Lag.Seconds())
			select {
			case work <- c:
			case <-ctx.Done():
				// Give the rest back unpolled; the committer releases them.
				for _, rest := range claims[i:] {
					results <- btsResult{claim: rest, release: true}
				}
				return
			}
		}
		if len(claims) == n {
			continue
		}
		// Everything due is taken: sleep until the next order is due, or
		// IdlePoll at most, or a kick.
		wait := p.cfg.IdlePoll
		if d, ok, err := p.store.NextDue(ctx, src); err == nil && ok {
			wait = min(max(d, 0), wait)
		}
		if wait <= 0 {
			continue
		}
		p.wakeAt.Store(time.Now().Add(wait).UnixNano())
		live := sleepCtx(ctx, wait, p.kick)
		p.wakeAt.Store(0)
		if !live {
			return
		}
	}
}

// poll polls one claimed order and returns what to record.
func (p *BTSPoller) poll(ctx context.Context, c watchlist.Claim) btsResult {
	src := p.cfg.SourceID
	if ctx.Err() != nil || p.gate.wait(ctx) != nil || p.lim.Wait(ctx) != nil {
		return btsResult{claim: c, release: true}
	}
	t, err := p.client.Track(ctx, c.OrderID)
	observed := p.now()
	if err != nil {
		if ctx.Err() != nil {
			return btsResult{claim: c, release: true}
		}
		class := upstream.ClassOf(err)
		p.m.requests.WithLabelValues(src, class.String()).Inc()
		p.m.errors.WithLabelValues(src, class.String()).Inc()
		switch {
		case class == upstream.NotFound:
			return btsResult{claim: c, obs: &watchlist.Observation{OrderID: c.OrderID, ChangeCount: c.ChangeCount, Token: c.Token, NotFound: true}}
		case class.Halts():
			p.triggerHalt(err)
			// The order keeps the error and is due again at once when the
			// source is restarted.
			return btsResult{claim: c, retry: &watchlist.Retry{OrderID: c.OrderID, ChangeCount: c.ChangeCount, Token: c.Token, Error: err.Error()}}
		default:
			wait := p.gate.fail(upstream.RetryAfterOf(err), p.now())
			p.m.backoff.WithLabelValues(src).Set(wait.Seconds())
			p.bm.polls.WithLabelValues(src, class.String()).Inc()
			p.log.Debug("polling a BTS order failed; it stays due after a backoff",
				zap.String("order_id", c.OrderID), zap.Error(err), zap.Duration("backoff", wait))
			return btsResult{claim: c, retry: &watchlist.Retry{OrderID: c.OrderID, ChangeCount: c.ChangeCount, Token: c.Token, After: wait, Error: err.Error()}}
		}
	}
	if p.gate.ok() {
		p.m.backoff.WithLabelValues(src).Set(0)
		p.log.Info("BTS answers again")
	}
	p.m.requests.WithLabelValues(src, "ok").Inc()

	dict := p.dict.Load()
	name := dict.name(t.Code)
	if name == "" {
		name = t.Name
	}
	obs := &watchlist.Observation{
		OrderID: c.OrderID, ChangeCount: c.ChangeCount, Token: c.Token,
		Code: t.Code, Name: name, NextPollIn: p.interval(t.Code),
	}
	if c.HasStatus && c.StatusCode == t.Code {
		return btsResult{claim: c, obs: obs}
	}
	row, terminal, err := p.event(t, name, c.ChangeCount+1, observed)
	if err != nil {
		// BTS answered something that cannot be published (an invalid raw
		// object, say): retry rather than skip the change.
		wait := p.gate.fail(0, p.now())
		p.m.errors.WithLabelValues(src, upstream.Retry.String()).Inc()
		p.log.Warn("a BTS status could not be normalized; retrying", zap.String("order_id", c.OrderID), zap.Error(err))
		return btsResult{claim: c, retry: &watchlist.Retry{OrderID: c.OrderID, ChangeCount: c.ChangeCount, Token: c.Token, After: wait, Error: err.Error()}}
	}
	obs.Event, obs.Terminal = row, terminal
	return btsResult{claim: c, obs: obs}
}

// event builds the outbox row of a status change.
func (p *BTSPoller) event(t bts.Track, name string, changeCount int64, observed time.Time) (*outbox.Row, bool, error) {
	ev, err := bts.Normalize(p.cfg.Account, t, name, changeCount, observed)
	if err != nil {
		return nil, false, err
	}
	msg, err := ev.Message()
	if err != nil {
		return nil, false, fmt.Errorf("encode event of bts order %s: %w", t.OrderID, err)
	}
	return &outbox.Row{Partition: p.outbox.Partition(msg.Key), SourceID: p.cfg.SourceID, Msg: msg}, ev.Terminal, nil
}

// interval is the jittered wait before polling an order seen at code again.
func (p *BTSPoller) interval(code int) time.Duration {
	d := p.cfg.Intervals.For(code)
	return time.Duration(float64(d) * (1 - btsJitter + 2*btsJitter*rand.Float64()))
}

// commitLoop records results in batches until results is closed. It uses a
// context detached from cancellation, so that what was fetched before
// shutdown is recorded, each batch within CommitTimeout.
func (p *BTSPoller) commitLoop(ctx context.Context, results <-chan btsResult, slots <-chan struct{}) {
	for r := range results {
		batch := []btsResult{r}
	drain:
		for len(batch) < p.maxInFlight {
			select {
			case r, ok := <-results:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.CommitTimeout)
		p.commit(cctx, ctx, batch)
		cancel()
		for range batch {
			<-slots
		}
	}
}

// commit records one batch: observations in one transaction, then failed
// polls' reschedules and released claims. A write that fails is retried
// with backoff until cctx ends; after that the orders come back when their
// claims end, so nothing is lost, only delayed.
func (p *BTSPoller) commit(cctx, runCtx context.Context, batch []btsResult) {
	src := p.cfg.SourceID
	var (
		obs      []watchlist.Observation
		claims   []watchlist.Claim
		retries  []watchlist.Retry
		releases []watchlist.Claim
		// soonest is the earliest any order of the batch is due again.
		soonest = p.cfg.IdlePoll
	)
	for _, r := range batch {
		switch {
		case r.obs != nil:
			obs = append(obs, *r.obs)
			claims = append(claims, r.claim)
			if !r.obs.NotFound && !r.obs.Terminal {
				soonest = min(soonest, r.obs.NextPollIn)
			}
		case r.retry != nil:
			retries = append(retries, *r.retry)
			soonest = min(soonest, r.retry.After)
		default:
			releases = append(releases, r.claim)
		}
	}

	if len(obs) > 0 {
		var (
			outcomes []watchlist.Outcome
			commit   outbox.Appended
		)
		started := time.Now()
		err := p.retryWrite(cctx, "record BTS observations", func() error {
			var err error
			outcomes, commit, err = p.store.RecordObservations(cctx, src, obs)
			return err
		})
		if err != nil {
			p.bm.commitFailed.WithLabelValues(src).Inc()
		} else {
			p.bm.commitSecs.WithLabelValues(src).Observe(time.Since(started).Seconds())
			p.observeOutcomes(obs, claims, outcomes, commit)
			if len(commit.Inserted) > 0 {
				p.outbox.Notify()
			}
		}
	}
	if len(retries) > 0 {
		if err := p.retryWrite(cctx, "reschedule failed BTS polls", func() error {
			return p.store.Reschedule(cctx, src, retries)
		}); err != nil {
			p.bm.commitFailed.WithLabelValues(src).Inc()
		}
	}
	if len(releases) > 0 {
		if err := p.store.ReleaseClaims(cctx, src, releases); err != nil {
			// Not worth a retry: the claims end by themselves.
			p.log.Warn("releasing unpolled BTS claims failed; they return when the claims end", zap.Error(err))
		}
	}
	// Wake the claimer if it sleeps past the time an order of this batch is
	// due again; otherwise the order would be polled late by up to IdlePoll.
	if wake := p.wakeAt.Load(); runCtx.Err() == nil && wake != 0 && time.Now().Add(soonest).UnixNano() < wake {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// observeOutcomes updates metrics for a recorded batch.
func (p *BTSPoller) observeOutcomes(obs []watchlist.Observation, claims []watchlist.Claim, outcomes []watchlist.Outcome, commit outbox.Appended) {
	src := p.cfg.SourceID
	dict := p.dict.Load()
	for i, out := range outcomes {
		p.bm.polls.WithLabelValues(src, out.String()).Inc()
		switch out {
		case watchlist.MarkedNotFound:
			p.bm.notFound.WithLabelValues(src).Inc()
			p.log.Warn("BTS does not know a tracked order; it is marked not_found", zap.String("order_id", obs[i].OrderID))
		case watchlist.Changed:
			code := obs[i].Code
			if st, _ := event.BTSStatus(code); st == event.StatusUnknown {
				raw := strconv.Itoa(code)
				p.bm.unknown.WithLabelValues(src, raw).Inc()
				p.m.unknown.WithLabelValues(src, raw).Inc()
			}
			if claims[i].HasStatus && dict.skipped(claims[i].StatusCode, code) {
				p.bm.skips.WithLabelValues(src, strconv.Itoa(claims[i].StatusCode), strconv.Itoa(code)).Inc()
			}
		}
	}
	p.m.ingested.WithLabelValues(src).Add(float64(len(commit.Inserted)))
	p.m.duplicates.WithLabelValues(src).Add(float64(commit.Duplicates))
}

// retryWrite runs write until it succeeds or ctx ends, backing off between
// attempts.
func (p *BTSPoller) retryWrite(ctx context.Context, op string, write func() error) error {
	bo := newBackoff(p.cfg.BackoffInitial, p.cfg.BackoffMax)
	for {
		err := write()
		if err == nil {
			return nil
		}
		d := bo.NextBackOff()
		if deadline, ok := ctx.Deadline(); ctx.Err() != nil || (ok && time.Until(deadline) < d) {
			p.log.Error(op+" failed; the orders are polled again when their claims end", zap.Error(err))
			return err
		}
		p.log.Warn(op+" failed; retrying", zap.Error(err), zap.Duration("backoff", d))
		if !sleepCtx(ctx, d, nil) {
			return err
		}
	}
}

// loadDictionary starts from the stored dictionary, so that names are
// right even if BTS cannot be reached at start.
func (p *BTSPoller) loadDictionary(ctx context.Context) {
	stored, err := p.store.Statuses(ctx, p.cfg.SourceID)
	if err != nil {
		p.log.Warn("loading the stored BTS status dictionary failed", zap.Error(err))
		return
	}
	if len(stored) > 0 {
		p.dict.Store(newBTSDictionary(stored))
	}
}

// refreshDictionary fetches the dictionary, stores it and starts using it.
func (p *BTSPoller) refreshDictionary(ctx context.Context) error {
	src := p.cfg.SourceID
	defs, err := p.client.Statuses(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		class := upstream.ClassOf(err)
		p.bm.dictionary.WithLabelValues(src, class.String()).Inc()
		p.m.requests.WithLabelValues(src, class.String()).Inc()
		p.m.errors.WithLabelValues(src, class.String()).Inc()
		if !class.Halts() {
			p.log.Warn("fetching the BTS status dictionary failed; keeping the one in use", zap.Error(err))
		}
		return err
	}
	p.m.requests.WithLabelValues(src, "ok").Inc()
	stored := make([]watchlist.Status, len(defs))
	for i, d := range defs {
		stored[i] = watchlist.Status{Code: d.Code, Name: d.Name, Description: d.Description, Next: d.Next}
	}
	if len(stored) == 0 {
		p.log.Warn("BTS returned an empty status dictionary; keeping the one in use")
		return nil
	}
	p.dict.Store(newBTSDictionary(stored))
	p.bm.dictionary.WithLabelValues(src, "ok").Inc()
	p.bm.dictUpdated.WithLabelValues(src).Set(float64(time.Now().Unix()))
	if err := p.store.SaveStatuses(ctx, src, stored); err != nil && ctx.Err() == nil {
		p.log.Warn("storing the BTS status dictionary failed", zap.Error(err))
	}
	return nil
}

// dictionaryLoop refreshes the dictionary every DictionaryRefresh, sooner
// after a failed fetch.
func (p *BTSPoller) dictionaryLoop(ctx context.Context) {
	wait := p.cfg.DictionaryRefresh
	for sleepCtx(ctx, wait, nil) {
		err := p.refreshDictionary(ctx)
		switch {
		case err == nil:
			wait = p.cfg.DictionaryRefresh
		case upstream.ClassOf(err).Halts():
			p.triggerHalt(err)
			return
		default:
			wait = min(p.cfg.DictionaryRefresh, btsDictionaryRetry)
		}
	}
}

// countLoop keeps the ingestd_bts_orders gauge current.
func (p *BTSPoller) countLoop(ctx context.Context) {
	src := p.cfg.SourceID
	for {
		counts, err := p.store.Count(ctx, src)
		if err == nil {
			for state, n := range counts {
				p.bm.orders.WithLabelValues(src, string(state)).Set(float64(n))
			}
		}
		if !sleepCtx(ctx, btsCountsInterval, nil) {
			return
		}
	}
}

// btsDictionary is the status dictionary in memory.
type btsDictionary struct {
	byCode map[int]watchlist.Status
	// chained holds the codes some status lists as a next status: the main
	// line of a delivery. Codes nobody lists (0, 1300, 1400) are exits that
	// may follow any status and are never counted as skips.
	chained map[int]bool
}

func newBTSDictionary(defs []watchlist.Status) *btsDictionary {
	d := &btsDictionary{byCode: make(map[int]watchlist.Status, len(defs)), chained: map[int]bool{}}
	for _, s := range defs {
		d.byCode[s.Code] = s
		for _, n := range s.Next {
			d.chained[n] = true
		}
	}
	return d
}

// name returns the dictionary name of code, or "".
func (d *btsDictionary) name(code int) string { return d.byCode[code].Name }

// skipped reports whether a change from one code to another skipped steps:
// the new code is on the main line but not among the old one's next
// statuses. Changes from codes the dictionary does not define are not
// judged.
func (d *btsDictionary) skipped(from, to int) bool {
	s, ok := d.byCode[from]
	if !ok || len(s.Next) == 0 || slices.Contains(s.Next, to) {
		return false
	}
	return d.chained[to]
}

// btsGate is the poller's shared backoff: after a 429, 5xx or timeout, no
// worker sends a request until the wait is over, so that an outage or a rate
// limit is met by the whole source backing off rather than by every due order
// failing in turn.
type btsGate struct {
	mu      sync.Mutex
	until   time.Time
	bo      *backoff.ExponentialBackOff
	failing bool
}

func newBTSGate(initial, maxWait time.Duration) *btsGate {
	return &btsGate{bo: newBackoff(initial, maxWait)}
}

// wait blocks while a backoff is in force.
func (g *btsGate) wait(ctx context.Context) error {
	g.mu.Lock()
	d := time.Until(g.until)
	g.mu.Unlock()
	if d <= 0 {
		return nil
	}
	if !sleepCtx(ctx, d, nil) {
		return ctx.Err()
	}
	return nil
}

// fail records a failure at now and returns how long the failed order must
// wait. retryAfter, when the server sent one, is honoured. A failure of a
// request that was already in flight when a backoff began does not extend
// it: only the first failure after a pause escalates.
func (g *btsGate) fail(retryAfter time.Duration, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.failing = true
	if now.Before(g.until) && retryAfter <= 0 {
		return g.until.Sub(now)
	}
	d := retryAfter
	if d <= 0 {
		d = g.bo.NextBackOff()
	}
	if until := now.Add(d); until.After(g.until) {
		g.until = until
	}
	return d
}

// ok records a success and reports whether it ended a run of failures.
func (g *btsGate) ok() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.failing {
		return false
	}
	g.failing = false
	g.bo.Reset()
	return true
}

// newBackoff is the jittered exponential backoff of every poller loop. It
// never gives up: a transient failure is retried until it passes.
func newBackoff(initial, maxWait time.Duration) *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = initial
	b.MaxInterval = maxWait
	b.RandomizationFactor = 0.5
	b.Multiplier = 2
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

// sleepCtx waits d, or until wake fires (when not nil), and reports whether
// ctx is still live afterwards.
func sleepCtx(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	case <-wake:
		return ctx.Err() == nil
	}
}
