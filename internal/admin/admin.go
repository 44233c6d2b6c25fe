// Package admin is ingestd's authenticated operator API, served beside
// /metrics by the daemon. Today it manages the BTS watch-list:
//
//	POST   /v1/bts/orders        {"order_ids": ["4293644", ...]}  track orders
//	GET    /v1/bts/orders        ?state=&after=&limit=            list, keyset-paged
//	DELETE /v1/bts/orders/{id}                                    untrack an order
//	GET    /v1/sources                                            every source's status
//
// Every request needs "Authorization: Bearer <INGESTD_ADMIN_TOKEN>". Without
// a configured token the API is disabled and answers 403, so that it is
// never open by accident. Every answer is JSON; errors are
// {"error": "..."}.
package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/status"
	"github.com/ingestd/ingestd/internal/watchlist"
)

// EnvToken is the variable holding the admin token.
const EnvToken = "INGESTD_ADMIN_TOKEN"

// Limits of the API.
const (
	// MaxBodyBytes bounds a request body: 1,000 ids of 64 characters with
	// JSON punctuation fit in 70 KiB.
	MaxBodyBytes = 128 << 10
	// MaxOrdersPerRequest bounds the ids of one POST, which are written in
	// one statement.
	MaxOrdersPerRequest = 1000
	// DefaultListLimit and MaxListLimit bound a page of GET /v1/bts/orders.
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// Store is what the admin API needs of PostgreSQL.
type Store interface {
	Track(ctx context.Context, sourceID string, orderIDs []string) ([]string, error)
	Untrack(ctx context.Context, sourceID string, orderIDs []string) ([]string, error)
	List(ctx context.Context, q watchlist.ListQuery) ([]watchlist.Order, error)
}

// Config configures the admin API.
type Config struct {
	// Token is the bearer token every request must carry
	// (INGESTD_ADMIN_TOKEN); empty disables the API.
	Token secret.String
	// BTSAccounts returns the BTS accounts running now; a request
	// names its account with ?account=, which may be left out when there
	// is one (or none: then the account "default", whose orders wait for
	// a BTS source to be configured).
	BTSAccounts func() []string
	// Sources returns every configured source's status (GET /v1/sources);
	// nil answers 404.
	Sources func(ctx context.Context) ([]status.Source, error)
}

// Handler serves the admin API.
type Handler struct {
	cfg   Config
	store Store
	log   *zap.Logger
	mux   *http.ServeMux
	// tokenSum is the SHA-256 of the token: comparing digests takes the
	// same time whatever the presented token's length.
	tokenSum [sha256.Size]byte
}

// New returns the admin API handler. Mount it at "/v1/" (it answers 404 for
// paths it does not know).
func New(cfg Config, store Store, log *zap.Logger) *Handler {
	h := &Handler{cfg: cfg, store: store, log: log, mux: http.NewServeMux()}
	if cfg.Token.IsSet() {
		h.tokenSum = sha256.Sum256([]byte(cfg.Token.Reveal()))
	}
	h.mux.HandleFunc("POST /v1/bts/orders", h.track)
	h.mux.HandleFunc("GET /v1/bts/orders", h.list)
	h.mux.HandleFunc("DELETE /v1/bts/orders/{id}", h.untrack)
	h.mux.HandleFunc("GET /v1/sources", h.sources)
	h.mux.HandleFunc("/v1/sources", methodNotAllowed("GET"))
	h.mux.HandleFunc("/v1/bts/orders", methodNotAllowed("GET, POST"))
	h.mux.HandleFunc("/v1/bts/orders/{id}", methodNotAllowed("DELETE"))
	h.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint")
	})
	return h
}

// ServeHTTP checks the token, then routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if !h.cfg.Token.IsSet() {
		writeError(w, http.StatusForbidden, "the admin API is disabled: set "+EnvToken+" to enable it")
		return
	}
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ingestd"`)
		writeError(w, http.StatusUnauthorized, "missing or wrong bearer token (Authorization: Bearer <"+EnvToken+">)")
		return
	}
	h.mux.ServeHTTP(w, r)
}

// authorized compares the bearer token in constant time.
func (h *Handler) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], h.tokenSum[:]) == 1
}

