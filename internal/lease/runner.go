// Package lease runs single-writer roles (a journal source's poller, the
// outbox publisher) under a PostgreSQL lease with a fencing epoch. The lease
// table and the fencing check every write transaction makes are in
// table.go; the Runner, in this file, makes an instance work only while it
// holds the lease, step down as soon as it loses it, and release it on a
// clean shutdown so a standby takes over at once.
package lease

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ingestd/ingestd/internal/retry"
	"github.com/ingestd/ingestd/internal/service"
)

// table is what a Runner needs of the lease table.
type table interface {
	TryAcquire(ctx context.Context, name, holder string, ttl time.Duration) (Lease, bool, error)
	Renew(ctx context.Context, l Lease, ttl time.Duration) error
	Release(ctx context.Context, l Lease) error
}

var _ table = (*Store)(nil)

// Config tunes lease timing.
type Config struct {
	// TTL is how long a lease lives without renewal: the longest a dead
	// holder blocks a standby (INGESTD_LEASE_TTL, default 15s).
	TTL time.Duration
	// Holder identifies this instance in the lease table
	// (INGESTD_INSTANCE_ID, default hostname/pid/random).
	Holder string
	// Now is the clock; nil means time.Now. It must carry a monotonic
	// reading (as time.Now's does), because lease validity is judged by it.
	Now func() time.Time
}

// Held is a lease this instance holds, as seen by the work running under it.
type Held struct {
	Lease Lease
	// validUntil is the local monotonic deadline (unix nanos) before which
	// no other instance can have taken the lease over: the start of the
	// last successful renewal plus TTL, less a safety margin for clock rate
	// differences and for the time between checking and acting.
	validUntil atomic.Int64
	margin     time.Duration
	now        func() time.Time
}

// Valid reports whether the lease is certainly still held. Work that cannot
// be fenced by PostgreSQL (writing to Kafka) checks it before acting.
func (h *Held) Valid() bool { return h.now().UnixNano() < h.validUntil.Load() }

func (h *Held) extend(from time.Time, ttl time.Duration) {
	h.validUntil.Store(from.Add(ttl - h.margin).UnixNano())
}

// newHeld wraps l, acquired at acquiredAt for ttl, judged by now.
func newHeld(l Lease, acquiredAt time.Time, ttl time.Duration, now func() time.Time) *Held {
	h := &Held{Lease: l, margin: ttl / 5, now: now}
	h.extend(acquiredAt, ttl)
	return h
}

// NewHeld wraps a lease acquired at acquiredAt for ttl, for callers that do
// not use a Runner (operator tools, tests): it is Valid until ttl, less the
// safety margin, after acquiredAt.
func NewHeld(l Lease, acquiredAt time.Time, ttl time.Duration) *Held {
	return newHeld(l, acquiredAt, ttl, time.Now)
}

// ErrLetExpire, returned (wrapped) by Work, asks the runner not to release
// the lease on its way out but to let it expire: the work may have left an
// effect in flight that a successor must not race (a Kafka write whose
// outcome is unknown), and expiry gives it time to settle.
var ErrLetExpire = errors.New("leave the lease to expire")

// Work is what runs while the lease is held. It must return when ctx ends,
// and finish gracefully and return when stop is closed, in both cases nil
// (or an error wrapping ErrLetExpire). It returns an error wrapping
// ErrFenced when a write was refused because the lease was lost. Work that
// cannot go on (a halted source) stays inside Work, idle, until ctx ends or
// stop is closed: the lease stays held, so that no standby repeats the
// failure. Any other error is a failure of the work itself: the runner
// logs it, releases the lease and competes for it again.
type Work func(ctx context.Context, h *Held, stop <-chan struct{}) error

// Runner competes for one lease and runs Work while holding it. It is a
// service.Service: Stop makes its Work finish gracefully and releases the
// lease, so that a standby takes over at once.
type Runner struct {
	service.Base
	name  string
	cfg   Config
	store table
	work  Work
	log   *zap.Logger
	m     *Metrics
	// admit, when set, is asked before every attempt to take the lease;
	// ok false means "not now" (this instance holds its share already).
	// When ok, done is called once the attempt is over, the lease taken or
	// not, so that the admission counts as held while the attempt runs.
	admit func() (done func(), ok bool)
	// holding is true while the lease is held.
	holding atomic.Bool
}

// SetAdmit makes the runner ask admit before every attempt to take the
// lease, so that instances can share many leases evenly; an admitted
// attempt calls done when it is over (after Holding turned true if it took
// the lease). Call it before Start.
func (r *Runner) SetAdmit(admit func() (done func(), ok bool)) { r.admit = admit }

// Holding reports whether the runner holds its lease now.
func (r *Runner) Holding() bool { return r.holding.Load() }

var _ service.Service = (*Runner)(nil)

// NewRunner returns a runner for the lease name; Start starts it.
func NewRunner(name string, cfg Config, store *Store, work Work, log *zap.Logger, m *Metrics) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("lease runner %s: %w", name, err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m.Declare(name)
	return &Runner{
		name: name, cfg: cfg, store: store, work: work, m: m,
		log: log.With(zap.String("lease", name), zap.String("holder", cfg.Holder)),
	}, nil
}

// Start competes for the lease in the background until ctx ends or Stop is
// called.
func (r *Runner) Start(ctx context.Context) error { return r.Go(ctx, r.run) }

