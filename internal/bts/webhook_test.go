package bts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
	"github.com/ingestd/ingestd/internal/upstream"
)

// testWebhookKey is an account's webhook token in these tests.
const testWebhookKey = "wh-key-7c1e4b9a02d8f365"

// webhookRequest is a request to the config endpoint as the server saw it.
type webhookRequest struct {
	method, auth, contentType string
	body                      string
}

// simServer serves a simulated BTS account with the test credentials,
// recording every request to the config endpoint. wrap, when set, stands
// in front of the simulator. mutate adjusts the simulator's configuration.
type simServer struct {
	bts *sim.BTS
	url string

	mu   sync.Mutex
	seen []webhookRequest
}

func newSimServer(t *testing.T, mutate func(*sim.BTSConfig), wrap func(http.Handler) http.Handler) *simServer {
	t.Helper()
	cfg := sim.BTSConfig{Seed: 13, Login: testLogin, Password: testPassword}
	if mutate != nil {
		mutate(&cfg)
	}
	b, err := sim.NewBTS(cfg)
	require.NoError(t, err)
	s := &simServer{bts: b}
	var h http.Handler = b
	if wrap != nil {
		h = wrap(b)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == sim.BTSWebhookConfigPath {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(strings.NewReader(string(body)))
			s.mu.Lock()
			s.seen = append(s.seen, webhookRequest{r.Method, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(body)})
			s.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

// requests returns the config endpoint's requests so far.
func (s *simServer) requests() []webhookRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]webhookRequest(nil), s.seen...)
}

// client returns a client of the server; mutate adjusts its configuration.
func (s *simServer) client(t *testing.T, mutate func(*Config)) *Client {
	t.Helper()
	cfg := validConfig()
	cfg.BaseURL = s.url
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := NewClient(cfg, nil)
	require.NoError(t, err)
	return c
}

