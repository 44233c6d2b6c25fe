package yandex

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/upstream"
)

// newTestClient starts handler and returns a client pointed at it; mutate
// adjusts the configuration first.
func newTestClient(t *testing.T, handler http.HandlerFunc, mutate func(*Config)) (*Client, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	cfg := validConfig()
	cfg.BaseURL = srv.URL
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := NewClient(cfg, srv.Client())
	require.NoError(t, err)
	return c, srv
}

// writeJSON answers with status and body as application/json.
func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// recordedRequest is what a handler saw.
type recordedRequest struct {
	method string
	path   string
	query  string
	header http.Header
	body   []byte
}

func TestJournalRequestShape(t *testing.T) {
	t.Parallel()
	// The cursor is opaque: it must reach the server exactly, whatever
	// characters it holds.
	const oddCursor = "eyJ+/Q==\" \\ \\\" курсор ✓ <&> \t\n\x01\u2028 😀"
	seen := make(chan recordedRequest, 2)
	c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		seen <- recordedRequest{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body}
		// Answer with the odd cursor so the response direction is checked
		// as well.
		resp, _ := json.Marshal(map[string]any{"cursor": oddCursor, "events": []any{}})
		writeJSON(w, http.StatusOK, string(resp))
	}, func(c *Config) {
		c.PageLimit = 250
		c.AcceptLanguage = "en"
		c.BaseURL += "/prefix/"
	})

	page, err := c.Journal(context.Background(), "")
	require.NoError(t, err)
	require.Equal(t, oddCursor, page.Cursor)
	require.Empty(t, page.Entries)

	first := <-seen
	require.Equal(t, http.MethodPost, first.method)
	require.Equal(t, "/prefix/b2b/cargo/integration/v2/claims/journal", first.path)
	require.Equal(t, "limit=250", first.query)
	require.Equal(t, "Bearer "+testToken, first.header.Get("Authorization"))
	require.Equal(t, "en", first.header.Get("Accept-Language"))
	require.Equal(t, "application/json", first.header.Get("Content-Type"))
	require.Equal(t, "application/json", first.header.Get("Accept"))
	require.Equal(t, "ingestd", first.header.Get("User-Agent"))
	require.Equal(t, "{}", string(first.body))

	_, err = c.Journal(context.Background(), page.Cursor)
	require.NoError(t, err)
	second := <-seen
	var sent map[string]string
	require.NoError(t, json.Unmarshal(second.body, &sent))
	require.Equal(t, map[string]string{"cursor": oddCursor}, sent)
	require.Equal(t, "Bearer "+testToken, second.header.Get("Authorization"))
}

func TestJournalDecodesPage(t *testing.T) {
	t.Parallel()
	// The second entry carries fields this client does not know, nested
	// values and odd spacing; Raw must keep all of it byte for byte.
	entry1 := `{"operation_id":1,"claim_id":"3b8d1af142664fde824626a7c19e2bd9","change_type":"status_changed",` +
		`"updated_ts":"2020-01-01T00:00:00+00:00","new_status":"new","new_price":"20.00","new_currency":"RUB",` +
		`"resolution":"success","revision":1,"client_id":"95d010b2471041499b8cb1bfa282692f","current_point_id":372036854775807}`
	entry2 := `{ "claim_id" : "c2", "operation_id" : 9223372036854775807, "future_field": {"a": [1, "x", null, {"b": true}]},` +
		` "change_type": "price_changed", "new_price": "-0.5", "current_point_id": null, "note": "say \"hi\" \u0416" }`
	body := `{"cursor":"c\u0416\"x","events":[` + entry1 + ",\n  " + entry2 + `],"extra":{"ignored":[1,2]}}`

	c, _ := newTestClient(t, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, body)
	}, nil)
	page, err := c.Journal(context.Background(), "prev")
	require.NoError(t, err)
	require.Equal(t, "cЖ\"x", page.Cursor)
	require.Equal(t, len(body), page.Bytes)
	require.Len(t, page.Entries, 2)

	point := int64(372036854775807)
	require.Equal(t, Entry{
		OperationID:    1,
		ClaimID:        "3b8d1af142664fde824626a7c19e2bd9",
		ChangeType:     "status_changed",
		UpdatedTS:      "2020-01-01T00:00:00+00:00",
		NewStatus:      "new",
		NewPrice:       "20.00",
		NewCurrency:    "RUB",
		Resolution:     "success",
		Revision:       1,
		ClientID:       "95d010b2471041499b8cb1bfa282692f",
		CurrentPointID: &point,
		Raw:            json.RawMessage(entry1),
		rawChecked:     true,
	}, page.Entries[0])

	e2 := page.Entries[1]
	require.Equal(t, entry2, string(e2.Raw))
	require.Equal(t, int64(9223372036854775807), e2.OperationID)
	require.Equal(t, "c2", e2.ClaimID)
	require.Equal(t, "-0.5", e2.NewPrice)
	require.Nil(t, e2.CurrentPointID)
}

