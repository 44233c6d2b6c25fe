// Package watch polls the BTS Express watch-list: the orders ingestd tracks,
// each polled when it is due (an interval per status, bts.Schedule), within
// one request budget. Each observed status change is recorded with its event
// in one transaction (internal/watchlist); unchanged statuses only
// reschedule the order.
//
// Its goroutines form a pipeline: a claimer claims due orders in batches
// (never more than are in flight, so the watch-list is never loaded whole),
// Concurrency workers poll them through the rate limiter, and a committer
// records the results in batched transactions and hands the events to the
// publisher. Several replicas may run it on one watch-list at once: claims
// are disjoint and every write is a compare-and-set, so it needs no lease.
package watch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/poller"
	"github.com/ingestd/ingestd/internal/retry"
	"github.com/ingestd/ingestd/internal/service"
	"github.com/ingestd/ingestd/internal/upstream"
	"github.com/ingestd/ingestd/internal/watchlist"
)

// Store is what the poller needs of the watch-list (a *watchlist.Store).
type Store interface {
	ClaimDue(ctx context.Context, sourceID, holder string, limit int, claimFor time.Duration) ([]watchlist.Claim, error)
	NextDue(ctx context.Context, sourceID string) (time.Duration, bool, error)
	RecordObservations(ctx context.Context, sourceID string, obs []watchlist.Observation) ([]watchlist.Outcome, outbox.Appended, error)
	Reschedule(ctx context.Context, sourceID string, rs []watchlist.Retry) error
	ReleaseClaims(ctx context.Context, sourceID string, claims []watchlist.Claim) error
	Count(ctx context.Context, sourceID string) (map[watchlist.State]int64, error)
	SaveStatuses(ctx context.Context, sourceID string, defs []watchlist.Status) error
	Statuses(ctx context.Context, sourceID string) ([]watchlist.Status, error)
	LastWebhook(ctx context.Context, sourceID string) (time.Time, bool, error)
}

// Client reads BTS (a *bts.Client): the status dictionary and one order's
// status, and counts its logins and token refreshes for the metrics.
type Client interface {
	Statuses(ctx context.Context) ([]bts.StatusDef, error)
	Track(ctx context.Context, orderID string) (bts.Track, error)
	AuthStats() bts.AuthStats
}

// Deps are what a poller works with.
type Deps struct {
	Client Client
	// Store is the watch-list (a *watchlist.Store).
	Store Store
	// Halts stores halt records (a *cursor.Store).
	Halts poller.Halts
	// Backlog estimates the unpublished outbox (an *outbox.Store).
	Backlog poller.Backlog
	// Outbox is the publisher, which takes what each commit appended.
	Outbox  poller.Outbox
	Log     *zap.Logger
	Metrics *poller.Metrics
}

const (
	// jitter spreads polls by ±10% of their interval, so that orders
	// added together do not stay in lockstep and hit BTS in bursts.
	jitter = 0.1
	// countsInterval is how often the watch-list is counted for the
	// ingestd_bts_orders gauge.
	countsInterval = 30 * time.Second
	// dictionaryRetry bounds the wait before fetching the dictionary again
	// after a failed fetch.
	dictionaryRetry = time.Minute
	// inFlightWindow is how much of the request budget is claimed ahead,
	// so that the next requests' orders are at hand when the limiter lets
	// them go.
	inFlightWindow = 250 * time.Millisecond
	// maxInFlight bounds claimed but unrecorded orders.
	maxInFlight = 2000
	// maxWebhookCheck bounds how often the source's last webhook is read
	// from PostgreSQL (it may have reached another instance).
	maxWebhookCheck = 30 * time.Second
)