// btsSource returns the watch-list a request is about: its ?account=, or
// the only BTS account. It answers the request itself when it cannot tell.
func (h *Handler) btsSource(w http.ResponseWriter, r *http.Request) (string, bool) {
	account := r.URL.Query().Get("account")
	var accounts []string
	if h.cfg.BTSAccounts != nil {
		accounts = h.cfg.BTSAccounts()
	}
	switch {
	case account == "" && len(accounts) == 0:
		return bts.SourceID(bts.DefaultAccount), true
	case account == "" && len(accounts) == 1:
		return bts.SourceID(accounts[0]), true
	case account == "":
		writeError(w, http.StatusBadRequest, fmt.Sprintf("several BTS accounts run here (%s): name one with ?account=", strings.Join(accounts, ", ")))
		return "", false
	case !slices.Contains(accounts, account) && !(len(accounts) == 0 && account == bts.DefaultAccount):
		writeError(w, http.StatusNotFound, fmt.Sprintf("no BTS account %s runs here", quote(account)))
		return "", false
	}
	return bts.SourceID(account), true
}

// sourcesResponse answers GET /v1/sources.
type sourcesResponse struct {
	Sources []status.Source `json:"sources"`
}

func (h *Handler) sources(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Sources == nil {
		writeError(w, http.StatusNotFound, "no such endpoint")
		return
	}
	srcs, err := h.cfg.Sources(r.Context())
	if err != nil {
		h.internalError(w, "source status", err)
		return
	}
	if srcs == nil {
		srcs = []status.Source{}
	}
	writeJSON(w, http.StatusOK, sourcesResponse{Sources: srcs})
}

// trackRequest is the body of POST /v1/bts/orders.
type trackRequest struct {
	OrderIDs []string `json:"order_ids"`
}

// trackResponse answers POST /v1/bts/orders.
type trackResponse struct {
	Source string `json:"source"`
	// Added are the orders now tracked that were not before (not_found
	// orders are reactivated and count as added).
	Added []string `json:"added"`
	// AlreadyTracked are the rest: active or terminal orders left as they
	// were.
	AlreadyTracked []string `json:"already_tracked"`
}

func (h *Handler) track(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "the body must be application/json")
			return
		}
	}
	var req trackRequest
	if status, err := decodeJSON(w, r, &req); err != nil {
		writeError(w, status, err.Error())
		return
	}
	ids, err := checkOrderIDs(req.OrderIDs)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	src, ok := h.btsSource(w, r)
	if !ok {
		return
	}
	added, err := h.store.Track(r.Context(), src, ids)
	if err != nil {
		h.internalError(w, "track bts orders", err)
		return
	}
	isAdded := make(map[string]bool, len(added))
	for _, id := range added {
		isAdded[id] = true
	}
	resp := trackResponse{Source: src, Added: added, AlreadyTracked: []string{}}
	if resp.Added == nil {
		resp.Added = []string{}
	}
	for _, id := range ids {
		if !isAdded[id] {
			resp.AlreadyTracked = append(resp.AlreadyTracked, id)
		}
	}
	status := http.StatusOK
	if len(added) > 0 {
		status = http.StatusCreated
	}
	h.log.Info("admin: tracked BTS orders", zap.String("source", src),
		zap.Int("added", len(added)), zap.Int("already_tracked", len(resp.AlreadyTracked)))
	writeJSON(w, status, resp)
}

