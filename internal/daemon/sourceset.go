package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

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

	// Used only by the run goroutine.
	running map[string]*runningSource
	lastErr string
	// btsAccounts are the running BTS sources' accounts, read by the admin
	// API's requests.
	btsAccounts atomic.Pointer[[]string]
}

type runningSource struct {
	svc         service.Service
	fingerprint string
}

var _ service.Service = (*sourceSet)(nil)

func newSourceSet(cfg Config, build func(sources.Source) (service.Service, error), log *zap.Logger, reg prometheus.Registerer) *sourceSet {
	s := &sourceSet{
		cfg:   cfg,
		build: build,
		log:   log,
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ingestd_config_reload_failures_total",
			Help: "Re-reads of the sources file (on a change or SIGHUP) refused because it did not validate; the running sources carried on.",
		}),
		reload:  make(chan struct{}, 1),
		running: map[string]*runningSource{},
	}
	reg.MustRegister(s.failures)
	return s
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
		defer s.stopAll()
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
		for _, ref := range []sources.Secret{src.Token, src.Login, src.Password} {
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
			err = svc.Start(ctx)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("source %s: %w", src.ID(), err))
			continue
		}
		s.running[src.ID()] = &runningSource{svc: svc, fingerprint: fingerprint(src)}
		s.log.Info("source started", zap.String("source", src.ID()))
	}
	var accounts []string
	for id := range s.running {
		if account, ok := strings.CutPrefix(id, sources.ProviderBTS+"/"); ok {
			accounts = append(accounts, account)
		}
	}
	slices.Sort(accounts)
	s.btsAccounts.Store(&accounts)
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
}

// fingerprint identifies a source's whole configuration, its secrets'
// values included (hashed), so that a rotated secret restarts the source.
func fingerprint(src sources.Source) string {
	h := sha256.New()
	fmt.Fprintf(h, "%#v\x00%s\x00%s\x00%s\x00%s", src, src.Yandex.Token.Reveal(), src.BTS.Login, src.BTS.Password.Reveal(), src.BTS.Schedule.Intervals.String())
	return hex.EncodeToString(h.Sum(nil))
}
