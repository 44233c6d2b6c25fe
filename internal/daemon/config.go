// Package daemon assembles ingestd from its components (store, publisher,
// pollers, HTTP endpoints) and runs it until its context ends, then shuts
// down in order: stop polling, commit the page in flight, drain the
// publisher within the shutdown timeout, close.
package daemon

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/doorbell"
	"github.com/ingestd/ingestd/internal/failpoint"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/pg"
	"github.com/ingestd/ingestd/internal/poller/watch"
	"github.com/ingestd/ingestd/internal/publish"
	"github.com/ingestd/ingestd/internal/retry"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sources"
	"github.com/ingestd/ingestd/internal/yandex"
)

// Config is the whole daemon's configuration: one struct per component.
type Config struct {
	Database pg.Config
	Kafka    publish.Config
	Yandex   yandex.Config
	// BTS is the BTS Express source: its client and its watch-list
	// schedule.
	BTS bts.Config
	// SourcesFile lists more sources (INGESTD_SOURCES_FILE, default
	// unset): Yandex accounts and BTS logins, whose optional settings
	// default to Yandex's and BTS's above. The sources described by
	// Yandex and BTS, when enabled, run beside them.
	SourcesFile string
	// Getenv looks up the variables a sources file names for its secrets;
	// nil means os.Getenv.
	Getenv func(string) string
	// AdminToken authenticates the admin API (INGESTD_ADMIN_TOKEN,
	// default unset: the API refuses every request).
	AdminToken secret.String
	HTTP       HTTPConfig
	// Webhook is the BTS webhook endpoint (INGESTD_BTS_WEBHOOK_*), served
	// on the HTTP server; the accounts' tokens are their BTS settings'.
	Webhook  doorbell.Config
	Log      LogConfig
	Upstream UpstreamConfig
	// Backoff bounds the wait after every failure: upstream requests,
	// database writes, Kafka writes (INGESTD_BACKOFF_INITIAL,
	// INGESTD_BACKOFF_MAX).
	Backoff retry.Config
	Lease   lease.Config
	// MaxBacklog pauses polling while more than this many outbox rows wait
	// for Kafka (INGESTD_OUTBOX_MAX_BACKLOG, default 1000000; 0 disables).
	MaxBacklog int64
	// Failpoints arms crash points for the chaos harness and fault tests
	// (INGESTD_FAILPOINTS, e.g. "publish.after-ack=3"; never set it in
	// production).
	Failpoints string
	// ShutdownTimeout bounds the graceful shutdown after SIGTERM
	// (INGESTD_SHUTDOWN_TIMEOUT, default 20s). Keep it below the pod's
	// terminationGracePeriodSeconds.
	ShutdownTimeout time.Duration
	// Now is the clock of every component; nil means time.Now.
	Now func() time.Time
}

// HTTPConfig configures the operational endpoints.
type HTTPConfig struct {
	// Addr serves /healthz, /readyz and /metrics (INGESTD_HTTP_ADDR,
	// default ":8080"; "off" disables the server).
	Addr string
}

// enabled reports whether the operational endpoints are served. An empty
// environment variable counts as unset, so "off" is the way to disable them.
func (c HTTPConfig) enabled() bool { return c.Addr != "" && c.Addr != "off" }

// LogConfig configures logging.
type LogConfig struct {
	// Level is a zap level name (INGESTD_LOG_LEVEL, default "info").
	Level string
	// Format is "json" (production, default) or "console" (humans)
	// (INGESTD_LOG_FORMAT).
	Format string
}

// UpstreamConfig is shared by every upstream HTTP client.
type UpstreamConfig struct {
	// CABundle is a PEM file of extra trusted CAs, added to the system pool
	// (INGESTD_CA_BUNDLE, default none). Certificates are always verified.
	CABundle string
}

// Sources returns every source to run: the one INGESTD_YANDEX_* describes
// and the one INGESTD_BTS_* describes, when enabled, then those of the
// sources file. The same id twice is an error.
func (c Config) Sources() ([]sources.Source, error) {
	var out []sources.Source
	if c.Yandex.Enabled() {
		out = append(out, sources.Source{Provider: sources.ProviderYandex, Yandex: c.Yandex})
	}
	if c.BTS.Enabled() {
		out = append(out, sources.Source{Provider: sources.ProviderBTS, BTS: c.BTS})
	}
	if c.SourcesFile == "" {
		return out, nil
	}
	getenv := c.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	fromFile, err := sources.Read(c.SourcesFile, sources.Defaults{Yandex: c.Yandex, BTS: c.BTS}, getenv)
	if err != nil {
		return nil, err
	}
	for _, s := range fromFile {
		for _, o := range out {
			if o.ID() == s.ID() {
				return nil, fmt.Errorf("%s: %s: source %s is also described by the INGESTD_%s_* settings; list it once", sources.EnvFile, c.SourcesFile, s.ID(), strings.ToUpper(s.Provider))
			}
		}
	}
	return append(out, fromFile...), nil
}

// DefaultConfig returns every component's defaults.
func DefaultConfig() Config {
	return Config{
		Database:        pg.DefaultConfig(),
		Kafka:           publish.DefaultConfig(),
		Yandex:          yandex.DefaultConfig(),
		BTS:             bts.DefaultConfig(),
		HTTP:            HTTPConfig{Addr: ":8080"},
		Log:             LogConfig{Level: "info", Format: "json"},
		Backoff:         retry.DefaultConfig(),
		Webhook:         doorbell.DefaultConfig(),
		Lease:           lease.Config{TTL: 15 * time.Second, Holder: defaultInstanceID()},
		MaxBacklog:      1_000_000,
		ShutdownTimeout: 20 * time.Second,
	}
}

