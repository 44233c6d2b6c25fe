package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/ingestd/ingestd/internal/admin"
	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/doorbell"
	"github.com/ingestd/ingestd/internal/failpoint"
	"github.com/ingestd/ingestd/internal/kafkaconn"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pg"
	"github.com/ingestd/ingestd/internal/poller"
	"github.com/ingestd/ingestd/internal/poller/journal"
	"github.com/ingestd/ingestd/internal/poller/watch"
	"github.com/ingestd/ingestd/internal/publish"
	"github.com/ingestd/ingestd/internal/retry"
	"github.com/ingestd/ingestd/internal/service"
	"github.com/ingestd/ingestd/internal/sources"
	"github.com/ingestd/ingestd/internal/status"
	"github.com/ingestd/ingestd/internal/storage"
	"github.com/ingestd/ingestd/internal/watchlist"
	"github.com/ingestd/ingestd/internal/yandex"
)

// Every implementation satisfies what its consumer declares it needs.
var (
	_ publish.Store   = (*outbox.Store)(nil)
	_ journal.Client  = (*yandex.Client)(nil)
	_ journal.Cursors = (*cursor.Store)(nil)
	_ watch.Client    = (*bts.Client)(nil)
	_ watch.Store     = (*watchlist.Store)(nil)
	_ poller.Halts    = (*cursor.Store)(nil)
	_ poller.Backlog  = (*outbox.Store)(nil)
	_ poller.Outbox   = (*publish.Publisher)(nil)
	_ admin.Store     = (*watchlist.Store)(nil)
	_ lease.Work      = (*journal.Poller)(nil).Run
	_ lease.Work      = (*publish.Publisher)(nil).Run
)

// ConfigError is an invalid configuration: New refuses to start, naming
// every problem with its environment variable.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return "invalid configuration:\n" + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Daemon is a running ingestd.
type Daemon struct {
	cfg  Config
	log  *zap.Logger
	db   *pg.DB
	pub  *publish.Publisher
	reg  *prometheus.Registry
	http *httpServer // nil when INGESTD_HTTP_ADDR is off

	// services are every long-running component, in the order they start;
	// they stop in the reverse order (see Run). The first beforeKafka of
	// them start before the topic is known; the rest wait for it.
	services    []service.Service
	beforeKafka int
	sources     *sourceSet
}

