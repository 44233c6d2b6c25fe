package bts

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/upstream"
)

// okBody wraps data in BTS's success envelope.
func okBody(data string) string {
	return `{"status":true,"message":"Данные успешно получены.","status_code":200,"data":` + data + `}`
}

// writeJSON answers with status and body as application/json.
func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// unauthorizedBody is the framework's answer to an expired token.
const unauthorizedBody = `{"name":"Unauthorized","message":"Your request was made with invalid credentials.","status":401}`

// makeJWT returns an unsigned JWT-shaped token expiring at exp, with a
// distinguishing id.
func makeJWT(id string, exp time.Time) string {
	enc := base64.RawURLEncoding
	payload, _ := json.Marshal(map[string]any{"jti": id, "exp": exp.Unix()})
	return enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(payload) + ".c2ln"
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeBTS is a small BTS server for client tests: it issues tokens, checks
// them on data endpoints and hands data requests to a per-test handler.
type fakeBTS struct {
	clock *clock
	// accessTTL makes access tokens JWTs expiring after it; zero issues
	// opaque tokens.
	accessTTL time.Duration

	mu          sync.Mutex
	issued      int
	valid       map[string]bool // access tokens accepted
	refreshOK   map[string]bool // refresh tokens accepted
	loginStatus int             // non-zero: answer logins with this status
	refreshFail bool            // answer refreshes with 422
	alwaysDeny  bool            // answer data requests with 401 whatever the token

	logins, refreshes, dataRequests atomic.Int64
	lastAuth                        atomic.Pointer[string]

	data http.HandlerFunc
}

func newFakeBTS(clk *clock, data http.HandlerFunc) *fakeBTS {
	return &fakeBTS{clock: clk, valid: map[string]bool{}, refreshOK: map[string]bool{}, data: data}
}

// issue mints a token pair under f.mu.
func (f *fakeBTS) issue() (access, refresh string) {
	f.issued++
	id := fmt.Sprintf("tok-%d", f.issued)
	access = "opaque-access-" + id
	if f.accessTTL > 0 {
		access = makeJWT(id, f.clock.Now().Add(f.accessTTL))
	}
	refresh = "refresh-" + id
	f.valid[access] = true
	f.refreshOK[refresh] = true
	return access, refresh
}

// expireAll invalidates every access token issued so far.
func (f *fakeBTS) expireAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.valid = map[string]bool{}
}