// checkOrderIDs validates a POST's ids and drops repeats.
func checkOrderIDs(ids []string) ([]string, error) {
	switch {
	case ids == nil:
		return nil, errors.New(`order_ids is required: {"order_ids": ["4293644"]}`)
	case len(ids) == 0:
		return nil, errors.New("order_ids is empty")
	case len(ids) > MaxOrdersPerRequest:
		return nil, fmt.Errorf("order_ids has %d ids, more than %d", len(ids), MaxOrdersPerRequest)
	}
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for i, id := range ids {
		if !bts.ValidOrderID(id) {
			return nil, fmt.Errorf("order_ids[%d] %s is not a BTS order id (1 to %d characters of A-Z, a-z, 0-9, _ and -)", i, quote(id), bts.MaxOrderIDLen)
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out, nil
}

// untrackResponse answers DELETE /v1/bts/orders/{id}.
type untrackResponse struct {
	Source  string `json:"source"`
	Removed string `json:"removed"`
}

func (h *Handler) untrack(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !bts.ValidOrderID(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s is not a BTS order id", quote(id)))
		return
	}
	src, ok := h.btsSource(w, r)
	if !ok {
		return
	}
	removed, err := h.store.Untrack(r.Context(), src, []string{id})
	if err != nil {
		h.internalError(w, "untrack bts order", err)
		return
	}
	if len(removed) == 0 {
		writeError(w, http.StatusNotFound, fmt.Sprintf("order %s is not tracked", id))
		return
	}
	h.log.Info("admin: untracked a BTS order", zap.String("source", src), zap.String("order_id", id))
	writeJSON(w, http.StatusOK, untrackResponse{Source: src, Removed: id})
}

// Order is one watch-list entry as the API shows it.
type Order struct {
	OrderID       string     `json:"order_id"`
	State         string     `json:"state"`
	StatusCode    *int       `json:"status_code"`
	StatusName    *string    `json:"status_name"`
	ChangeCount   int64      `json:"change_count"`
	NextPollAt    *time.Time `json:"next_poll_at"`
	ClaimedUntil  *time.Time `json:"claimed_until"`
	LastPolledAt  *time.Time `json:"last_polled_at"`
	LastChangedAt *time.Time `json:"last_changed_at"`
	AddedAt       time.Time  `json:"added_at"`
	ErrorCount    int        `json:"error_count"`
	LastError     *string    `json:"last_error"`
}

// OrderOf converts a stored order for display; the CLI's --json output uses
// it too, so that both speak the same shape.
func OrderOf(o watchlist.Order) Order {
	out := Order{
		OrderID: o.OrderID, State: string(o.State), ChangeCount: o.ChangeCount,
		NextPollAt: utc(o.NextPollAt), ClaimedUntil: utc(o.ClaimedUntil), LastPolledAt: utc(o.LastPolledAt),
		LastChangedAt: utc(o.LastChangedAt), AddedAt: o.AddedAt.UTC(), ErrorCount: o.ErrorCount,
	}
	if o.HasStatus {
		code := o.StatusCode
		out.StatusCode = &code
	}
	if o.StatusName != "" {
		name := o.StatusName
		out.StatusName = &name
	}
	if o.LastError != "" {
		e := o.LastError
		out.LastError = &e
	}
	return out
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// listResponse answers GET /v1/bts/orders.
type listResponse struct {
	Source string  `json:"source"`
	Orders []Order `json:"orders"`
	// NextAfter is the after= of the next page; null on the last page.
	NextAfter *string `json:"next_after"`
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	src, ok := h.btsSource(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	lq := watchlist.ListQuery{SourceID: src, State: watchlist.State(q.Get("state")), After: q.Get("after"), Limit: DefaultListLimit}
	if lq.State != "" && !lq.State.Valid() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("state must be active, terminal or not_found, got %s", quote(string(lq.State))))
		return
	}
	if lq.After != "" && !bts.ValidOrderID(lq.After) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("after must be an order id, got %s", quote(lq.After)))
		return
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxListLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be an integer between 1 and %d, got %s", MaxListLimit, quote(v)))
			return
		}
		lq.Limit = n
	}
	orders, err := h.store.List(r.Context(), lq)
	if err != nil {
		h.internalError(w, "list bts orders", err)
		return
	}
	resp := listResponse{Source: src, Orders: make([]Order, len(orders))}
	for i, o := range orders {
		resp.Orders[i] = OrderOf(o)
	}
	if len(orders) == lq.Limit {
		last := orders[len(orders)-1].OrderID
		resp.NextAfter = &last
	}
	writeJSON(w, http.StatusOK, resp)
}

// decodeJSON reads exactly one JSON object of bounded size into v, refusing
// unknown fields so that a typo ("orders") is an error rather than an
// empty request. It returns the HTTP status to answer with on failure.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) (int, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return http.StatusRequestEntityTooLarge, fmt.Errorf("the body is larger than %d bytes", MaxBodyBytes)
		}
		return http.StatusBadRequest, errors.New("could not read the body")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return http.StatusBadRequest, fmt.Errorf("the body is not the expected JSON: %s", jsonProblem(err))
	}
	if dec.More() {
		return http.StatusBadRequest, errors.New("the body holds more than one JSON value")
	}
	return 0, nil
}

// jsonProblem describes a decoding error without echoing the input.
func jsonProblem(err error) string {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF):
		return "empty body"
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("%s must be %s", typ.Field, typ.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return "malformed JSON"
}

// quote renders user input in an error message: quoted, and cut short.
func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strconv.Quote(s)
}

func (h *Handler) internalError(w http.ResponseWriter, op string, err error) {
	h.log.Error("admin: "+op+" failed", zap.Error(err))
	writeError(w, http.StatusInternalServerError, "internal error; see the ingestd log")
}

// methodNotAllowed answers 405 with the allowed methods.
func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed here; use %s", r.Method, allow))
	}
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