// classifyCase is one row of TestJournalClassification.
type classifyCase struct {
	name string
	// handler answers the request; nil means the server is already closed,
	// so the connection is refused.
	handler    http.HandlerFunc
	wantClass  upstream.Class
	wantStatus int
	wantCode   string
	// wantMessage must be contained in the error's Message, which must
	// start with wantPrefix.
	wantMessage string
	wantPrefix  string
	// wantErr, when set, must be in the error's chain.
	wantErr error
	// retryAfter bounds the expected RetryAfter: [min, max].
	retryAfter [2]time.Duration
}

func status(code int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, code, body) }
}

func withHeader(key, value string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(key, value)
		h(w, r)
	}
}

// hangUp closes the connection without an answer, which the client sees as
// EOF or a reset.
func hangUp(w http.ResponseWriter, _ *http.Request) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	_ = conn.Close()
}

func TestJournalClassification(t *testing.T) {
	t.Parallel()
	httpDate := time.Now().Add(2 * time.Minute).UTC().Format(http.TimeFormat)
	// "ошибка " is 13 bytes, so byte 200 falls in the middle of a rune.
	longText := strings.Repeat("ошибка ", 100)

	tests := []classifyCase{
		// Transport.
		{name: "connection refused", handler: nil, wantClass: upstream.Retry},
		{name: "connection closed without answer", handler: hangUp, wantClass: upstream.Retry},
		{name: "body cut short", handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, `{"cursor":"x","events":[`)
		}, wantClass: upstream.Retry, wantStatus: 200, wantErr: io.ErrUnexpectedEOF},

		// 400.
		{name: "400 invalid_cursor", handler: status(400, `{"code":"invalid_cursor","message":"bad"}`),
			wantClass: upstream.BadCursor, wantStatus: 400, wantCode: "invalid_cursor", wantMessage: "bad"},
		{name: "400 documented cursor message", handler: status(400, `{"code":"unknown_error","message":"Неправильный формат cursor"}`),
			wantClass: upstream.BadCursor, wantStatus: 400, wantCode: "unknown_error", wantMessage: "Неправильный формат cursor"},
		{name: "400 cursor in upper case", handler: status(400, `{"code":"BAD_CURSOR"}`),
			wantClass: upstream.BadCursor, wantStatus: 400, wantCode: "BAD_CURSOR"},
		{name: "400 other", handler: status(400, `{"code":"unknown_error","message":"limit is too large"}`),
			wantClass: upstream.Permanent, wantStatus: 400, wantCode: "unknown_error", wantMessage: "limit is too large"},
		{name: "400 non-JSON body", handler: status(400, "<html>\r\nBad Request</html>"),
			wantClass: upstream.Permanent, wantStatus: 400, wantMessage: "<html>  Bad Request</html>"},
		{name: "400 long non-JSON body is cut on a rune boundary", handler: status(400, longText),
			wantClass: upstream.Permanent, wantStatus: 400, wantMessage: longText[:199]},

		// Auth and other client errors.
		{name: "401", handler: status(401, `{"code":"unauthorized","message":"Not authorized request"}`),
			wantClass: upstream.Auth, wantStatus: 401, wantCode: "unauthorized"},
		{name: "403", handler: status(403, `{"code":"forbidden","message":"no access"}`),
			wantClass: upstream.Auth, wantStatus: 403, wantCode: "forbidden"},
		{name: "404", handler: status(404, `404 page not found`),
			wantClass: upstream.Permanent, wantStatus: 404, wantMessage: "404 page not found"},
		{name: "405", handler: status(405, ``), wantClass: upstream.Permanent, wantStatus: 405},
		{name: "409", handler: status(409, `{"code":"conflict"}`), wantClass: upstream.Permanent, wantStatus: 409, wantCode: "conflict"},
		{name: "408", handler: status(408, ``), wantClass: upstream.Retry, wantStatus: 408},
		{name: "425", handler: status(425, ``), wantClass: upstream.Retry, wantStatus: 425},
		{name: "redirect is not followed", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://elsewhere.example/journal", http.StatusMovedPermanently)
		}, wantClass: upstream.Permanent, wantStatus: 301, wantMessage: "redirected to https://elsewhere.example/journal"},

		// Rate limiting.
		{name: "429 without Retry-After", handler: status(429, `{"code":"too_many_requests","message":"Слишком много запросов"}`),
			wantClass: upstream.RateLimited, wantStatus: 429, wantCode: "too_many_requests", wantMessage: "Слишком много запросов"},
		{name: "429 Retry-After seconds", handler: withHeader("Retry-After", "7", status(429, `{"code":"too_many_requests"}`)),
			wantClass: upstream.RateLimited, wantStatus: 429, retryAfter: [2]time.Duration{7 * time.Second, 7 * time.Second}},
		{name: "429 Retry-After HTTP-date", handler: withHeader("Retry-After", httpDate, status(429, ``)),
			// The date has one-second resolution and was computed before the
			// request; allow for a slow machine.
			wantClass: upstream.RateLimited, wantStatus: 429, retryAfter: [2]time.Duration{time.Minute, 2 * time.Minute}},

		// Server errors.
		{name: "500", handler: status(500, `{"code":"internal","message":"oops"}`), wantClass: upstream.Retry, wantStatus: 500, wantCode: "internal"},
		{name: "502 HTML", handler: status(502, `<html>Bad Gateway</html>`), wantClass: upstream.Retry, wantStatus: 502, wantMessage: "Bad Gateway"},
		{name: "503 Retry-After", handler: withHeader("Retry-After", "12", status(503, ``)),
			wantClass: upstream.Retry, wantStatus: 503, retryAfter: [2]time.Duration{12 * time.Second, 12 * time.Second}},
		{name: "504", handler: status(504, ``), wantClass: upstream.Retry, wantStatus: 504},

		// Oversize body (MaxResponseBytes is 1 KiB below).
		{name: "body over the limit", handler: status(200, `{"cursor":"x","events":[],"pad":"`+strings.Repeat("x", 2048)+`"}`),
			wantClass: upstream.Retry, wantStatus: 200, wantErr: upstream.ErrBodyTooLarge, wantMessage: "too large"},
		{name: "chunked body over the limit", handler: func(w http.ResponseWriter, _ *http.Request) {
			// Flushing first makes the response chunked, without a length.
			w.WriteHeader(http.StatusOK)
			_ = http.NewResponseController(w).Flush()
			_, _ = io.WriteString(w, `{"cursor":"x","events":[],"pad":"`+strings.Repeat("x", 2048)+`"}`)
		}, wantClass: upstream.Retry, wantStatus: 200, wantErr: upstream.ErrBodyTooLarge},

		// Other statuses.
		{name: "204 without body", handler: func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) },
			wantClass: upstream.Retry, wantStatus: 204, wantPrefix: "malformed journal page: ", wantMessage: "invalid JSON"},
		{name: "status outside the standard ranges", handler: status(600, `{"code":"odd"}`),
			wantClass: upstream.Retry, wantStatus: 600, wantCode: "odd"},
	}

	for _, tc := range malformedCases() {
		tests = append(tests, classifyCase{
			name: "malformed: " + tc.name, handler: status(200, tc.body),
			wantClass: upstream.Retry, wantStatus: 200, wantPrefix: "malformed journal page: ", wantMessage: tc.want,
		})
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			handler := tc.handler
			if handler == nil {
				handler = status(200, `{}`)
			}
			c, srv := newTestClient(t, handler, func(c *Config) { c.MaxResponseBytes = 1024 })
			if tc.handler == nil {
				srv.Close()
			}

			page, err := c.Journal(context.Background(), "cursor-1")
			require.Nil(t, page)
			var ue *upstream.Error
			require.ErrorAs(t, err, &ue)
			require.Equal(t, tc.wantClass, ue.Class, "error: %v", err)
			require.Equal(t, "fetch journal page", ue.Op)
			require.Equal(t, tc.wantStatus, ue.StatusCode)
			if tc.wantCode != "" {
				require.Equal(t, tc.wantCode, ue.Code)
			}
			require.Contains(t, ue.Message, tc.wantMessage)
			require.True(t, strings.HasPrefix(ue.Message, tc.wantPrefix), "message %q", ue.Message)
			require.LessOrEqual(t, len(ue.Message), upstream.MaxExcerpt+len("malformed journal page: "))
			if tc.wantStatus == 0 {
				require.Error(t, ue.Err, "a transport failure keeps its cause")
			}
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
			}
			require.GreaterOrEqual(t, ue.RetryAfter, tc.retryAfter[0])
			require.LessOrEqual(t, ue.RetryAfter, tc.retryAfter[1])
			// Only the caller's cancellation may look like one.
			require.False(t, errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
			require.NotContains(t, err.Error(), testToken)
		})
	}
}