func (f *fakeBTS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case LoginPath:
		var req struct{ Login, Password string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		status := f.loginStatus
		f.mu.Unlock()
		if status != 0 {
			writeJSON(w, status, `{"name":"Unauthorized","message":"Incorrect login or password.","status":`+fmt.Sprint(status)+`}`)
			return
		}
		if req.Login != testLogin || req.Password != testPassword {
			writeJSON(w, http.StatusUnauthorized, `{"name":"Unauthorized","message":"Incorrect login or password.","status":401}`)
			return
		}
		f.mu.Lock()
		a, rt := f.issue()
		f.mu.Unlock()
		f.logins.Add(1)
		writeJSON(w, http.StatusOK, okBody(`{"access_token":"`+a+`","refresh_token":"`+rt+`"}`))
	case RefreshPath:
		var req struct {
			RefreshToken string `json:"refresh_token"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		ok := f.refreshOK[req.RefreshToken] && !f.refreshFail
		var a, rt string
		if ok {
			a, rt = f.issue()
		}
		f.mu.Unlock()
		if !ok {
			writeJSON(w, http.StatusUnprocessableEntity, `{"status":false,"message":"Validation failed","status_code":422,"errors":{"refresh_token":["Refresh token is invalid."]}}`)
			return
		}
		f.refreshes.Add(1)
		writeJSON(w, http.StatusOK, okBody(`{"access_token":"`+a+`","refresh_token":"`+rt+`"}`))
	default:
		f.dataRequests.Add(1)
		auth := r.Header.Get("Authorization")
		f.lastAuth.Store(&auth)
		tok, _ := strings.CutPrefix(auth, "Bearer ")
		f.mu.Lock()
		ok := f.valid[tok] && !f.alwaysDeny
		f.mu.Unlock()
		if !ok {
			writeJSON(w, http.StatusUnauthorized, unauthorizedBody)
			return
		}
		f.data(w, r)
	}
}

// newTestClient starts f and returns a client pointed at it with the test
// clock; mutate adjusts the configuration first.
func newTestClient(t *testing.T, f *fakeBTS, mutate func(*Config)) *Client {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	cfg := validConfig()
	cfg.BaseURL = srv.URL
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := NewClient(cfg, srv.Client())
	require.NoError(t, err)
	c.now = f.clock.Now
	return c
}

// trackOK answers every data request with a track of the requested order
// at status 800.
func trackOK(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("orderId")
	writeJSON(w, http.StatusOK, okBody(`{"orderId":`+id+`,"status":{"code":800,"name":"В офисе доставки"}}`))
}

func TestRequestShape(t *testing.T) {
	t.Parallel()
	type seen struct {
		method, path, query string
		header              http.Header
		body                string
	}
	reqs := make(chan seen, 4)
	f := newFakeBTS(newClock(), trackOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		reqs <- seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), string(b)}
		r.Body = io.NopCloser(strings.NewReader(string(b)))
		r.URL.Path = strings.TrimPrefix(r.URL.Path, "/prefix")
		f.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	cfg := validConfig()
	cfg.BaseURL = srv.URL + "/prefix/"
	cfg.Language = "ru"
	c, err := NewClient(cfg, srv.Client())
	require.NoError(t, err)

	tr, err := c.Track(context.Background(), "4293644")
	require.NoError(t, err)
	require.Equal(t, Track{OrderID: "4293644", Code: 800, Name: "В офисе доставки",
		Raw: json.RawMessage(`{"orderId":4293644,"status":{"code":800,"name":"В офисе доставки"}}`)}, tr)

	login := <-reqs
	require.Equal(t, http.MethodPost, login.method)
	require.Equal(t, "/prefix"+LoginPath, login.path)
	require.JSONEq(t, `{"login":"`+testLogin+`","password":"`+testPassword+`"}`, login.body)
	require.Empty(t, login.header.Get("Authorization"))
	require.Equal(t, "application/json", login.header.Get("Content-Type"))
	require.Equal(t, "application/json", login.header.Get("Accept"))
	require.Equal(t, "ru", login.header.Get("language"))

	track := <-reqs
	require.Equal(t, http.MethodGet, track.method)
	require.Equal(t, "/prefix"+TrackPath, track.path)
	require.Equal(t, "orderId=4293644", track.query)
	require.Equal(t, "Bearer opaque-access-tok-1", track.header.Get("Authorization"))
	require.Equal(t, "application/json", track.header.Get("Accept"))
	require.Equal(t, "application/json", track.header.Get("Content-Type"))
	require.Equal(t, "ru", track.header.Get("language"))
}

func TestClassification(t *testing.T) {
	t.Parallel()
	httpDate := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name string
		// statuses calls Statuses instead of Track.
		statuses  bool
		handler   http.HandlerFunc
		mutate    func(*Config)
		wantClass upstream.Class
		// wantStatus is the HTTP status in the error (0: none).
		wantStatus int
		wantText   string
		// wantRetryAfter: exact wait; retryAfterAbout: roughly this wait.
		wantRetryAfter  time.Duration
		retryAfterAbout time.Duration
	}{
		{name: "403", wantClass: upstream.Auth, wantStatus: 403, wantText: "Forbidden",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 403, `{"name":"Forbidden","message":"You are not allowed to perform this action.","code":0,"status":403}`)
			}},
		{name: "404 order", wantClass: upstream.NotFound, wantStatus: 404, wantText: "Buyurtma topilmadi",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 404, `{"status":false,"message":"Buyurtma topilmadi","status_code":404,"data":null}`)
			}},
		{name: "404 dictionary means a wrong base URL", statuses: true, wantClass: upstream.Permanent, wantStatus: 404, wantText: "Page not found",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 404, `{"name":"Not Found","message":"Page not found.","code":0,"status":404}`)
			}},
		{name: "422 envelope errors", wantClass: upstream.Permanent, wantStatus: 422, wantText: "Validation failed: orderId: Order Id must be an integer.",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 422, `{"status":false,"message":"Validation failed","status_code":422,"errors":{"orderId":["Order Id must be an integer."]}}`)
			}},
		{name: "422 bare Yii2 array", wantClass: upstream.Permanent, wantStatus: 422, wantText: "orderId: Order Id cannot be blank.",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 422, `[{"field":"orderId","message":"Order Id cannot be blank."}]`)
			}},
		{name: "429 with seconds", wantClass: upstream.RateLimited, wantStatus: 429, wantRetryAfter: 7 * time.Second,
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Retry-After", "7")
				writeJSON(w, 429, `{"name":"Too Many Requests","message":"Rate limit exceeded.","code":0,"status":429}`)
			}},
		{name: "429 with HTTP-date", wantClass: upstream.RateLimited, wantStatus: 429, retryAfterAbout: 90 * time.Second,
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Retry-After", httpDate)
				writeJSON(w, 429, `{}`)
			}},
		{name: "429 without Retry-After", wantClass: upstream.RateLimited, wantStatus: 429,
			handler: func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 429, `{}`) }},
		{name: "500", wantClass: upstream.Retry, wantStatus: 500, wantText: "Internal Server Error",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 500, `{"name":"Internal Server Error","message":"An internal server error occurred.","code":0,"status":500}`)
			}},
		{name: "502 nginx page", wantClass: upstream.Retry, wantStatus: 502, wantText: "502 Bad Gateway",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(502)
				_, _ = io.WriteString(w, "<html><head><title>502 Bad Gateway</title></head></html>")
			}},
		{name: "503 with Retry-After", wantClass: upstream.Retry, wantStatus: 503, wantRetryAfter: 3 * time.Second,
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Retry-After", "3")
				w.WriteHeader(503)
			}},
		{name: "400", wantClass: upstream.Permanent, wantStatus: 400, wantText: "Bad Request",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 400, `{"name":"Bad Request","message":"Missing required parameters: orderId","code":0,"status":400}`)
			}},
		{name: "redirect is not followed", wantClass: upstream.Permanent, wantStatus: 301, wantText: "redirected to https://elsewhere.example/",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "https://elsewhere.example/", http.StatusMovedPermanently)
			}},
		{name: "status false inside a 200", wantClass: upstream.Retry, wantStatus: 200, wantText: "status false: status_code 500: Server xatosi",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 200, `{"status":false,"message":"Server xatosi","status_code":500,"data":null}`)
			}},
		{name: "non-JSON 200", wantClass: upstream.Retry, wantStatus: 200, wantText: "not a JSON object",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(200)
				_, _ = io.WriteString(w, "<html>maintenance</html>")
			}},
		{name: "truncated JSON", wantClass: upstream.Retry, wantStatus: 200, wantText: "not a JSON object",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 200, `{"status":true,"data":{"orderId":1,"sta`)
			}},
		{name: "null data", wantClass: upstream.Retry, wantStatus: 200, wantText: "no data",
			handler: func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, `{"status":true,"data":null}`) }},
		{name: "track without status", wantClass: upstream.Retry, wantStatus: 200, wantText: "no status",
			handler: func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, okBody(`{"orderId":4293644}`)) }},
		{name: "track of another order", wantClass: upstream.Retry, wantStatus: 200, wantText: `about order "99"`,
			handler: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 200, okBody(`{"orderId":99,"status":{"code":800,"name":"x"}}`))
			}},
		{name: "dictionary item without code", statuses: true, wantClass: upstream.Retry, wantStatus: 200, wantText: "code",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 200, okBody(`{"items":[{"name":"x"}],"_links":{"next":null},"_meta":{"pageCount":1,"currentPage":1}}`))
			}},
		{name: "timeout", wantClass: upstream.Retry, wantText: "request timed out (request timeout 100ms)",
			mutate:  func(c *Config) { c.RequestTimeout = 100 * time.Millisecond },
			handler: func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
		{name: "connection dropped", wantClass: upstream.Retry,
			handler: func(w http.ResponseWriter, _ *http.Request) {
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					_ = conn.Close()
				}
			}},
		{name: "body too large", wantClass: upstream.Retry, wantStatus: 200, wantText: "too large",
			mutate: func(c *Config) { c.MaxResponseBytes = 64 },
			handler: func(w http.ResponseWriter, _ *http.Request) {
				writeJSON(w, 200, okBody(`{"orderId":4293644,"status":{"code":800,"name":"`+strings.Repeat("x", 100)+`"}}`))
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeBTS(newClock(), tc.handler)
			c := newTestClient(t, f, tc.mutate)
			var err error
			if tc.statuses {
				_, err = c.Statuses(context.Background())
			} else {
				_, err = c.Track(context.Background(), "4293644")
			}
			var ue *upstream.Error
			require.ErrorAs(t, err, &ue)
			require.Equal(t, tc.wantClass, ue.Class, "%v", err)
			require.Equal(t, tc.wantStatus, ue.StatusCode, "%v", err)
			require.Contains(t, err.Error(), tc.wantText)
			if tc.retryAfterAbout > 0 {
				require.InDelta(t, tc.retryAfterAbout.Seconds(), ue.RetryAfter.Seconds(), 5)
			} else {
				require.Equal(t, tc.wantRetryAfter, ue.RetryAfter)
			}
			require.False(t, errors.Is(err, context.Canceled))
			require.False(t, errors.Is(err, context.DeadlineExceeded), "a request timeout must not look like the caller's deadline")
		})
	}
}

