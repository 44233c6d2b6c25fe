package upstream

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Ops of the test provider. A 404 is NotFound only for opOrder, as it is
// for a provider whose order calls can name an order that does not exist.
const (
	opList  = "test list"
	opOrder = "test order"
)

// testErrorBody parses the test provider's {"code","message"} error body.
func testErrorBody(body []byte) (code, message string) {
	var pe struct {
		Code    json.RawMessage `json:"code"`
		Message json.RawMessage `json:"message"`
	}
	if json.Unmarshal(body, &pe) != nil || (pe.Code == nil && pe.Message == nil) {
		return "", Excerpt(body)
	}
	return Excerpt([]byte(JSONText(pe.Code))), Excerpt([]byte(JSONText(pe.Message)))
}

// testStatus is the test provider's status hook: the two kinds of special
// arm a real provider has, one keyed on the error's code, one on the op.
func testStatus(e *Error) Class {
	switch {
	case e.StatusCode == http.StatusBadRequest && e.Code == "invalid_cursor":
		return BadCursor
	case e.StatusCode == http.StatusNotFound && e.Op == opOrder:
		return NotFound
	}
	return 0
}

// newTestServer starts handler and returns a client core pointed at it;
// mutate adjusts the configuration first.
func newTestServer(t *testing.T, handler http.HandlerFunc, mutate func(*ClientConfig)) (*Client, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	cfg := ClientConfig{
		BaseURL:   srv.URL,
		Timeout:   30 * time.Second,
		MaxBody:   1024,
		ErrorBody: testErrorBody,
		Status:    testStatus,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := NewClient(cfg, srv.Client())
	require.NoError(t, err)
	return c, srv
}

// answer replies with status and body as application/json.
func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func TestClientRequestShape(t *testing.T) {
	t.Parallel()
	type seen struct {
		method, path, query, body string
		header                    http.Header
	}
	tests := []struct {
		name string
		req  func(c *Client) Request
		want seen
	}{
		{
			name: "POST with a body and the fixed headers",
			req: func(c *Client) Request {
				return Request{Op: opList, Method: http.MethodPost, URL: c.URL("/v1/list", url.Values{"limit": {"250"}}), Body: []byte(`{"cursor":"x"}`)}
			},
			want: seen{method: http.MethodPost, path: "/prefix/v1/list", query: "limit=250", body: `{"cursor":"x"}`, header: http.Header{
				"Authorization": {"Bearer fixed"}, "Language": {"uz"}, "Accept": {"application/json"},
				"Content-Type": {"application/json"}, "User-Agent": {"ingestd"},
			}},
		},
		{
			name: "GET with a bearer token for this request only",
			req: func(c *Client) Request {
				return Request{Op: opOrder, Method: http.MethodGet, URL: c.URL("/v1/order", url.Values{"id": {"a&b"}}), Bearer: "per-request"}
			},
			want: seen{method: http.MethodGet, path: "/prefix/v1/order", query: "id=a%26b", header: http.Header{
				"Authorization": {"Bearer per-request"}, "Language": {"uz"}, "Accept": {"application/json"},
				"Content-Type": {"application/json"}, "User-Agent": {"ingestd"},
			}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := make(chan seen, 1)
			c, _ := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got <- seen{r.Method, r.URL.Path, r.URL.RawQuery, string(b), r.Header.Clone()}
				answer(http.StatusCreated, `{"ok":true}`)(w, r)
			}, func(cfg *ClientConfig) {
				cfg.BaseURL += "/prefix/"
				// A key not in canonical form is sent canonicalized, as
				// Header.Set would send it.
				cfg.Header = http.Header{"Authorization": {"Bearer fixed"}, "language": {"uz"}}
			})

			resp, err := c.Do(context.Background(), tc.req(c))
			require.NoError(t, err)
			require.Equal(t, http.StatusCreated, resp.Status)
			require.Equal(t, `{"ok":true}`, string(resp.Body))
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"), "the answer's header is returned")

			s := <-got
			require.Equal(t, tc.want.method, s.method)
			require.Equal(t, tc.want.path, s.path)
			require.Equal(t, tc.want.query, s.query)
			require.Equal(t, tc.want.body, s.body)
			for k, v := range tc.want.header {
				require.Equal(t, v, s.header.Values(k), k)
			}
		})
	}
}

func TestNewClient(t *testing.T) {
	t.Parallel()
	hc := &http.Client{Timeout: time.Minute}
	c, err := NewClient(ClientConfig{BaseURL: "https://api.example/root/"}, hc)
	require.NoError(t, err)
	require.Nil(t, hc.CheckRedirect, "the caller's client must not be modified")
	require.Equal(t, "https://api.example/root/x", c.URL("/x", nil))

	_, err = NewClient(ClientConfig{BaseURL: "https://api.example/%zz"}, nil)
	require.Error(t, err, "a URL net/http cannot use is a configuration error")
}

func TestClientClassifiesStatuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// op is the request's Op; "" means opList.
		op     string
		status int
		// retryAfter and location are sent as the Retry-After and Location
		// headers when set.
		retryAfter, location string
		body                 string
		mutate               func(*ClientConfig)
		// want is the whole error but for Op and StatusCode, which are
		// those of the request and the answer.
		want Error
	}{
		// The provider's hook comes first.
		{name: "400 the hook names BadCursor", status: 400, body: `{"code":"invalid_cursor","message":"bad"}`,
			want: Error{Class: BadCursor, Code: "invalid_cursor", Message: "bad"}},
		{name: "400 the hook leaves to the shared rules", status: 400, body: `{"code":"unknown_error","message":"limit too large"}`,
			want: Error{Class: Permanent, Code: "unknown_error", Message: "limit too large"}},
		{name: "404 on an order call", op: opOrder, status: 404, body: `{"message":"no such order"}`,
			want: Error{Class: NotFound, Message: "no such order"}},
		{name: "404 elsewhere", status: 404, body: "404 page not found\n",
			want: Error{Class: Permanent, Message: "404 page not found"}},
		{name: "no hook", status: 400, body: `{"code":"invalid_cursor"}`, mutate: func(c *ClientConfig) { c.Status = nil },
			want: Error{Class: Permanent, Code: "invalid_cursor"}},

		// Error bodies go to the provider's parser, bounded.
		{name: "HTML error body", status: 400, body: "<html>\r\nBad Request</html>",
			want: Error{Class: Permanent, Message: "<html>  Bad Request</html>"}},
		{name: "no ErrorBody hook quotes the body", status: 409, body: `{"code":"conflict"}`, mutate: func(c *ClientConfig) { c.ErrorBody = nil },
			want: Error{Class: Permanent, Message: `{"code":"conflict"}`}},

		// The shared rules.
		{name: "401", status: 401, body: `{"code":"unauthorized"}`, want: Error{Class: Auth, Code: "unauthorized"}},
		{name: "403", status: 403, want: Error{Class: Auth}},
		{name: "405", status: 405, want: Error{Class: Permanent}},
		{name: "422", status: 422, body: `{"message":"invalid"}`, want: Error{Class: Permanent, Message: "invalid"}},
		{name: "408", status: 408, want: Error{Class: Retry}},
		{name: "425", status: 425, want: Error{Class: Retry}},
		{name: "redirect is not followed", status: 301, location: "https://elsewhere.example/api", body: "<a>Moved</a>",
			want: Error{Class: Permanent, Message: "redirected to https://elsewhere.example/api"}},
		{name: "429", status: 429, body: `{"code":"too_many_requests"}`, want: Error{Class: RateLimited, Code: "too_many_requests"}},
		{name: "429 with Retry-After", status: 429, retryAfter: "7", want: Error{Class: RateLimited, RetryAfter: 7 * time.Second}},
		{name: "500", status: 500, body: `{"code":"internal","message":"oops"}`, want: Error{Class: Retry, Code: "internal", Message: "oops"}},
		{name: "503 with Retry-After", status: 503, retryAfter: "12", want: Error{Class: Retry, RetryAfter: 12 * time.Second}},
		{name: "504 Retry-After is not read", status: 504, retryAfter: "12", want: Error{Class: Retry}},
		{name: "status outside the standard ranges", status: 600, body: `{"code":"odd"}`, want: Error{Class: Retry, Code: "odd"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, _ := newTestServer(t, func(w http.ResponseWriter, _ *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				if tc.location != "" {
					w.Header().Set("Location", tc.location)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}, tc.mutate)
			want := tc.want
			want.Op, want.StatusCode = cmp.Or(tc.op, opList), tc.status

			resp, err := c.Do(context.Background(), Request{Op: want.Op, Method: http.MethodGet, URL: c.URL("/v1", nil)})
			require.Zero(t, resp.Status)
			require.Nil(t, resp.Body)
			var ue *Error
			require.ErrorAs(t, err, &ue)
			// The error response's header is kept for the provider; the
			// test's server sets none of its own on some answers.
			require.NotNil(t, ue.Header, "an error answer's header is kept")
			ue.Header = nil
			require.Equal(t, &want, ue)
		})
	}
}

