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
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
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
}

// Valid reports whether the lease is certainly still held. Work that cannot
// be fenced by PostgreSQL (writing to Kafka) checks it before acting.
func (h *Held) Valid() bool { return time.Now().UnixNano() < h.validUntil.Load() }

func (h *Held) extend(from time.Time, ttl time.Duration) {
	h.validUntil.Store(from.Add(ttl - h.margin).UnixNano())
}

// ErrLetExpire, returned (wrapped) by Work, asks the runner not to release
// the lease on its way out but to let it expire: the work may have left an
// effect in flight that a successor must not race (a Kafka write whose
// outcome is unknown), and expiry gives it time to settle.
var ErrLetExpire = errors.New("leave the lease to expire")

// Work is what runs while the lease is held. It must return when ctx ends
// (returning nil), and finish gracefully and return nil when stop is closed.
// It returns an error wrapping ErrFenced when a write was refused
// because the lease was lost; any other error (a halted source) keeps the
// lease held, idle, so that no standby repeats the failure, until the lease
// is lost or the runner stops.
type Work func(ctx context.Context, h *Held, stop <-chan struct{}) error

// Runner competes for one lease and runs Work while holding it.
type Runner struct {
	name  string
	cfg   Config
	store table
	work  Work
	log   *zap.Logger
	m     *Metrics

	stopOnce sync.Once
	stop     chan struct{}
}

// NewRunner returns a runner for the lease name.
func NewRunner(name string, cfg Config, store *Store, work Work, log *zap.Logger, m *Metrics) *Runner {
	return &Runner{
		name: name, cfg: cfg, store: store, work: work, m: m, stop: make(chan struct{}),
		log: log.With(zap.String("lease", name), zap.String("holder", cfg.Holder)),
	}
}

// Stop asks the runner to finish: if it holds the lease, its Work is told to
// stop gracefully and the lease is released afterwards; if not, Run returns
// at once.
func (r *Runner) Stop() { r.stopOnce.Do(func() { close(r.stop) }) }

// Run competes for the lease until ctx ends or Stop is called. It returns
// nil in both cases.
func (r *Runner) Run(ctx context.Context) error {
	retry := min(time.Second, r.cfg.TTL/5)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.stop:
			return nil
		default:
		}
		started := time.Now()
		l, ok, err := r.store.TryAcquire(ctx, r.name, r.cfg.Holder, r.cfg.TTL)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("acquire lease failed; retrying", zap.Error(err))
		}
		if err != nil || !ok {
			if !r.wait(ctx, retry) {
				return nil
			}
			continue
		}
		h := &Held{Lease: l, margin: r.cfg.TTL / 5}
		h.extend(started, r.cfg.TTL)
		r.m.acquired(r.name, l.Epoch)
		r.log.Info("lease acquired; this instance is now active", zap.Int64("epoch", l.Epoch))
		released := r.hold(ctx, h)
		r.m.lost(r.name)
		if released {
			return nil
		}
	}
}

// hold runs the work under h until the lease is lost (false) or the runner
// is stopping (true, after releasing the lease).
func (r *Runner) hold(ctx context.Context, h *Held) (released bool) {
	workCtx, cancelWork := context.WithCancel(ctx)
	defer cancelWork()
	done := make(chan error, 1)
	go func() { done <- r.work(workCtx, h, r.stop) }()

	renew := time.NewTicker(r.cfg.TTL / 3)
	defer renew.Stop()
	working := true
	stop := r.stop
	for {
		select {
		case err := <-done:
			working = false
			switch {
			case err == nil:
				// The work finished because we are stopping.
				r.release(ctx, h)
				return true
			case errors.Is(err, ErrLetExpire):
				r.log.Warn("leaving the lease to expire so that a write in flight settles before a successor starts", zap.Error(err))
				return true
			case errors.Is(err, ErrFenced):
				r.log.Warn("lease lost to a newer epoch; standing by", zap.Error(err))
				return false
			default:
				// The work stopped on an error an operator must fix (it was
				// logged where it happened). Keep the lease, idle, so a
				// standby does not repeat the failure; an operator tool
				// taking the lease over restarts the work.
			}
		case <-renew.C:
			started := time.Now()
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
			if working {
				cancelWork()
				<-done
			}
			return false
		case <-stop:
			if !working {
				r.release(ctx, h)
				return true
			}
			// Work sees stop too and finishes gracefully; wait for it above.
			stop = nil // a nil channel never fires again in this select
		case <-ctx.Done():
			if working {
				if err := <-done; errors.Is(err, ErrLetExpire) {
					r.log.Warn("leaving the lease to expire so that a write in flight settles before a successor starts", zap.Error(err))
					return true
				}
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

func (r *Runner) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-r.stop:
		return false
	case <-t.C:
		return true
	}
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

// NewHeld wraps a lease acquired at acquiredAt for ttl, for callers that do
// not use a Runner (operator tools, tests): it is Valid until ttl, less the
// safety margin, after acquiredAt.
func NewHeld(l Lease, acquiredAt time.Time, ttl time.Duration) *Held {
	h := &Held{Lease: l, margin: ttl / 5}
	h.extend(acquiredAt, ttl)
	return h
}

// StopContext returns a context that is cancelled when stop is closed or
// ctx ends, for work that stops gracefully by cancellation. Call cancel when
// done; it waits for the watcher goroutine.
func StopContext(ctx context.Context, stop <-chan struct{}) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-stop:
			cancel()
		case <-c.Done():
		}
	}()
	return c, func() {
		cancel()
		<-done
	}
}