func (r *Runner) run(ctx context.Context, stop <-chan struct{}) error {
	wait := min(time.Second, r.cfg.TTL/5)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-stop:
			return nil
		default:
		}
		admitted := func() {}
		if r.admit != nil {
			done, ok := r.admit()
			if !ok {
				if !retry.Sleep(ctx, wait, stop) {
					return nil
				}
				continue
			}
			admitted = done
		}
		started := r.cfg.Now()
		l, ok, err := r.store.TryAcquire(ctx, r.name, r.cfg.Holder, r.cfg.TTL)
		if ok {
			// Holding before the admission ends, so that the source is
			// counted without a gap.
			r.holding.Store(true)
		}
		admitted()
		if err != nil && ctx.Err() == nil {
			r.log.Warn("acquire lease failed; retrying", zap.Error(err))
		}
		if err != nil || !ok {
			if !retry.Sleep(ctx, wait, stop) {
				return nil
			}
			continue
		}
		h := newHeld(l, started, r.cfg.TTL, r.cfg.Now)
		r.m.acquired(r.name, l.Epoch)
		r.log.Info("lease acquired; this instance is now active", zap.Int64("epoch", l.Epoch))
		r.holding.Store(true)
		released := r.hold(ctx, h, stop)
		r.holding.Store(false)
		r.m.lost(r.name)
		if released {
			return nil
		}
		// A failed Work (see hold) waits before competing again, so that a
		// Work that fails at once does not spin.
		if !retry.Sleep(ctx, wait, stop) {
			return nil
		}
	}
}

// hold runs the work under h until the lease is lost or the work failed
// (false), or the runner is stopping (true, after releasing the lease).
func (r *Runner) hold(ctx context.Context, h *Held, stop <-chan struct{}) (released bool) {
	workCtx, cancelWork := context.WithCancel(ctx)
	defer cancelWork()
	done := make(chan error, 1)
	go func() { done <- r.work(workCtx, h, stop) }()

	renew := time.NewTicker(r.cfg.TTL / 3)
	defer renew.Stop()
	for {
		select {
		case err := <-done:
			switch {
			case errors.Is(err, ErrLetExpire):
				r.log.Warn("leaving the lease to expire so that a write in flight settles before a successor starts", zap.Error(err))
				return true
			case errors.Is(err, ErrFenced):
				r.log.Warn("lease lost to a newer epoch; standing by", zap.Error(err))
				return false
			case err != nil:
				r.log.Error("the work under the lease failed; releasing the lease", zap.Error(err))
				r.release(ctx, h)
				return false
			}
			// The work finished because we are stopping.
			r.release(ctx, h)
			return true
		case <-renew.C:
			started := r.cfg.Now()
			err := r.store.Renew(ctx, h.Lease, r.cfg.TTL)
			switch {
			case err == nil:
				h.extend(started, r.cfg.TTL)
				continue
			case errors.Is(err, ErrFenced):
				r.log.Warn("lease taken over; stepping down", zap.Int64("epoch", h.Lease.Epoch))
			case ctx.Err() != nil:
			case h.Valid():
				// PostgreSQL is unreachable, but nobody can take the lease
				// before it expires: keep working and retry.
				r.log.Warn("renew lease failed; retrying", zap.Error(err))
				continue
			default:
				r.log.Warn("lease expired without renewal; stepping down", zap.Error(err))
			}
			cancelWork()
			<-done
			return false
		case <-ctx.Done():
			if err := <-done; errors.Is(err, ErrLetExpire) {
				r.log.Warn("leaving the lease to expire so that a write in flight settles before a successor starts", zap.Error(err))
				return true
			}
			r.release(ctx, h)
			return true
		}
	}
}

func (r *Runner) release(ctx context.Context, h *Held) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := r.store.Release(rctx, h.Lease); err != nil {
		r.log.Warn("release lease failed; a standby takes over when it expires", zap.Error(err))
		return
	}
	r.log.Info("lease released", zap.Int64("epoch", h.Lease.Epoch))
}

// Validate checks the configuration, naming the environment variables.
func (c Config) Validate() error {
	var errs []error
	if c.TTL < time.Second {
		errs = append(errs, fmt.Errorf("INGESTD_LEASE_TTL: must be at least 1s, got %s", c.TTL))
	}
	if c.Holder == "" {
		errs = append(errs, errors.New("INGESTD_INSTANCE_ID: must not be empty"))
	}
	return errors.Join(errs...)
}

// Metrics expose leadership.
type Metrics struct {
	holder    *prometheus.GaugeVec
	epoch     *prometheus.GaugeVec
	takeovers *prometheus.CounterVec
}

// NewMetrics registers the lease metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		holder: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ingestd_lease_holder",
			Help: "1 while this instance holds the lease (is the active writer for the role).",
		}, []string{"lease"}),
		epoch: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ingestd_lease_epoch",
			Help: "Epoch (fencing token) of the lease this instance last acquired.",
		}, []string{"lease"}),
		takeovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingestd_lease_takeovers_total",
			Help: "Times this instance acquired the lease.",
		}, []string{"lease"}),
	}
	reg.MustRegister(m.holder, m.epoch, m.takeovers)
	return m
}

func (m *Metrics) acquired(name string, epoch int64) {
	m.holder.WithLabelValues(name).Set(1)
	m.epoch.WithLabelValues(name).Set(float64(epoch))
	m.takeovers.WithLabelValues(name).Inc()
}

func (m *Metrics) lost(name string) { m.holder.WithLabelValues(name).Set(0) }

// Declare registers the holder gauge at 0 for a lease this instance competes
// for, so a standby exports the series too.
func (m *Metrics) Declare(name string) { m.holder.WithLabelValues(name).Set(0) }
