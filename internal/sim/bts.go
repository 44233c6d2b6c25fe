package sim

// BTS simulates the BTS Express API (bts.uz) as far as ingestd uses it:
// login and token refresh with expiring tokens, the status dictionary
// (GET /v1/status/index, paginated Yii2 style), and one order at a time
// (GET /v1/order/track, GET /v1/order/detail), with scripted and random
// faults, and the webhooks a client may configure (see webhook.go).
//
// Every order's lifecycle is a pure function of the seed and the order's
// index, computed when asked for, so a simulator of 100,000 orders holds
// only a call counter per order. Time is compressed by Speed: an order that
// dwells an hour at a status upstream dwells 1h/Speed on the simulator's
// clock, which is what lets tests walk whole lifecycles in seconds.

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Paths of the simulated BTS API.
const (
	BTSLoginPath   = "/auth/login"
	BTSRefreshPath = "/auth/refresh"
	BTSStatusPath  = "/v1/status/index"
	BTSTrackPath   = "/v1/order/track"
	BTSDetailPath  = "/v1/order/detail"
)

// BTS status codes the simulator produces besides the dictionary's.
const (
	// BTSCancelled is the code of a cancelled order, which BTS reports as
	// status {"id": 0, "name": "Cancelled Order"}.
	BTSCancelled = 0
	// BTSUndefined is a code BTS lists in next_possible_statuses but never
	// defines; orders pass through it when BTSConfig.UnknownRate is set.
	BTSUndefined = 1000
)

// Bounds of the configuration.
const (
	maxBTSOrders = 10_000_000
	maxBTSSpeed  = 1e7
	// btsOrderBase is the smallest order id; ids are consecutive from a
	// seed-dependent offset above it, shaped like BTS's (4293644).
	btsOrderBase = 4_000_000
)

// BTSConfig configures a simulated BTS API.
type BTSConfig struct {
	// Seed makes the server deterministic: the same seed gives the same
	// order ids and lifecycles.
	Seed int64
	// Login and Password are the accepted credentials; both are required.
	Login, Password string
	// TokenTTL is the life of an access token on the simulator's clock
	// (not scaled by Speed), default 24h.
	TokenTTL time.Duration
	// RefreshTTL is the life of a refresh token, default 30 days.
	RefreshTTL time.Duration
	// Now is the clock; nil means time.Now. Lifecycles start at its value
	// when NewBTS is called.
	Now func() time.Time
	// Orders is the number of orders, all created at the start.
	Orders int
	// FirstOrderID numbers the orders FirstOrderID, FirstOrderID+1, …; zero
	// derives a start from the seed. A fixed one lets a script (docker
	// compose) track the orders without asking the simulator.
	FirstOrderID int64
	// Speed compresses time: upstream dwell times are divided by it.
	// Zero means 1 (real time).
	Speed float64
	// UnknownRate is the fraction of delivered orders that pass through the
	// undefined code 1000 between 800 and 1100.
	UnknownRate float64
	// Backdate spreads the orders' creation uniformly over this much
	// upstream time before the start (scaled by Speed like every dwell), so
	// that at the start orders are found at every status, as on a watch-list
	// that has been running for a while; some have finished already. Zero
	// creates every order at the start.
	Backdate time.Duration
	// StatusPageSize is the dictionary's page size, default 20 (one page,
	// as documented).
	StatusPageSize int
	// Faults configures random faults of the data endpoints.
	Faults BTSFaultRates
	// Webhooks configures the webhook calls RunWebhooks sends.
	Webhooks BTSWebhookConfig
}

// BTSFaultKind selects what a fault does to one data request.
type BTSFaultKind int

// Fault kinds. Faults apply to the data endpoints (status index, track,
// detail), never to login, refresh and the webhook setting.
const (
	// BTSFaultNone answers normally and suppresses random faults.
	BTSFaultNone BTSFaultKind = iota
	// BTSFaultExpiredToken answers 401 as for an expired token, whatever
	// the token.
	BTSFaultExpiredToken
	// BTSFaultTooManyRequests answers 429, with Retry-After set to
	// BTSFault.RetryAfter when it is not empty.
	BTSFaultTooManyRequests
	// BTSFaultServerError answers BTSFault.Status (default 503).
	BTSFaultServerError
	// BTSFaultNotFound answers 404 as for an unknown order.
	BTSFaultNotFound
	// BTSFaultMalformed answers 200 with a broken body (see BTSMalformed).
	BTSFaultMalformed
	// BTSFaultValidation answers 422 with validation errors.
	BTSFaultValidation
	// BTSFaultForbidden answers 403.
	BTSFaultForbidden
	// BTSFaultDropConnection closes the connection without an answer.
	BTSFaultDropConnection
	// BTSFaultSlow waits BTSFault.Delay (default one second), then answers
	// normally unless the client gave up.
	BTSFaultSlow

	numBTSFaultKinds
)