func TestUnauthorizedAfterRefreshIsAuth(t *testing.T) {
	t.Parallel()
	f := newFakeBTS(newClock(), trackOK)
	f.alwaysDeny = true
	c := newTestClient(t, f, nil)

	_, err := c.Track(context.Background(), "4293644")
	require.Equal(t, upstream.Auth, upstream.ClassOf(err), "%v", err)
	require.ErrorContains(t, err, "Your request was made with invalid credentials.")
	require.EqualValues(t, 2, f.dataRequests.Load(), "one retry after the refresh, never a loop")
	require.EqualValues(t, 1, f.refreshes.Load())
}

func TestUnauthorizedRefreshesAndRetriesOnce(t *testing.T) {
	t.Parallel()
	f := newFakeBTS(newClock(), trackOK)
	c := newTestClient(t, f, nil)
	ctx := context.Background()

	_, err := c.Track(ctx, "1")
	require.NoError(t, err)
	require.EqualValues(t, 1, f.logins.Load())

	// The server forgets the token (it expired early, or was revoked).
	f.expireAll()
	tr, err := c.Track(ctx, "2")
	require.NoError(t, err)
	require.Equal(t, 800, tr.Code)
	require.EqualValues(t, 3, f.dataRequests.Load(), "the rejected request is retried exactly once")
	require.EqualValues(t, 1, f.refreshes.Load())
	require.EqualValues(t, 1, f.logins.Load(), "a refresh suffices; no new login")
	require.Equal(t, "Bearer opaque-access-tok-2", *f.lastAuth.Load())
	require.Equal(t, AuthStats{Logins: 1, Refreshes: 1}, c.AuthStats())
}

