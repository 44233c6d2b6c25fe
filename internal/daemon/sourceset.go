package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ingestd/ingestd/internal/doorbell"
	"github.com/ingestd/ingestd/internal/service"
	"github.com/ingestd/ingestd/internal/sources"
)

// reloadSettle is how long a burst of file events must be quiet before the
// sources are read again: Kubernetes swaps a mounted ConfigMap or Secret
// through several renames, and an editor writes a file in steps.
const reloadSettle = 250 * time.Millisecond

// sourceSet runs the configured sources and keeps them in step with the
// configuration: when the sources file or a secret file it names changes,
// or on Reload (SIGHUP), it reads the sources again, starts the new ones,
// stops the removed ones gracefully (the page in flight is committed, the
// lease released; cursors and history stay for when a source comes back)
// and restarts the changed ones, a rotated secret included. A
// configuration that does not validate changes nothing: it is logged once
// and counted, and the next good one is applied.
type sourceSet struct {
	service.Base
	cfg   Config
	build func(sources.Source) (service.Service, error)
	log   *zap.Logger
	// failures counts configurations refused on reload.
	failures prometheus.Counter
	reload   chan struct{}
	// instances keeps this instance's heartbeat; the number of live
	// instances sets this instance's share of the leased sources.
	instances heartbeats
	liveGauge prometheus.Gauge
	live      atomic.Int64
	// minOther is the fewest source leases another live instance held at
	// the last heartbeat (-1: no other instance).
	minOther atomic.Int64

	// mu guards leased, trying and notBefore, which the runners' admission
	// checks read from their own goroutines.
	mu     sync.Mutex
	leased map[string]leasedSource
	// trying are the sources admitted to take their lease whose attempt is
	// still running: they count as held, so that runners admitted at the
	// same moment cannot together take more than the share.
	trying map[string]bool
	// notBefore keeps a source this instance gave up from being taken
	// back by it at once, so that another instance takes it.
	notBefore map[string]time.Time

	// Used only by the run goroutine.
	running map[string]*runningSource
	current []sources.Source
	// configured is current, for the status API's requests.
	configured atomic.Pointer[[]sources.Source]
	lastErr    string
	// btsAccounts are the running BTS sources' accounts, read by the admin
	// API's requests.
	btsAccounts atomic.Pointer[[]string]
	// hooks are the running BTS sources that take webhooks, and ringers
	// their pollers, read by the webhook endpoint's requests.
	hooks   atomic.Pointer[[]doorbell.Account]
	ringers atomic.Pointer[map[string]ringer]
}

type runningSource struct {
	src         sources.Source
	svc         service.Service
	fingerprint string
}

// ringer is a source that webhooks wake (a BTS watch-list poller).
type ringer interface {
	Ring()
}

// leasedSource is a source that runs under its lease (a Yandex journal):
// the instances share these.
type leasedSource interface {
	service.Service
	SetAdmit(func() (done func(), ok bool))
	Holding() bool
}

// rateShared is a source whose request budget is the deployment's (a BTS
// watch-list poller): it is told how many instances share it.
type rateShared interface {
	SetInstances(n int)
}

// heartbeats is what the source set needs of the instances table.
type heartbeats interface {
	Heartbeat(ctx context.Context, holder string, ttl time.Duration) (map[string]int, error)
	Forget(ctx context.Context, holder string) error
}

var _ service.Service = (*sourceSet)(nil)

func newSourceSet(cfg Config, build func(sources.Source) (service.Service, error), instances heartbeats, log *zap.Logger, reg prometheus.Registerer) *sourceSet {
	s := &sourceSet{
		cfg:   cfg,
		build: build,
		log:   log,
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ingestd_config_reload_failures_total",
			Help: "Re-reads of the sources file (on a change or SIGHUP) refused because it did not validate; the running sources carried on.",
		}),
		reload:    make(chan struct{}, 1),
		running:   map[string]*runningSource{},
		instances: instances,
		liveGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ingestd_instances_live",
			Help: "Live ingestd instances, by their heartbeats; each holds at most ceil(leased sources / live instances).",
		}),
		leased:    map[string]leasedSource{},
		trying:    map[string]bool{},
		notBefore: map[string]time.Time{},
	}
	s.live.Store(1)
	s.minOther.Store(-1)
	// Counted at each scrape, so that it is never a heartbeat behind.
	held := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ingestd_sources_held",
		Help: "Sources whose lease this instance holds now (Yandex journals; BTS sources run on every instance).",
	}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(s.held())
	})
	reg.MustRegister(s.failures, held, s.liveGauge)
	return s
}