// New validates cfg (a *ConfigError says what is wrong), connects to
// PostgreSQL, checks the schema, and builds every component. Nothing polls
// or publishes until Run, which also waits for Kafka.
func New(ctx context.Context, cfg Config, log *zap.Logger) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, &ConfigError{Err: err}
	}
	fps, err := failpoint.Parse(cfg.Failpoints)
	if err != nil {
		return nil, &ConfigError{Err: err}
	}
	if fps != nil {
		log.Warn("failpoints armed: this process will kill itself at the given points", zap.String("failpoints", cfg.Failpoints))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Kafka.Failpoints = fps
	cfg.Kafka.Backoff = cfg.Backoff
	cfg.Kafka.Now = cfg.Now
	cfg.Lease.Now = cfg.Now
	d := &Daemon{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// The instance names its sessions, so that those of a frozen instance
	// are ended together (stallBreaker).
	dbCfg := cfg.Database
	dbCfg.ApplicationName = pg.ApplicationName(cfg.Lease.Holder)
	db, err := pg.Open(ctx, dbCfg)
	if err != nil {
		return nil, err
	}
	d.db = db
	if err := d.build(ctx, storage.New(db), fps); err != nil {
		d.closeAll()
		return nil, err
	}
	return d, nil
}

// build creates every component on st and lists the services in start
// order: the HTTP server (probes answer from the start), the publisher
// (ready before the first commit), then the sources.
func (d *Daemon) build(ctx context.Context, st *storage.Stores, fps *failpoint.Set) error {
	cfg := d.cfg
	pub, err := publish.Open(cfg.Kafka, st.Outbox, d.log.Named("publish"), d.reg)
	if err != nil {
		return &ConfigError{Err: err}
	}
	d.pub = pub
	lm := lease.NewMetrics(d.reg)
	pm := poller.NewMetrics(d.reg)
	loop := poller.Loop{
		Backoff: cfg.Backoff,
		// Sources commit what they fetched before shutdown within half the
		// shutdown timeout, which leaves the other half to the publisher.
		CommitTimeout: cfg.ShutdownTimeout / 2,
		MaxBacklog:    cfg.MaxBacklog,
		Now:           cfg.Now,
	}

	d.sources = newSourceSet(cfg, func(src sources.Source) (service.Service, error) {
		if src.Provider == sources.ProviderYandex {
			return d.yandexSource(src.Yandex, st, pub, loop, lm, pm, fps)
		}
		return d.btsSource(src.BTS, st, pub, loop, pm)
	}, st.Leases, d.log.Named("sources"), d.reg)
	publisher, err := lease.NewRunner(lease.Publisher, cfg.Lease, st.Leases, pub.Run, d.log.Named("publish"), lm)
	if err != nil {
		return err
	}

	if cfg.HTTP.enabled() {
		ln, err := net.Listen("tcp", cfg.HTTP.Addr)
		if err != nil {
			return fmt.Errorf("listen on INGESTD_HTTP_ADDR %s: %w", cfg.HTTP.Addr, err)
		}
		ad := admin.New(admin.Config{
			Token:       cfg.AdminToken,
			BTSAccounts: d.sources.BTSAccounts,
			Sources: func(ctx context.Context) ([]status.Source, error) {
				c := status.Collector{Cursors: st.Cursors, Leases: st.Leases, Outbox: st.Outbox, MaxBacklog: cfg.MaxBacklog}
				return c.Collect(ctx, d.sources.Configured(), cfg.Now())
			},
		}, st.Watchlist, d.log.Named("admin"))
		bell, err := doorbell.New(cfg.Webhook, d.sources.WebhookAccounts, st.Watchlist, d.sources.Ring, d.reg, d.log.Named("webhook"))
		if err != nil {
			_ = ln.Close()
			return &ConfigError{Err: err}
		}
		d.http = newHTTPServer(ln, d.handler(ad, bell))
		// The doorbell stops after the server, so that it writes the
		// webhooks the server took before it stopped.
		d.services = append(d.services, bell, d.http)
	}
	// Every instance ends the outbox COPYs that a frozen instance left
	// holding the outbox counter and its lease row; it runs before the
	// writers start and until they have stopped.
	d.services = append(d.services, &stallBreaker{outbox: st.Outbox, log: d.log.Named("outbox")})
	d.beforeKafka = len(d.services)
	d.services = append(d.services, publisher, d.sources)
	return nil
}

// sourceIDs are the ids of the sources in force, for the start-up line.
func (d *Daemon) sourceIDs() []string {
	srcs := d.sources.Configured()
	ids := make([]string, len(srcs))
	for i, src := range srcs {
		ids[i] = src.ID()
	}
	return ids
}

// Reload reads the sources again (SIGHUP): new ones start, removed ones
// stop, changed ones restart. It never blocks.
func (d *Daemon) Reload() { d.sources.Reload() }

// yandexSource builds a Yandex journal source: its client and its poller,
// which runs under the source's lease, so that one instance walks a
// journal at a time.
func (d *Daemon) yandexSource(yc yandex.Config, st *storage.Stores, pub *publish.Publisher, loop poller.Loop, lm *lease.Metrics, pm *poller.Metrics, fps *failpoint.Set) (service.Service, error) {
	hc, err := d.cfg.Upstream.HTTPClient(0)
	if err != nil {
		return nil, err
	}
	client, err := yandex.NewClient(yc, hc)
	if err != nil {
		return nil, err
	}
	jp, err := journal.New(journal.Config{
		SourceID:     yc.SourceID(),
		Account:      yc.Account,
		PollInterval: yc.PollInterval,
		Loop:         loop,
		Failpoints:   fps,
	}, journal.Deps{Client: client, Cursors: st.Cursors, Backlog: st.Outbox, Outbox: pub, Log: d.log.Named("yandex"), Metrics: pm})
	if err != nil {
		return nil, err
	}
	r, err := lease.NewRunner(lease.Source(yc.SourceID()), d.cfg.Lease, st.Leases, jp.Run, d.log.Named("yandex").With(zap.String("source", yc.SourceID())), lm)
	if err != nil {
		jp.Unregister()
		return nil, err
	}
	return leasedJournal{Runner: r, unregister: jp.Unregister}, nil
}

// leasedJournal is a journal source's lease runner, which removes the
// source's own metrics once stopped, so that the source can start again
// (with new settings) and register its own.
type leasedJournal struct {
	*lease.Runner
	unregister func()
}

func (l leasedJournal) Stop() {
	l.Runner.Stop()
	l.unregister()
}

// btsSource builds a BTS Express source: its client and its watch-list
// poller. The poller runs on every instance, without a lease: claims are
// taken with SKIP LOCKED and every write is compare-and-set per order, so
// replicas share the work instead of standing by.
func (d *Daemon) btsSource(bc bts.Config, st *storage.Stores, pub *publish.Publisher, loop poller.Loop, pm *poller.Metrics) (service.Service, error) {
	hc, err := d.cfg.Upstream.HTTPClient(bc.Schedule.Concurrency)
	if err != nil {
		return nil, err
	}
	client, err := bts.NewClient(bc, hc)
	if err != nil {
		return nil, err
	}
	wp, err := watch.New(watch.Config{
		SourceID: bc.SourceID(),
		Account:  bc.Account,
		Instance: d.cfg.Lease.Holder,
		Schedule: bc.Schedule,
		Loop:     loop,
	}, watch.Deps{Client: client, Store: st.Watchlist, Halts: st.Cursors, Backlog: st.Outbox, Outbox: pub, Log: d.log.Named("bts"), Metrics: pm})
	if err != nil {
		return nil, err
	}
	return btsWatch{Poller: wp}, nil
}

// btsWatch is a BTS source's watch-list poller, which removes the source's
// own metrics once stopped, so that the source can start again (with new
// settings) and register its own.
type btsWatch struct{ *watch.Poller }

func (b btsWatch) Stop() {
	b.Poller.Stop()
	b.Unregister()
}

// HTTPAddr returns the address the operational endpoints listen on, or "".
func (d *Daemon) HTTPAddr() string {
	if d.http == nil {
		return ""
	}
	return d.http.ln.Addr().String()
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
	if d.http != nil {
		_ = d.http.ln.Close()
	}
}

// Run runs the daemon until ctx ends, then shuts down gracefully within
// ShutdownTimeout. It returns nil after a clean shutdown. A halted source
// does not stop the daemon: it stays visible in metrics and logs, and the
// rest keeps running.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.closeAll()

	// The services outlive ctx: on shutdown they are stopped in order, and
	// only cancelled outright when the shutdown timeout runs out.
	runCtx, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	defer hardStop()
	for i, s := range d.services {
		if i == d.beforeKafka {
			if err := d.awaitKafka(ctx); err != nil {
				d.stop(d.services[:i])
				if ctx.Err() != nil {
					d.log.Info("stopped before kafka answered")
					return nil
				}
				return err
			}
		}
		if err := s.Start(runCtx); err != nil {
			d.stop(d.services[:i])
			return fmt.Errorf("start: %w", err)
		}
	}
	d.log.Info("ingestd running; competing for leases",
		zap.Strings("sources", d.sourceIDs()), zap.String("topic", d.cfg.Kafka.Topic),
		zap.Bool("kafka_tls", d.cfg.Kafka.Conn.UsesTLS()), zap.String("kafka_sasl", d.cfg.Kafka.Conn.SASLMechanism), zap.String("kafka_compression", d.cfg.Kafka.Compression),
		zap.String("http_addr", d.HTTPAddr()), zap.String("instance", d.cfg.Lease.Holder))

	var (
		runErr   error
		httpDone <-chan struct{}
	)
	if d.http != nil {
		httpDone = d.http.Done()
	}
	select {
	case <-ctx.Done():
		d.log.Info("shutting down")
	case <-httpDone:
		runErr = fmt.Errorf("serve HTTP: %w", d.http.Err())
		d.log.Error("the HTTP server failed; shutting down", zap.Error(runErr))
	}
	deadline := time.AfterFunc(d.cfg.ShutdownTimeout, func() {
		d.log.Warn("shutdown timeout reached; stopping now (what was not published is published on the next start)")
		hardStop()
	})
	defer deadline.Stop()
	d.stop(d.services)
	d.log.Info("stopped")
	return runErr
}