func TestWebhookKnownToTheSimulator(t *testing.T) {
	t.Parallel()
	key := secret.New(testWebhookKey)
	tests := []struct {
		name string
		set  Webhook
		// wantBody is the JSON the config endpoint receives.
		wantBody string
	}{
		{
			name:     "production with the token",
			set:      Webhook{URL: "https://ingestd.example.com/v1/bts/webhook", Environment: WebhookProduction, HasToken: true, APIKey: key},
			wantBody: `{"webhook_url":"https://ingestd.example.com/v1/bts/webhook","environment":"production","has_token":true,"itx-apiKey":"` + testWebhookKey + `"}`,
		},
		{
			name:     "test without a token",
			set:      Webhook{URL: "http://10.0.0.7:8080/hook?x=1", Environment: WebhookTest},
			wantBody: `{"webhook_url":"http://10.0.0.7:8080/hook?x=1","environment":"test","has_token":false}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newSimServer(t, nil, nil)
			c := s.client(t, nil)
			ctx := context.Background()

			_, ok, err := c.Webhook(ctx)
			require.NoError(t, err)
			require.False(t, ok, "a new account has no webhook")

			got, err := c.SetWebhook(ctx, tc.set)
			require.NoError(t, err)
			require.Equal(t, tc.set, got, "BTS answers the setting it stored")

			shown, ok, err := c.Webhook(ctx)
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, tc.set, shown)
			require.Equal(t, tc.set.HasToken, shown.KeyMatches(key))
			require.False(t, shown.KeyMatches(secret.New(testWebhookKey+"-other")))
			require.False(t, shown.KeyMatches(secret.String{}))

			// Every call is a GET with the bearer token, and only the set
			// carries a body: BTS documents a GET with a body.
			reqs := s.requests()
			require.Len(t, reqs, 3)
			for i, r := range reqs {
				require.Equal(t, http.MethodGet, r.method, "request %d", i)
				require.True(t, strings.HasPrefix(r.auth, "Bearer "), "request %d", i)
			}
			require.Empty(t, reqs[0].body)
			require.JSONEq(t, tc.wantBody, reqs[1].body)
			require.Equal(t, "application/json", reqs[1].contentType)
			require.Empty(t, reqs[2].body)
			require.EqualValues(t, 1, s.bts.Logins(), "one login serves every call")
		})
	}
}

func TestSetWebhookValidatesBeforeSending(t *testing.T) {
	t.Parallel()
	const userPassword = "url-pa55word-zz"
	valid := Webhook{URL: "https://ingestd.example.com/v1/bts/webhook", Environment: WebhookProduction, HasToken: true, APIKey: secret.New(testWebhookKey)}
	tests := []struct {
		name   string
		mutate func(*Webhook)
		want   string
	}{
		{"empty URL", func(w *Webhook) { w.URL = "" }, "the URL is empty"},
		{"relative URL", func(w *Webhook) { w.URL = "/v1/bts/webhook" }, "not an absolute http or https URL"},
		{"no host", func(w *Webhook) { w.URL = "https:///v1/bts/webhook" }, "not an absolute http or https URL"},
		{"other scheme", func(w *Webhook) { w.URL = "ftp://ingestd.example.com/hook" }, "not an absolute http or https URL"},
		{"unparsable URL", func(w *Webhook) { w.URL = "https://[::1/hook" }, "missing ']'"},
		{"user info", func(w *Webhook) { w.URL = "https://ops:" + userPassword + "@ingestd.example.com/hook" }, "must not carry a user name or password"},
		{"unknown environment", func(w *Webhook) { w.Environment = "staging" }, `environment must be "production" or "test", got "staging"`},
		{"no environment", func(w *Webhook) { w.Environment = "" }, "environment must be"},
		{"token without a key", func(w *Webhook) { w.APIKey = secret.String{} }, "has_token is set but the key is empty"},
		{"key without has_token", func(w *Webhook) { w.HasToken = false }, "a key is given but has_token is not set"},
		{"short key", func(w *Webhook) { w.APIKey = secret.New("short-key") }, "at least 16 characters, got 9"},
		{"control character in the key", func(w *Webhook) { w.APIKey = secret.New(testWebhookKey + "\n") }, "control characters"},
	}
	s := newSimServer(t, nil, nil)
	c := s.client(t, nil)
	require.NoError(t, valid.Validate())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := valid
			tc.mutate(&w)
			require.ErrorIs(t, w.Validate(), ErrInvalidWebhook)
			_, err := c.SetWebhook(context.Background(), w)
			require.ErrorIs(t, err, ErrInvalidWebhook)
			require.ErrorContains(t, err, tc.want)
			require.ErrorContains(t, err, opWebhookSet)
			require.NotContains(t, err.Error(), testWebhookKey)
			require.NotContains(t, err.Error(), userPassword)
		})
	}
	t.Cleanup(func() {
		require.Empty(t, s.requests(), "nothing invalid is sent")
		require.Zero(t, s.bts.Logins(), "not even a login")
	})
}

// echoConfig answers the config endpoint with status and a body made by
// body from the request's body, and passes everything else to the
// simulator.
func echoConfig(status int, body func(req string) string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != sim.BTSWebhookConfigPath {
				next.ServeHTTP(w, r)
				return
			}
			b, _ := io.ReadAll(r.Body)
			writeJSON(w, status, body(string(b)))
		})
	}
}

// quoted is s as a JSON string.
func quoted(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestWebhookFailures(t *testing.T) {
	t.Parallel()
	w := Webhook{URL: "https://ingestd.example.com/v1/bts/webhook", Environment: WebhookProduction, HasToken: true, APIKey: secret.New(testWebhookKey)}
	tests := []struct {
		name      string
		wrap      func(http.Handler) http.Handler
		config    func(*Config)
		wantClass upstream.Class
		wantCode  int
		want      string
	}{
		{
			name:      "wrong password",
			config:    func(c *Config) { c.Password = secret.New("not-" + testPassword) },
			wantClass: upstream.Auth, wantCode: http.StatusUnauthorized,
			want: "Incorrect login or password.",
		},
		{
			name: "key quoted back in a 422",
			wrap: echoConfig(http.StatusUnprocessableEntity, func(req string) string {
				return `{"status":false,"message":` + quoted("rejected "+req) + `,"status_code":422}`
			}),
			wantClass: upstream.Permanent, wantCode: http.StatusUnprocessableEntity,
			want: "[REDACTED]",
		},
		{
			name: "key quoted back in a failure inside a 200",
			wrap: echoConfig(http.StatusOK, func(req string) string {
				return `{"status":false,"message":` + quoted("rejected "+req) + `,"status_code":500}`
			}),
			wantClass: upstream.Retry, wantCode: http.StatusOK,
			want: "[REDACTED]",
		},
		{
			name: "answer that is no setting",
			wrap: echoConfig(http.StatusOK, func(string) string {
				return `{"status":true,"data":{"webhook_url":"https://x.example","has_token":"maybe","itx-apiKey":"` + testWebhookKey + `"}}`
			}),
			wantClass: upstream.Retry, wantCode: http.StatusOK,
			want: "has_token is not a boolean",
		},
		{
			name: "endpoint missing",
			wrap: echoConfig(http.StatusNotFound, func(string) string {
				return `{"name":"Not Found","message":"Page not found.","code":0,"status":404}`
			}),
			wantClass: upstream.Permanent, wantCode: http.StatusNotFound,
			want: "Page not found.",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newSimServer(t, nil, tc.wrap)
			c := s.client(t, tc.config)
			_, err := c.SetWebhook(context.Background(), w)
			var ue *upstream.Error
			require.True(t, errors.As(err, &ue), "%v", err)
			require.Equal(t, tc.wantClass, ue.Class, "%v", err)
			require.Equal(t, tc.wantCode, ue.StatusCode, "%v", err)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), testWebhookKey)
			require.NotContains(t, err.Error(), testPassword)
		})
	}
}

// TestWebhookValidationErrorFromTheSimulator sends what Validate would
// refuse, past it, to see a 422 of BTS's shape classified and explained.
func TestWebhookValidationErrorFromTheSimulator(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want string
	}{
		{"unknown environment", `{"webhook_url":"https://ingestd.example.com/hook","environment":"staging","has_token":false}`, "environment: Environment is invalid."},
		{"token without a key", `{"webhook_url":"https://ingestd.example.com/hook","environment":"test","has_token":true}`, "itx-apiKey: Itx Api Key cannot be blank."},
		{"relative URL", `{"webhook_url":"/hook","environment":"test"}`, "webhook_url: Webhook Url is not a valid URL."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newSimServer(t, nil, nil)
			c := s.client(t, nil)
			_, _, err := c.webhookCall(context.Background(), opWebhookSet, []byte(tc.body), "")
			require.Equal(t, upstream.Permanent, upstream.ClassOf(err), "%v", err)
			require.ErrorContains(t, err, "HTTP 422")
			require.ErrorContains(t, err, tc.want)

			_, ok, err := c.Webhook(context.Background())
			require.NoError(t, err)
			require.False(t, ok, "a refused setting is not stored")
		})
	}
}

// TestWebhookRenewsAnExpiredToken: a token BTS expired is renewed and the
// call retried once, as for the data calls.
func TestWebhookRenewsAnExpiredToken(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := newSimServer(t, func(c *sim.BTSConfig) { c.Now = clk.Now; c.TokenTTL = time.Hour }, nil)
	c := s.client(t, nil)
	ctx := context.Background()
	_, _, err := c.Webhook(ctx)
	require.NoError(t, err)
	// The simulator's clock moves past the token's life while the client's
	// (real) clock still takes it for valid, so BTS answers 401.
	clk.Advance(2 * time.Hour)
	w := Webhook{URL: "https://ingestd.example.com/v1/bts/webhook", Environment: WebhookProduction, HasToken: true, APIKey: secret.New(testWebhookKey)}
	got, err := c.SetWebhook(ctx, w)
	require.NoError(t, err)
	require.Equal(t, w, got)
	require.EqualValues(t, 1, s.bts.Unauthorized())
	require.Equal(t, AuthStats{Logins: 1, Refreshes: 1}, c.AuthStats())
}

func TestDecodeWebhook(t *testing.T) {
	t.Parallel()
	tests := []struct {
		data    string
		want    Webhook
		wantErr bool
	}{
		{`{"webhook_url":"https://a.example/h","environment":"test","has_token":1,"itx-apiKey":"k"}`, Webhook{URL: "https://a.example/h", Environment: "test", HasToken: true, APIKey: secret.New("k")}, false},
		{`{"webhook_url":"https://a.example/h","environment":"production","has_token":"1"}`, Webhook{URL: "https://a.example/h", Environment: "production", HasToken: true}, false},
		{`{"webhook_url":"https://a.example/h","has_token":"0","itx-apiKey":null}`, Webhook{URL: "https://a.example/h"}, false},
		{`{"webhook_url":"https://a.example/h"}`, Webhook{URL: "https://a.example/h"}, false},
		{`{"webhook_url":"https://a.example/h","has_token":"yes"}`, Webhook{}, true},
		{`["https://a.example/h"]`, Webhook{}, true},
		{`{"webhook_url":7}`, Webhook{}, true},
	}
	for _, tc := range tests {
		got, err := decodeWebhook(json.RawMessage(tc.data))
		if tc.wantErr {
			require.Error(t, err, tc.data)
			require.NotContains(t, err.Error(), "a.example", "errors never quote data, which holds the key")
			continue
		}
		require.NoError(t, err, tc.data)
		require.Equal(t, tc.want, got, tc.data)
	}
}

func TestWebhookNeverPrintsTheKey(t *testing.T) {
	t.Parallel()
	w := Webhook{URL: "https://a.example/h", Environment: WebhookTest, HasToken: true, APIKey: secret.New(testWebhookKey)}
	b, err := json.Marshal(w)
	require.NoError(t, err)
	for _, out := range []string{string(b), fmt.Sprintf("%v", w), fmt.Sprintf("%+v", w), fmt.Sprintf("%#v", w)} {
		require.NotContains(t, out, testWebhookKey)
	}
}
