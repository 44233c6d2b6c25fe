package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// tashkent is UTC+5, written out here rather than taken from the code under
// test.
var tashkent = time.FixedZone("UTC+5", 5*60*60)

// webhookHit is one call a test receiver got, decoded.
type webhookHit struct {
	OrderID  int64
	Code     int
	Name     *string
	ClientID string
	Barcode  string
	Date     string
	// Keys are the keys of the text JSON, sorted.
	Keys []string
	// The three places a token may travel.
	HeaderToken, BearerToken, QueryToken string
	ContentType                          string
	Path                                 string
}

// token returns whichever token the call carried, and how many places
// carried one.
func (h webhookHit) token() (string, int) {
	tok, n := "", 0
	for _, t := range []string{h.HeaderToken, h.BearerToken, h.QueryToken} {
		if t != "" {
			tok, n = t, n+1
		}
	}
	return tok, n
}

// webhookReceiver is an httptest server recording the webhook calls it gets.
type webhookReceiver struct {
	url string

	mu   sync.Mutex
	hits []webhookHit
	bad  []string
}

// newWebhookReceiver starts a receiver that answers every call with status.
func newWebhookReceiver(t *testing.T, status int) *webhookReceiver {
	t.Helper()
	rc := &webhookReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.record(r)
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	rc.url = srv.URL + "/hooks/bts"
	return rc
}

// RoundTrip records a call without a network and answers 200, for a test
// that runs a second simulator only to compare its calls with the first's.
func (rc *webhookReceiver) RoundTrip(r *http.Request) (*http.Response, error) {
	rc.record(r)
	_ = r.Body.Close()
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
}

func (rc *webhookReceiver) record(r *http.Request) {
	h := webhookHit{ContentType: r.Header.Get("Content-Type"), Path: r.URL.Path, HeaderToken: r.Header.Get("token"), QueryToken: r.URL.Query().Get("token")}
	if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		h.BearerToken = bearer
	}
	var fail string
	if err := r.ParseForm(); err != nil {
		fail = err.Error()
	} else {
		text := r.PostForm.Get("text")
		var m map[string]json.RawMessage
		var v struct {
			ClientID string `json:"clientId"`
			OrderID  int64  `json:"orderId"`
			Barcode  string `json:"barcode"`
			Status   struct {
				ID   int     `json:"id"`
				Name *string `json:"name"`
			} `json:"status"`
			Date string `json:"date"`
		}
		if err := json.Unmarshal([]byte(text), &m); err != nil {
			fail = fmt.Sprintf("text %q: %v", text, err)
		} else if err := json.Unmarshal([]byte(text), &v); err != nil {
			fail = fmt.Sprintf("text %q: %v", text, err)
		}
		for k := range m {
			h.Keys = append(h.Keys, k)
		}
		sort.Strings(h.Keys)
		h.OrderID, h.Code, h.Name, h.ClientID, h.Barcode, h.Date = v.OrderID, v.Status.ID, v.Status.Name, v.ClientID, v.Barcode, v.Date
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if fail != "" {
		rc.bad = append(rc.bad, fail)
		return
	}
	rc.hits = append(rc.hits, h)
}

// Hits returns the calls received so far, in arrival order; it fails the
// test if any call could not be decoded.
func (rc *webhookReceiver) Hits(t *testing.T) []webhookHit {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	require.Empty(t, rc.bad, "calls the receiver could not decode")
	return slices.Clone(rc.hits)
}

func (rc *webhookReceiver) Len() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.hits) + len(rc.bad)
}

// webhookKey names one change: an order and the code it reached.
type webhookKey struct {
	order int64
	code  int
}

// expectedWebhooks returns the changes RunWebhooks must send, those at or
// after the start, optionally only those reached by until.
func expectedWebhooks(t *testing.T, b *BTS, until time.Time) map[webhookKey]Change {
	t.Helper()
	want := map[webhookKey]Change{}
	for _, id := range b.Orders() {
		n, err := strconv.ParseInt(id, 10, 64)
		require.NoError(t, err)
		for _, c := range b.History(id) {
			if !c.At.Before(b.Start()) && (until.IsZero() || !c.At.After(until)) {
				want[webhookKey{n, c.Code}] = c
			}
		}
	}
	return want
}

