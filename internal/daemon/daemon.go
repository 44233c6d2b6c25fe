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

	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/poller"
	"github.com/ingestd/ingestd/internal/publish"
	"github.com/ingestd/ingestd/internal/yandex"
)

// The store implements what each consumer declares it needs.
var (
	_ publish.Store       = (*cursor.Store)(nil)
	_ poller.JournalStore = (*cursor.Store)(nil)
	_ poller.Outbox       = (*publish.Publisher)(nil)
	_ poller.Journal      = (*yandex.Client)(nil)
)

// Daemon is a running ingestd.
type Daemon struct {
	cfg   Config
	log   *zap.Logger
	store *cursor.Store
	pub   *publish.Publisher
	reg   *prometheus.Registry

	journals []*poller.JournalPoller
	listener net.Listener
}

// New connects to PostgreSQL and Kafka, checks the schema and the topic, and
// builds every component. Nothing polls or publishes until Run.
func New(ctx context.Context, cfg Config, log *zap.Logger) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	store, err := cursor.Open(ctx, cfg.Database)
	if err != nil {
		return nil, err
	}
	d.store = store
	pub, err := publish.New(ctx, cfg.Kafka, store, log.Named("publish"), d.reg)
	if err != nil {
		store.Close()
		return nil, err
	}
	d.pub = pub

	hc, err := cfg.Upstream.httpClient()
	if err != nil {
		d.closeAll()
		return nil, err
	}
	pm := poller.NewMetrics(d.reg)
	if cfg.Yandex.Enabled() {
		client, err := yandex.NewClient(cfg.Yandex, hc)
		if err != nil {
			d.closeAll()
			return nil, err
		}
		d.journals = append(d.journals, poller.NewJournal(poller.JournalConfig{
			SourceID:       cfg.Yandex.SourceID(),
			Account:        cfg.Yandex.Account,
			PollInterval:   cfg.Yandex.PollInterval,
			BackoffInitial: cfg.Upstream.BackoffInitial,
			BackoffMax:     cfg.Upstream.BackoffMax,
			CommitTimeout:  cfg.ShutdownTimeout / 2,
		}, client, store, pub, log.Named("yandex"), pm))
	}

	if cfg.HTTP.Addr != "" {
		ln, err := net.Listen("tcp", cfg.HTTP.Addr)
		if err != nil {
			d.closeAll()
			return nil, fmt.Errorf("listen on INGESTD_HTTP_ADDR %s: %w", cfg.HTTP.Addr, err)
		}
		d.listener = ln
	}
	return d, nil
}

// Store returns the daemon's PostgreSQL store (for tools and the demo).
func (d *Daemon) Store() *cursor.Store { return d.store }

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
	if d.store != nil {
		d.store.Close()
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

	pubCtx, stopPub := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPub()
	pubDone := make(chan error, 1)
	go func() { pubDone <- d.pub.Run(pubCtx) }()

	pollCtx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	var polling sync.WaitGroup
	for _, j := range d.journals {
		polling.Go(func() {
			if err := j.Run(pollCtx); err != nil {
				// A halt is logged here, once, loudly; the rest of the
				// daemon keeps running.
				d.log.Error("source halted; fix the cause and restart, or repair the cursor", zap.Error(err))
			}
		})
	}
	d.log.Info("ingestd running", zap.Int("sources", len(d.journals)), zap.String("topic", d.cfg.Kafka.Topic), zap.String("http_addr", d.HTTPAddr()))

	var runErr error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down")
	case runErr = <-fatal:
		d.log.Error("fatal error; shutting down", zap.Error(runErr))
	}
	deadline := time.Now().Add(d.cfg.ShutdownTimeout)

	// Stop polling; each poller commits the page it already fetched.
	stopPolling()
	polling.Wait()

	// Publish what was committed, within what is left of the timeout.
	d.pub.Drain()
	select {
	case <-pubDone:
	case <-time.After(time.Until(deadline)):
		d.log.Warn("shutdown timeout reached before the outbox was drained; the rest is published on the next start")
		stopPub()
		<-pubDone
	}

	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), max(time.Until(deadline), time.Second))
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
		if err := d.store.Ping(ctx); err != nil {
			checks["postgres"], status = err.Error(), http.StatusServiceUnavailable
		}
		if err := d.pub.Ping(ctx); err != nil {
			checks["kafka"], status = err.Error(), http.StatusServiceUnavailable
		}
		writeJSON(w, status, checks)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg}))
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
