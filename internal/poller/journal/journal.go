// Package journal walks an upstream journal (the Yandex Delivery claims
// journal) into the outbox: page after page by its opaque cursor, each
// page's events committed with the cursor after them in one transaction
// (cursor.Store.CommitPage), under the source's lease. It fetches and
// decodes the next page while the current one commits, and never sends a
// request sooner than the previous answer asked (X-Polling-Delay-Ms).
package journal

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/failpoint"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/poller"
	"github.com/ingestd/ingestd/internal/retry"
	"github.com/ingestd/ingestd/internal/service"
	"github.com/ingestd/ingestd/internal/upstream"
	"github.com/ingestd/ingestd/internal/yandex"
)

// Client reads pages of an upstream journal after an opaque cursor.
type Client interface {
	Journal(ctx context.Context, cursor string) (*yandex.Page, error)
}

// Cursors is what the poller needs of the source's stored position.
type Cursors interface {
	Source(ctx context.Context, sourceID string) (cursor.State, error)
	CommitPage(ctx context.Context, p cursor.Page) (outbox.Appended, error)
	poller.Halts
}

// Config configures one journal poller. New fills zero fields with their
// defaults.
type Config struct {
	// SourceID keys the cursor in PostgreSQL ("yandex/<account>").
	SourceID string
	// Account names the upstream account in events.
	Account string
	// PollInterval is the wait after an empty page
	// (INGESTD_YANDEX_POLL_INTERVAL), default yandex.DefaultPollInterval.
	PollInterval time.Duration
	// Loop holds the backoff, the commit timeout, the backlog bound and the
	// clock. The page in hand and one prefetched page may still commit past
	// the backlog bound.
	poller.Loop
	// Failpoints crash the process at armed points (chaos tests only).
	Failpoints *failpoint.Set
}

func (c *Config) setDefaults() {
	if c.PollInterval == 0 {
		c.PollInterval = yandex.DefaultPollInterval
	}
	c.Loop.SetDefaults()
}

// Validate reports every problem, naming the environment variables.
func (c Config) Validate() error {
	var errs []error
	if c.SourceID == "" || c.Account == "" {
		errs = append(errs, errors.New("journal poller: a source id and an account are required"))
	}
	if c.PollInterval <= 0 {
		errs = append(errs, fmt.Errorf("%s: must be positive, got %s", yandex.EnvPollInterval, c.PollInterval))
	}
	errs = append(errs, c.Loop.Validate())
	return errors.Join(errs...)
}

// Deps are what a poller works with.
type Deps struct {
	// Client is the upstream journal (a *yandex.Client).
	Client Client
	// Cursors is the source's stored position (a *cursor.Store).
	Cursors Cursors
	// Backlog estimates the unpublished outbox (an *outbox.Store).
	Backlog poller.Backlog
	// Outbox is the publisher, which takes what each commit appended.
	Outbox  poller.Outbox
	Log     *zap.Logger
	Metrics *poller.Metrics
}

// Poller walks an upstream journal into the outbox.
type Poller struct {
	cfg     Config
	client  Client
	cursors Cursors
	outbox  poller.Outbox
	src     *poller.Source
	// backlog pauses polling while the outbox backlog is over MaxBacklog;
	// only Run's goroutine uses it.
	backlog *poller.BacklogBound

	// lastAdvance is when the cursor last moved (unix nanos), for the
	// cursor age gauge.
	lastAdvance atomic.Int64
	// age is the cursor age gauge, registered on reg until Unregister.
	age prometheus.Collector
	reg prometheus.Registerer

	// notBefore is the earliest time (unix nanos on cfg.Now's clock) the
	// next request may be sent: the last answer's time plus the delay it
	// asked for. Requests are sequential (a prefetch starts only after the
	// previous answer arrived), so it is always that of the latest answer.
	notBefore atomic.Int64
	// warnedCapped and warnedInvalid log an odd X-Polling-Delay-Ms once
	// per poller rather than once per page.
	warnedCapped, warnedInvalid atomic.Bool
}

