// Package doorbell takes BTS Express webhooks. BTS can call a client's URL
// when an order's status changes, but the call is unsigned and its payload
// is known only from integrators, so ingestd never trusts it as data: a
// webhook is a doorbell. It makes the named order due at once
// (watchlist.Store.Ring), and the BTS poller reads the order and records
// what changed through the same compare-and-set transaction as a scheduled
// poll. A webhook therefore never invents, duplicates or reorders an event,
// and a replayed, late or forged one costs at most one extra read.
//
// The handler answers within milliseconds and never waits for BTS, Kafka
// or PostgreSQL: it authenticates the call (the token tells which BTS
// account it belongs to), reads the order id, and queues it. A background
// loop writes the queued doorbells to PostgreSQL in batches and wakes the
// account's poller on this instance. A call lost here (a crash before the
// batch is written) only means the order waits for its scheduled poll.
package doorbell

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/retry"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/service"
	"github.com/ingestd/ingestd/internal/watchlist"
)

// Environment variables of the webhook endpoint.
const (
	EnvPath      = "INGESTD_BTS_WEBHOOK_PATH"
	EnvAutotrack = "INGESTD_BTS_WEBHOOK_AUTOTRACK"
	EnvRate      = "INGESTD_BTS_WEBHOOK_RATE"
)

// Defaults and bounds.
const (
	DefaultPath = "/v1/bts/webhook"
	// DefaultRate is how many webhook calls per second one instance
	// accepts; BTS sends one per status change, so this covers about a
	// million changes an hour per replica.
	DefaultRate = 300.0
	// MaxBody bounds a call's body: the documented payload is a few
	// hundred bytes.
	MaxBody = 16 << 10
	// maxPending bounds the order ids queued and not yet written; beyond
	// it a call is answered 429 like one over the rate.
	maxPending = 100_000
	// flushEvery is how long the loop gathers calls into one write: short
	// enough not to matter for freshness, long enough to batch a burst.
	flushEvery = 20 * time.Millisecond
	// writeTimeout bounds one batch's write.
	writeTimeout = 10 * time.Second
)

// Config configures the endpoint. New fills zero fields with defaults.
type Config struct {
	// Path is where the endpoint is served on the daemon's HTTP server
	// (INGESTD_BTS_WEBHOOK_PATH), default /v1/bts/webhook.
	Path string
	// Autotrack adds an order a webhook names to the account's watch-list
	// when it is not on it (INGESTD_BTS_WEBHOOK_AUTOTRACK), default true:
	// start from DefaultConfig, since a zero Config has it off.
	Autotrack bool
	// Rate is how many calls per second this instance accepts before
	// answering 429 (INGESTD_BTS_WEBHOOK_RATE), default 300; the burst is
	// one second's worth.
	Rate float64
	// Backoff paces retries of a failed batch write.
	Backoff retry.Config
}

// DefaultConfig returns the defaults: autotrack is on.
func DefaultConfig() Config {
	return Config{Path: DefaultPath, Autotrack: true, Rate: DefaultRate, Backoff: retry.DefaultConfig()}
}

// Validate reports every problem, naming the environment variables.
func (c Config) Validate() error {
	var errs []error
	if !strings.HasPrefix(c.Path, "/") || strings.ContainsAny(c.Path, " ?#") || c.Path == "/" {
		errs = append(errs, fmt.Errorf("%s: must be a URL path such as %s, got %q", EnvPath, DefaultPath, c.Path))
	}
	if !(c.Rate > 0 && c.Rate <= 1e6) {
		errs = append(errs, fmt.Errorf("%s: must be between 0 and 1000000 calls per second, got %v", EnvRate, c.Rate))
	}
	errs = append(errs, c.Backoff.Validate())
	return errors.Join(errs...)
}

// Account is a BTS account that takes webhooks.
type Account struct {
	// SourceID is the account's source ("bts/<account>").
	SourceID string
	// Token is what its webhook calls must carry.
	Token secret.String
}

// Watchlist is what the doorbell needs of the watch-list (a
// *watchlist.Store).
type Watchlist interface {
	Ring(ctx context.Context, sourceID string, orderIDs []string, autotrack bool, calls int) (watchlist.Rang, error)
}

var _ Watchlist = (*watchlist.Store)(nil)

// Doorbell is the webhook endpoint (an http.Handler) and the loop that
// writes what it queued (a service.Service).
type Doorbell struct {
	service.Base
	cfg      Config
	accounts func() []Account
	wl       Watchlist
	ring     func(sourceID string)
	lim      *rate.Limiter
	m        *metrics
	log      *zap.Logger

	mu      sync.Mutex
	pending map[string]*batch // by source
	queued  int
	wake    chan struct{}
}

// batch is what was queued for one source since the last write.
type batch struct {
	ids   map[string]struct{}
	calls int
}

var (
	_ http.Handler    = (*Doorbell)(nil)
	_ service.Service = (*Doorbell)(nil)
)