func TestClientTransportFailures(t *testing.T) {
	t.Parallel()
	oversized := strings.Repeat("x", 1500)
	tests := []struct {
		name string
		// handler answers the request; nil means the server is already
		// closed, so the connection is refused.
		handler    http.HandlerFunc
		wantStatus int
		// wantIs, when set, must be in the error's chain; wantMessage must
		// be its Message.
		wantIs      error
		wantMessage string
	}{
		{name: "connection refused"},
		{name: "connection closed without an answer", handler: func(w http.ResponseWriter, _ *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.Close()
			}
		}},
		{name: "body cut short", wantStatus: 200, wantIs: io.ErrUnexpectedEOF, handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "1000")
			_, _ = io.WriteString(w, `{"items":[`)
		}},
		{name: "Content-Length over the limit", wantStatus: 200, wantIs: ErrBodyTooLarge, wantMessage: "response body too large",
			handler: answer(200, oversized)},
		{name: "chunked body over the limit", wantStatus: 200, wantIs: ErrBodyTooLarge, wantMessage: "response body too large",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				// Flushing first makes the response chunked, without a length.
				_ = http.NewResponseController(w).Flush()
				_, _ = io.WriteString(w, oversized)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			handler := tc.handler
			if handler == nil {
				handler = answer(200, `{}`)
			}
			c, srv := newTestServer(t, handler, nil)
			if tc.handler == nil {
				srv.Close()
			}
			_, err := c.Do(context.Background(), Request{Op: opList, Method: http.MethodGet, URL: c.URL("/", nil), Bearer: "secret-token"})
			var ue *Error
			require.ErrorAs(t, err, &ue)
			require.Equal(t, Retry, ue.Class, "a transport failure may pass: %v", err)
			require.Equal(t, tc.wantStatus, ue.StatusCode)
			require.Equal(t, tc.wantMessage, ue.Message)
			require.Error(t, ue.Err, "the cause is kept")
			if tc.wantIs != nil {
				require.ErrorIs(t, err, tc.wantIs)
			}
			require.NotContains(t, err.Error(), "secret-token")
		})
	}
}

func TestClientBodyLimits(t *testing.T) {
	t.Parallel()
	const limit = 1024
	tests := []struct {
		name    string
		status  int
		size    int
		maxBody int64
		// wantRead is how much of an error body the ErrorBody hook sees;
		// for a 2xx, wantTooLarge says whether the body is refused.
		wantRead     int
		wantTooLarge bool
	}{
		{name: "2xx at the limit", status: 200, size: limit, maxBody: limit},
		{name: "2xx one byte over", status: 200, size: limit + 1, maxBody: limit, wantTooLarge: true},
		{name: "error body within MaxBody is read whole", status: 500, size: 1000, maxBody: limit, wantRead: 1000},
		{name: "error body is cut at MaxBody", status: 500, size: 5000, maxBody: limit, wantRead: limit},
		{name: "error body is cut at 64 KiB", status: 500, size: 100 << 10, maxBody: 1 << 20, wantRead: 64 << 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			read := make(chan int, 1)
			c, _ := newTestServer(t, answer(tc.status, strings.Repeat("x", tc.size)), func(c *ClientConfig) {
				c.MaxBody = tc.maxBody
				c.ErrorBody = func(body []byte) (string, string) {
					read <- len(body)
					return "", ""
				}
			})
			resp, err := c.Do(context.Background(), Request{Op: opList, Method: http.MethodGet, URL: c.URL("/", nil)})
			switch {
			case tc.status >= 300:
				require.Error(t, err)
				require.Equal(t, tc.wantRead, <-read)
			case tc.wantTooLarge:
				require.ErrorIs(t, err, ErrBodyTooLarge)
			default:
				require.NoError(t, err)
				require.Equal(t, tc.status, resp.Status)
				require.Len(t, resp.Body, tc.size)
			}
		})
	}
}