// New returns a poller for cfg, filling in defaults; Run starts it.
func New(cfg Config, d Deps) (*Poller, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Client == nil || d.Cursors == nil || d.Backlog == nil || d.Outbox == nil || d.Log == nil || d.Metrics == nil {
		return nil, errors.New("journal poller: every dependency is required")
	}
	log := d.Log.With(zap.String("source", cfg.SourceID), zap.String("account", cfg.Account))
	src := poller.NewSource(cfg.SourceID, log, d.Metrics, d.Cursors, cfg.CommitTimeout)
	p := &Poller{
		cfg: cfg, client: d.Client, cursors: d.Cursors, outbox: d.Outbox, src: src,
		backlog: poller.NewBacklogBound(cfg.MaxBacklog, d.Backlog, src),
	}
	p.lastAdvance.Store(cfg.Now().UnixNano())
	p.reg = d.Metrics.Registerer()
	p.age = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "ingestd_cursor_age_seconds",
		Help:        "Seconds since the source's cursor last advanced.",
		ConstLabels: prometheus.Labels{"source": cfg.SourceID},
	}, func() float64 {
		return p.cfg.Now().Sub(time.Unix(0, p.lastAdvance.Load())).Seconds()
	})
	if err := p.reg.Register(p.age); err != nil {
		return nil, fmt.Errorf("journal poller of %s: %w", cfg.SourceID, err)
	}
	return p, nil
}

// Unregister removes the poller's own metrics (the cursor age, which reads
// this poller), so that a source restarted with new settings registers its
// own; the per-source counters are shared and stay.
func (p *Poller) Unregister() { p.reg.Unregister(p.age) }

// Halted returns why the source halted in its current run, or nil.
func (p *Poller) Halted() *poller.HaltError { return p.src.Halted() }

// fetched is one page read from upstream and normalized into outbox rows.
type fetched struct {
	cursor string // the cursor the page was requested with
	page   *yandex.Page
	rows   []outbox.Row
	err    error // a classified upstream error, or a normalization error
	normal bool  // err came from normalization, not from upstream
}

// fetch reads and normalizes the page after cur, first waiting out the
// delay the previous answer asked for. Every other wait (the poll interval
// after an empty page, a backoff after a failure) runs from the same
// answer, so the request goes at whichever ends last.
func (p *Poller) fetch(ctx context.Context, cur string) fetched {
	notBefore := time.Unix(0, p.notBefore.Load())
	if !retry.Sleep(ctx, notBefore.Sub(p.cfg.Now())) {
		return fetched{cursor: cur, err: ctx.Err()}
	}
	// A request is early only if the clock or this code is wrong; a 429
	// to one is counted (ingestd_upstream_too_early_total), so that a
	// regression shows on a dashboard rather than as throttling.
	early := p.cfg.Now().Before(notBefore)
	page, err := p.client.Journal(ctx, cur)
	if err != nil {
		p.answered(yandex.PollingDelayOf(err))
		if early && upstream.ClassOf(err) == upstream.RateLimited {
			p.src.TooEarly()
		}
		return fetched{cursor: cur, err: err}
	}
	p.answered(page.Delay)
	rows, err := p.rows(page)
	if err != nil {
		return fetched{cursor: cur, page: page, err: err, normal: true}
	}
	return fetched{cursor: cur, page: page, rows: rows}
}

// answered sets when the next request may go, from the delay an answer
// asked for, and shows it.
func (p *Poller) answered(d yandex.PollingDelay) {
	p.notBefore.Store(p.cfg.Now().Add(d.Wait).UnixNano())
	p.src.PollingDelay(d.Wait)
	switch {
	case d.Capped && !p.warnedCapped.Swap(true):
		p.src.Log().Warn("the journal asked for a polling delay over the cap; waiting the cap instead (logged once)",
			zap.String("x_polling_delay_ms", d.Raw), zap.Duration("cap", yandex.MaxPollingDelay))
	case d.Invalid && !p.warnedInvalid.Swap(true):
		p.src.Log().Warn("the journal sent an X-Polling-Delay-Ms that is not a number of milliseconds; ignoring it (logged once)",
			zap.String("x_polling_delay_ms", d.Raw))
	}
}

