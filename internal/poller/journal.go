package poller

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/failpoint"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/upstream"
	"github.com/ingestd/ingestd/internal/yandex"
)

// JournalStore is what the journal poller needs of PostgreSQL.
type JournalStore interface {
	Source(ctx context.Context, sourceID string) (cursor.State, error)
	CommitPage(ctx context.Context, p cursor.Page) (outbox.Appended, error)
	Halt(ctx context.Context, sourceID, reason string) error
}

// Journal reads pages of an upstream journal after an opaque cursor.
type Journal interface {
	Journal(ctx context.Context, cursor string) (*yandex.Page, error)
}

// Outbox is the publisher side the poller talks to: where an event goes in
// Kafka, and a wake-up after each commit.
type Outbox interface {
	Partition(key string) int
	Notify()
}

// CommitHandler is an Outbox that takes committed rows directly (the
// publisher of this process), so it need not read them back from
// PostgreSQL. Committed must not block.
type CommitHandler interface {
	Committed(c outbox.Appended)
}

// JournalConfig configures one journal poller.
type JournalConfig struct {
	// SourceID keys the cursor in PostgreSQL ("yandex/<account>").
	SourceID string
	// Account names the upstream account in events.
	Account string
	// PollInterval is the wait after an empty page.
	PollInterval time.Duration
	// BackoffInitial and BackoffMax bound the jittered exponential backoff
	// after a failure.
	BackoffInitial, BackoffMax time.Duration
	// CommitTimeout bounds committing a page that was already fetched when
	// shutdown began: the page is committed rather than dropped.
	CommitTimeout time.Duration
	// MaxBacklog pauses polling while more than this many outbox rows wait
	// for Kafka, so an outage of Kafka cannot grow the table without bound;
	// polling resumes by itself once the publisher catches up. The page in
	// hand and one prefetched page may still commit past it. 0 disables the
	// bound.
	MaxBacklog int64
	// Failpoints crash the process at armed points (chaos tests only).
	Failpoints *failpoint.Set
}

// HaltError is returned by Run when the source stopped on an error that only
// an operator can fix. The stored cursor is untouched.
type HaltError struct {
	SourceID string
	Err      error
}

func (e *HaltError) Error() string {
	return fmt.Sprintf("source %s halted: %v", e.SourceID, e.Err)
}

func (e *HaltError) Unwrap() error { return e.Err }

// JournalPoller walks an upstream journal into the outbox: each page's events
// and the cursor after them are committed in one transaction.
type JournalPoller struct {
	cfg    JournalConfig
	client Journal
	store  JournalStore
	outbox Outbox
	log    *zap.Logger
	m      *Metrics
	now    func() time.Time

	// lastAdvance is when the cursor last moved (unix nanos), for the
	// cursor age gauge.
	lastAdvance atomic.Int64
	// backlog pauses polling while the outbox backlog is over MaxBacklog;
	// only Run's goroutine uses it.
	backlog *backlogBound
}

// NewJournal returns a poller; Run starts it.
func NewJournal(cfg JournalConfig, client Journal, store JournalStore, backlog Backlog, outbox Outbox, log *zap.Logger, m *Metrics) *JournalPoller {
	p := &JournalPoller{
		cfg: cfg, client: client, store: store, outbox: outbox, m: m, now: time.Now,
		log: log.With(zap.String("source", cfg.SourceID), zap.String("account", cfg.Account)),
	}
	p.backlog = newBacklogBound(cfg.MaxBacklog, backlog, m, cfg.SourceID, p.log)
	p.lastAdvance.Store(time.Now().UnixNano())
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "ingestd_cursor_age_seconds",
		Help:        "Seconds since the source's cursor last advanced.",
		ConstLabels: prometheus.Labels{"source": cfg.SourceID},
	}, func() float64 {
		return time.Since(time.Unix(0, p.lastAdvance.Load())).Seconds()
	}))
	return p
}

// fetched is one page read from upstream and normalized into outbox rows.
type fetched struct {
	cursor string // the cursor the page was requested with
	page   *yandex.Page
	rows   []outbox.Row
	err    error // a classified upstream error, or a normalization error
	normal bool  // err came from normalization, not from upstream
}

// fetch reads and normalizes the page after cur.
func (p *JournalPoller) fetch(ctx context.Context, cur string) fetched {
	page, err := p.client.Journal(ctx, cur)
	if err != nil {
		return fetched{cursor: cur, err: err}
	}
	rows, err := p.rows(page)
	if err != nil {
		return fetched{cursor: cur, page: page, err: err, normal: true}
	}
	return fetched{cursor: cur, page: page, rows: rows}
}

// prefetch reads the page after cur in the background, so that it is
// fetched and decoded while the previous page commits. wait returns its
// result; cancel abandons it. Both wait for the goroutine.
type prefetch struct {
	cursor string
	done   chan fetched
	cancel context.CancelFunc
}