// malformedCase is a 200 body that is not a usable page.
type malformedCase struct {
	name string
	body string
	// want is contained in the description of what is wrong.
	want string
}

func malformedCases() []malformedCase {
	const ok = `"operation_id":1,"claim_id":"c1"`
	return []malformedCase{
		{"empty body", ``, "invalid JSON"},
		{"HTML", `<html>OK</html>`, "invalid JSON"},
		{"truncated", `{"cursor":"x","events":[{` + ok, "invalid JSON"},
		{"trailing garbage", `{"cursor":"x","events":[]}x`, "invalid JSON"},
		{"array", `[]`, "JSON array, not an object"},
		{"string", `"cursor"`, "JSON string, not an object"},
		{"no cursor", `{"events":[]}`, "no cursor"},
		{"empty cursor", `{"cursor":"","events":[]}`, "no cursor"},
		{"null cursor", `{"cursor":null,"events":[]}`, "no cursor"},
		{"numeric cursor", `{"cursor":5,"events":[]}`, "cursor is a JSON number"},
		{"cursor with invalid UTF-8", "{\"cursor\":\"a\xffb\",\"events\":[]}", "not valid UTF-8"},
		{"cursor with unpaired surrogate", `{"cursor":"a\ud800b","events":[]}`, "unpaired surrogate"},
		{"no events", `{"cursor":"x"}`, "no events array"},
		{"null events", `{"cursor":"x","events":null}`, "no events array"},
		{"events object", `{"cursor":"x","events":{}}`, "events is a JSON object, not an array"},
		{"events string", `{"cursor":"x","events":"[]"}`, "events is a JSON string, not an array"},
		{"entry not an object", `{"cursor":"x","events":[{` + ok + `},7]}`, "events[1]: is a JSON number, not an object"},
		{"entry null", `{"cursor":"x","events":[null]}`, "events[0]: is a JSON null"},
		{"no claim_id", `{"cursor":"x","events":[{"operation_id":1}]}`, "events[0]: lacks claim_id"},
		{"empty claim_id", `{"cursor":"x","events":[{"operation_id":1,"claim_id":""}]}`, "lacks claim_id"},
		{"no operation_id", `{"cursor":"x","events":[{` + ok + `},{"claim_id":"c2"}]}`, "events[1]: claim c2 lacks operation_id"},
		{"null operation_id", `{"cursor":"x","events":[{"claim_id":"c2","operation_id":null}]}`, "lacks operation_id"},
		{"fractional operation_id", `{"cursor":"x","events":[{"claim_id":"c","operation_id":1.5}]}`, `operation_id: "1.5" is not an integer`},
		{"exponent operation_id", `{"cursor":"x","events":[{"claim_id":"c","operation_id":1e3}]}`, "not an integer"},
		{"string operation_id", `{"cursor":"x","events":[{"claim_id":"c","operation_id":"1"}]}`, "operation_id: is a JSON string, not an integer"},
		{"operation_id overflow", `{"cursor":"x","events":[{"claim_id":"c","operation_id":9223372036854775808}]}`, "overflows int64"},
		{"numeric claim_id", `{"cursor":"x","events":[{"claim_id":5,"operation_id":1}]}`, "claim_id: is a JSON number, not a string"},
		{"point id as string", `{"cursor":"x","events":[{` + ok + `,"current_point_id":"5"}]}`, "current_point_id: is a JSON string"},
		{"long key in a broken entry", `{"cursor":"x","events":[{"` + strings.Repeat("k", 500) + `":tru}]}`, "events[0]: kkkk"},
		{"status as object", `{"cursor":"x","events":[{` + ok + `,"new_status":{}}]}`, "new_status: is a JSON object"},
	}
}