// prefetch reads the page after cur in the background, so that it is
// fetched and decoded while the previous page commits. wait returns its
// result; abandon cancels it. Both wait for the goroutine.
type prefetch struct {
	cursor string
	done   chan fetched
	cancel context.CancelFunc
}

func (p *Poller) startPrefetch(ctx context.Context, cur string) *prefetch {
	pctx, cancel := context.WithCancel(ctx)
	pf := &prefetch{cursor: cur, done: make(chan fetched, 1), cancel: cancel}
	go func() { pf.done <- p.fetch(pctx, cur) }()
	return pf
}

func (pf *prefetch) wait() fetched {
	f := <-pf.done
	pf.cancel()
	return f
}

func (pf *prefetch) abandon() {
	if pf != nil {
		pf.cancel()
		<-pf.done
	}
}

// Run polls under the source's lease h until ctx ends or stop is closed
// (returning nil; a page already fetched is still committed), or a commit
// is fenced because another instance took the lease over (returning an
// error wrapping lease.ErrFenced). Transient failures are retried forever.
// A halt (see poller.Source.Halt) keeps Run idle, holding the lease so
// that no standby repeats the failure, until ctx ends or stop is closed.
// Run is a lease.Work.
func (p *Poller) Run(ctx context.Context, h *lease.Held, stop <-chan struct{}) error {
	ctx, cancel := service.StopContext(ctx, stop)
	defer cancel()
	p.src.Start(ctx)
	defer p.src.Stopped()
	err := p.walk(ctx, h.Lease)
	var halt *poller.HaltError
	if errors.As(err, &halt) {
		<-ctx.Done()
		return nil
	}
	return err
}