// awaitKafka prepares the publisher (topic check or creation, and the
// partition count events are assigned with), retrying with backoff until
// it succeeds or ctx ends: the sources cannot commit before it. Meanwhile
// /readyz answers 503 with the reason. A missing topic that ingestd may not
// create is a configuration mistake and ends the daemon.
func (d *Daemon) awaitKafka(ctx context.Context) error {
	bo := d.cfg.Backoff.New()
	var last string
	for {
		err := d.pub.Prepare(ctx)
		var ae *kafkaconn.AccessError
		switch {
		case err == nil:
			if last != "" {
				d.log.Info("kafka answers; starting")
			}
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, publish.ErrTopicMissing):
			return err
		case errors.As(err, &ae):
			// The publisher logged it, once.
		case err.Error() != last:
			d.log.Warn("waiting for kafka", zap.Error(err))
		}
		last = err.Error()
		retry.Sleep(ctx, bo.Next())
	}
}

// stop stops services in the reverse of their start order: the sources
// first (each commits the page it already fetched and releases its lease),
// then the publisher (it publishes what was committed and releases its
// lease, so a standby takes over at once), then the HTTP server.
func (d *Daemon) stop(services []service.Service) {
	for i := len(services) - 1; i >= 0; i-- {
		services[i].Stop()
	}
}