// BTSMalformed is how a BTSFaultMalformed answer is broken.
type BTSMalformed int

// Malformed variants.
const (
	// BTSTruncated cuts the real answer in half.
	BTSTruncated BTSMalformed = iota
	// BTSHTMLPage answers a maintenance page with status 200.
	BTSHTMLPage
	// BTSStatusFalse answers {"status": false, ...} with status 200.
	BTSStatusFalse
)

// BTSFault is one scripted fault, consumed by exactly one data request.
type BTSFault struct {
	Kind       BTSFaultKind
	RetryAfter string
	Status     int
	Delay      time.Duration
	Malformed  BTSMalformed
}

// BTSFaultRates configures random faults of the data endpoints: each is the
// probability that a request gets that fault; their sum must not exceed 1.
// They are drawn from their own seeded stream.
type BTSFaultRates struct {
	ExpiredToken    float64
	TooManyRequests float64
	ServerError     float64
	Malformed       float64
	Slow            float64
	// RetryAfter is the Retry-After of random 429s; empty sends none.
	RetryAfter string
	// SlowDelay is how long slow answers wait, default one second.
	SlowDelay time.Duration
}

func (r BTSFaultRates) sum() float64 {
	return r.ExpiredToken + r.TooManyRequests + r.ServerError + r.Malformed + r.Slow
}

// Change is one status change of a simulated order.
type Change struct {
	Code int
	// At is when the order reached Code, on the simulator's clock.
	At time.Time
}

// BTS is a simulated BTS API. It is an http.Handler and all of its methods
// are safe for concurrent use.
type BTS struct {
	cfg       BTSConfig
	now       func() time.Time
	start     time.Time
	seedHash  uint64
	firstID   int64
	tokenKey  []byte
	slowDelay time.Duration

	accessGen  atomic.Uint64
	refreshGen atomic.Uint64
	tokenSeq   atomic.Uint64
	// lastToken caches the last token that verified, so that the HMAC is
	// computed once per token rather than once per request.
	lastToken atomic.Pointer[btsClaims]

	calls                           []atomic.Int64
	totalCalls, requests, faulted   atomic.Int64
	logins, refreshes, unauthorized atomic.Int64

	faultMu  sync.Mutex
	faultRNG *rand.Rand
	scripted []BTSFault

	bufs sync.Pool // *[]byte answer buffers

	wh *btsWebhooks
}