// share is how many leased sources this instance may hold:
// ceil(leased sources / live instances). s.mu must be held.
func (s *sourceSet) share() int {
	live := max(1, int(s.live.Load()))
	return (len(s.leased) + live - 1) / live
}

// held counts the leased sources held now. s.mu must be held.
func (s *sourceSet) held() int {
	n := 0
	for id, ls := range s.leased {
		if ls.Holding() || s.trying[id] {
			n++
		}
	}
	return n
}

// admit is the admission check of source id's runner: below this
// instance's share, and, within one of it, holding no more than the least
// loaded other instance (so that the last free sources go to the ones
// with the fewest), and not a source it just gave up. An admitted source counts as held until its
// attempt is over (done).
func (s *sourceSet) admit(id string) func() (func(), bool) {
	done := func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.trying, id)
	}
	return func() (func(), bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		held := s.held()
		other := s.minOther.Load()
		// Well below its share an instance takes a free source whatever
		// the others hold, so that sources never wait unheld for the
		// heartbeats that refresh those counts; near its share it leaves
		// a free source to a less loaded instance.
		share := s.share()
		nearShare := held+1 >= share
		if !s.cfg.Now().After(s.notBefore[id]) || held >= share || (nearShare && other >= 0 && int64(held) > other) {
			return nil, false
		}
		s.trying[id] = true
		return done, true
	}
}

// balance renews the heartbeat, and gives up the sources held beyond this
// instance's share: each is stopped gracefully (its page in flight is
// committed, its lease released) and started again, not to be taken back
// by this instance for two lease TTLs, so that another instance takes it.
func (s *sourceSet) balance(ctx context.Context) {
	spread, err := s.instances.Heartbeat(ctx, s.cfg.Lease.Holder, s.cfg.Lease.TTL)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("instance heartbeat failed; keeping the last count of live instances", zap.Error(err))
		}
	} else {
		s.live.Store(int64(max(1, len(spread))))
		other := int64(-1)
		for h, n := range spread {
			if h != s.cfg.Lease.Holder && (other < 0 || int64(n) < other) {
				other = int64(n)
			}
		}
		s.minOther.Store(other)
	}
	s.mu.Lock()
	held, share := s.held(), s.share()
	// Beyond the share everything surplus goes; within it, one source at a
	// time while another instance holds two fewer, so that the spread ends
	// within one.
	give := held - share
	if other := s.minOther.Load(); give <= 0 && other >= 0 && int64(held) > other+1 {
		give = 1
	}
	var surplus []string
	if give > 0 {
		ids := make([]string, 0, held)
		for id, ls := range s.leased {
			if ls.Holding() {
				ids = append(ids, id)
			}
		}
		slices.Sort(ids)
		// held counts the sources being taken too; only held ones can go.
		surplus = ids[len(ids)-min(give, len(ids)):]
		for _, id := range surplus {
			s.notBefore[id] = s.cfg.Now().Add(2 * s.cfg.Lease.TTL)
		}
	}
	s.mu.Unlock()
	s.liveGauge.Set(float64(s.live.Load()))
	// A BTS source's request budget is the deployment's: each instance
	// polls at its share of it.
	for _, r := range s.running {
		if sh, ok := r.svc.(rateShared); ok {
			sh.SetInstances(int(s.live.Load()))
		}
	}
	for _, id := range surplus {
		r := s.running[id]
		if r == nil {
			continue
		}
		s.log.Info("giving a source up to another instance", zap.String("source", id), zap.Int("held", held), zap.Int("share", share))
		r.svc.Stop()
		delete(s.running, id)
		s.forgetLeased(id)
	}
	if len(surplus) > 0 {
		if err := s.apply(ctx, s.current); err != nil {
			s.log.Error("restarting given-up sources", zap.Error(err))
		}
	}
}