// New returns the doorbell. accounts returns the BTS accounts that take
// webhooks now (it follows reloads of the sources file); ring is called
// after a batch of a source was written, to wake that source's poller on
// this instance (it may do nothing when the source does not run here).
func New(cfg Config, accounts func() []Account, wl Watchlist, ring func(sourceID string), reg prometheus.Registerer, log *zap.Logger) (*Doorbell, error) {
	if cfg.Path == "" {
		cfg.Path = DefaultPath
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Backoff == (retry.Config{}) {
		cfg.Backoff = retry.DefaultConfig()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if accounts == nil || wl == nil || ring == nil || reg == nil || log == nil {
		return nil, errors.New("doorbell: every dependency is required")
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Doorbell{
		cfg: cfg, accounts: accounts, wl: wl, ring: ring, m: m, log: log,
		lim:     rate.NewLimiter(rate.Limit(cfg.Rate), max(1, int(cfg.Rate))),
		pending: map[string]*batch{},
		wake:    make(chan struct{}, 1),
	}, nil
}

// Path is where the endpoint is served.
func (d *Doorbell) Path() string { return d.cfg.Path }

// Outcomes of a call, the values of ingestd_bts_webhook_calls_total's
// outcome label.
const (
	outcomeAccepted     = "accepted"
	outcomeUnauthorized = "unauthorized"
	outcomeMalformed    = "malformed"
	outcomeTooLarge     = "too_large"
	outcomeRateLimited  = "rate_limited"
	outcomeMethod       = "method_not_allowed"
	outcomeDisabled     = "disabled"
)

// ServeHTTP takes one webhook call.
func (d *Doorbell) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	accounts := d.accounts()
	if len(accounts) == 0 {
		// No account takes webhooks: the endpoint does not exist.
		d.m.calls.WithLabelValues(outcomeDisabled).Inc()
		writeError(w, http.StatusNotFound, "no BTS account takes webhooks (set INGESTD_BTS_WEBHOOK_TOKEN or a source's webhook_token_file)")
		return
	}
	if r.Method != http.MethodPost {
		d.m.calls.WithLabelValues(outcomeMethod).Inc()
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	src, ok := authenticate(r, accounts)
	if !ok {
		d.m.calls.WithLabelValues(outcomeUnauthorized).Inc()
		// HTTP requires a 401 to say how to authenticate.
		w.Header().Set("WWW-Authenticate", `Bearer realm="ingestd-webhook"`)
		writeError(w, http.StatusUnauthorized, "missing or wrong webhook token")
		return
	}
	orderID, status, err := readCall(w, r)
	if err != nil {
		outcome := outcomeMalformed
		if status == http.StatusRequestEntityTooLarge {
			outcome = outcomeTooLarge
		}
		d.m.calls.WithLabelValues(outcome).Inc()
		writeError(w, status, err.Error())
		return
	}
	if !d.lim.Allow() || !d.enqueue(src, orderID) {
		d.m.calls.WithLabelValues(outcomeRateLimited).Inc()
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "too many webhook calls; slow down")
		return
	}
	d.m.calls.WithLabelValues(outcomeAccepted).Inc()
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"status":true}`)
}

// authenticate returns the source whose token the call carries: as a
// bearer token, a "token" header or a "token" query parameter (BTS does
// not document which it sends). Every account's token is compared in
// constant time, so the answer's timing tells nothing about any of them.
func authenticate(r *http.Request, accounts []Account) (string, bool) {
	var given []string
	// The scheme name is case-insensitive (RFC 9110).
	if scheme, v, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " "); ok && strings.EqualFold(scheme, "Bearer") {
		given = append(given, strings.TrimSpace(v))
	}
	if v := r.Header.Get("token"); v != "" {
		given = append(given, v)
	}
	if v := r.URL.Query().Get("token"); v != "" {
		given = append(given, v)
	}
	found := ""
	for _, g := range given {
		for _, a := range accounts {
			if subtle.ConstantTimeCompare([]byte(g), []byte(a.Token.Reveal())) == 1 {
				found = a.SourceID
			}
		}
	}
	return found, found != ""
}

// call is the payload: BTS posts form data whose field "text" holds this
// JSON; a JSON body of the same shape is taken too. Only the order id is
// used; the rest is a hint the poll replaces with what BTS answers.
type call struct {
	OrderID json.RawMessage `json:"orderId"`
}

// readCall reads the order id of a call, or the status and reason to
// refuse it with.
func readCall(w http.ResponseWriter, r *http.Request) (string, int, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return "", http.StatusRequestEntityTooLarge, fmt.Errorf("body larger than %d bytes", MaxBody)
		}
		return "", http.StatusBadRequest, errors.New("unreadable body")
	}
	payload := body
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return "", http.StatusBadRequest, errors.New("malformed form body")
		}
		text := form.Get("text")
		if text == "" {
			return "", http.StatusBadRequest, errors.New(`form field "text" is missing`)
		}
		payload = []byte(text)
	case "application/json", "":
	default:
		return "", http.StatusUnsupportedMediaType, fmt.Errorf("content type %q: send form data (field text) or JSON", mt)
	}
	var c call
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", http.StatusBadRequest, errors.New("payload is not the webhook's JSON object")
	}
	id, ok := orderID(c.OrderID)
	if !ok {
		return "", http.StatusBadRequest, errors.New("orderId is missing or not a BTS order id")
	}
	return id, 0, nil
}

// orderID reads orderId, a number in the known payloads, or a string.
func orderID(raw json.RawMessage) (string, bool) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		var n json.Number
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.UseNumber()
		if dec.Decode(&n) != nil {
			return "", false
		}
		i, err := strconv.ParseInt(n.String(), 10, 64)
		if err != nil || i < 0 {
			return "", false
		}
		s = strconv.FormatInt(i, 10)
	}
	return s, bts.ValidOrderID(s)
}

// writeError answers with a JSON error.
func writeError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// enqueue queues a doorbell, reporting false when the queue is full.
func (d *Doorbell) enqueue(sourceID, orderID string) bool {
	d.mu.Lock()
	b := d.pending[sourceID]
	if b == nil {
		b = &batch{ids: map[string]struct{}{}}
		d.pending[sourceID] = b
	}
	if _, dup := b.ids[orderID]; !dup {
		if d.queued >= maxPending {
			d.mu.Unlock()
			return false
		}
		b.ids[orderID] = struct{}{}
		d.queued++
	}
	b.calls++
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return true
}

// Start runs the loop that writes queued doorbells until Stop (which
// writes what is queued first) or the end of ctx.
func (d *Doorbell) Start(ctx context.Context) error { return d.Go(ctx, d.run) }

func (d *Doorbell) run(ctx context.Context, stop <-chan struct{}) error {
	bo := d.cfg.Backoff.New()
	for {
		select {
		case <-d.wake:
		case <-stop:
			d.flush(ctx)
			return nil
		case <-ctx.Done():
			return nil
		}
		// Gather a burst into one write per source.
		if !retry.Sleep(ctx, flushEvery) {
			return nil
		}
		if !d.flush(ctx) {
			// A failed write keeps its doorbells queued for the next try.
			if !retry.Sleep(ctx, bo.Next(), stop) {
				return nil
			}
			select {
			case d.wake <- struct{}{}:
			default:
			}
			continue
		}
		bo.Reset()
	}
}

// flush writes every queued batch and reports whether all were written;
// a batch that failed is queued again.
func (d *Doorbell) flush(ctx context.Context) bool {
	d.mu.Lock()
	pending := d.pending
	d.pending = map[string]*batch{}
	d.queued = 0
	d.mu.Unlock()
	ok := true
	for src, b := range pending {
		ids := make([]string, 0, len(b.ids))
		for id := range b.ids {
			ids = append(ids, id)
		}
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
		rang, err := d.wl.Ring(wctx, src, ids, d.cfg.Autotrack, b.calls)
		cancel()
		if err != nil {
			ok = false
			d.log.Warn("recording BTS webhooks failed; retrying (their orders are polled on schedule meanwhile)",
				zap.String("source", src), zap.Int("orders", len(ids)), zap.Error(err))
			d.requeue(src, b)
			continue
		}
		d.m.orders.WithLabelValues(src, "due").Add(float64(rang.Due))
		d.m.orders.WithLabelValues(src, "tracked").Add(float64(rang.Tracked))
		d.m.orders.WithLabelValues(src, "ignored").Add(float64(rang.Ignored))
		d.ring(src)
	}
	return ok
}

// requeue puts a batch that could not be written back in the queue.
func (d *Doorbell) requeue(src string, b *batch) {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur := d.pending[src]
	if cur == nil {
		cur = &batch{ids: map[string]struct{}{}}
		d.pending[src] = cur
	}
	for id := range b.ids {
		if _, dup := cur.ids[id]; !dup && d.queued < maxPending {
			cur.ids[id] = struct{}{}
			d.queued++
		}
	}
	cur.calls += b.calls
}

// metrics are the endpoint's.
type metrics struct {
	calls  *prometheus.CounterVec
	orders *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingestd_bts_webhook_calls_total",
			Help: "BTS webhook calls by outcome: accepted, unauthorized, malformed, too_large, rate_limited, method_not_allowed, disabled.",
		}, []string{"outcome"}),
		orders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingestd_bts_webhook_orders_total",
			Help: "Orders named by accepted BTS webhooks, by source and result: due (polled at once), tracked (added to the watch-list), ignored (terminal, or untracked without autotrack).",
		}, []string{"source", "result"}),
	}
	for _, c := range []prometheus.Collector{m.calls, m.orders} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("doorbell metrics: %w", err)
		}
	}
	return m, nil
}