func TestRefreshFailureFallsBackToLogin(t *testing.T) {
	t.Parallel()
	f := newFakeBTS(newClock(), trackOK)
	c := newTestClient(t, f, nil)
	ctx := context.Background()
	_, err := c.Track(ctx, "1")
	require.NoError(t, err)

	f.mu.Lock()
	f.refreshFail = true
	f.mu.Unlock()
	f.expireAll()
	_, err = c.Track(ctx, "2")
	require.NoError(t, err)
	require.EqualValues(t, 2, f.logins.Load())
	require.Equal(t, AuthStats{Logins: 2, Refreshes: 0, RefreshFailures: 1}, c.AuthStats())
}

func TestRefreshBeforeExpiry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		accessTTL time.Duration // of the JWT; 0: opaque token
		tokenTTL  time.Duration // configured assumption
		// before and after are offsets either side of the refresh point.
		before, after time.Duration
	}{
		// 80% of a 1h JWT is 48m, whatever the configured TTL says.
		{name: "JWT exp", accessTTL: time.Hour, tokenTTL: 23 * time.Hour, before: 47 * time.Minute, after: 49 * time.Minute},
		// An opaque token is assumed to live TokenTTL: 80% of 10h is 8h.
		{name: "opaque token", tokenTTL: 10 * time.Hour, before: 7*time.Hour + 59*time.Minute, after: 8*time.Hour + time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			f := newFakeBTS(clk, trackOK)
			f.accessTTL = tc.accessTTL
			c := newTestClient(t, f, func(c *Config) { c.TokenTTL = tc.tokenTTL })
			ctx := context.Background()
			_, err := c.Track(ctx, "1")
			require.NoError(t, err)

			clk.Advance(tc.before)
			_, err = c.Track(ctx, "1")
			require.NoError(t, err)
			require.EqualValues(t, 0, f.refreshes.Load(), "too early to refresh")

			clk.Advance(tc.after - tc.before)
			_, err = c.Track(ctx, "1")
			require.NoError(t, err)
			require.EqualValues(t, 1, f.refreshes.Load(), "refreshed ahead of expiry")
			require.EqualValues(t, 3, f.dataRequests.Load(), "no request was rejected")
			require.EqualValues(t, 1, f.logins.Load())
		})
	}
}