func (s *sourceSet) forgetLeased(id string) {
	s.mu.Lock()
	delete(s.leased, id)
	s.mu.Unlock()
}

// Configured returns the sources of the configuration in force.
func (s *sourceSet) Configured() []sources.Source {
	p := s.configured.Load()
	if p == nil {
		return nil
	}
	return *p
}

// BTSAccounts returns the accounts of the running BTS sources, for the
// admin API.
func (s *sourceSet) BTSAccounts() []string {
	p := s.btsAccounts.Load()
	if p == nil {
		return nil
	}
	return *p
}

// WebhookAccounts returns the running BTS sources that take webhooks.
func (s *sourceSet) WebhookAccounts() []doorbell.Account {
	p := s.hooks.Load()
	if p == nil {
		return nil
	}
	return *p
}

// Ring wakes the poller of a BTS source after webhooks made its orders due;
// it does nothing when the source does not run (here).
func (s *sourceSet) Ring(sourceID string) {
	if p := s.ringers.Load(); p != nil {
		if r, ok := (*p)[sourceID]; ok {
			r.Ring()
		}
	}
}

// Reload asks for the sources to be read again (SIGHUP). It never blocks.
func (s *sourceSet) Reload() {
	select {
	case s.reload <- struct{}{}:
	default:
	}
}

// Start starts the initial sources, then follows the configuration.
func (s *sourceSet) Start(ctx context.Context) error {
	srcs, err := s.cfg.Sources()
	if err != nil {
		return err
	}
	// The heartbeat first, so that the first leases are taken knowing how
	// many instances share them.
	s.balance(ctx)
	if err := s.apply(ctx, srcs); err != nil {
		s.stopAll()
		return err
	}
	var watcher *fsnotify.Watcher
	if s.cfg.SourcesFile != "" {
		if watcher, err = fsnotify.NewWatcher(); err != nil {
			s.log.Warn("cannot watch the sources file; changes take effect on SIGHUP", zap.Error(err))
			watcher = nil
		} else {
			s.watch(watcher, srcs)
		}
	}
	return s.Go(ctx, func(ctx context.Context, stop <-chan struct{}) error {
		defer func() {
			s.stopAll()
			// Counted out at once, so that the others take over this
			// instance's share without waiting for its heartbeat to expire.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			if err := s.instances.Forget(fctx, s.cfg.Lease.Holder); err != nil {
				s.log.Warn("forget this instance's heartbeat", zap.Error(err))
			}
		}()
		tick := time.NewTicker(max(s.cfg.Lease.TTL/3, 100*time.Millisecond))
		defer tick.Stop()
		var events <-chan fsnotify.Event
		var watchErrs <-chan error
		if watcher != nil {
			defer func() { _ = watcher.Close() }()
			events, watchErrs = watcher.Events, watcher.Errors
		}
		settle := time.NewTimer(time.Hour)
		settle.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-stop:
				return nil
			case err := <-watchErrs:
				s.log.Warn("watching the sources file", zap.Error(err))
			case <-events:
				settle.Reset(reloadSettle)
			case <-s.reload:
				settle.Reset(0)
			case <-tick.C:
				s.balance(ctx)
			case <-settle.C:
				srcs, err := s.cfg.Sources()
				if err != nil {
					s.failures.Inc()
					if err.Error() != s.lastErr {
						s.log.Error("the sources file does not validate; the running sources carry on unchanged", zap.Error(err))
						s.lastErr = err.Error()
					}
					continue
				}
				s.lastErr = ""
				if err := s.apply(ctx, srcs); err != nil {
					s.failures.Inc()
					s.log.Error("applying the sources file", zap.Error(err))
				}
				if watcher != nil {
					s.watch(watcher, srcs)
				}
			}
		}
	})
}