// newWebhookBTS builds a simulator with the test credentials.
func newWebhookBTS(t *testing.T, cfg BTSConfig) *BTS {
	t.Helper()
	cfg.Login, cfg.Password = btsLogin, btsPassword
	b, err := NewBTS(cfg)
	require.NoError(t, err)
	return b
}

// runWebhooks runs the delivery loop until it has sent everything.
func runWebhooks(t *testing.T, b *BTS) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(t, b.RunWebhooks(ctx))
}

// startWebhooks runs the delivery loop in the background and returns a
// function that waits for it to return, failing the test if it takes long.
func startWebhooks(t *testing.T, ctx context.Context, b *BTS) (wait func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- b.RunWebhooks(ctx) }()
	return func() error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("RunWebhooks did not return")
			return nil
		}
	}
}

// requireGenuine checks a call's payload against the change it reports and
// returns its key.
func requireGenuine(t *testing.T, b *BTS, h webhookHit, want map[webhookKey]Change) webhookKey {
	t.Helper()
	k := webhookKey{h.OrderID, h.Code}
	c, ok := want[k]
	require.True(t, ok, "a call for order %d code %d, which is not a change to send", h.OrderID, h.Code)
	id := strconv.FormatInt(h.OrderID, 10)
	require.Equal(t, []string{"barcode", "clientId", "date", "orderId", "status"}, h.Keys)
	require.Equal(t, "sim-"+id, h.ClientID)
	require.Equal(t, "0199"+id, h.Barcode)
	require.Equal(t, c.At.In(tashkent).Format("2006-01-02 15:04:05"), h.Date)
	require.Equal(t, "application/x-www-form-urlencoded", h.ContentType)
	require.Equal(t, "/hooks/bts", h.Path)
	if name := BTSStatusName(c.Code); name != "" {
		require.NotNil(t, h.Name)
		require.Equal(t, name, *h.Name)
	} else {
		require.Nil(t, h.Name, "code %d has no name", c.Code)
	}
	_, ok = b.index(id)
	require.True(t, ok)
	return k
}