func TestClientDeadlines(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// timeout is the request timeout; callerTimeout, when set, is the
		// caller's deadline, and cancelOnArrival has the caller cancel
		// once the request reached the server.
		timeout, callerTimeout time.Duration
		cancelOnArrival        bool
		// stallInBody sends the status and part of the body first.
		stallInBody bool
		// wantCaller is the caller's context error the result must wrap;
		// nil means a Retry for the request timeout, with wantStatus.
		wantCaller error
		wantStatus int
	}{
		{name: "request timeout waiting for the answer", timeout: 50 * time.Millisecond},
		// The status must arrive before the timeout, which a loaded
		// machine running -race may take a while to deliver.
		{name: "request timeout reading the body", timeout: 500 * time.Millisecond, stallInBody: true, wantStatus: http.StatusOK},
		{name: "caller cancels", timeout: 30 * time.Second, cancelOnArrival: true, wantCaller: context.Canceled},
		{name: "caller's deadline", timeout: 30 * time.Second, callerTimeout: 50 * time.Millisecond, wantCaller: context.DeadlineExceeded},
		{name: "caller cancels while the body is read", timeout: 30 * time.Second, cancelOnArrival: true, stallInBody: true, wantCaller: context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.callerTimeout > 0 {
				ctx, cancel = context.WithTimeout(ctx, tc.callerTimeout)
				defer cancel()
			}
			c, _ := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
				if tc.stallInBody {
					_, _ = io.WriteString(w, `{"items":[`)
					_ = http.NewResponseController(w).Flush()
				}
				if tc.cancelOnArrival {
					cancel()
				}
				// The client gives up, by its timeout or the caller's, and
				// closes the connection, which ends the handler.
				<-r.Context().Done()
			}, func(c *ClientConfig) { c.Timeout = tc.timeout })

			_, err := c.Do(ctx, Request{Op: opList, Method: http.MethodGet, URL: c.URL("/", nil)})
			var ue *Error
			if tc.wantCaller != nil {
				require.ErrorIs(t, err, tc.wantCaller)
				require.ErrorContains(t, err, opList)
				require.False(t, errors.As(err, &ue), "the caller's end is not an upstream failure: %v", err)
				return
			}
			require.ErrorAs(t, err, &ue)
			require.Equal(t, Retry, ue.Class)
			require.Equal(t, tc.wantStatus, ue.StatusCode)
			require.Equal(t, fmt.Sprintf("request timed out (request timeout %s)", tc.timeout), ue.Message)
			require.NoError(t, ctx.Err())
			// A request timeout must not pass for the caller's end, or the
			// poller would stop instead of retrying.
			require.NotErrorIs(t, err, context.DeadlineExceeded)
			require.NotErrorIs(t, err, context.Canceled)
		})
	}
}

func TestClientRequestThatCannotBeBuilt(t *testing.T) {
	t.Parallel()
	sent := make(chan struct{}, 1)
	c, _ := newTestServer(t, func(http.ResponseWriter, *http.Request) { sent <- struct{}{} }, nil)
	_, err := c.Do(context.Background(), Request{Op: opList, Method: "NOT A METHOD", URL: c.URL("/", nil)})
	var ue *Error
	require.ErrorAs(t, err, &ue)
	require.Equal(t, Permanent, ue.Class, "a programming error halts rather than retrying forever")
	require.Equal(t, "internal error", ue.Message)
	require.Error(t, ue.Err)
	require.Empty(t, sent, "nothing was sent")
}

func TestInternalAndMalformed(t *testing.T) {
	t.Parallel()
	cause := errors.New("boom")
	tests := []struct {
		name       string
		err        error
		wantClass  Class
		wantStatus int
		wantText   string
		wantCause  bool
	}{
		{name: "internal", err: Internal(opOrder, cause), wantClass: Permanent,
			wantText: "test order: permanent: internal error: boom", wantCause: true},
		{name: "malformed", err: Malformed(opList, "list", 200, cause), wantClass: Retry, wantStatus: 200,
			wantText: "test list: retry: HTTP 200: malformed list: boom"},
		{name: "malformed quotes a bounded, clean excerpt", err: Malformed(opList, "list", 204, errors.New("bad\n"+strings.Repeat("y", 500))),
			wantClass: Retry, wantStatus: 204, wantText: "malformed list: bad " + strings.Repeat("y", MaxExcerpt-4)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var ue *Error
			require.ErrorAs(t, tc.err, &ue)
			require.Equal(t, tc.wantClass, ue.Class)
			require.Equal(t, tc.wantStatus, ue.StatusCode)
			require.Contains(t, tc.err.Error(), tc.wantText)
			require.Equal(t, tc.wantCause, errors.Is(tc.err, cause))
		})
	}
}

func TestJSONText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"absent", "", ""},
		{"null", "null", ""},
		{"string", `"Слишком много"`, "Слишком много"},
		{"string with escapes", `"a\"b\u0416"`, `a"bЖ`},
		{"integer", "42", "42"},
		{"negative zero is canonical", "-0", "0"},
		{"fraction", "1.5", "1.5"},
		{"integer past int64", "9223372036854775808", "9223372036854775808"},
		{"boolean", "true", "true"},
		{"object", `{"a":1}`, `{"a":1}`},
		{"long string is not cut", `"` + strings.Repeat("m", 500) + `"`, strings.Repeat("m", 500)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, JSONText([]byte(tc.in)))
		})
	}
}