func TestFailedProactiveRefreshKeepsTheValidToken(t *testing.T) {
	t.Parallel()
	clk := newClock()
	f := newFakeBTS(clk, trackOK)
	f.accessTTL = time.Hour
	c := newTestClient(t, f, nil)
	ctx := context.Background()
	_, err := c.Track(ctx, "1")
	require.NoError(t, err)

	// Past the refresh point, BTS's auth endpoints fail, but the token has
	// 10 minutes left: requests keep working.
	f.mu.Lock()
	f.refreshFail, f.loginStatus = true, http.StatusServiceUnavailable
	f.mu.Unlock()
	clk.Advance(50 * time.Minute)
	for range 3 {
		_, err = c.Track(ctx, "1")
		require.NoError(t, err)
	}
	require.EqualValues(t, 1, c.AuthStats().RefreshFailures, "one attempt, then a pause before the next")

	// Once it has expired, the failure surfaces, classified.
	clk.Advance(15 * time.Minute)
	_, err = c.Track(ctx, "1")
	require.Equal(t, upstream.Retry, upstream.ClassOf(err), "%v", err)
	require.ErrorContains(t, err, opLogin)
}

func TestLoginFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		want   upstream.Class
	}{
		{http.StatusUnauthorized, upstream.Auth},
		{http.StatusForbidden, upstream.Auth},
		{http.StatusUnprocessableEntity, upstream.Permanent},
		{http.StatusNotFound, upstream.Permanent},
		{http.StatusInternalServerError, upstream.Retry},
		{http.StatusTooManyRequests, upstream.RateLimited},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			t.Parallel()
			f := newFakeBTS(newClock(), trackOK)
			f.loginStatus = tc.status
			c := newTestClient(t, f, nil)
			_, err := c.Track(context.Background(), "1")
			require.Equal(t, tc.want, upstream.ClassOf(err), "%v", err)
			require.ErrorContains(t, err, opLogin)
			require.NotContains(t, err.Error(), testPassword)
			require.EqualValues(t, 0, f.dataRequests.Load())
		})
	}
}

func TestWrongPasswordIsAuth(t *testing.T) {
	t.Parallel()
	f := newFakeBTS(newClock(), trackOK)
	c := newTestClient(t, f, func(c *Config) { c.Login = "someone-else" })
	_, err := c.Statuses(context.Background())
	require.Equal(t, upstream.Auth, upstream.ClassOf(err), "%v", err)
	require.ErrorContains(t, err, "Incorrect login or password.")
}

func TestSecretsNeverInErrors(t *testing.T) {
	t.Parallel()
	// A server that echoes everything it was sent into its error messages.
	echo := func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		msg, _ := json.Marshal(string(b) + " " + r.Header.Get("Authorization"))
		writeJSON(w, http.StatusUnprocessableEntity, `{"status":false,"message":`+string(msg)+`,"status_code":422}`)
	}
	srv := httptest.NewServer(http.HandlerFunc(echo))
	t.Cleanup(srv.Close)
	cfg := validConfig()
	cfg.BaseURL = srv.URL
	c, err := NewClient(cfg, srv.Client())
	require.NoError(t, err)
	_, err = c.Track(context.Background(), "1")
	require.Error(t, err)
	require.NotContains(t, err.Error(), testPassword)
	require.Contains(t, err.Error(), "[REDACTED]")

	// Data calls: the access token is redacted too.
	f := newFakeBTS(newClock(), echo)
	c = newTestClient(t, f, nil)
	_, err = c.Track(context.Background(), "1")
	require.Error(t, err)
	require.NotContains(t, err.Error(), "opaque-access-tok")
	require.NotContains(t, err.Error(), testPassword)
}

func TestConcurrentRenewalsCoalesce(t *testing.T) {
	t.Parallel()
	f := newFakeBTS(newClock(), trackOK)
	c := newTestClient(t, f, nil)
	ctx := context.Background()
	_, err := c.Track(ctx, "1")
	require.NoError(t, err)
	f.expireAll()

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := c.Track(ctx, "1")
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.EqualValues(t, 1, f.refreshes.Load(), "twenty rejected requests renew the token once")
	require.EqualValues(t, 1, f.logins.Load())
}