func TestBTSWebhookConfigEndpoint(t *testing.T) {
	t.Parallel()
	e := newBTSEnv(t, BTSConfig{Seed: 1, Orders: 3})
	access, _ := e.login(t)
	const envelope = `{"status":true,"message":"Данные успешно получены.","status_code":200,"data":%s}`

	status, _, raw := e.do(t, http.MethodGet, BTSWebhookConfigPath, "", "")
	require.Equal(t, http.StatusUnauthorized, status, raw)
	status, _, _ = e.do(t, http.MethodPost, BTSWebhookConfigPath, access, `{}`)
	require.Equal(t, http.StatusMethodNotAllowed, status)

	status, _, raw = e.do(t, http.MethodGet, BTSWebhookConfigPath, access, "")
	require.Equal(t, http.StatusOK, status, raw)
	require.JSONEq(t, fmt.Sprintf(envelope, "null"), raw, "nothing configured yet")

	const good = `{"webhook_url":"https://ingestd.example/hooks/bts?x=1","environment":"production","has_token":true,"itx-apiKey":"k-1"}`
	for _, tc := range []struct {
		name, body, data string
	}{
		{"full", good, good},
		{"Yii2 booleans", `{"webhook_url":"http://10.0.0.5:8080/h","environment":"test","has_token":"1","itx-apiKey":"k-2"}`,
			`{"webhook_url":"http://10.0.0.5:8080/h","environment":"test","has_token":true,"itx-apiKey":"k-2"}`},
		{"no token", `{"webhook_url":"http://h/x","environment":"test","has_token":false}`,
			`{"webhook_url":"http://h/x","environment":"test","has_token":false,"itx-apiKey":""}`},
		{"has_token omitted", `{"webhook_url":"http://h/y","environment":"production","itx-apiKey":"kept"}`,
			`{"webhook_url":"http://h/y","environment":"production","has_token":false,"itx-apiKey":"kept"}`},
	} {
		status, _, raw = e.do(t, http.MethodGet, BTSWebhookConfigPath, access, tc.body)
		require.Equal(t, http.StatusOK, status, "%s: %s", tc.name, raw)
		require.JSONEq(t, fmt.Sprintf(envelope, tc.data), raw, tc.name)
		status, _, raw = e.do(t, http.MethodGet, BTSWebhookConfigPath, access, "")
		require.Equal(t, http.StatusOK, status, raw)
		require.JSONEq(t, fmt.Sprintf(envelope, tc.data), raw, "%s: a request without a body reads the setting back", tc.name)
	}
	status, _, _ = e.do(t, http.MethodGet, BTSWebhookConfigPath, access, good)
	require.Equal(t, http.StatusOK, status)

	for _, tc := range []struct {
		name, body, field, message string
	}{
		{"empty object", `{}`, "webhook_url", "Webhook Url cannot be blank."},
		{"not JSON", `webhook_url=http://h/x`, "webhook_url", "Webhook Url cannot be blank."},
		{"not an object", `["http://h/x"]`, "webhook_url", "Webhook Url cannot be blank."},
		{"url not a string", `{"webhook_url":42,"environment":"test"}`, "webhook_url", "Webhook Url must be a string."},
		{"relative url", `{"webhook_url":"/hooks","environment":"test"}`, "webhook_url", "Webhook Url is not a valid URL."},
		{"ftp url", `{"webhook_url":"ftp://h/x","environment":"test"}`, "webhook_url", "Webhook Url is not a valid URL."},
		{"no host", `{"webhook_url":"http:///x","environment":"test"}`, "webhook_url", "Webhook Url is not a valid URL."},
		{"no environment", `{"webhook_url":"http://h/x"}`, "environment", "Environment cannot be blank."},
		{"bad environment", `{"webhook_url":"http://h/x","environment":"staging"}`, "environment", "Environment is invalid."},
		{"environment not a string", `{"webhook_url":"http://h/x","environment":1}`, "environment", "Environment is invalid."},
		{"has_token not boolean", `{"webhook_url":"http://h/x","environment":"test","has_token":"yes"}`, "has_token", `Has Token must be either "1" or "0".`},
		{"token missing", `{"webhook_url":"http://h/x","environment":"test","has_token":true}`, "itx-apiKey", "Itx Api Key cannot be blank."},
		{"token blank", `{"webhook_url":"http://h/x","environment":"test","has_token":true,"itx-apiKey":""}`, "itx-apiKey", "Itx Api Key cannot be blank."},
		{"token not a string", `{"webhook_url":"http://h/x","environment":"test","has_token":true,"itx-apiKey":5}`, "itx-apiKey", "Itx Api Key must be a string."},
	} {
		status, _, raw = e.do(t, http.MethodGet, BTSWebhookConfigPath, access, tc.body)
		require.Equal(t, http.StatusUnprocessableEntity, status, "%s: %s", tc.name, raw)
		require.JSONEq(t, `{"status":false,"message":"Validation failed","status_code":422,"errors":{"`+tc.field+`":[`+strconv.Quote(tc.message)+`]}}`, raw, tc.name)
	}
	status, _, raw = e.do(t, http.MethodGet, BTSWebhookConfigPath, access, "")
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, fmt.Sprintf(envelope, good), raw, "a refused setting leaves the last one in place")

	e.sim.ForceExpireTokens()
	status, _, _ = e.do(t, http.MethodGet, BTSWebhookConfigPath, access, "")
	require.Equal(t, http.StatusUnauthorized, status, "an expired token is refused")
	require.EqualValues(t, 2, e.sim.Unauthorized())

	// A setting from BTSConfig reads back the same way, environment
	// defaulted.
	e2 := newBTSEnv(t, BTSConfig{Seed: 1, Webhooks: BTSWebhookConfig{URL: "http://ingestd:8080/bts", Token: "cfg-key"}})
	access2, _ := e2.login(t)
	_, _, raw = e2.do(t, http.MethodGet, BTSWebhookConfigPath, access2, "")
	require.JSONEq(t, fmt.Sprintf(envelope, `{"webhook_url":"http://ingestd:8080/bts","environment":"production","has_token":true,"itx-apiKey":"cfg-key"}`), raw)
}

func TestNewBTSRejectsBadWebhookConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		wh   BTSWebhookConfig
	}{
		{"relative URL", BTSWebhookConfig{URL: "/hooks"}},
		{"ftp URL", BTSWebhookConfig{URL: "ftp://h/x"}},
		{"environment", BTSWebhookConfig{Environment: "staging"}},
		{"loss", BTSWebhookConfig{Loss: 1.5}},
		{"duplicate", BTSWebhookConfig{Duplicate: -0.1}},
		{"forged NaN", BTSWebhookConfig{Forged: math.NaN()}},
		{"delay", BTSWebhookConfig{MaxDelay: -time.Second}},
		{"timeout", BTSWebhookConfig{Timeout: -time.Second}},
		{"concurrency", BTSWebhookConfig{Concurrency: -1}},
		{"token style", BTSWebhookConfig{TokenStyle: 7}},
	} {
		_, err := NewBTS(BTSConfig{Login: "l", Password: "p", Webhooks: tc.wh})
		require.Error(t, err, tc.name)
	}
}

// TestBTSWebhooksDeliverEveryChangeOnce runs whole lifecycles without
// faults, the token carried each way: every change at or after the start
// arrives exactly once, with the right payload and the token in its place
// only.
func TestBTSWebhooksDeliverEveryChangeOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		token string
		style BTSWebhookTokenStyle
		where func(webhookHit) string
	}{
		{"token header", "k-header", BTSWebhookTokenHeader, func(h webhookHit) string { return h.HeaderToken }},
		{"bearer", "k-bearer", BTSWebhookTokenBearer, func(h webhookHit) string { return h.BearerToken }},
		{"query", "k-query", BTSWebhookTokenQuery, func(h webhookHit) string { return h.QueryToken }},
		{"no token", "", BTSWebhookTokenHeader, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rc := newWebhookReceiver(t, http.StatusNoContent)
			b := newWebhookBTS(t, BTSConfig{Seed: 11, Orders: 300, Speed: 1e6, Backdate: 48 * time.Hour, UnknownRate: 0.2,
				Webhooks: BTSWebhookConfig{URL: rc.url, Token: tc.token, TokenStyle: tc.style}})
			want := expectedWebhooks(t, b, time.Time{})
			runWebhooks(t, b)

			hits := rc.Hits(t)
			got := map[webhookKey]int{}
			for _, h := range hits {
				got[requireGenuine(t, b, h, want)]++
				tok, places := h.token()
				if tc.token == "" {
					require.Zero(t, places, "no token is sent without has_token")
					continue
				}
				require.Equal(t, 1, places, "the token travels one way only")
				require.Equal(t, tc.token, tc.where(h))
				require.Equal(t, tc.token, tok)
			}
			require.Len(t, got, len(want), "every change is sent")
			for k, n := range got {
				require.Equal(t, 1, n, "order %d code %d sent once", k.order, k.code)
			}
			total := 0
			for _, id := range b.Orders() {
				total += len(b.History(id))
			}
			require.Less(t, len(want), total, "changes before the start (Backdate) are not sent")
			require.EqualValues(t, len(want), b.WebhooksSent())
			for _, n := range []int64{b.WebhooksLost(), b.WebhooksDuplicated(), b.WebhooksForged(), b.WebhooksFailed()} {
				require.Zero(t, n)
			}
			for _, id := range b.Orders() {
				n, _ := strconv.ParseInt(id, 10, 64)
				var codes []int
				for _, c := range b.History(id) {
					if _, ok := want[webhookKey{n, c.Code}]; ok {
						codes = append(codes, c.Code)
					}
				}
				require.Equal(t, codes, b.WebhooksDelivered(id), "order %s", id)
			}
			// Everything was sent: another run has nothing left to do.
			runWebhooks(t, b)
			require.Equal(t, len(hits), rc.Len())
		})
	}
}

// webhookTally classifies a receiver's calls as the simulator's faults
// should have made them.
type webhookTally struct {
	genuine                                    map[webhookKey]int
	wrongToken, wrongStatus, unknownOrder, all int
	// calls lists every call as order, code and token, sorted, to compare
	// runs.
	calls []string
}