// defaultInstanceID names this process in the lease table: the hostname (the
// pod name on Kubernetes) with the pid and a random suffix, so a restarted
// process is never mistaken for its predecessor.
func defaultInstanceID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "ingestd"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Validate reports every configuration problem at once, each naming its
// environment variable.
func (c Config) Validate() error {
	errs := []error{c.Database.Validate(), c.Kafka.Validate(), c.Yandex.Validate(), c.BTS.Validate(), c.Lease.Validate(), c.Backoff.Validate()}
	srcs, err := c.Sources()
	errs = append(errs, err)
	hooks := map[string]string{} // webhook token -> source
	for _, s := range srcs {
		if s.Provider != sources.ProviderBTS {
			continue
		}
		if err := watch.CheckClaimTimeout(s.BTS.Schedule, c.Backoff); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.ID(), err))
		}
		if tok := s.BTS.WebhookToken; tok.IsSet() {
			// The token tells which account a webhook belongs to.
			if other, dup := hooks[tok.Reveal()]; dup {
				errs = append(errs, fmt.Errorf("%s: %s: the same webhook token as %s; each BTS account needs its own", s.ID(), bts.EnvWebhookToken, other))
			}
			hooks[tok.Reveal()] = s.ID()
		}
	}
	if len(hooks) > 0 {
		c.Webhook.Backoff = c.Backoff
		errs = append(errs, c.Webhook.Validate())
		if !c.HTTP.enabled() {
			errs = append(errs, fmt.Errorf("%s: BTS webhooks need the HTTP server, but INGESTD_HTTP_ADDR is off", bts.EnvWebhookToken))
		}
	}
	if _, err := failpoint.Parse(c.Failpoints); err != nil {
		errs = append(errs, err)
	}
	if c.Lease.TTL > 0 && c.Lease.TTL <= c.Kafka.WriteTimeout {
		// A successor may take over only after a dead publisher's last
		// write settled; the write timeout bounds that.
		errs = append(errs, fmt.Errorf("INGESTD_LEASE_TTL (%s) must be longer than INGESTD_KAFKA_WRITE_TIMEOUT (%s)", c.Lease.TTL, c.Kafka.WriteTimeout))
	}
	if c.MaxBacklog < 0 {
		errs = append(errs, fmt.Errorf("INGESTD_OUTBOX_MAX_BACKLOG: must not be negative, got %d", c.MaxBacklog))
	}
	if c.ShutdownTimeout > 0 && c.Lease.TTL > 0 && c.ShutdownTimeout < 2*time.Second {
		errs = append(errs, fmt.Errorf("INGESTD_SHUTDOWN_TIMEOUT: must be at least 2s to drain, got %s", c.ShutdownTimeout))
	}
	if err == nil && len(srcs) == 0 {
		errs = append(errs, errors.New("no source configured: set INGESTD_YANDEX_TOKEN (Yandex journal) and/or INGESTD_BTS_LOGIN with INGESTD_BTS_PASSWORD (BTS watch-list), or list sources in INGESTD_SOURCES_FILE"))
	}
	if c.HTTP.enabled() {
		if _, _, err := net.SplitHostPort(c.HTTP.Addr); err != nil {
			errs = append(errs, fmt.Errorf("INGESTD_HTTP_ADDR: %q is not host:port (e.g. :8080) or off", c.HTTP.Addr))
		}
	}
	if _, err := zapcore.ParseLevel(c.Log.Level); err != nil {
		errs = append(errs, fmt.Errorf("INGESTD_LOG_LEVEL: %q is not one of debug, info, warn, error", c.Log.Level))
	}
	if c.Log.Format != "json" && c.Log.Format != "console" {
		errs = append(errs, fmt.Errorf("INGESTD_LOG_FORMAT: must be json or console, got %q", c.Log.Format))
	}
	if c.Upstream.CABundle != "" {
		if _, err := loadCABundle(c.Upstream.CABundle); err != nil {
			errs = append(errs, fmt.Errorf("INGESTD_CA_BUNDLE: %w", err))
		}
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("INGESTD_SHUTDOWN_TIMEOUT: must be positive, got %s", c.ShutdownTimeout))
	}
	return errors.Join(errs...)
}

func loadCABundle(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// HTTPClient builds the upstream HTTP client, for the daemon's sources and
// for the commands that reach the same APIs (ingestd bts webhook), so that
// they go through the same proxies and trust. Certificates are always
// verified; per-request timeouts are set by each API client.
func (c UpstreamConfig) HTTPClient(maxIdlePerHost int) (*http.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CABundle != "" {
		pool, err := loadCABundle(c.CABundle)
		if err != nil {
			return nil, fmt.Errorf("INGESTD_CA_BUNDLE: %w", err)
		}
		tlsCfg.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	// Keep a connection per request that may be in flight, so none is
	// redialled (with its TLS handshake) under load.
	tr.MaxIdleConnsPerHost = max(4, maxIdlePerHost)
	tr.ResponseHeaderTimeout = time.Minute
	return &http.Client{Transport: tr}, nil
}
