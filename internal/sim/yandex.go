// Package sim simulates upstream delivery APIs for tests, the demo, the chaos
// harness and benchmarks. It speaks plain HTTP and JSON and deliberately
// shares no code with the clients it exercises.
//
// Yandex simulates the Yandex Delivery claims journal
// (POST /b2b/cargo/integration/v2/claims/journal). Its journal is a pure
// function of the configuration: the same seed serves the same bytes, which
// lets tests compare what a client published against Entry and EntryJSON.
package sim

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// YandexJournalPath is the only path the simulated Yandex server answers.
const YandexJournalPath = "/b2b/cargo/integration/v2/claims/journal"

// Page size bounds of the journal endpoint.
const (
	DefaultLimit = 1000
	MaxLimit     = 1000
)

// maxRate bounds YandexConfig.Rate; beyond it the appearance arithmetic
// would lose precision, and no consumer could keep up anyway.
const maxRate = 1e9

// maxClaims bounds YandexConfig.Claims so that a typo cannot allocate
// gigabytes of generator slots.
const maxClaims = 1 << 24

// HeaderPollingDelay is the header of a journal answer asking the client to
// wait that many milliseconds before its next journal request.
const HeaderPollingDelay = "X-Polling-Delay-Ms"

// maxBody bounds the request body; a real cursor request is tiny.
const maxBody = 64 << 10

// YandexConfig configures a simulated claims journal.
type YandexConfig struct {
	// Seed makes the server deterministic: the same configuration yields the
	// same journal, byte for byte.
	Seed int64
	// Token is the required Bearer token; empty accepts any request.
	Token string
	// Backlog is the number of entries available at start.
	Backlog int
	// Rate is the number of entries appended per second after start.
	// Entry i >= Backlog appears at start + (i-Backlog+1)/Rate.
	Rate float64
	// MaxEntries caps the journal. Zero means Backlog when Rate is zero and
	// unlimited otherwise.
	MaxEntries int
	// Claims is the number of claim lifecycles in flight at once: each entry
	// advances a randomly chosen one, and a claim reaching a terminal status
	// is replaced by a new claim, so a journal of n entries spans roughly
	// Claims + n/13 distinct claims. Zero picks total/50 clamped to
	// [1, 1000] (1000 when unlimited). Journals with the same Seed, Claims
	// and rates share their common prefix whatever their size, so set Claims
	// explicitly when comparing journals of different sizes.
	Claims int
	// UnknownStatusRate is the fraction of status changes (after "new") that
	// report a status outside the documented enum, such as "teleported_v2".
	// Such a status is a detour: the claim continues its lifecycle after it.
	UnknownStatusRate float64
	// ReplayRate is the fraction of pages that start up to ReplayCount
	// entries before the cursor position, re-serving entries the client
	// already has.
	ReplayRate float64
	// BackwardsTimeRate is the fraction of entries whose updated_ts is
	// earlier than the previous entry's, as under clock skew.
	BackwardsTimeRate float64
	// MaxPageSize caps a page below the requested limit; zero means the
	// limit is honoured up to MaxLimit.
	MaxPageSize int
	// Faults configures random faults.
	Faults FaultRates
	// PollingDelay, when positive, is sent as X-Polling-Delay-Ms on every
	// answer, and a request arriving sooner than that after the previous
	// answer is refused with 429, as Yandex may refuse a client that
	// ignores it. Each account (each Yandex) keeps its own pace. The wait
	// is measured in real time, like slow answers.
	PollingDelay time.Duration
	// Now is the clock; nil means time.Now. Only the append schedule uses
	// it: slow answers wait in real time.
	Now func() time.Time
}