func tallyWebhooks(t *testing.T, b *BTS, hits []webhookHit, token string, want map[webhookKey]Change) webhookTally {
	t.Helper()
	tl := webhookTally{genuine: map[webhookKey]int{}, all: len(hits)}
	for _, h := range hits {
		tok, places := h.token()
		require.Equal(t, 1, places)
		tl.calls = append(tl.calls, fmt.Sprintf("%d/%d/%s", h.OrderID, h.Code, tok))
		id := strconv.FormatInt(h.OrderID, 10)
		_, known := b.index(id)
		_, isReal := want[webhookKey{h.OrderID, h.Code}]
		switch {
		case !known:
			require.Equal(t, token, tok, "a forged order comes with the right token")
			tl.unknownOrder++
		case tok != token:
			require.True(t, isReal, "a forged token comes with a real change")
			tl.wrongToken++
		case !isReal:
			for _, c := range b.History(id) {
				require.NotEqual(t, c.Code, h.Code, "a forged status is one the order never has")
			}
			require.NotEmpty(t, BTSStatusName(h.Code))
			tl.wrongStatus++
		default:
			tl.genuine[requireGenuine(t, b, h, want)]++
		}
	}
	sort.Strings(tl.calls)
	return tl
}

// TestBTSWebhookFaultRates sends a few thousand changes with every fault
// but delay: the rates come out as configured, each fault shows at the
// receiver as what it is, and a second simulator of the same seed, run on a
// different clock, makes exactly the same calls.
func TestBTSWebhookFaultRates(t *testing.T) {
	t.Parallel()
	const token = "k-faults"
	cfg := func(url string) BTSConfig {
		return BTSConfig{Seed: 21, Orders: 350, Speed: 1e6, Webhooks: BTSWebhookConfig{
			URL: url, Token: token, Loss: 0.1, Duplicate: 0.2, Forged: 0.15, Concurrency: 8,
		}}
	}
	rc := newWebhookReceiver(t, http.StatusOK)
	b := newWebhookBTS(t, cfg(rc.url))
	want := expectedWebhooks(t, b, time.Time{})
	n := float64(len(want))
	require.Greater(t, len(want), 3000)
	runWebhooks(t, b)

	tl := tallyWebhooks(t, b, rc.Hits(t), token, want)
	lost, dup := 0, 0
	for k := range want {
		switch tl.genuine[k] {
		case 0:
			lost++
		case 1:
		case 2:
			dup++
		default:
			t.Fatalf("order %d code %d sent %d times", k.order, k.code, tl.genuine[k])
		}
	}
	t.Logf("%d changes: %d lost, %d duplicated, %d forged (%d token, %d status, %d order)",
		len(want), lost, dup, b.WebhooksForged(), tl.wrongToken, tl.wrongStatus, tl.unknownOrder)
	require.EqualValues(t, lost, b.WebhooksLost())
	require.EqualValues(t, dup, b.WebhooksDuplicated())
	forged := tl.wrongToken + tl.wrongStatus + tl.unknownOrder
	require.EqualValues(t, forged, b.WebhooksForged())
	require.EqualValues(t, tl.all, b.WebhooksSent())
	require.EqualValues(t, len(want)-lost+dup+forged, b.WebhooksSent())
	require.Zero(t, b.WebhooksFailed())

	require.InDelta(t, 0.1, float64(lost)/n, 0.03)
	require.InDelta(t, 0.2*0.9, float64(dup)/n, 0.03)
	require.InDelta(t, 0.15, float64(forged)/n, 0.03)
	for _, k := range []int{tl.wrongToken, tl.wrongStatus, tl.unknownOrder} {
		require.InDelta(t, 1.0/3, float64(k)/float64(forged), 0.1, "the forgeries are drawn evenly")
	}

	// The same seed on a frozen clock set past every change: the calls all
	// go at once, yet they are the same ones. They are recorded in memory,
	// since this run only checks which calls are made.
	rc2 := &webhookReceiver{}
	clk := &btsClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	c2 := cfg("http://receiver.invalid/hooks/bts")
	c2.Now = clk.Now
	c2.Webhooks.Client = &http.Client{Transport: rc2}
	b2 := newWebhookBTS(t, c2)
	clk.Set(b2.LastChangeAt())
	runWebhooks(t, b2)
	tl2 := tallyWebhooks(t, b2, rc2.Hits(t), token, expectedWebhooks(t, b2, time.Time{}))
	require.Equal(t, tl.calls, tl2.calls, "the faults are a function of the seed")
	require.Equal(t, b.WebhooksLost(), b2.WebhooksLost())
	require.Equal(t, b.WebhooksDuplicated(), b2.WebhooksDuplicated())
	require.Equal(t, b.WebhooksForged(), b2.WebhooksForged())
}