// watch watches the directories of the sources file and of every secret
// file: Kubernetes replaces a mounted file by swapping a symlink in its
// directory, which a watch on the file itself would not see.
func (s *sourceSet) watch(w *fsnotify.Watcher, srcs []sources.Source) {
	dirs := []string{filepath.Dir(s.cfg.SourcesFile)}
	for _, src := range srcs {
		for _, ref := range src.Secrets() {
			if ref.File != "" {
				dirs = append(dirs, filepath.Dir(ref.File))
			}
		}
	}
	slices.Sort(dirs)
	for _, d := range slices.Compact(dirs) {
		if err := w.Add(d); err != nil {
			s.log.Warn("cannot watch a directory of the sources configuration; changes there take effect on SIGHUP", zap.String("dir", d), zap.Error(err))
		}
	}
}

// apply makes the running sources those of srcs.
func (s *sourceSet) apply(ctx context.Context, srcs []sources.Source) error {
	s.current = srcs
	s.configured.Store(&srcs)
	want := make(map[string]sources.Source, len(srcs))
	for _, src := range srcs {
		want[src.ID()] = src
	}
	for id, r := range s.running {
		src, keep := want[id]
		if keep && fingerprint(src) == r.fingerprint {
			continue
		}
		r.svc.Stop()
		delete(s.running, id)
		s.forgetLeased(id)
		if keep {
			s.log.Info("source changed; restarting it", zap.String("source", id))
		} else {
			s.log.Info("source removed; stopped it (its cursor is kept)", zap.String("source", id))
		}
	}
	var errs []error
	for _, src := range srcs {
		if _, ok := s.running[src.ID()]; ok {
			continue
		}
		svc, err := s.build(src)
		if err == nil {
			if sh, ok := svc.(rateShared); ok {
				sh.SetInstances(int(s.live.Load()))
			}
			if ls, ok := svc.(leasedSource); ok {
				ls.SetAdmit(s.admit(src.ID()))
				s.mu.Lock()
				s.leased[src.ID()] = ls
				s.mu.Unlock()
			}
			err = svc.Start(ctx)
		}
		if err != nil {
			s.forgetLeased(src.ID())
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("source %s: %w", src.ID(), err))
			continue
		}
		s.running[src.ID()] = &runningSource{src: src, svc: svc, fingerprint: fingerprint(src)}
		s.log.Info("source started", zap.String("source", src.ID()))
	}
	var (
		accounts []string
		hooks    []doorbell.Account
		ringers  = map[string]ringer{}
	)
	for id, r := range s.running {
		if r.src.Provider != sources.ProviderBTS {
			continue
		}
		accounts = append(accounts, r.src.BTS.Account)
		if tok := r.src.BTS.WebhookToken; tok.IsSet() {
			hooks = append(hooks, doorbell.Account{SourceID: id, Token: tok})
		}
		if rg, ok := r.svc.(ringer); ok {
			ringers[id] = rg
		}
	}
	slices.Sort(accounts)
	s.btsAccounts.Store(&accounts)
	s.hooks.Store(&hooks)
	s.ringers.Store(&ringers)
	if len(errs) > 0 {
		return fmt.Errorf("start sources: %w", errors.Join(errs...))
	}
	return nil
}

// stopAll stops every running source at once, so that each commits its
// page in flight in parallel with the others.
func (s *sourceSet) stopAll() {
	g := make(service.Group, 0, len(s.running))
	for _, r := range s.running {
		g = append(g, r.svc)
	}
	g.Stop()
	clear(s.running)
	s.mu.Lock()
	clear(s.leased)
	s.mu.Unlock()
}

// fingerprint identifies a source's whole configuration, its secrets'
// values included (hashed), so that a rotated secret restarts the source.
func fingerprint(src sources.Source) string {
	h := sha256.New()
	fmt.Fprintf(h, "%#v\x00%s\x00%s\x00%s\x00%s\x00%s", src, src.Yandex.Token.Reveal(), src.BTS.Login, src.BTS.Password.Reveal(), src.BTS.Schedule.Intervals.String(), src.BTS.WebhookToken.Reveal())
	return hex.EncodeToString(h.Sum(nil))
}
