package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/ingestd/ingestd/internal/admin"
	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/failpoint"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pg"
	"github.com/ingestd/ingestd/internal/poller"
	"github.com/ingestd/ingestd/internal/publish"
	"github.com/ingestd/ingestd/internal/storage"
	"github.com/ingestd/ingestd/internal/watchlist"
	"github.com/ingestd/ingestd/internal/yandex"
)

// The store implements what each consumer declares it needs.
var (
	_ publish.Store        = (*outbox.Store)(nil)
	_ poller.JournalStore  = (*cursor.Store)(nil)
	_ poller.BTSStore      = (*watchlist.Store)(nil)
	_ poller.Halts         = (*cursor.Store)(nil)
	_ poller.Backlog       = (*outbox.Store)(nil)
	_ admin.Store          = (*watchlist.Store)(nil)
	_ poller.Outbox        = (*publish.Publisher)(nil)
	_ poller.CommitHandler = (*publish.Publisher)(nil)
	_ poller.Journal       = (*yandex.Client)(nil)
)

// Daemon is a running ingestd.
type Daemon struct {
	cfg    Config
	log    *zap.Logger
	db     *pg.DB
	leases *lease.Store
	pub    *publish.Publisher
	reg    *prometheus.Registry

	// sources run the pollers, publisher the relay, each under its lease.
	sources   []*lease.Runner
	publisher *lease.Runner
	// bts polls the BTS watch-list. It runs on every instance: claims are
	// taken with SKIP LOCKED and every write is compare-and-set per order,
	// so replicas share the work instead of standing by.
	bts      *poller.BTSPoller
	admin    http.Handler
	listener net.Listener
}

// New connects to PostgreSQL and Kafka, checks the schema and the topic, and
// builds every component. Nothing polls or publishes until Run.
func New(ctx context.Context, cfg Config, log *zap.Logger) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	fps, err := failpoint.Parse(cfg.Failpoints)
	if err != nil {
		return nil, err
	}
	if fps != nil {
		log.Warn("failpoints armed: this process will kill itself at the given points", zap.String("failpoints", cfg.Failpoints))
	}
	cfg.Kafka.Failpoints = fps
	d := &Daemon{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	db, err := pg.Open(ctx, cfg.Database)
	if err != nil {
		return nil, err
	}
	d.db = db
	st := storage.New(db)
	d.leases = st.Leases
	pub, err := publish.New(ctx, cfg.Kafka, st.Outbox, log.Named("publish"), d.reg)
	if err != nil {
		db.Close()
		return nil, err
	}
	d.pub = pub

	hc, err := cfg.Upstream.httpClient(0)
	if err != nil {
		d.closeAll()
		return nil, err
	}
	pm := poller.NewMetrics(d.reg)
	lm := lease.NewMetrics(d.reg)
	if cfg.Yandex.Enabled() {
		client, err := yandex.NewClient(cfg.Yandex, hc)
		if err != nil {
			d.closeAll()
			return nil, err
		}
		jp := poller.NewJournal(poller.JournalConfig{
			SourceID:       cfg.Yandex.SourceID(),
			Account:        cfg.Yandex.Account,
			PollInterval:   cfg.Yandex.PollInterval,
			BackoffInitial: cfg.Upstream.BackoffInitial,
			BackoffMax:     cfg.Upstream.BackoffMax,
			CommitTimeout:  cfg.ShutdownTimeout / 2,
			MaxBacklog:     cfg.MaxBacklog,
			Failpoints:     fps,
		}, client, st.Cursors, st.Outbox, pub, log.Named("yandex"), pm)
		d.sources = append(d.sources, d.runner(SourceLease(cfg.Yandex.SourceID()), log.Named("yandex"), lm,
			func(ctx context.Context, h *lease.Held, stop <-chan struct{}) error {
				// A poller stops gracefully by cancellation: it still commits
				// the page it already fetched.
				ctx, cancel := lease.StopContext(ctx, stop)
				defer cancel()
				return jp.Run(ctx, h.Lease)
			}))
	}
	if cfg.BTS.Enabled() {
		bhc, err := cfg.Upstream.httpClient(cfg.BTSPoll.Concurrency)
		if err != nil {
			d.closeAll()
			return nil, err
		}
		client, err := bts.NewClient(cfg.BTS, bhc)
		if err != nil {
			d.closeAll()
			return nil, err
		}
		d.bts, err = poller.NewBTS(cfg.btsPoll(), client, st.Watchlist, st.Cursors, st.Outbox, pub, log.Named("bts"), pm)
		if err != nil {
			d.closeAll()
			return nil, err
		}
	}
	d.admin = admin.New(admin.Config{Token: cfg.AdminToken, BTSSourceID: cfg.BTS.SourceID()}, st.Watchlist, log.Named("admin"))
	d.publisher = d.runner(PublisherLease, log.Named("publish"), lm, pub.Run)

	if cfg.HTTP.enabled() {
		ln, err := net.Listen("tcp", cfg.HTTP.Addr)
		if err != nil {
			d.closeAll()
			return nil, fmt.Errorf("listen on INGESTD_HTTP_ADDR %s: %w", cfg.HTTP.Addr, err)
		}
		d.listener = ln
	}
	return d, nil
}