// TestBTSWebhooksCountFailures answers every call 500: each counts as sent
// and failed, none is retried, and no order counts as delivered.
func TestBTSWebhooksCountFailures(t *testing.T) {
	t.Parallel()
	rc := newWebhookReceiver(t, http.StatusInternalServerError)
	var calls atomic.Int64
	b := newWebhookBTS(t, BTSConfig{Seed: 5, Orders: 40, Speed: 1e6, Webhooks: BTSWebhookConfig{
		URL: rc.url, OnCall: func(c BTSWebhookCall) {
			if c.Status == http.StatusInternalServerError && c.Err == nil {
				calls.Add(1)
			}
		},
	}})
	want := expectedWebhooks(t, b, time.Time{})
	runWebhooks(t, b)
	require.Len(t, rc.Hits(t), len(want), "failed calls are not retried")
	require.EqualValues(t, len(want), b.WebhooksSent())
	require.EqualValues(t, len(want), b.WebhooksFailed())
	require.EqualValues(t, len(want), calls.Load())
	require.Nil(t, b.WebhooksDelivered(b.OrderID(0)))
}

// TestBTSWebhookDelaysReorderButAllArrive squeezes lifecycles into tens of
// milliseconds and delays calls by up to 50ms: calls of one order overtake
// each other, yet each arrives once, never before its delay has passed.
func TestBTSWebhookDelaysReorderButAllArrive(t *testing.T) {
	t.Parallel()
	const maxDelay = 50 * time.Millisecond
	rc := newWebhookReceiver(t, http.StatusOK)
	var (
		mu      sync.Mutex
		delays  []time.Duration
		tooSoon int
	)
	b := newWebhookBTS(t, BTSConfig{Seed: 31, Orders: 200, Speed: 1e7, Webhooks: BTSWebhookConfig{
		URL: rc.url, MaxDelay: maxDelay, Token: "k", TokenStyle: BTSWebhookTokenBearer,
		OnCall: func(c BTSWebhookCall) {
			mu.Lock()
			defer mu.Unlock()
			delays = append(delays, c.Delay)
			if c.SentAt.Sub(c.At) < c.Delay {
				tooSoon++
			}
		},
	}})
	want := expectedWebhooks(t, b, time.Time{})
	runWebhooks(t, b)

	hits := rc.Hits(t)
	require.Len(t, hits, len(want))
	arrived := map[int64][]int{}
	seen := map[webhookKey]bool{}
	for _, h := range hits {
		k := requireGenuine(t, b, h, want)
		require.False(t, seen[k], "order %d code %d arrived twice", k.order, k.code)
		seen[k] = true
		arrived[h.OrderID] = append(arrived[h.OrderID], h.Code)
	}
	reordered := 0
	for _, id := range b.Orders() {
		n, _ := strconv.ParseInt(id, 10, 64)
		var inOrder []int
		for _, c := range b.History(id) {
			inOrder = append(inOrder, c.Code)
		}
		require.ElementsMatch(t, inOrder, arrived[n])
		if !slices.Equal(inOrder, arrived[n]) {
			reordered++
		}
	}
	t.Logf("%d of %d orders had their calls reordered", reordered, len(arrived))
	require.Greater(t, reordered, len(arrived)/4)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, delays, len(want))
	require.Zero(t, tooSoon, "no call goes before its delay")
	for _, d := range delays {
		require.True(t, d >= 0 && d <= maxDelay, "delay %s", d)
	}
	require.Greater(t, slices.Max(delays), maxDelay/2)
}