// Poller polls the orders of a BTS watch-list when they are due and
// records each status change with its event in one transaction. It is a
// service.Service.
type Poller struct {
	service.Base
	// auth are the auth count collectors, registered on reg until
	// Unregister.
	auth        []prometheus.Collector
	reg         prometheus.Registerer
	cfg         Config
	client      Client
	store       Store
	outbox      poller.Outbox
	src         *poller.Source
	bm          *metrics
	lim         *rate.Limiter
	maxInFlight int
	gate        *gate

	dict atomic.Pointer[dictionary]
	// kick wakes the claimer early when a batch rescheduled an order to be
	// due before the claimer would look again; wakeAt is when the sleeping
	// claimer plans to look (unix nanoseconds, 0 while it is not asleep).
	kick   chan struct{}
	wakeAt atomic.Int64

	// backlog pauses claiming while the outbox backlog is over MaxBacklog;
	// only the claimer uses it.
	backlog *poller.BacklogBound

	// lastWebhook is when the source last got a webhook, on any instance
	// as far as this one knows (unix nanos on cfg.Now's clock, 0: never):
	// while it is recent, the schedule is stretched.
	lastWebhook atomic.Int64
}

var _ service.Service = (*Poller)(nil)

// New returns a poller for cfg, filling in defaults; Start starts it. Its
// own metrics are registered on the registry of d.Metrics, shared by every
// BTS source of the process.
func New(cfg Config, d Deps) (*Poller, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bts poller: %w", err)
	}
	if d.Client == nil || d.Store == nil || d.Halts == nil || d.Backlog == nil || d.Outbox == nil || d.Log == nil || d.Metrics == nil {
		return nil, errors.New("bts poller: every dependency is required")
	}
	sc := cfg.Schedule
	inFlight := min(2*sc.Concurrency+int(sc.Rate*inFlightWindow.Seconds())+1, maxInFlight)
	log := d.Log.With(zap.String("source", cfg.SourceID), zap.String("account", cfg.Account))
	src := poller.NewSource(cfg.SourceID, log, d.Metrics, d.Halts, cfg.CommitTimeout)
	p := &Poller{
		cfg:         cfg,
		client:      d.Client,
		store:       d.Store,
		outbox:      d.Outbox,
		src:         src,
		bm:          newMetrics(d.Metrics.Registerer()),
		lim:         rate.NewLimiter(rate.Limit(sc.Rate), max(1, min(sc.Concurrency, int(sc.Rate)))),
		maxInFlight: inFlight,
		gate:        newGate(cfg.Backoff, cfg.Now),
		kick:        make(chan struct{}, 1),
		backlog:     poller.NewBacklogBound(cfg.MaxBacklog, d.Backlog, src),
	}
	p.dict.Store(&dictionary{})
	p.reg = d.Metrics.Registerer()
	p.auth = p.bm.registerAuth(p.reg, cfg.SourceID, d.Client.AuthStats)
	return p, nil
}

// SetInstances shares the source's request budget (the schedule's Rate)
// among n live instances, so that BTS sees the configured rate from the
// whole deployment rather than from each replica. Safe to call while the
// poller runs; n below 1 counts as 1.
func (p *Poller) SetInstances(n int) {
	n = max(n, 1)
	r := p.cfg.Schedule.Rate / float64(n)
	p.lim.SetLimit(rate.Limit(r))
	p.lim.SetBurst(max(1, min(p.cfg.Schedule.Concurrency, int(r))))
}