// Yandex is a simulated Yandex Delivery claims journal. It is an
// http.Handler and all of its methods are safe for concurrent use.
type Yandex struct {
	cfg          YandexConfig
	total        int // -1 when unlimited
	maxPage      int
	slowDelay    time.Duration
	randomFaults bool
	journalID    uint64
	cursorKey    uint64

	journal *journal
	sched   *schedule

	faultMu  sync.Mutex
	faultRNG *rand.Rand
	scripted []Fault

	requests   atomic.Int64
	served     atomic.Int64
	lastCursor atomic.Pointer[string]

	// delayHeader is PollingDelay in milliseconds, as sent.
	delayHeader string
	// answeredAt is when the last answer was written (unix nanos, real
	// time); tooEarly counts requests that came sooner than PollingDelay
	// after it.
	answeredAt atomic.Int64
	tooEarly   atomic.Int64

	bufs sync.Pool // *[]byte page buffers
}

// NewYandex validates cfg and returns a server. Entries are generated lazily,
// so even a huge backlog costs nothing until it is read.
func NewYandex(cfg YandexConfig) (*Yandex, error) {
	if err := validate(&cfg); err != nil {
		return nil, err
	}
	total := cfg.MaxEntries
	if total == 0 {
		total = -1
		if cfg.Rate == 0 {
			total = cfg.Backlog
		}
	}
	width := cfg.Claims
	if width == 0 {
		n := total
		if n < 0 {
			n = max(cfg.Backlog, 50_000)
		}
		width = min(max(n/50, 1), 1000)
	}
	maxPage := MaxLimit
	if cfg.MaxPageSize > 0 {
		maxPage = cfg.MaxPageSize
	}
	slowDelay := cfg.Faults.SlowDelay
	if slowDelay == 0 {
		slowDelay = time.Second
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	seedHash := mix64(uint64(cfg.Seed))
	fr := cfg.Faults
	y := &Yandex{
		cfg:          cfg,
		total:        total,
		maxPage:      maxPage,
		slowDelay:    slowDelay,
		randomFaults: fr.TooManyRequests+fr.ServerError+fr.Slow+fr.Malformed > 0,
		journalID:    mix64(seedHash ^ mixJournalID),
		cursorKey:    mix64(seedHash ^ mixCursorKey),
		journal:      newJournal(seedHash, width, cfg.UnknownStatusRate, cfg.BackwardsTimeRate, total),
		sched:        newSchedule(now, cfg.Backlog, total, cfg.Rate),
		faultRNG:     rand.New(rand.NewPCG(seedHash, mixFaults)),
		delayHeader:  strconv.FormatInt(cfg.PollingDelay.Milliseconds(), 10),
	}
	return y, nil
}

// validate checks cfg and reports the first problem in terms of its fields.
func validate(cfg *YandexConfig) error {
	if cfg.Backlog < 0 {
		return fmt.Errorf("sim: Backlog must not be negative, got %d", cfg.Backlog)
	}
	if err := checkRate(cfg.Rate); err != nil {
		return fmt.Errorf("sim: Rate: %w", err)
	}
	if cfg.MaxEntries < 0 {
		return fmt.Errorf("sim: MaxEntries must not be negative, got %d", cfg.MaxEntries)
	}
	if cfg.MaxEntries > 0 && cfg.MaxEntries < cfg.Backlog {
		return fmt.Errorf("sim: MaxEntries (%d) is smaller than Backlog (%d)", cfg.MaxEntries, cfg.Backlog)
	}
	if cfg.MaxEntries > maxOffset || cfg.Backlog > maxOffset {
		return fmt.Errorf("sim: journal larger than %d entries is not supported", maxOffset)
	}
	if cfg.Claims < 0 || cfg.Claims > maxClaims {
		return fmt.Errorf("sim: Claims must be between 0 and %d, got %d", maxClaims, cfg.Claims)
	}
	if cfg.MaxPageSize < 0 || cfg.MaxPageSize > MaxLimit {
		return fmt.Errorf("sim: MaxPageSize must be between 0 and %d, got %d", MaxLimit, cfg.MaxPageSize)
	}
	probs := []struct {
		name string
		v    float64
	}{
		{"UnknownStatusRate", cfg.UnknownStatusRate},
		{"ReplayRate", cfg.ReplayRate},
		{"BackwardsTimeRate", cfg.BackwardsTimeRate},
		{"Faults.TooManyRequests", cfg.Faults.TooManyRequests},
		{"Faults.ServerError", cfg.Faults.ServerError},
		{"Faults.Slow", cfg.Faults.Slow},
		{"Faults.Malformed", cfg.Faults.Malformed},
	}
	for _, p := range probs {
		if !(p.v >= 0 && p.v <= 1) {
			return fmt.Errorf("sim: %s must be a probability in [0, 1], got %v", p.name, p.v)
		}
	}
	fr := cfg.Faults
	if sum := fr.TooManyRequests + fr.ServerError + fr.Slow + fr.Malformed; sum > 1 {
		return fmt.Errorf("sim: fault rates add up to %v, more than 1", sum)
	}
	if fr.SlowDelay < 0 {
		return fmt.Errorf("sim: Faults.SlowDelay must not be negative, got %v", fr.SlowDelay)
	}
	if cfg.PollingDelay < 0 {
		return fmt.Errorf("sim: PollingDelay must not be negative, got %v", cfg.PollingDelay)
	}
	return nil
}

// checkRate rejects rates the schedule cannot represent.
func checkRate(r float64) error {
	if math.IsNaN(r) || r < 0 || r > maxRate {
		return fmt.Errorf("must be between 0 and %g entries per second, got %v", float64(maxRate), r)
	}
	return nil
}

// SetRate changes the append rate from now on. Entries never exceed the
// total resolved at construction, so a journal created with Rate 0 and no
// MaxEntries cannot grow. It panics on a negative, NaN or huge rate.
func (y *Yandex) SetRate(r float64) {
	if err := checkRate(r); err != nil {
		panic("sim: SetRate: " + err.Error())
	}
	y.sched.setRate(r)
}

// Available returns the number of entries appended so far.
func (y *Yandex) Available() int { return y.sched.available() }

// Total returns the resolved MaxEntries, or -1 when the journal is unlimited.
func (y *Yandex) Total() int { return y.total }

// checkIndex panics when i is not an entry index of this journal; asking for
// an entry that can never exist is a bug in the caller.
func (y *Yandex) checkIndex(i int) {
	if i < 0 || (y.total >= 0 && i >= y.total) || i > maxOffset {
		panic(fmt.Sprintf("sim: entry index %d out of range (total %d)", i, y.total))
	}
}

// Entry returns journal entry i in typed form. Entries not yet available may
// be inspected too, since the journal is fixed in advance. It panics when i is
// negative or not below Total.
func (y *Yandex) Entry(i int) Entry {
	y.checkIndex(i)
	recs, claims := y.journal.view(i + 1)
	return y.journal.entry(i, &recs[i], claims)
}

// EntryJSON returns exactly the bytes served for entry i inside a page.
func (y *Yandex) EntryJSON(i int) []byte {
	y.checkIndex(i)
	recs, claims := y.journal.view(i + 1)
	return y.journal.appendEntry(nil, i, &recs[i], claims)
}

// AppearedAt returns when entry i became available. For an entry not yet
// available it is the time predicted by the current rate; it is the zero
// time when the entry will never appear (rate zero or beyond Total).
func (y *Yandex) AppearedAt(i int) time.Time {
	if i < 0 {
		panic(fmt.Sprintf("sim: entry index %d out of range", i))
	}
	return y.sched.appearedAt(i)
}

// CursorAfter returns the cursor pointing after the first n entries;
// CursorAfter(0) is the cursor a first call returns on an empty journal. The
// server rejects it while fewer than n entries are available.
func (y *Yandex) CursorAfter(n int) string {
	if n < 0 || (y.total >= 0 && n > y.total) || n > maxOffset {
		panic(fmt.Sprintf("sim: CursorAfter(%d) out of range (total %d)", n, y.total))
	}
	return y.encodeCursor(n)
}

// LastCursor returns the cursor of the most recent successful page, or ""
// before the first one.
func (y *Yandex) LastCursor() string {
	if p := y.lastCursor.Load(); p != nil {
		return *p
	}
	return ""
}

// Requests returns the number of requests received, faulted ones included.
func (y *Yandex) Requests() int64 { return y.requests.Load() }

// TooEarly returns the number of requests refused because they came sooner
// than PollingDelay after the previous answer.
func (y *Yandex) TooEarly() int64 { return y.tooEarly.Load() }

// Served returns the number of entries sent in successful pages, replayed
// entries included.
func (y *Yandex) Served() int64 { return y.served.Load() }

// IsUnknownStatus reports whether s is outside the documented status enum
// (pay_waiting counts as known).
func (y *Yandex) IsUnknownStatus(s string) bool {
	st, ok := parseStatus(s)
	return !ok || !st.known()
}

// errorBody is the error shape of the API.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeError writes a JSON error answer.
func writeError(w http.ResponseWriter, status int, code, message string) {
	body, _ := json.Marshal(errorBody{Code: code, Message: message})
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeInvalidCursor writes the documented answer to an unusable cursor.
func writeInvalidCursor(w http.ResponseWriter) {
	writeError(w, http.StatusBadRequest, "invalid_cursor", "Неправильный формат cursor")
}

// ServeHTTP serves the journal endpoint. Scripted and random faults are
// applied first, then method, Authorization, limit, body and cursor are
// checked in that order. A page holds entries from the cursor position on
// (earlier when it replays), and its cursor points after its last entry; a
// page with nothing new repeats the cursor it was given. In the response the
// cursor's '/' characters are escaped as "\/".
func (y *Yandex) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	y.requests.Add(1)
	if r.URL.Path != YandexJournalPath {
		writeError(w, http.StatusNotFound, "not_found", "Not found")
		return
	}
	// Reading the body up front lets net/http notice a client hanging up
	// during a slow answer: it only watches the connection once the body
	// has been consumed.
	raw, bodyErr := readBody(w, r)
	if y.cfg.PollingDelay > 0 {
		// Every answer, refusals included, asks for the delay, and the
		// next request is timed from when this answer started: a client
		// can act on an answer before the handler that wrote it returns,
		// so a later stamp would count its next request as early.
		arrived := time.Now()
		w.Header().Set(HeaderPollingDelay, y.delayHeader)
		w = &stampWriter{ResponseWriter: w, at: &y.answeredAt}
		if arrived.Before(time.Unix(0, y.answeredAt.Load()).Add(y.cfg.PollingDelay)) {
			y.tooEarly.Add(1)
			writeError(w, http.StatusTooManyRequests, "too_many_requests", "Too often: wait "+y.delayHeader+" ms between journal requests")
			return
		}
	}
	p := y.nextPlan()
	switch p.fault.Kind {
	case FaultTooManyRequests:
		if p.fault.RetryAfter != "" {
			w.Header().Set("Retry-After", p.fault.RetryAfter)
		}
		writeError(w, http.StatusTooManyRequests, "too_many_requests", "Слишком много запросов")
		return
	case FaultServerError:
		serverErrorBody(w, p.fault.Status)
		return
	case FaultBadCursor:
		writeInvalidCursor(w)
		return
	case FaultUnauthorized:
		writeError(w, http.StatusUnauthorized, "unauthorized", "Not authorized request")
		return
	case FaultForbidden:
		writeError(w, http.StatusForbidden, "forbidden", "Доступ запрещён")
		return
	case FaultDropConnection:
		dropConnection(w)
		return
	case FaultSlow:
		t := time.NewTimer(p.fault.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			// The client gave up; nobody is left to answer.
			t.Stop()
			return
		}
	}

	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "Method "+r.Method+" is not allowed")
		return
	}
	if !y.authorized(r) {
		writeError(w, http.StatusUnauthorized, "unauthorized", "Not authorized request")
		return
	}
	limit, err := parseLimit(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	cursor, err := parseCursor(raw, bodyErr)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}

	available := y.sched.available()
	pos := 0
	if cursor != "" {
		var ok bool
		if pos, ok = y.decodeCursor(cursor, available); !ok {
			writeInvalidCursor(w)
			return
		}
	}
	limit = min(limit, y.maxPage)
	// Replays count towards the limit but leave room for at least one new
	// entry, so a client always makes progress when there is any.
	replay := min(p.replay, pos, limit-1)
	start := pos - replay
	end := min(start+limit, available)
	next := y.encodeCursor(end)

	bp := y.getBuf()
	defer y.bufs.Put(bp)
	body := y.appendPage((*bp)[:0], start, end, next, p.malformed == malformedEventsObject)
	*bp = body
	contentType := "application/json; charset=utf-8"
	switch p.malformed {
	case malformedTruncated:
		body = body[:len(body)/2]
	case malformedHTML:
		contentType = "text/html"
		body = []byte("<html><head><title>Технические работы</title></head><body>Сервис временно недоступен</body></html>")
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	if p.malformed == malformedNone {
		y.served.Add(int64(end - start))
		y.lastCursor.Store(&next)
	}
}