// TestBTSWebhooksFollowTheSimulatorClock runs the loop on a frozen clock
// moved by hand: calls go when the clock reaches their changes, with the
// date of the change in Tashkent time; a run cancelled midway is resumed by
// the next without sending anything twice.
func TestBTSWebhooksFollowTheSimulatorClock(t *testing.T) {
	t.Parallel()
	rc := newWebhookReceiver(t, http.StatusOK)
	clk := &btsClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	b := newWebhookBTS(t, BTSConfig{Seed: 41, Orders: 40, Speed: 3600, Now: clk.Now, Webhooks: BTSWebhookConfig{
		URL: rc.url, Token: "k-clock", TokenStyle: BTSWebhookTokenQuery,
	}})
	all := expectedWebhooks(t, b, time.Time{})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := startWebhooks(t, ctx, b)
	require.Eventually(t, func() bool { return rc.Len() >= 40 }, 10*time.Second, time.Millisecond)
	for _, h := range rc.Hits(t) {
		require.Equal(t, 100, h.Code, "only the creations are due at the start")
		require.Equal(t, "2026-03-01 14:00:00", h.Date, "09:00 UTC is 14:00 in Tashkent")
		require.Equal(t, "k-clock", h.QueryToken)
	}

	// Halfway through the changes, in time.
	var times []time.Time
	for _, c := range all {
		times = append(times, c.At)
	}
	slices.SortFunc(times, time.Time.Compare)
	mid := times[len(times)/2]
	clk.Set(mid)
	due := expectedWebhooks(t, b, mid)
	require.Eventually(t, func() bool { return rc.Len() >= len(due) }, 10*time.Second, time.Millisecond)
	got := map[webhookKey]int{}
	for _, h := range rc.Hits(t) {
		got[requireGenuine(t, b, h, due)]++
	}
	require.Len(t, got, len(due))

	cancel()
	require.ErrorIs(t, wait(), context.Canceled)

	// The next run picks up where the first stopped.
	clk.Set(b.LastChangeAt())
	runWebhooks(t, b)
	got = map[webhookKey]int{}
	for _, h := range rc.Hits(t) {
		got[requireGenuine(t, b, h, all)]++
	}
	require.Len(t, got, len(all))
	for k, n := range got {
		require.Equal(t, 1, n, "order %d code %d sent once over both runs", k.order, k.code)
	}
}

// TestBTSRunWebhooksStopsWhenContextEnds cancels the loop while every
// worker is stuck on a receiver that never answers: it returns promptly,
// having waited for its workers, and counts the abandoned calls nowhere.
func TestBTSRunWebhooksStopsWhenContextEnds(t *testing.T) {
	t.Parallel()
	var inFlight atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		defer inFlight.Add(-1)
		// The server notices a client hanging up only once the body is
		// read.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first, so Close does not wait
	b := newWebhookBTS(t, BTSConfig{Seed: 51, Orders: 100, Speed: 1, Webhooks: BTSWebhookConfig{
		URL: srv.URL, Concurrency: 4, Timeout: time.Minute,
	}})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := startWebhooks(t, ctx, b)
	require.Eventually(t, func() bool { return inFlight.Load() == 4 }, 10*time.Second, time.Millisecond)
	require.ErrorContains(t, b.RunWebhooks(context.Background()), "already running")

	start := time.Now()
	cancel()
	require.ErrorIs(t, wait(), context.Canceled)
	require.Less(t, time.Since(start), 2*time.Second)
	require.Eventually(t, func() bool { return inFlight.Load() == 0 }, 10*time.Second, time.Millisecond,
		"the calls in flight were cancelled")
	require.Zero(t, b.WebhooksSent())
	require.Zero(t, b.WebhooksFailed())
}