func TestCallerCancellation(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 1)
	f := newFakeBTS(newClock(), func(_ http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
	})
	c := newTestClient(t, f, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	_, err := c.Track(ctx, "1")
	require.ErrorIs(t, err, context.Canceled)
	var ue *upstream.Error
	require.False(t, errors.As(err, &ue), "the caller's cancellation is not an upstream failure")
}

func TestTrackShapes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		data     string
		wantCode int
		wantName string
	}{
		{"documented", `{"orderId":11950975,"status":{"code":800,"name":"В офисе доставки"}}`, 800, "В офисе доставки"},
		{"cancelled order has id 0", `{"orderId":11950975,"status":{"id":0,"name":"Cancelled Order"}}`, 0, "Cancelled Order"},
		{"null code falls back to id", `{"orderId":11950975,"status":{"code":null,"id":0,"name":"Cancelled Order"}}`, 0, "Cancelled Order"},
		{"code and orderId as strings", `{"orderId":"11950975","status":{"code":"1100","name":"Курьер доставляет"}}`, 1100, "Курьер доставляет"},
		{"undocumented code", `{"orderId":11950975,"status":{"code":1000,"name":null}}`, 1000, ""},
		{"no orderId echoed", `{"status":{"code":100,"name":"У отправителя"},"extra":[1,2]}`, 100, "У отправителя"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeBTS(newClock(), func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, okBody(tc.data)) })
			c := newTestClient(t, f, nil)
			tr, err := c.Track(context.Background(), "11950975")
			require.NoError(t, err)
			require.Equal(t, "11950975", tr.OrderID)
			require.Equal(t, tc.wantCode, tr.Code)
			require.Equal(t, tc.wantName, tr.Name)
			require.JSONEq(t, tc.data, string(tr.Raw))
		})
	}
}

func TestDetail(t *testing.T) {
	t.Parallel()
	f := newFakeBTS(newClock(), func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, DetailPath, r.URL.Path)
		if r.URL.Query().Get("orderId") == "1" {
			writeJSON(w, 200, okBody(`{"orderId":1,"barcode":"0199","status":{"code":null,"name":null}}`))
			return
		}
		writeJSON(w, 200, okBody(`{"orderId":2,"status":{"code":1200,"name":"Доставлен"}}`))
	})
	c := newTestClient(t, f, nil)
	d, err := c.Detail(context.Background(), "1")
	require.NoError(t, err)
	require.Nil(t, d.Code)
	require.Contains(t, string(d.Raw), `"barcode":"0199"`)
	d, err = c.Detail(context.Background(), "2")
	require.NoError(t, err)
	require.NotNil(t, d.Code)
	require.Equal(t, 1200, *d.Code)
	require.Equal(t, "Доставлен", d.Name)
}

func TestInvalidOrderIDIsNeverSent(t *testing.T) {
	t.Parallel()
	f := newFakeBTS(newClock(), trackOK)
	c := newTestClient(t, f, nil)
	_, err := c.Track(context.Background(), "1&orderId=2")
	require.Equal(t, upstream.Permanent, upstream.ClassOf(err))
	require.EqualValues(t, 0, f.dataRequests.Load())
}