// NewBTS validates cfg and returns a server whose orders all start their
// lifecycles now.
func NewBTS(cfg BTSConfig) (*BTS, error) {
	switch {
	case cfg.Login == "" || cfg.Password == "":
		return nil, fmt.Errorf("sim: BTS Login and Password are required")
	case cfg.Orders < 0 || cfg.Orders > maxBTSOrders:
		return nil, fmt.Errorf("sim: BTS Orders must be between 0 and %d, got %d", maxBTSOrders, cfg.Orders)
	case math.IsNaN(cfg.Speed) || cfg.Speed < 0 || cfg.Speed > maxBTSSpeed:
		return nil, fmt.Errorf("sim: BTS Speed must be between 0 and %g, got %v", float64(maxBTSSpeed), cfg.Speed)
	case !(cfg.UnknownRate >= 0 && cfg.UnknownRate <= 1):
		return nil, fmt.Errorf("sim: BTS UnknownRate must be a probability, got %v", cfg.UnknownRate)
	case cfg.TokenTTL < 0 || cfg.RefreshTTL < 0 || cfg.StatusPageSize < 0 || cfg.Faults.SlowDelay < 0 || cfg.Backdate < 0:
		return nil, fmt.Errorf("sim: BTS durations and sizes must not be negative")
	}
	for _, p := range []float64{cfg.Faults.ExpiredToken, cfg.Faults.TooManyRequests, cfg.Faults.ServerError, cfg.Faults.Malformed, cfg.Faults.Slow} {
		if !(p >= 0 && p <= 1) {
			return nil, fmt.Errorf("sim: BTS fault rates must be probabilities, got %v", p)
		}
	}
	if s := cfg.Faults.sum(); s > 1 {
		return nil, fmt.Errorf("sim: BTS fault rates add up to %v, more than 1", s)
	}
	if err := cfg.Webhooks.validate(); err != nil {
		return nil, err
	}
	if cfg.Speed == 0 {
		cfg.Speed = 1
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = 24 * time.Hour
	}
	if cfg.RefreshTTL == 0 {
		cfg.RefreshTTL = 30 * 24 * time.Hour
	}
	if cfg.StatusPageSize == 0 {
		cfg.StatusPageSize = 20
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	slow := cfg.Faults.SlowDelay
	if slow == 0 {
		slow = time.Second
	}
	seedHash := mix64(uint64(cfg.Seed) ^ mixBTS)
	key := make([]byte, 32)
	for i := 0; i < 4; i++ {
		binary.LittleEndian.PutUint64(key[8*i:], mix64(seedHash+uint64(i)))
	}
	return &BTS{
		cfg:       cfg,
		now:       now,
		start:     now(),
		seedHash:  seedHash,
		firstID:   firstOrderID(cfg.FirstOrderID, seedHash),
		tokenKey:  key,
		slowDelay: slow,
		calls:     make([]atomic.Int64, cfg.Orders),
		faultRNG:  rand.New(rand.NewPCG(seedHash, mixFaults)),
		wh:        newBTSWebhooks(cfg.Webhooks),
	}, nil
}

// Constants mixed into the seed for the BTS simulator's streams.
const (
	mixBTS         = 0x243f6a8885a308d3
	mixBTSIDs      = 0x13198a2e03707344
	mixBTSBackdate = 0xa4093822299f31d0
)

// Start returns when the orders' lifecycles began.
func (b *BTS) Start() time.Time { return b.start }

// firstOrderID is the configured first id, or one derived from the seed.
func firstOrderID(fixed int64, seedHash uint64) int64 {
	if fixed > 0 {
		return fixed
	}
	return btsOrderBase + int64(mix64(seedHash^mixBTSIDs)%1_000_000)*10
}

// OrderID returns the id of order i (0 <= i < Orders).
func (b *BTS) OrderID(i int) string {
	if i < 0 || i >= b.cfg.Orders {
		panic(fmt.Sprintf("sim: BTS order index %d out of range (%d orders)", i, b.cfg.Orders))
	}
	return strconv.FormatInt(b.firstID+int64(i), 10)
}

// Orders returns every order id, in index order.
func (b *BTS) Orders() []string {
	ids := make([]string, b.cfg.Orders)
	for i := range ids {
		ids[i] = b.OrderID(i)
	}
	return ids
}

// index returns the index of an order id, or false for an unknown one.
func (b *BTS) index(orderID string) (int, bool) {
	if orderID == "" || len(orderID) > 19 || orderID[0] == '0' || orderID[0] == '+' || orderID[0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseInt(orderID, 10, 64)
	if err != nil {
		return 0, false
	}
	i := n - b.firstID
	if i < 0 || i >= int64(b.cfg.Orders) {
		return 0, false
	}
	return int(i), true
}

// CheckObserved reports whether codes, the statuses a client published for
// an order in order, are later and later steps of its history (a poller may
// skip steps, never go back or invent one) ending at its final status; nil
// when they are.
func (b *BTS) CheckObserved(orderID string, codes []int) error {
	history := b.History(orderID)
	if history == nil {
		return fmt.Errorf("order %s: unknown to the simulator", orderID)
	}
	if len(codes) == 0 {
		return fmt.Errorf("order %s: no status observed", orderID)
	}
	pos := 0
	for i, code := range codes {
		for pos < len(history) && history[pos].Code != code {
			pos++
		}
		if pos == len(history) {
			return fmt.Errorf("order %s: status %d (change %d of %d) is not in its history after the previous one", orderID, code, i+1, len(codes))
		}
		pos++
	}
	if last := history[len(history)-1].Code; codes[len(codes)-1] != last {
		return fmt.Errorf("order %s: ends at %d, not at its final status %d", orderID, codes[len(codes)-1], last)
	}
	return nil
}

// History returns the whole lifecycle of an order, the changes still to
// come included, or nil for an unknown order.
func (b *BTS) History(orderID string) []Change {
	i, ok := b.index(orderID)
	if !ok {
		return nil
	}
	return b.lifecycle(i)
}

// StatusAt returns the change an order had last reached at t (its first
// status before it was created), and false for an unknown order.
func (b *BTS) StatusAt(orderID string, t time.Time) (Change, bool) {
	h := b.History(orderID)
	if h == nil {
		return Change{}, false
	}
	return statusAt(h, t), true
}

// LastChangeAt returns when the last order reaches its terminal status.
func (b *BTS) LastChangeAt() time.Time {
	last := b.start
	for i := 0; i < b.cfg.Orders; i++ {
		h := b.lifecycle(i)
		if at := h[len(h)-1].At; at.After(last) {
			last = at
		}
	}
	return last
}

// Calls returns how many track and detail requests named orderID, faulted
// ones included.
func (b *BTS) Calls(orderID string) int64 {
	i, ok := b.index(orderID)
	if !ok {
		return 0
	}
	return b.calls[i].Load()
}

// TotalCalls returns the number of track and detail requests, for known and
// unknown orders, faulted ones included.
func (b *BTS) TotalCalls() int64 { return b.totalCalls.Load() }

// Requests returns the number of requests of any kind.
func (b *BTS) Requests() int64 { return b.requests.Load() }

// Faulted returns the number of data requests answered with an injected
// error (scripted or random): every fault but BTSFaultNone, BTSFaultSlow and
// BTSFaultExpiredToken, which Unauthorized counts.
func (b *BTS) Faulted() int64 { return b.faulted.Load() }

// Logins and Refreshes return the number of successful logins and
// refreshes; Unauthorized the number of 401 answers on data endpoints.
func (b *BTS) Logins() int64       { return b.logins.Load() }
func (b *BTS) Refreshes() int64    { return b.refreshes.Load() }
func (b *BTS) Unauthorized() int64 { return b.unauthorized.Load() }

// ForceExpireTokens makes every access token issued so far invalid, as if
// they had expired; refresh tokens keep working.
func (b *BTS) ForceExpireTokens() { b.accessGen.Add(1) }

// ForceExpireRefreshTokens makes every refresh token issued so far invalid,
// so that the next renewal must log in again.
func (b *BTS) ForceExpireRefreshTokens() { b.refreshGen.Add(1) }

// Inject queues scripted faults; each data request consumes the oldest one
// before any random fault is considered. It panics on an unknown kind or an
// out-of-range status, since those are mistakes in the test.
func (b *BTS) Inject(faults ...BTSFault) {
	for _, f := range faults {
		if f.Kind < BTSFaultNone || f.Kind >= numBTSFaultKinds {
			panic(fmt.Sprintf("sim: BTS Inject: unknown fault kind %d", int(f.Kind)))
		}
		if f.Kind == BTSFaultServerError && f.Status != 0 && (f.Status < 500 || f.Status > 599) {
			panic(fmt.Sprintf("sim: BTS Inject: server error status must be 500-599, got %d", f.Status))
		}
	}
	b.faultMu.Lock()
	defer b.faultMu.Unlock()
	b.scripted = append(b.scripted, faults...)
}

// Pending returns the number of scripted faults not yet consumed.
func (b *BTS) Pending() int {
	b.faultMu.Lock()
	defer b.faultMu.Unlock()
	return len(b.scripted)
}

// nextFault consumes a scripted fault or draws a random one.
func (b *BTS) nextFault() BTSFault {
	b.faultMu.Lock()
	defer b.faultMu.Unlock()
	if len(b.scripted) > 0 {
		f := b.scripted[0]
		b.scripted = b.scripted[1:]
		return f
	}
	fr := &b.cfg.Faults
	if fr.sum() == 0 {
		return BTSFault{}
	}
	u := b.faultRNG.Float64()
	switch {
	case u < fr.ExpiredToken:
		return BTSFault{Kind: BTSFaultExpiredToken}
	case u < fr.ExpiredToken+fr.TooManyRequests:
		return BTSFault{Kind: BTSFaultTooManyRequests, RetryAfter: fr.RetryAfter}
	case u < fr.ExpiredToken+fr.TooManyRequests+fr.ServerError:
		return BTSFault{Kind: BTSFaultServerError, Status: []int{500, 502, 503}[b.faultRNG.IntN(3)]}
	case u < fr.ExpiredToken+fr.TooManyRequests+fr.ServerError+fr.Malformed:
		return BTSFault{Kind: BTSFaultMalformed, Malformed: BTSMalformed(b.faultRNG.IntN(3))}
	case u < fr.sum():
		return BTSFault{Kind: BTSFaultSlow}
	}
	return BTSFault{}
}

// ServeHTTP serves the API. Data requests go through faults first, then
// the token check, then the endpoint.
func (b *BTS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.requests.Add(1)
	switch r.URL.Path {
	case BTSLoginPath:
		if b.method(w, r, http.MethodPost) {
			b.serveLogin(w, r)
		}
		return
	case BTSRefreshPath:
		if b.method(w, r, http.MethodPost) {
			b.serveRefresh(w, r)
		}
		return
	case BTSWebhookConfigPath:
		b.serveWebhookConfig(w, r)
		return
	case BTSStatusPath, BTSTrackPath, BTSDetailPath:
	default:
		btsFrameworkError(w, http.StatusNotFound, "Not Found", "Page not found.")
		return
	}
	if r.URL.Path != BTSStatusPath {
		b.totalCalls.Add(1)
		if i, ok := b.index(r.URL.Query().Get("orderId")); ok {
			b.calls[i].Add(1)
		}
	}
	f := b.nextFault()
	switch f.Kind {
	case BTSFaultNone, BTSFaultSlow, BTSFaultExpiredToken:
	default:
		b.faulted.Add(1)
	}
	switch f.Kind {
	case BTSFaultExpiredToken:
		b.unauthorized.Add(1)
		btsUnauthorized(w)
		return
	case BTSFaultTooManyRequests:
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		btsFrameworkError(w, http.StatusTooManyRequests, "Too Many Requests", "Rate limit exceeded.")
		return
	case BTSFaultServerError:
		status := f.Status
		if status == 0 {
			status = http.StatusServiceUnavailable
		}
		if status == http.StatusInternalServerError {
			btsFrameworkError(w, status, "Internal Server Error", "An internal server error occurred.")
		} else {
			serverErrorBody(w, status)
		}
		return
	case BTSFaultNotFound:
		btsNotFound(w)
		return
	case BTSFaultValidation:
		btsWrite(w, http.StatusUnprocessableEntity, []byte(`{"status":false,"message":"Validation failed","status_code":422,"errors":{"orderId":["Order Id must be an integer."]}}`))
		return
	case BTSFaultForbidden:
		btsFrameworkError(w, http.StatusForbidden, "Forbidden", "You are not allowed to perform this action.")
		return
	case BTSFaultDropConnection:
		dropConnection(w)
		return
	case BTSFaultSlow:
		d := f.Delay
		if d == 0 {
			d = b.slowDelay
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if !b.method(w, r, http.MethodGet) {
		return
	}
	if !b.authorized(r) {
		b.unauthorized.Add(1)
		btsUnauthorized(w)
		return
	}

	bp := b.getBuf()
	defer b.bufs.Put(bp)
	var (
		body   []byte
		status = http.StatusOK
	)
	switch r.URL.Path {
	case BTSStatusPath:
		body, status = b.appendStatusPage((*bp)[:0], r)
	default:
		id := r.URL.Query().Get("orderId")
		if id == "" {
			btsFrameworkError(w, http.StatusBadRequest, "Bad Request", "Missing required parameters: orderId")
			return
		}
		i, ok := b.index(id)
		if !ok {
			btsNotFound(w)
			return
		}
		body = b.appendOrder((*bp)[:0], i, r.URL.Path == BTSDetailPath)
	}
	*bp = body
	if f.Kind == BTSFaultMalformed {
		switch f.Malformed {
		case BTSHTMLPage:
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("<html><body><h1>Texnik ishlar olib borilmoqda</h1></body></html>"))
			return
		case BTSStatusFalse:
			body = []byte(`{"status":false,"message":"Ichki xatolik","status_code":500,"data":null}`)
		default:
			body = body[:len(body)/2]
		}
	}
	btsWrite(w, status, body)
}

// method answers 405 unless r uses want.
func (b *BTS) method(w http.ResponseWriter, r *http.Request, want string) bool {
	if r.Method == want {
		return true
	}
	w.Header().Set("Allow", want)
	btsFrameworkError(w, http.StatusMethodNotAllowed, "Method Not Allowed",
		"Method Not Allowed. This URL can only handle the following request methods: "+want+".")
	return false
}

func (b *BTS) getBuf() *[]byte {
	if bp, ok := b.bufs.Get().(*[]byte); ok {
		return bp
	}
	buf := make([]byte, 0, 1024)
	return &buf
}

// btsWrite writes a JSON answer.
func btsWrite(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=UTF-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// btsFrameworkError writes the Yii2 framework's error shape.
func btsFrameworkError(w http.ResponseWriter, status int, name, message string) {
	body, _ := json.Marshal(struct {
		Name    string `json:"name"`
		Message string `json:"message"`
		Code    int    `json:"code"`
		Status  int    `json:"status"`
	}{name, message, 0, status})
	btsWrite(w, status, body)
}

// btsUnauthorized is BTS's answer to a missing, invalid or expired token.
func btsUnauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="api"`)
	btsWrite(w, http.StatusUnauthorized, []byte(`{"name":"Unauthorized","message":"Your request was made with invalid credentials.","status":401}`))
}

// btsNotFound is the answer about an order that does not exist.
func btsNotFound(w http.ResponseWriter) {
	btsWrite(w, http.StatusNotFound, []byte(`{"status":false,"message":"Buyurtma topilmadi","status_code":404,"data":null}`))
}

// btsValidation writes a 422 with one field's error.
func btsValidation(w http.ResponseWriter, field, message string) {
	body, _ := json.Marshal(map[string]any{
		"status": false, "message": "Validation failed", "status_code": http.StatusUnprocessableEntity,
		"errors": map[string][]string{field: {message}},
	})
	btsWrite(w, http.StatusUnprocessableEntity, body)
}

// btsOK writes a success envelope around data.
func btsOK(w http.ResponseWriter, data any) {
	d, _ := json.Marshal(data)
	btsWrite(w, http.StatusOK, appendEnvelope(nil, d))
}

// appendEnvelope wraps data in the success envelope.
func appendEnvelope(dst, data []byte) []byte {
	dst = append(dst, `{"status":true,"message":"Данные успешно получены.","status_code":200,"data":`...)
	dst = append(dst, data...)
	return append(dst, '}')
}

// maxAuthBody bounds login and refresh bodies.
const maxAuthBody = 16 << 10

func (b *BTS) serveLogin(w http.ResponseWriter, r *http.Request) {
	raw, err := readBody(w, r)
	var req struct {
		Login    string `json:"login"`
		Password string `json:"password"`
	}
	if err != nil || len(raw) > maxAuthBody || json.Unmarshal(raw, &req) != nil {
		btsValidation(w, "login", "Login cannot be blank.")
		return
	}
	switch {
	case req.Login == "":
		btsValidation(w, "login", "Login cannot be blank.")
		return
	case req.Password == "":
		btsValidation(w, "password", "Password cannot be blank.")
		return
	}
	loginOK := subtle.ConstantTimeCompare([]byte(req.Login), []byte(b.cfg.Login)) == 1
	passOK := subtle.ConstantTimeCompare([]byte(req.Password), []byte(b.cfg.Password)) == 1
	if !loginOK || !passOK {
		btsFrameworkError(w, http.StatusUnauthorized, "Unauthorized", "Incorrect login or password.")
		return
	}
	b.logins.Add(1)
	btsOK(w, b.issueTokens())
}

func (b *BTS) serveRefresh(w http.ResponseWriter, r *http.Request) {
	raw, err := readBody(w, r)
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err != nil || len(raw) > maxAuthBody || json.Unmarshal(raw, &req) != nil || req.RefreshToken == "" {
		btsValidation(w, "refresh_token", "Refresh Token cannot be blank.")
		return
	}
	if _, ok := b.verify(req.RefreshToken, tokenRefresh); !ok {
		btsValidation(w, "refresh_token", "Refresh token is invalid or expired.")
		return
	}
	b.refreshes.Add(1)
	btsOK(w, b.issueTokens())
}

// Token types.
const (
	tokenAccess  = "access"
	tokenRefresh = "refresh"
)

// btsClaims is the payload of a simulated token.
type btsClaims struct {
	token string  // the whole token, for the cache; not serialized
	Sub   string  `json:"sub"`
	Typ   string  `json:"typ"`
	Gen   uint64  `json:"gen"`
	Jti   uint64  `json:"jti"`
	Iat   float64 `json:"iat"`
	Exp   float64 `json:"exp"`
}

// issueTokens returns a new access and refresh token pair.
func (b *BTS) issueTokens() map[string]string {
	now := b.now()
	return map[string]string{
		"access_token":  b.sign(btsClaims{Sub: b.cfg.Login, Typ: tokenAccess, Gen: b.accessGen.Load(), Jti: b.tokenSeq.Add(1), Iat: unixSeconds(now), Exp: unixSeconds(now.Add(b.cfg.TokenTTL))}),
		"refresh_token": b.sign(btsClaims{Sub: b.cfg.Login, Typ: tokenRefresh, Gen: b.refreshGen.Load(), Jti: b.tokenSeq.Add(1), Iat: unixSeconds(now), Exp: unixSeconds(now.Add(b.cfg.RefreshTTL))}),
	}
}

// unixSeconds is t as a JWT NumericDate with millisecond precision, so that
// second-long test TTLs are honoured exactly.
func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

// sign renders claims as an HS256 JWT.
func (b *BTS) sign(c btsClaims) string {
	enc := base64.RawURLEncoding
	payload, _ := json.Marshal(c)
	s := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(payload)
	m := hmac.New(sha256.New, b.tokenKey)
	m.Write([]byte(s))
	return s + "." + enc.EncodeToString(m.Sum(nil))
}

// verify checks a token's signature, type, generation and expiry.
func (b *BTS) verify(tok, typ string) (btsClaims, bool) {
	var c btsClaims
	if cached := b.lastToken.Load(); cached != nil && cached.token == tok {
		c = *cached
	} else {
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			return btsClaims{}, false
		}
		m := hmac.New(sha256.New, b.tokenKey)
		m.Write([]byte(parts[0] + "." + parts[1]))
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil || !hmac.Equal(sig, m.Sum(nil)) {
			return btsClaims{}, false
		}
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil || json.Unmarshal(payload, &c) != nil {
			return btsClaims{}, false
		}
		c.token = tok
		b.lastToken.Store(&c)
	}
	gen := b.accessGen.Load()
	if c.Typ == tokenRefresh {
		gen = b.refreshGen.Load()
	}
	if c.Typ != typ || c.Gen != gen || unixSeconds(b.now()) >= c.Exp {
		return btsClaims{}, false
	}
	return c, true
}

// authorized checks the request's bearer token.
func (b *BTS) authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	_, ok = b.verify(tok, tokenAccess)
	return ok
}

// btsStatus is one entry of the status dictionary.
type btsStatus struct {
	code        int
	name        string
	description string
	next        []int
}

// btsDictionary is the dictionary exactly as documented
// (../shared/upstream/bts-status-index.txt): 12 entries, names in Russian
// whatever the language header says.
var btsDictionary = []btsStatus{
	{100, "У отправителя", "Заказ у отправителя и еще не передан в систему BTS.", []int{200}},
	{200, "Курьер принял", "Курьер принял отправление и везет его в офис отправления.", []int{300}},
	{300, "В офисе отправления", "Отправление принято в офисе отправления.", []int{400}},
	{400, "Во внутренней перевозке", "Отправление находится во внутренней перевозке.", []int{500}},
	{500, "В РЦ", "Отправление обрабатывается в сортировочном центре.", []int{600}},
	{600, "В мешке", "Отправление помещено в логистический мешок.", []int{700}},
	{700, "В перевозке", "Отправление находится в перевозке.", []int{800}},
	{800, "В офисе доставки", "Отправление прибыло в офис доставки.", []int{900, 1000, 1100}},
	{1100, "Курьер доставляет", "Курьер принял отправление и доставляет получателю.", []int{1200}},
	{1200, "Доставлен", "Отправление успешно доставлено.", []int{}},
	{1300, "Удалён", "Заказ удален.", []int{}},
	{1400, "Срок истек", "Срок действия заказа истек.", []int{}},
}

// BTSStatusName returns the dictionary name of code, "Cancelled Order" for
// 0, and "" for a code the dictionary does not define.
func BTSStatusName(code int) string {
	if code == BTSCancelled {
		return "Cancelled Order"
	}
	for _, s := range btsDictionary {
		if s.code == code {
			return s.name
		}
	}
	return ""
}

// BTSTerminal reports whether a code ends an order's lifecycle.
func BTSTerminal(code int) bool {
	return code == BTSCancelled || code == 1200 || code == 1300 || code == 1400
}

// appendStatusPage renders the requested dictionary page.
func (b *BTS) appendStatusPage(dst []byte, r *http.Request) ([]byte, int) {
	per := b.cfg.StatusPageSize
	pages := (len(btsDictionary) + per - 1) / per
	page := 1
	if v := r.URL.Query().Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return append(dst, `{"status":false,"message":"page must be a positive integer","status_code":400}`...), http.StatusBadRequest
		}
		page = n
	}
	link := func(p int) string { return BTSStatusPath + "?page=" + strconv.Itoa(p) }
	links := map[string]any{"self": link(page), "first": link(1), "last": link(pages), "next": nil, "prev": nil}
	if page < pages {
		links["next"] = link(page + 1)
	}
	if page > 1 {
		links["prev"] = link(page - 1)
	}
	items := []map[string]any{}
	for i := (page - 1) * per; i < min(page*per, len(btsDictionary)); i++ {
		s := btsDictionary[i]
		items = append(items, map[string]any{"code": s.code, "name": s.name, "description": s.description, "next_possible_statuses": s.next})
	}
	data, _ := json.Marshal(map[string]any{
		"items":  items,
		"_links": links,
		"_meta":  map[string]any{"totalCount": len(btsDictionary), "pageCount": pages, "currentPage": page, "perPage": per, "params": []any{}},
	})
	return appendEnvelope(dst, data), http.StatusOK
}

// appendOrder renders a track (or detail) answer for order i.
func (b *BTS) appendOrder(dst []byte, i int, detail bool) []byte {
	c := statusAt(b.lifecycle(i), b.now())
	id := b.firstID + int64(i)
	var d []byte
	d = append(d, `{"orderId":`...)
	d = strconv.AppendInt(d, id, 10)
	if detail {
		d = append(d, `,"clientId":"sim-`...)
		d = strconv.AppendInt(d, id, 10)
		d = append(d, `","barcode":"0199`...)
		d = strconv.AppendInt(d, id, 10)
		d = append(d, '"')
	}
	d = append(d, `,"status":{`...)
	switch {
	case c.Code == BTSCancelled && detail:
		d = append(d, `"code":null,"id":0,"name":"Cancelled Order"`...)
	case c.Code == BTSCancelled:
		d = append(d, `"id":0,"name":"Cancelled Order"`...)
	default:
		d = append(d, `"code":`...)
		d = strconv.AppendInt(d, int64(c.Code), 10)
		d = append(d, `,"name":`...)
		if name := BTSStatusName(c.Code); name != "" {
			d = strconv.AppendQuote(d, name)
		} else {
			d = append(d, "null"...)
		}
	}
	d = append(d, "}}"...)
	return appendEnvelope(dst, d)
}

// statusAt returns the last change of h reached at t, or the first one.
func statusAt(h []Change, t time.Time) Change {
	c := h[0]
	for _, ch := range h[1:] {
		if ch.At.After(t) {
			break
		}
		c = ch
	}
	return c
}

// dwell is the range of time an order spends at a status upstream; the
// simulator draws log-uniformly from it, so short stays are common and long
// ones possible, as in a real network.
type dwell struct{ lo, hi time.Duration }

// btsDwell is how long orders stay at each non-terminal status upstream:
// days at the sender and in transit, minutes to hours out for delivery.
var btsDwell = map[int]dwell{
	100:          {time.Hour, 36 * time.Hour},
	200:          {30 * time.Minute, 4 * time.Hour},
	300:          {time.Hour, 8 * time.Hour},
	400:          {2 * time.Hour, 18 * time.Hour},
	500:          {time.Hour, 6 * time.Hour},
	600:          {30 * time.Minute, 3 * time.Hour},
	700:          {3 * time.Hour, 30 * time.Hour},
	800:          {time.Hour, 20 * time.Hour},
	BTSUndefined: {10 * time.Minute, time.Hour},
	1100:         {10 * time.Minute, 3 * time.Hour},
}

// lifecycle computes order i's changes: a pure function of the seed and i.
//
// Fates: 4% are cancelled at the sender (code 0), 2% deleted there (1300),
// 2% expire there (1400), 2% expire at the delivery office, the rest are
// delivered (1200). One order in ten skips one transit step (say 500 to
// 700), as BTS's scanners sometimes do.
func (b *BTS) lifecycle(i int) []Change {
	r := rand.New(rand.NewPCG(b.seedHash, uint64(i)))
	codes := make([]int, 0, 12)
	codes = append(codes, 100)
	fate := r.Float64()
	switch {
	case fate < 0.04:
		codes = append(codes, BTSCancelled)
	case fate < 0.06:
		codes = append(codes, 1300)
	case fate < 0.08:
		codes = append(codes, 1400)
	default:
		skip := 0
		if r.Float64() < 0.1 {
			skip = 300 + 100*r.IntN(5)
		}
		for c := 200; c <= 800; c += 100 {
			if c != skip {
				codes = append(codes, c)
			}
		}
		if fate < 0.10 {
			codes = append(codes, 1400)
			break
		}
		if r.Float64() < b.cfg.UnknownRate {
			codes = append(codes, BTSUndefined)
		}
		codes = append(codes, 1100, 1200)
	}
	h := make([]Change, len(codes))
	var upstream time.Duration
	if b.cfg.Backdate > 0 {
		// A separate hash, so that backdating moves lifecycles in time
		// without changing them.
		u := float64(mix64(b.seedHash^mixBTSBackdate^uint64(i))>>11) / (1 << 53)
		upstream = -time.Duration(u * float64(b.cfg.Backdate))
	}
	for k, c := range codes {
		h[k] = Change{Code: c, At: b.start.Add(time.Duration(float64(upstream) / b.cfg.Speed))}
		if d, ok := btsDwell[c]; ok {
			ln := math.Log(float64(d.hi) / float64(d.lo))
			upstream += time.Duration(float64(d.lo) * math.Exp(r.Float64()*ln))
		}
	}
	return h
}