// TestBTSWebhooksPerAccount configures two accounts behind one BTSAccounts
// server through the config endpoint, each with its own receiver and token,
// and leaves a third unconfigured: each receiver gets its own account's
// changes with its own token, and the third account sends nothing.
func TestBTSWebhooksPerAccount(t *testing.T) {
	t.Parallel()
	styles := []BTSWebhookTokenStyle{BTSWebhookTokenBearer, BTSWebhookTokenHeader, BTSWebhookTokenQuery}
	var accounts []*BTS
	for i, login := range []string{"north", "south", "west"} {
		b, err := NewBTS(BTSConfig{Seed: int64(60 + i), Login: login, Password: login + "-pw", Orders: 50, Speed: 1e6,
			FirstOrderID: int64(4_600_000 + 1000*i), Webhooks: BTSWebhookConfig{TokenStyle: styles[i]}})
		require.NoError(t, err)
		accounts = append(accounts, b)
	}
	a, err := NewBTSAccounts(accounts...)
	require.NoError(t, err)
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	e := &btsEnv{url: srv.URL, hc: srv.Client()}

	receivers := []*webhookReceiver{newWebhookReceiver(t, http.StatusOK), newWebhookReceiver(t, http.StatusOK)}
	for i, login := range []string{"north", "south"} {
		status, m, raw := e.do(t, http.MethodPost, BTSLoginPath, "", `{"login":"`+login+`","password":"`+login+`-pw"}`)
		require.Equal(t, http.StatusOK, status, raw)
		access := m["data"].(map[string]any)["access_token"].(string)
		body := `{"webhook_url":"` + receivers[i].url + `","environment":"test","has_token":true,"itx-apiKey":"` + login + `-key"}`
		status, _, raw = e.do(t, http.MethodGet, BTSWebhookConfigPath, access, body)
		require.Equal(t, http.StatusOK, status, raw)
		_, m, _ = e.do(t, http.MethodGet, BTSWebhookConfigPath, access, "")
		require.Equal(t, login+"-key", m["data"].(map[string]any)["itx-apiKey"], "each account reads its own setting")
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := make([]error, len(accounts))
	var wg sync.WaitGroup
	for i, b := range accounts {
		wg.Go(func() { errs[i] = b.RunWebhooks(ctx) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}

	for i, login := range []string{"north", "south"} {
		b := accounts[i]
		want := expectedWebhooks(t, b, time.Time{})
		hits := receivers[i].Hits(t)
		require.Len(t, hits, len(want))
		for _, h := range hits {
			requireGenuine(t, b, h, want)
			tok, places := h.token()
			require.Equal(t, 1, places)
			require.Equal(t, login+"-key", tok)
		}
		require.EqualValues(t, len(want), b.WebhooksSent())
	}
	require.NotEmpty(t, receivers[0].Hits(t)[0].BearerToken, "north sends a bearer token")
	require.NotEmpty(t, receivers[1].Hits(t)[0].HeaderToken, "south sends a token header")
	require.Zero(t, accounts[2].WebhooksSent(), "an account without a webhook sends nothing")
}

// countingTransport answers every request 200 at once, without a network.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, r.Body)
	_ = r.Body.Close()
	c.n.Add(1)
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
}

// TestBTSWebhooksKeepUpWithFastLifecycles runs 1,500 orders at Speed 27000,
// where a whole lifecycle takes seconds and changes come at thousands a
// second, for a few seconds of real time: the loop makes progress, reports
// every call it sends and none ahead of its change, and logs how far behind
// it fell. The calls go to an in-memory transport, so that the figure is the
// simulator's loop rather than the loopback network; it is not parallel, so
// that no test of this package competes for the CPU (other packages' may).
func TestBTSWebhooksKeepUpWithFastLifecycles(t *testing.T) {
	const window = 3 * time.Second
	tr := &countingTransport{}
	var (
		mu  sync.Mutex
		lag []time.Duration
	)
	b := newWebhookBTS(t, BTSConfig{Seed: 71, Orders: 1500, Speed: 27000, Webhooks: BTSWebhookConfig{
		URL: "http://ingestd.invalid/hooks/bts", Token: "k", Client: &http.Client{Transport: tr},
		OnCall: func(c BTSWebhookCall) {
			mu.Lock()
			defer mu.Unlock()
			lag = append(lag, c.SentAt.Sub(c.At))
		},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), window)
	defer cancel()
	require.ErrorIs(t, b.RunWebhooks(ctx), context.DeadlineExceeded)
	end := time.Now()

	all := expectedWebhooks(t, b, time.Time{})
	early := expectedWebhooks(t, b, end.Add(-window/4))
	require.Greater(t, len(all), 13_000)
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lag)
	p50, p99 := lag[len(lag)/2], lag[len(lag)*99/100]
	t.Logf("%d calls in %s (%d changes in all, %d due by %s before the end); lag behind the change p50 %s, p99 %s, max %s",
		len(lag), window, len(all), len(early), window/4, p50, p99, lag[len(lag)-1])
	// How far behind the loop falls depends on the machine and on what
	// else runs on it (go test runs other packages at once), so it is a
	// figure in the log, not a verdict: performance claims belong in
	// benchmarks. What must hold is that the loop made progress, sent
	// every call it reported, and never a call ahead of its change.
	require.Positive(t, len(early))
	require.Greater(t, len(lag), len(all)/10, "the loop makes progress at this speed")
	require.GreaterOrEqual(t, lag[0], time.Duration(0), "no call before its change")
	require.EqualValues(t, len(lag), tr.n.Load())
}