// statusItems renders dictionary items with codes from..to step 100.
func statusItems(codes ...int) string {
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf(`{"code":%d,"name":"s%d","description":"d%d","next_possible_statuses":[%d]}`, c, c, c, c+100)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func TestStatusesPagination(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		pages map[string]string // page number -> data
		want  []int
		// wantErr is a fragment of the expected error; "" means success.
		wantErr string
	}{
		{name: "documented single page", pages: map[string]string{
			"1": `{"items":` + statusItems(100, 200) + `,"_links":{"self":"/v1/status/index?page=1","next":null},"_meta":{"totalCount":2,"pageCount":1,"currentPage":1,"perPage":20}}`,
		}, want: []int{100, 200}},
		{name: "next links as strings", pages: map[string]string{
			"1": `{"items":` + statusItems(100, 200) + `,"_links":{"next":"/v1/status/index?page=2"},"_meta":{"pageCount":3,"currentPage":1}}`,
			"2": `{"items":` + statusItems(300, 400) + `,"_links":{"next":"https://apitest.bts.uz:28345/v1/status/index?page=3"},"_meta":{"pageCount":3,"currentPage":2}}`,
			"3": `{"items":` + statusItems(500) + `,"_links":{"next":null},"_meta":{"pageCount":3,"currentPage":3}}`,
		}, want: []int{100, 200, 300, 400, 500}},
		{name: "next links as href objects", pages: map[string]string{
			"1": `{"items":` + statusItems(100) + `,"_links":{"next":{"href":"/v1/status/index?page=2&per-page=1"}}}`,
			"2": `{"items":` + statusItems(200) + `,"_links":{"self":{"href":"x"}}}`,
		}, want: []int{100, 200}},
		{name: "meta only", pages: map[string]string{
			"1": `{"items":` + statusItems(100) + `,"_meta":{"pageCount":2,"currentPage":1}}`,
			"2": `{"items":` + statusItems(200, 100) + `,"_meta":{"pageCount":2,"currentPage":2}}`,
		}, want: []int{100, 200}},
		{name: "a link back is malformed", pages: map[string]string{
			"1": `{"items":` + statusItems(100) + `,"_links":{"next":"/v1/status/index?page=1"}}`,
		}, wantErr: "links back"},
		{name: "missing items", pages: map[string]string{"1": `{"_meta":{}}`}, wantErr: "no items"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeBTS(newClock(), func(w http.ResponseWriter, r *http.Request) {
				data, ok := tc.pages[r.URL.Query().Get("page")]
				if !ok {
					writeJSON(w, 404, `{"status":false,"message":"no such page"}`)
					return
				}
				writeJSON(w, 200, okBody(data))
			})
			c := newTestClient(t, f, nil)
			defs, err := c.Statuses(context.Background())
			if tc.wantErr != "" {
				require.Equal(t, upstream.Retry, upstream.ClassOf(err))
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			var codes []int
			for _, d := range defs {
				codes = append(codes, d.Code)
				require.Equal(t, fmt.Sprintf("s%d", d.Code), d.Name)
				require.Equal(t, fmt.Sprintf("d%d", d.Code), d.Description)
				require.Equal(t, []int{d.Code + 100}, d.Next)
			}
			require.Equal(t, tc.want, codes)
		})
	}
}

func TestJWTExpiry(t *testing.T) {
	t.Parallel()
	exp := time.Unix(1767225600, 0)
	got, ok := jwtExpiry(makeJWT("x", exp))
	require.True(t, ok)
	require.True(t, exp.Equal(got))

	enc := base64.RawURLEncoding.EncodeToString
	for _, tok := range []string{
		"opaque",
		"a.b",
		"a.!!!.c",
		"h." + enc([]byte(`{"sub":"x"}`)) + ".s",
		"h." + enc([]byte(`{"exp":"soon"}`)) + ".s",
		"h." + enc([]byte(`{"exp":-5}`)) + ".s",
	} {
		_, ok := jwtExpiry(tok)
		require.False(t, ok, tok)
	}
	got, ok = jwtExpiry("h." + enc([]byte(`{"exp":1767225600.5}`)) + ".s")
	require.True(t, ok)
	require.Equal(t, exp.Add(500*time.Millisecond), got)
}

func TestProviderError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body, wantCode, wantMsg string
	}{
		{"framework", unauthorizedBody, "Unauthorized", "Your request was made with invalid credentials."},
		{"envelope", `{"status":false,"message":"error.already_cancelled","status_code":400}`, "", "error.already_cancelled"},
		{"field strings", `{"message":"Validation failed","errors":{"b":"second","a":"first"}}`, "", "Validation failed: a: first; b: second"},
		{"errors only", `{"errors":["x","y"]}`, "", "x; y"},
		{"numeric code", `{"name":null,"code":42,"message":"m"}`, "42", "m"},
		{"plain text", "upstream connect error\n", "", "upstream connect error"},
		{"other JSON", `{"error":"nope"}`, "", `{"error":"nope"}`},
		{"long message is cut", `{"message":"` + strings.Repeat("м", 300) + `"}`, "", strings.Repeat("м", 100)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, msg := providerError([]byte(tc.body))
			require.Equal(t, tc.wantCode, code)
			require.Equal(t, tc.wantMsg, msg)
		})
	}
}