// Ring tells the poller that a webhook of its source made orders due now
// (watchlist.Store.Ring): it looks for due orders at once instead of at its
// next planned look, and counts the webhook as flowing.
func (p *Poller) Ring() {
	p.lastWebhook.Store(p.cfg.Now().UnixNano())
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// flowing reports whether the source's webhooks flow: one arrived within
// WebhookQuiet.
func (p *Poller) flowing() bool {
	last := p.lastWebhook.Load()
	return last != 0 && p.cfg.Now().Sub(time.Unix(0, last)) < p.cfg.Schedule.WebhookQuiet
}

// Unregister removes the poller's own metrics (the auth counts, which read
// this poller's client), so that a source restarted with new settings
// registers its own.
func (p *Poller) Unregister() {
	for _, c := range p.auth {
		p.reg.Unregister(c)
	}
}

// result is what became of one claimed order, for the committer.
type result struct {
	claim watchlist.Claim
	// Exactly one of obs, retry and release applies.
	obs     *watchlist.Observation
	retry   *watchlist.Retry
	release bool
}

// Start runs the poller in the background until Stop is called or ctx
// ends.
func (p *Poller) Start(ctx context.Context) error { return p.Go(ctx, p.run) }

// Halted returns why the source halted, or nil while it runs.
func (p *Poller) Halted() *poller.HaltError { return p.src.Halted() }

// run polls until ctx ends or stop is closed, and returns nil. Transient
// failures are retried with backoff, forever; observations already fetched
// when it stops are still recorded, within CommitTimeout. A halt (an error
// only an operator can fix, see poller.Source.Halt) stops polling and keeps
// run idle until it is stopped.
func (p *Poller) run(ctx context.Context, stop <-chan struct{}) error {
	ctx, cancelStop := service.StopContext(ctx, stop)
	defer cancelStop()
	p.src.Start(ctx)
	defer p.src.Stopped()
	if cause := p.poll(ctx); cause != nil {
		p.src.Halt(ctx, cause)
		<-ctx.Done()
	}
	return nil
}

// poll runs the pipeline until ctx ends (returning nil) or an error only an
// operator can fix stops it (returning that error).
func (p *Poller) poll(ctx context.Context) error {
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	halt := func(err error) { cancel(&poller.HaltError{SourceID: p.cfg.SourceID, Err: err}) }

	p.loadDictionary(runCtx)
	if err := p.refreshDictionary(runCtx); err != nil && upstream.ClassOf(err).Halts() {
		return err
	}
	p.src.Log().Info("polling BTS watch-list",
		zap.Stringer("intervals", p.cfg.Schedule.Intervals), zap.Float64("rate", p.cfg.Schedule.Rate),
		zap.Int("concurrency", p.cfg.Schedule.Concurrency), zap.Int("max_in_flight", p.maxInFlight))

	var (
		work    = make(chan watchlist.Claim)
		results = make(chan result, p.maxInFlight)
		// slots holds one token per claimed order not yet recorded.
		slots   = make(chan struct{}, p.maxInFlight)
		workers sync.WaitGroup
		loops   sync.WaitGroup
	)
	loops.Go(func() { p.dictionaryLoop(runCtx, halt) })
	loops.Go(func() { p.countLoop(runCtx) })
	loops.Go(func() { p.webhookLoop(runCtx) })
	loops.Go(func() { p.claimLoop(runCtx, slots, work, results) })
	for range p.cfg.Schedule.Concurrency {
		workers.Go(func() {
			for c := range work {
				results <- p.pollOrder(runCtx, c, halt)
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
	loops.Wait()
	workers.Wait()
	close(results)
	<-committed

	var h *poller.HaltError
	if errors.As(context.Cause(runCtx), &h) {
		return h.Err
	}
	return nil
}

// claimLoop claims due orders while there is room in flight and hands them
// to the workers. It closes work when ctx ends.
func (p *Poller) claimLoop(ctx context.Context, slots chan struct{}, work chan<- watchlist.Claim, results chan<- result) {
	defer close(work)
	src := p.cfg.SourceID
	bo := p.cfg.Backoff.New()
	for {
		// Wait for room for one order, then take what else is free.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		if ok, err := p.backlog.Room(ctx); !ok {
			<-slots
			switch {
			case err != nil && ctx.Err() != nil:
				return
			case err != nil:
				if !p.src.Retry(ctx, "check outbox backlog", err, bo.Next()) {
					return
				}
			case !retry.Sleep(ctx, p.cfg.Schedule.IdlePoll):
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
		claims, err := p.store.ClaimDue(ctx, src, p.cfg.Instance, n, p.cfg.Schedule.ClaimTimeout)
		for range n - len(claims) {
			<-slots
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !p.src.Retry(ctx, "claim due BTS orders", err, bo.Next()) {
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
					results <- result{claim: rest, release: true}
				}
				return
			}
		}
		if len(claims) == n {
			continue
		}
		// Everything due is taken: sleep until the next order is due, or
		// IdlePoll at most, or a kick.
		wait := p.cfg.Schedule.IdlePoll
		if d, ok, err := p.store.NextDue(ctx, src); err == nil && ok {
			wait = min(max(d, 0), wait)
		}
		if wait <= 0 {
			continue
		}
		p.wakeAt.Store(p.cfg.Now().Add(wait).UnixNano())
		live := retry.Sleep(ctx, wait, p.kick)
		p.wakeAt.Store(0)
		if !live {
			return
		}
	}
}

// pollOrder polls one claimed order and returns what to record. An error
// only an operator can fix is passed to halt, which stops the pipeline.
func (p *Poller) pollOrder(ctx context.Context, c watchlist.Claim, halt func(error)) result {
	src := p.cfg.SourceID
	if ctx.Err() != nil || p.gate.wait(ctx) != nil || p.lim.Wait(ctx) != nil {
		return result{claim: c, release: true}
	}
	t, err := p.client.Track(ctx, c.OrderID)
	observed := p.cfg.Now()
	if err != nil {
		if ctx.Err() != nil {
			return result{claim: c, release: true}
		}
		switch class := p.src.Failed(err); {
		case class == upstream.NotFound:
			return result{claim: c, obs: &watchlist.Observation{OrderID: c.OrderID, ChangeCount: c.ChangeCount, Token: c.Token, NotFound: true}}
		case class.Halts():
			halt(err)
			// The order keeps the error and is due again at once when the
			// source is restarted.
			return result{claim: c, retry: &watchlist.Retry{OrderID: c.OrderID, ChangeCount: c.ChangeCount, Token: c.Token, Error: err.Error()}}
		default:
			wait := p.gate.fail(upstream.RetryAfterOf(err), p.cfg.Now())
			p.src.Backoff(wait)
			p.bm.polls.WithLabelValues(src, class.String()).Inc()
			// Every due order may fail in turn during an outage: one line
			// each would flood the log, so they are debug lines, and the
			// backoff gauge and the error counter show the outage.
			p.src.Log().Debug("polling a BTS order failed; it stays due after a backoff",
				zap.String("order_id", c.OrderID), zap.Error(err), zap.Duration("backoff", wait))
			return result{claim: c, retry: &watchlist.Retry{OrderID: c.OrderID, ChangeCount: c.ChangeCount, Token: c.Token, After: wait, Error: err.Error()}}
		}
	}
	if p.gate.ok() {
		p.src.Backoff(0)
		p.src.Log().Info("BTS answers again")
	}

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
		p.src.OK()
		return result{claim: c, obs: obs}
	}
	row, terminal, err := p.event(t, name, c.ChangeCount+1, observed)
	if err != nil {
		// BTS answered something that cannot be published (an invalid raw
		// object, say): retry rather than skip the change.
		p.src.Unusable()
		wait := p.gate.fail(0, p.cfg.Now())
		p.src.Log().Warn("a BTS status could not be normalized; retrying", zap.String("order_id", c.OrderID), zap.Error(err))
		return result{claim: c, retry: &watchlist.Retry{OrderID: c.OrderID, ChangeCount: c.ChangeCount, Token: c.Token, After: wait, Error: err.Error()}}
	}
	p.src.OK()
	obs.Event, obs.Terminal = row, terminal
	return result{claim: c, obs: obs}
}

// event builds the outbox row of a status change.
func (p *Poller) event(t bts.Track, name string, changeCount int64, observed time.Time) (*outbox.Row, bool, error) {
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

// interval is the jittered wait before polling an order seen at code again,
// stretched while the source's webhooks flow: each change then rings the
// order within seconds, and the schedule is only the safety net.
func (p *Poller) interval(code int) time.Duration {
	d := float64(p.cfg.Schedule.Intervals.For(code))
	if p.flowing() {
		d *= p.cfg.Schedule.WebhookStretch
	}
	return time.Duration(d * (1 - jitter + 2*jitter*rand.Float64()))
}

// commitLoop records results in batches until results is closed. It uses a
// context detached from cancellation, so that what was fetched before
// shutdown is recorded, each batch within CommitTimeout.
func (p *Poller) commitLoop(ctx context.Context, results <-chan result, slots <-chan struct{}) {
	for r := range results {
		batch := []result{r}
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
func (p *Poller) commit(cctx, runCtx context.Context, batch []result) {
	src := p.cfg.SourceID
	var (
		obs      []watchlist.Observation
		claims   []watchlist.Claim
		retries  []watchlist.Retry
		releases []watchlist.Claim
		// soonest is the earliest any order of the batch is due again.
		soonest = p.cfg.Schedule.IdlePoll
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
		started := p.cfg.Now()
		err := p.retryWrite(cctx, "record BTS observations", func() error {
			var err error
			outcomes, commit, err = p.store.RecordObservations(cctx, src, obs)
			return err
		})
		if err != nil {
			p.bm.commitFailed.WithLabelValues(src).Inc()
		} else {
			p.bm.commitSecs.WithLabelValues(src).Observe(p.cfg.Now().Sub(started).Seconds())
			p.observeOutcomes(obs, claims, outcomes, commit)
			if len(commit.Inserted) > 0 {
				p.outbox.Committed(commit)
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
			p.src.Log().Warn("releasing unpolled BTS claims failed; they return when the claims end", zap.Error(err))
		}
	}
	// Wake the claimer if it sleeps past the time an order of this batch is
	// due again; otherwise the order would be polled late by up to IdlePoll.
	if wake := p.wakeAt.Load(); runCtx.Err() == nil && wake != 0 && p.cfg.Now().Add(soonest).UnixNano() < wake {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// observeOutcomes updates metrics for a recorded batch.
func (p *Poller) observeOutcomes(obs []watchlist.Observation, claims []watchlist.Claim, outcomes []watchlist.Outcome, commit outbox.Appended) {
	src := p.cfg.SourceID
	dict := p.dict.Load()
	for i, out := range outcomes {
		p.bm.polls.WithLabelValues(src, out.String()).Inc()
		switch out {
		case watchlist.MarkedNotFound:
			p.bm.notFound.WithLabelValues(src).Inc()
			p.src.Log().Warn("BTS does not know a tracked order; it is marked not_found", zap.String("order_id", obs[i].OrderID))
		case watchlist.Changed:
			code := obs[i].Code
			if st, _ := event.BTSStatus(code); st == event.StatusUnknown {
				raw := strconv.Itoa(code)
				p.bm.unknown.WithLabelValues(src, raw).Inc()
				p.src.UnknownStatus(raw)
			}
			if claims[i].HasStatus && dict.skipped(claims[i].StatusCode, code) {
				p.bm.skips.WithLabelValues(src, strconv.Itoa(claims[i].StatusCode), strconv.Itoa(code)).Inc()
			}
		}
	}
	p.src.Stored(commit)
}

// retryWrite runs write until it succeeds or ctx ends, backing off between
// attempts.
func (p *Poller) retryWrite(ctx context.Context, op string, write func() error) error {
	bo := p.cfg.Backoff.New()
	for {
		err := write()
		if err == nil {
			return nil
		}
		d := bo.Next()
		if deadline, ok := ctx.Deadline(); ctx.Err() != nil || (ok && deadline.Sub(p.cfg.Now()) < d) {
			p.src.Log().Error(op+" failed; the orders are polled again when their claims end", zap.Error(err))
			return err
		}
		if !p.src.Retry(ctx, op, err, d) {
			return err
		}
	}
}

// loadDictionary starts from the stored dictionary, so that names are
// right even if BTS cannot be reached at start.
func (p *Poller) loadDictionary(ctx context.Context) {
	stored, err := p.store.Statuses(ctx, p.cfg.SourceID)
	if err != nil {
		p.src.Log().Warn("loading the stored BTS status dictionary failed", zap.Error(err))
		return
	}
	if len(stored) > 0 {
		p.dict.Store(newDictionary(stored))
	}
}

// refreshDictionary fetches the dictionary, stores it and starts using it.
func (p *Poller) refreshDictionary(ctx context.Context) error {
	src := p.cfg.SourceID
	defs, err := p.client.Statuses(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		class := p.src.Failed(err)
		p.bm.dictionary.WithLabelValues(src, class.String()).Inc()
		if !class.Halts() {
			p.src.Log().Warn("fetching the BTS status dictionary failed; keeping the one in use", zap.Error(err))
		}
		return err
	}
	p.src.OK()
	stored := make([]watchlist.Status, len(defs))
	for i, d := range defs {
		stored[i] = watchlist.Status{Code: d.Code, Name: d.Name, Description: d.Description, Next: d.Next}
	}
	if len(stored) == 0 {
		p.src.Log().Warn("BTS returned an empty status dictionary; keeping the one in use")
		return nil
	}
	p.dict.Store(newDictionary(stored))
	p.bm.dictionary.WithLabelValues(src, "ok").Inc()
	p.bm.dictUpdated.WithLabelValues(src).Set(float64(p.cfg.Now().Unix()))
	if err := p.store.SaveStatuses(ctx, src, stored); err != nil && ctx.Err() == nil {
		p.src.Log().Warn("storing the BTS status dictionary failed", zap.Error(err))
	}
	return nil
}

// dictionaryLoop refreshes the dictionary every DictionaryRefresh, sooner
// after a failed fetch.
func (p *Poller) dictionaryLoop(ctx context.Context, halt func(error)) {
	wait := p.cfg.Schedule.DictionaryRefresh
	for retry.Sleep(ctx, wait) {
		err := p.refreshDictionary(ctx)
		switch {
		case err == nil:
			wait = p.cfg.Schedule.DictionaryRefresh
		case upstream.ClassOf(err).Halts():
			halt(err)
			return
		default:
			wait = min(p.cfg.Schedule.DictionaryRefresh, dictionaryRetry)
		}
	}
}

// webhookLoop reads when the source last got a webhook, on whichever
// instance, so that every instance stretches and restores the schedule
// alike, and keeps ingestd_bts_webhooks_flowing current. A webhook that
// stops is noticed within a check interval of WebhookQuiet.
func (p *Poller) webhookLoop(ctx context.Context) {
	src := p.cfg.SourceID
	every := min(p.cfg.Schedule.WebhookQuiet/4, maxWebhookCheck)
	for {
		if at, ok, err := p.store.LastWebhook(ctx, src); err == nil && ok {
			// The database's clock and this one may differ; what matters is
			// that a later webhook is never forgotten.
			if n := at.UnixNano(); n > p.lastWebhook.Load() {
				p.lastWebhook.Store(n)
			}
		}
		flowing := 0.0
		if p.flowing() {
			flowing = 1
		}
		p.bm.flowing.WithLabelValues(src).Set(flowing)
		if !retry.Sleep(ctx, every) {
			return
		}
	}
}

// countLoop keeps the ingestd_bts_orders gauge current.
func (p *Poller) countLoop(ctx context.Context) {
	src := p.cfg.SourceID
	for {
		counts, err := p.store.Count(ctx, src)
		if err == nil {
			for state, n := range counts {
				p.bm.orders.WithLabelValues(src, string(state)).Set(float64(n))
			}
		}
		if !retry.Sleep(ctx, countsInterval) {
			return
		}
	}
}