func TestJournalBodyLimitIsInclusive(t *testing.T) {
	t.Parallel()
	const limit = 1024
	padded := func(size int) string {
		const head, tail = `{"cursor":"x","events":[],"pad":"`, `"}`
		return head + strings.Repeat("x", size-len(head)-len(tail)) + tail
	}
	tests := []struct {
		name    string
		size    int
		wantErr bool
	}{
		{"at the limit", limit, false},
		{"one byte over", limit + 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := padded(tc.size)
			c, _ := newTestClient(t, status(http.StatusOK, body), func(c *Config) { c.MaxResponseBytes = limit })
			page, err := c.Journal(context.Background(), "x")
			if tc.wantErr {
				require.ErrorIs(t, err, upstream.ErrBodyTooLarge)
				return
			}
			require.NoError(t, err)
			require.Equal(t, limit, page.Bytes)
		})
	}
}

func TestJournalRequestTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, func(c *Config) { c.RequestTimeout = 50 * time.Millisecond })
	// Registered after the server's Close, so it runs first and the
	// handler does not hold Close up.
	t.Cleanup(func() { close(release) })

	ctx := context.Background()
	_, err := c.Journal(ctx, "cursor-1")
	var ue *upstream.Error
	require.ErrorAs(t, err, &ue)
	require.Equal(t, upstream.Retry, ue.Class)
	require.Contains(t, ue.Message, "request timed out (request timeout 50ms)")
	require.NoError(t, ctx.Err())
	// A per-request timeout must not pass for the caller's cancellation,
	// or the poller would stop instead of retrying.
	require.NotErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorIs(t, err, context.Canceled)
}