func (d *Daemon) handler(ad http.Handler, bell *doorbell.Doorbell) http.Handler {
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
	mux.Handle("/v1/", ad)
	// BTS webhooks authenticate with their account's webhook token, not
	// the admin token; the more specific pattern wins over /v1/.
	mux.Handle(bell.Path(), bell)
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// httpServer serves the operational endpoints and the admin API as a
// service.
type httpServer struct {
	service.Base
	ln  net.Listener
	srv *http.Server
}

var _ service.Service = (*httpServer)(nil)

func newHTTPServer(ln net.Listener, h http.Handler) *httpServer {
	return &httpServer{ln: ln, srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}}
}

// Start serves until Stop, ctx's end, or a failure of the listener.
func (s *httpServer) Start(ctx context.Context) error {
	return s.Go(ctx, func(ctx context.Context, stop <-chan struct{}) error {
		served := make(chan error, 1)
		go func() { served <- s.srv.Serve(s.ln) }()
		select {
		case err := <-served:
			return err
		case <-stop:
		case <-ctx.Done():
		}
		// In-flight scrapes and probes are short; the listener closes at once.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(sctx)
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
}

// stallBreaker ends, every half pg.StallTimeout, the sessions a frozen
// instance left holding the locks every writer needs, all of that
// instance's at once (see outbox.Store.EndStalledWriters): PostgreSQL ends
// only a session idle in its transaction, one at a time, and never a COPY
// waiting for its client.
type stallBreaker struct {
	service.Base
	outbox *outbox.Store
	log    *zap.Logger
}

var _ service.Service = (*stallBreaker)(nil)

// Start runs the breaker until Stop or ctx's end.
func (b *stallBreaker) Start(ctx context.Context) error {
	return b.Go(ctx, func(ctx context.Context, stop <-chan struct{}) error {
		failing := false
		for retry.Sleep(ctx, pg.StallTimeout/2, stop) {
			select {
			case <-stop:
				return nil
			default:
			}
			n, err := b.outbox.EndStalledWriters(ctx, pg.StallTimeout)
			switch {
			case err != nil && ctx.Err() == nil && !failing:
				// Once, until it works again: PostgreSQL's answer will
				// not change every few seconds.
				b.log.Warn("ending a frozen instance's sessions failed; it may hold up the others until it thaws", zap.Error(err))
				failing = true
			case err == nil && n > 0:
				b.log.Warn("ended the sessions of an instance whose client stopped sending (frozen or cut off); their transactions roll back and are retried",
					zap.Int64("sessions", n), zap.Duration("stalled_for_more_than", pg.StallTimeout))
			}
			if err == nil {
				failing = false
			}
		}
		return nil
	})
}