// PublisherLease and SourceLease name the leases; they live in
// internal/lease.
const PublisherLease = lease.Publisher

// SourceLease names the lease of a journal source's poller.
func SourceLease(sourceID string) string { return lease.Source(sourceID) }

func (d *Daemon) runner(name string, log *zap.Logger, m *lease.Metrics, work lease.Work) *lease.Runner {
	m.Declare(name)
	return lease.NewRunner(name, d.cfg.Lease, d.leases, work, log, m)
}

// HTTPAddr returns the address the operational endpoints listen on, or "".
func (d *Daemon) HTTPAddr() string {
	if d.listener == nil {
		return ""
	}
	return d.listener.Addr().String()
}

func (d *Daemon) closeAll() {
	if d.pub != nil {
		if err := d.pub.Close(); err != nil {
			d.log.Warn("close kafka writer", zap.Error(err))
		}
	}
	if d.db != nil {
		d.db.Close()
	}
	if d.listener != nil {
		_ = d.listener.Close()
	}
}

// Run runs the daemon until ctx ends, then shuts down gracefully within
// ShutdownTimeout. It returns nil after a clean shutdown; a halted source does
// not stop the daemon (it stays visible in metrics and logs).
func (d *Daemon) Run(ctx context.Context) error {
	defer d.closeAll()

	fatal := make(chan error, 1)
	var srv *http.Server
	var srvDone sync.WaitGroup
	if d.listener != nil {
		srv = &http.Server{Handler: d.handler(), ReadHeaderTimeout: 5 * time.Second}
		srvDone.Go(func() {
			if err := srv.Serve(d.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				select {
				case fatal <- fmt.Errorf("serve HTTP: %w", err):
				default:
				}
			}
		})
	}

	// The runners outlive ctx: on shutdown they are stopped in order, and
	// only cancelled outright when the shutdown timeout runs out.
	runCtx, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	defer hardStop()
	var sourcesDone, publisherDone sync.WaitGroup
	for _, r := range d.sources {
		sourcesDone.Go(func() { _ = r.Run(runCtx) })
	}
	btsCtx, stopBTS := context.WithCancel(runCtx)
	defer stopBTS()
	if d.bts != nil {
		sourcesDone.Go(func() {
			if err := d.bts.Run(btsCtx); err != nil {
				d.log.Error("BTS source halted; fix the cause and restart", zap.Error(err))
			}
		})
	}
	publisherDone.Go(func() { _ = d.publisher.Run(runCtx) })
	d.log.Info("ingestd running; competing for leases",
		zap.Int("journal_sources", len(d.sources)), zap.Bool("bts", d.bts != nil), zap.String("topic", d.cfg.Kafka.Topic),
		zap.String("http_addr", d.HTTPAddr()), zap.String("instance", d.cfg.Lease.Holder))

	var runErr error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down")
	case runErr = <-fatal:
		d.log.Error("fatal error; shutting down", zap.Error(runErr))
	}
	deadline := time.AfterFunc(d.cfg.ShutdownTimeout, func() {
		d.log.Warn("shutdown timeout reached; stopping now (what was not published is published on the next start)")
		hardStop()
	})
	defer deadline.Stop()

	// Stop polling first (each poller commits the page it already fetched
	// and releases its lease), then let the publisher drain what was
	// committed and release its lease, so a standby takes over at once.
	for _, r := range d.sources {
		r.Stop()
	}
	stopBTS()
	sourcesDone.Wait()
	d.publisher.Stop()
	publisherDone.Wait()

	if srv != nil {
		// In-flight scrapes and probes are short; the listener closes at once.
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
		srvDone.Wait()
	}
	d.log.Info("stopped")
	return runErr
}

func (d *Daemon) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		checks := map[string]string{"postgres": "ok", "kafka": "ok"}
		status := http.StatusOK
		if err := d.db.Ping(ctx); err != nil {
			checks["postgres"], status = err.Error(), http.StatusServiceUnavailable
		}
		if err := d.pub.Ping(ctx); err != nil {
			checks["kafka"], status = err.Error(), http.StatusServiceUnavailable
		}
		writeJSON(w, status, checks)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg}))
	mux.Handle("/v1/", d.admin)
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