func TestJournalRequestTimeoutWhileReadingBody(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"cursor":"x","events":[`)
		_ = http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		// The status must reach the client before the timeout, which a
		// machine loaded with other work and -race may take a while to
		// deliver: 50ms was seen to run out first.
	}, func(c *Config) { c.RequestTimeout = 500 * time.Millisecond })
	t.Cleanup(func() { close(release) })

	_, err := c.Journal(context.Background(), "cursor-1")
	var ue *upstream.Error
	require.ErrorAs(t, err, &ue)
	require.Equal(t, upstream.Retry, ue.Class)
	require.Equal(t, http.StatusOK, ue.StatusCode)
	require.Contains(t, ue.Message, "request timed out")
	require.NotErrorIs(t, err, context.DeadlineExceeded)
}

func TestJournalCallerCancellation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// newCtx returns the caller's context; cancelOnArrival says whether
		// the test cancels it once the request has reached the server, or
		// lets its deadline pass.
		newCtx          func() (context.Context, context.CancelFunc)
		cancelOnArrival bool
		want            error
	}{
		{
			name:            "cancelled",
			newCtx:          func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			cancelOnArrival: true,
			want:            context.Canceled,
		},
		{
			name: "deadline",
			newCtx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 50*time.Millisecond)
			},
			want: context.DeadlineExceeded,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			arrived := make(chan struct{}, 1)
			release := make(chan struct{})
			c, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
				arrived <- struct{}{}
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}, nil) // The request timeout stays at 30s: the caller ends first.
			t.Cleanup(func() { close(release) })

			ctx, cancel := tc.newCtx()
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := c.Journal(ctx, "cursor-1")
				done <- err
			}()
			<-arrived
			if tc.cancelOnArrival {
				cancel()
			}
			err := <-done
			require.ErrorIs(t, err, tc.want)
			var ue *upstream.Error
			require.False(t, errors.As(err, &ue), "cancellation is not an upstream failure: %v", err)
		})
	}
}

func TestJournalStoredCursorMustBeValidUTF8(t *testing.T) {
	t.Parallel()
	c, _ := newTestClient(t, func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "the request must not be sent", http.StatusTeapot)
	}, nil)
	_, err := c.Journal(context.Background(), "ab\xffc")
	var ue *upstream.Error
	require.ErrorAs(t, err, &ue)
	require.Equal(t, upstream.BadCursor, ue.Class)
	require.Zero(t, ue.StatusCode)
	require.Contains(t, ue.Message, "not valid UTF-8")
}

func TestNewClientKeepsCallersHTTPClient(t *testing.T) {
	t.Parallel()
	hc := &http.Client{Timeout: time.Minute}
	_, err := NewClient(validConfig(), hc)
	require.NoError(t, err)
	require.Nil(t, hc.CheckRedirect, "the caller's client must not be modified")
}

// TestJournalLargePage runs a full page through the client, as the poller
// would see it.
func TestJournalLargePage(t *testing.T) {
	t.Parallel()
	body := journalBody(1000)
	c, _ := newTestClient(t, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, string(body))
	}, nil)
	page, err := c.Journal(context.Background(), "x")
	require.NoError(t, err)
	require.Len(t, page.Entries, 1000)
	require.Equal(t, len(body), page.Bytes)
	for i, e := range page.Entries {
		require.Equal(t, int64(1_000_000+i), e.OperationID)
		require.True(t, json.Valid(e.Raw))
		require.True(t, bytes.Contains(body, e.Raw))
	}
}

// journalBody builds a realistic page of n entries: mostly status changes,
// some price changes, most with a point id, some with a field this client
// does not know.
func journalBody(n int) []byte {
	statuses := []string{"new", "accepted", "performer_lookup", "performer_found", "pickup_arrived",
		"pickuped", "delivery_arrived", "delivered", "delivered_finish", "cancelled"}
	var b bytes.Buffer
	b.WriteString(`{"cursor":"eyJvcGVyYXRpb25faWQiOjEwMDA5OTksImNyZWF0ZWQiOiIyMDI2LTAxLTAxIn0=","events":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		claim := fmt.Sprintf("%032x", uint64(i)*2654435761)
		ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second).Format("2006-01-02T15:04:05.000000-07:00")
		if i%10 == 9 {
			fmt.Fprintf(&b, `{"operation_id":%d,"claim_id":"%s","change_type":"price_changed","updated_ts":"%s",`+
				`"new_price":"%d.%02d","new_currency":"RUB","revision":%d,"client_id":"95d010b2471041499b8cb1bfa282692f"}`,
				1_000_000+i, claim, ts, 100+i, i%100, i%7+1)
			continue
		}
		fmt.Fprintf(&b, `{"operation_id":%d,"claim_id":"%s","change_type":"status_changed","updated_ts":"%s",`+
			`"new_status":"%s","revision":%d,"client_id":"95d010b2471041499b8cb1bfa282692f"`,
			1_000_000+i, claim, ts, statuses[i%len(statuses)], i%7+1)
		if statuses[i%len(statuses)] == "delivered_finish" {
			b.WriteString(`,"resolution":"success"`)
		}
		if i%4 != 0 {
			fmt.Fprintf(&b, `,"current_point_id":%d`, 372036854775000+i)
		}
		if i%25 == 0 {
			b.WriteString(`,"courier":{"name":"Иван","phone":"+70000000000","tags":["a","b"]}`)
		}
		b.WriteByte('}')
	}
	b.WriteString(`]}`)
	return b.Bytes()
}