func (p *JournalPoller) startPrefetch(ctx context.Context, cur string) *prefetch {
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

// Run polls under the source's lease until ctx is cancelled (returning nil),
// the source halts (returning a *HaltError), or a commit is fenced because
// another instance took the lease over (returning an error wrapping
// lease.ErrFenced). Transient failures are retried forever.
func (p *JournalPoller) Run(ctx context.Context, l lease.Lease) error {
	bo := newBackoff(p.cfg.BackoffInitial, p.cfg.BackoffMax)
	src := p.cfg.SourceID
	p.m.halted.WithLabelValues(src).Set(0)
	p.m.backoff.WithLabelValues(src).Set(0)

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
			st, err := p.store.Source(ctx, src)
			if err != nil {
				if !p.wait(ctx, bo.NextBackOff(), "load cursor", err) {
					return nil
				}
				continue
			}
			cur, loaded = st.Cursor, true
			if !st.UpdatedAt.IsZero() {
				p.lastAdvance.Store(st.UpdatedAt.UnixNano())
			}
			p.log.Info("resuming journal", zap.Bool("has_cursor", cur != ""))
		}

		var f fetched
		if next != nil && next.cursor == cur {
			f = next.wait()
		} else {
			next.abandon()
			if !p.backlogAllows(ctx, bo) {
				next = nil
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
				p.m.requests.WithLabelValues(src, "ok").Inc()
				p.m.errors.WithLabelValues(src, upstream.Retry.String()).Inc()
				if !p.wait(ctx, bo.NextBackOff(), "normalize journal page", f.err) {
					return nil
				}
				continue
			}
			class := upstream.ClassOf(f.err)
			p.m.requests.WithLabelValues(src, class.String()).Inc()
			p.m.errors.WithLabelValues(src, class.String()).Inc()
			if class.Halts() {
				return p.halt(ctx, f.err)
			}
			wait := upstream.RetryAfterOf(f.err)
			if class != upstream.RateLimited || wait <= 0 {
				wait = bo.NextBackOff()
			}
			if !p.wait(ctx, wait, "fetch journal page", f.err) {
				return nil
			}
			continue
		}
		p.m.requests.WithLabelValues(src, "ok").Inc()
		page, rows := f.page, f.rows

		if page.Cursor == cur && len(rows) == 0 {
			bo.Reset()
			p.m.backoff.WithLabelValues(src).Set(0)
			if !p.wait(ctx, p.cfg.PollInterval, "", nil) {
				return nil
			}
			continue
		}

		// A page with entries is followed at once by the next one: start
		// reading it now, so it is fetched and decoded while this one
		// commits. The backlog bound is checked before each prefetch.
		if len(page.Entries) > 0 {
			if ok, err := p.backlog.room(ctx); ok && err == nil {
				next = p.startPrefetch(ctx, page.Cursor)
			}
		}

		// The page is in hand: commit it even if shutdown began meanwhile,
		// so that what was fetched is not fetched twice.
		commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.CommitTimeout)
		started := time.Now()
		c, err := p.store.CommitPage(commitCtx, cursor.Page{Lease: l, SourceID: src, PrevCursor: cur, Cursor: page.Cursor, Rows: rows})
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
				p.log.Warn("stored cursor moved under this poller; reloading it", zap.Error(err))
				loaded = false
				continue
			}
			if !p.wait(ctx, bo.NextBackOff(), "commit page", err) {
				return nil
			}
			continue
		}
		p.cfg.Failpoints.Hit(failpoint.AfterCommit)
		p.m.commitSecs.WithLabelValues(src).Observe(time.Since(started).Seconds())
		p.m.pages.WithLabelValues(src).Inc()
		p.m.ingested.WithLabelValues(src).Add(float64(len(c.Inserted)))
		p.m.duplicates.WithLabelValues(src).Add(float64(c.Duplicates))
		if len(c.Inserted) > 0 {
			if h, ok := p.outbox.(CommitHandler); ok {
				h.Committed(c)
			} else {
				p.outbox.Notify()
			}
		}
		cur = page.Cursor
		p.lastAdvance.Store(time.Now().UnixNano())
		bo.Reset()
		p.m.backoff.WithLabelValues(src).Set(0)

		if len(page.Entries) == 0 {
			if !p.wait(ctx, p.cfg.PollInterval, "", nil) {
				return nil
			}
		}
	}
}

// backlogAllows reports whether the outbox has room for another page. While
// it has not, it waits a poll interval (visible as ingestd_polling_paused)
// and returns false.
func (p *JournalPoller) backlogAllows(ctx context.Context, bo *backoff.ExponentialBackOff) bool {
	ok, err := p.backlog.room(ctx)
	switch {
	case err != nil:
		p.wait(ctx, bo.NextBackOff(), "check outbox backlog", err)
		return false
	case !ok:
		p.wait(ctx, p.cfg.PollInterval, "", nil)
		return false
	}
	return true
}

// rows normalizes a page into outbox rows, in journal order.
func (p *JournalPoller) rows(page *yandex.Page) ([]outbox.Row, error) {
	observed := p.now().UTC()
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
			p.m.unknown.WithLabelValues(p.cfg.SourceID, boundedLabel(ev.ProviderStatus)).Inc()
		}
		rows = append(rows, outbox.Row{Partition: p.outbox.Partition(msg.Key), SourceID: p.cfg.SourceID, Msg: msg})
	}
	return rows, nil
}

// halt records the halt and returns the error that stops this source.
func (p *JournalPoller) halt(ctx context.Context, cause error) error {
	src := p.cfg.SourceID
	p.m.halted.WithLabelValues(src).Set(1)
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.CommitTimeout)
	defer cancel()
	if err := p.store.Halt(hctx, src, cause.Error()); err != nil {
		p.log.Error("could not record the halt in PostgreSQL", zap.Error(err))
	}
	return &HaltError{SourceID: src, Err: cause}
}

// wait sleeps d (logging why, when err is set) and reports whether ctx is
// still live afterwards.
func (p *JournalPoller) wait(ctx context.Context, d time.Duration, op string, err error) bool {
	if err != nil {
		p.m.backoff.WithLabelValues(p.cfg.SourceID).Set(d.Seconds())
		p.log.Warn(op+" failed; retrying", zap.Error(err), zap.Duration("backoff", d))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