// walk is Run's loop; it returns nil when ctx ends, a *poller.HaltError
// after recording a halt, or an error wrapping lease.ErrFenced.
func (p *Poller) walk(ctx context.Context, l lease.Lease) error {
	bo := p.cfg.Backoff.New()
	src := p.cfg.SourceID
	var (
		cur    string
		loaded bool
		next   *prefetch // the page after cur, being fetched; nil when none
	)
	defer func() { next.abandon() }()
	for {
		if ctx.Err() != nil {
			return nil
		}
		if !loaded {
			next.abandon()
			next = nil
			st, err := p.cursors.Source(ctx, src)
			if err != nil {
				if !p.src.Retry(ctx, "load cursor", err, bo.Next()) {
					return nil
				}
				continue
			}
			cur, loaded = st.Cursor, true
			if !st.UpdatedAt.IsZero() {
				p.lastAdvance.Store(st.UpdatedAt.UnixNano())
			}
			p.src.Log().Info("resuming journal", zap.Bool("has_cursor", cur != ""))
		}

		var f fetched
		if next != nil && next.cursor == cur {
			f = next.wait()
		} else {
			next.abandon()
			next = nil
			if !p.backlogAllows(ctx, bo) {
				if ctx.Err() != nil {
					return nil
				}
				continue
			}
			f = p.fetch(ctx, cur)
		}
		next = nil
		if f.err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if f.normal {
				// An entry that cannot be normalized is a malformed page:
				// retry the same cursor rather than skip or advance past it.
				p.src.Unusable()
				if !p.src.Retry(ctx, "normalize journal page", f.err, bo.Next()) {
					return nil
				}
				continue
			}
			class := p.src.Failed(f.err)
			if class.Halts() {
				return p.src.Halt(ctx, f.err)
			}
			wait := upstream.RetryAfterOf(f.err)
			if class != upstream.RateLimited || wait <= 0 {
				wait = bo.Next()
			}
			if !p.src.Retry(ctx, "fetch journal page", f.err, wait) {
				return nil
			}
			continue
		}
		p.src.OK()
		page, rows := f.page, f.rows

		if page.Cursor == cur && len(rows) == 0 {
			bo.Reset()
			p.src.Backoff(0)
			if !retry.Sleep(ctx, p.cfg.PollInterval) {
				return nil
			}
			continue
		}

		// A page with entries is followed at once by the next one: start
		// reading it now, so it is fetched and decoded while this one
		// commits. The backlog bound is checked before each prefetch.
		if len(page.Entries) > 0 {
			if ok, err := p.backlog.Room(ctx); ok && err == nil {
				next = p.startPrefetch(ctx, page.Cursor)
			}
		}

		// The page is in hand: commit it even if shutdown began meanwhile,
		// so that what was fetched is not fetched twice.
		commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.CommitTimeout)
		started := p.cfg.Now()
		c, err := p.cursors.CommitPage(commitCtx, cursor.Page{Lease: l, SourceID: src, PrevCursor: cur, Cursor: page.Cursor, Rows: rows})
		cancel()
		if err != nil {
			// The prefetched page follows a cursor that is not stored.
			next.abandon()
			next = nil
			if errors.Is(err, lease.ErrFenced) {
				return err
			}
			if errors.Is(err, cursor.ErrCursorMoved) {
				// Another writer advanced the cursor: continue from what it stored.
				p.src.Log().Warn("stored cursor moved under this poller; reloading it", zap.Error(err))
				loaded = false
				continue
			}
			if !p.src.Retry(ctx, "commit page", err, bo.Next()) {
				return nil
			}
			continue
		}
		p.cfg.Failpoints.Hit(failpoint.AfterCommit)
		p.src.PageCommitted(p.cfg.Now().Sub(started))
		p.src.Stored(c)
		if len(c.Inserted) > 0 {
			p.outbox.Committed(c)
		}
		cur = page.Cursor
		p.lastAdvance.Store(p.cfg.Now().UnixNano())
		bo.Reset()
		p.src.Backoff(0)

		if len(page.Entries) == 0 {
			if !retry.Sleep(ctx, p.cfg.PollInterval) {
				return nil
			}
		}
	}
}

// backlogAllows reports whether the outbox has room for another page. While
// it has not, it waits a poll interval (visible as ingestd_polling_paused)
// and returns false.
func (p *Poller) backlogAllows(ctx context.Context, bo *retry.Backoff) bool {
	ok, err := p.backlog.Room(ctx)
	switch {
	case err != nil:
		p.src.Retry(ctx, "check outbox backlog", err, bo.Next())
		return false
	case !ok:
		retry.Sleep(ctx, p.cfg.PollInterval)
		return false
	}
	return true
}

// rows normalizes a page into outbox rows, in journal order.
func (p *Poller) rows(page *yandex.Page) ([]outbox.Row, error) {
	observed := p.cfg.Now().UTC()
	rows := make([]outbox.Row, 0, len(page.Entries))
	// The events' strings join the page's entry strings in the page's
	// arena: they all live until the page is published.
	strs := page.Strings()
	for i := range page.Entries {
		ev, err := yandex.NormalizeIn(strs, p.cfg.Account, &page.Entries[i], observed)
		if err != nil {
			return nil, err
		}
		msg, err := ev.MessageIn(strs)
		if err != nil {
			return nil, fmt.Errorf("encode event of claim %s: %w", ev.OrderID, err)
		}
		if ev.Status == event.StatusUnknown {
			p.src.UnknownStatus(ev.ProviderStatus)
		}
		rows = append(rows, outbox.Row{Partition: p.outbox.Partition(msg.Key), SourceID: p.cfg.SourceID, Msg: msg})
	}
	return rows, nil
}