// stampWriter records when its answer's status line is written.
type stampWriter struct {
	http.ResponseWriter
	at      *atomic.Int64
	stamped bool
}

func (s *stampWriter) WriteHeader(code int) {
	if !s.stamped {
		s.stamped = true
		s.at.Store(time.Now().UnixNano())
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *stampWriter) Write(b []byte) (int, error) {
	if !s.stamped {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the writer beneath. A dropped
// connection (dropConnection) cannot hijack through the stamp and aborts
// the handler instead, which closes the connection alike.
func (s *stampWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// getBuf returns a page buffer from the pool.
func (y *Yandex) getBuf() *[]byte {
	if bp, ok := y.bufs.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, 0, 64<<10)
	return &b
}

// appendPage renders a page of entries [start, end) with the given cursor.
// asObject renders events as an object keyed by position, which is the
// FaultEventsNotArray shape.
func (y *Yandex) appendPage(dst []byte, start, end int, cursor string, asObject bool) []byte {
	recs, claims := y.journal.view(end)
	dst = append(dst, `{"cursor":"`...)
	dst = appendCursorJSON(dst, cursor)
	dst = append(dst, `","events":`...)
	open, closing := byte('['), byte(']')
	if asObject {
		open, closing = '{', '}'
	}
	dst = append(dst, open)
	for i := start; i < end; i++ {
		if i > start {
			dst = append(dst, ',')
		}
		if asObject {
			dst = append(dst, '"')
			dst = strconv.AppendInt(dst, int64(i-start), 10)
			dst = append(dst, '"', ':')
		}
		dst = y.journal.appendEntry(dst, i, &recs[i], claims)
	}
	return append(dst, closing, '}')
}

// authorized checks the Bearer token in constant time.
func (y *Yandex) authorized(r *http.Request) bool {
	if y.cfg.Token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(y.cfg.Token)) == 1
}

// parseLimit reads the limit query parameter.
func parseLimit(r *http.Request) (int, error) {
	vals, ok := r.URL.Query()["limit"]
	if !ok {
		return DefaultLimit, nil
	}
	n, err := strconv.Atoi(vals[0])
	if err != nil || n < 1 || n > MaxLimit {
		return 0, fmt.Errorf("limit must be an integer between 1 and %d, got %q", MaxLimit, vals[0])
	}
	return n, nil
}

// readBody reads the request body, refusing unreasonably large ones.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, fmt.Errorf("request body larger than %d bytes", maxBody)
		}
		return nil, fmt.Errorf("reading request body: %w", err)
	}
	return raw, nil
}

// parseCursor extracts the cursor from the request body. An empty body, {}
// and a null or empty cursor all mean "from the start".
func parseCursor(raw []byte, readErr error) (string, error) {
	if readErr != nil {
		return "", readErr
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", nil
	}
	var req struct {
		Cursor *string `json:"cursor"`
	}
	if err := json.Unmarshal(raw, &req); err != nil {
		return "", fmt.Errorf("malformed request body: %v", err)
	}
	if req.Cursor == nil {
		return "", nil
	}
	return *req.Cursor, nil
}
