package doorbell_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/ingestd/ingestd/internal/doorbell"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/promtest"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/watchlist"
)

const (
	northToken = "north-webhook-token-0123456789"
	southToken = "south-webhook-token-9876543210"
)

// bell is a doorbell on a real watch-list, running, behind a test server.
type bell struct {
	d     *doorbell.Doorbell
	wl    *watchlist.Store
	reg   *prometheus.Registry
	url   string
	rangs chan string
}

func newBell(t *testing.T, cfg doorbell.Config, accounts []doorbell.Account) *bell {
	t.Helper()
	st := pgtest.Open(t)
	reg := prometheus.NewRegistry()
	rangs := make(chan string, 1000)
	d, err := doorbell.New(cfg, func() []doorbell.Account { return accounts }, st.Watchlist,
		func(src string) { rangs <- src }, reg, zaptest.NewLogger(t))
	require.NoError(t, err)
	require.NoError(t, d.Start(context.Background()))
	t.Cleanup(d.Stop)
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	return &bell{d: d, wl: st.Watchlist, reg: reg, url: srv.URL, rangs: rangs}
}

var twoAccounts = []doorbell.Account{
	{SourceID: "bts/north", Token: secret.New(northToken)},
	{SourceID: "bts/south", Token: secret.New(southToken)},
}

// form is BTS's call: form data whose field text holds the JSON.
func form(text string) (string, string) {
	return "application/x-www-form-urlencoded", url.Values{"text": {text}}.Encode()
}

func post(t *testing.T, target, contentType, body string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

const payload = `{"clientId":"c-1","orderId":4293644,"barcode":"0199","status":{"id":800,"name":"x"},"date":"2026-12-03 10:00:00"}`

// TestWebhookCalls drives the endpoint with good and bad calls: each is
// answered with its status and a JSON body, counted by outcome, and only
// the good ones reach the watch-list of the account whose token they carry.
func TestWebhookCalls(t *testing.T) {
	t.Parallel()
	b := newBell(t, doorbell.Config{Autotrack: true}, twoAccounts)
	ct, body := form(payload)
	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		header      map[string]string
		status      int
		outcome     string
	}{
		{"form, bearer token", "", "", ct, body, map[string]string{"Authorization": "Bearer " + northToken}, 200, "accepted"},
		{"form, token header", "", "", ct, body, map[string]string{"token": southToken}, 200, "accepted"},
		{"JSON, token query", "", "?token=" + url.QueryEscape(northToken), "application/json", `{"orderId":"A-77"}`, nil, 200, "accepted"},
		{"no token", "", "", ct, body, nil, 401, "unauthorized"},
		{"wrong token", "", "", ct, body, map[string]string{"token": northToken + "x"}, 401, "unauthorized"},
		{"token prefix", "", "", ct, body, map[string]string{"token": northToken[:10]}, 401, "unauthorized"},
		{"GET", http.MethodGet, "", "", "", map[string]string{"token": northToken}, 405, "method_not_allowed"},
		{"form without text", "", "", "application/x-www-form-urlencoded", "other=1", map[string]string{"token": northToken}, 400, "malformed"},
		{"text not JSON", "", "", ct, "text=%7Bnope", map[string]string{"token": northToken}, 400, "malformed"},
		{"no orderId", "", "", "application/json", `{"status":{"id":800}}`, map[string]string{"token": northToken}, 400, "malformed"},
		{"orderId not an id", "", "", "application/json", `{"orderId":"1; DROP TABLE"}`, map[string]string{"token": northToken}, 400, "malformed"},
		{"negative orderId", "", "", "application/json", `{"orderId":-5}`, map[string]string{"token": northToken}, 400, "malformed"},
		{"XML", "", "", "application/xml", `<orderId>1</orderId>`, map[string]string{"token": northToken}, 415, "malformed"},
		{"too large", "", "", "application/json", `{"orderId":1,"pad":"` + strings.Repeat("x", doorbell.MaxBody) + `"}`, map[string]string{"token": northToken}, 413, "too_large"},
	}
	for _, tt := range tests {
		method := tt.method
		if method == "" {
			method = http.MethodPost
		}
		req, err := http.NewRequest(method, b.url+doorbell.DefaultPath+tt.path, strings.NewReader(tt.body))
		require.NoError(t, err)
		if tt.contentType != "" {
			req.Header.Set("Content-Type", tt.contentType)
		}
		for k, v := range tt.header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err, tt.name)
		require.Equal(t, tt.status, resp.StatusCode, tt.name)
		require.Equal(t, "application/json", resp.Header.Get("Content-Type"), tt.name)
		_ = resp.Body.Close()
	}
	want := map[string]float64{}
	for _, tt := range tests {
		want[tt.outcome]++
	}
	for outcome, n := range want {
		v, _ := promtest.Sum(t, b.reg, "ingestd_bts_webhook_calls_total", map[string]string{"outcome": outcome})
		require.Equal(t, n, v, outcome)
	}

	// The accepted calls were written: each named order is tracked on its
	// account's watch-list (autotrack), and each account's poller rung.
	rung := map[string]bool{}
	deadline := time.After(10 * time.Second)
	for !rung["bts/north"] || !rung["bts/south"] {
		select {
		case src := <-b.rangs:
			rung[src] = true
		case <-deadline:
			t.Fatalf("pollers not rung: %v", rung)
		}
	}
	ctx := context.Background()
	north, err := b.wl.List(ctx, watchlist.ListQuery{SourceID: "bts/north", Limit: 10})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"4293644", "A-77"}, orderIDs(north))
	south, err := b.wl.List(ctx, watchlist.ListQuery{SourceID: "bts/south", Limit: 10})
	require.NoError(t, err)
	require.Equal(t, []string{"4293644"}, orderIDs(south))
	v, _ := promtest.Sum(t, b.reg, "ingestd_bts_webhook_orders_total", map[string]string{"source": "bts/north", "result": "tracked"})
	require.Equal(t, 2.0, v)
}

func orderIDs(os []watchlist.Order) []string {
	var ids []string
	for _, o := range os {
		ids = append(ids, o.OrderID)
	}
	return ids
}

// TestWebhookEndpointOffWithoutTokens: with no account taking webhooks the
// endpoint answers 404 to everything.
func TestWebhookEndpointOffWithoutTokens(t *testing.T) {
	t.Parallel()
	b := newBell(t, doorbell.Config{}, nil)
	ct, body := form(payload)
	status, resp := post(t, b.url+doorbell.DefaultPath, ct, body, map[string]string{"token": northToken})
	require.Equal(t, http.StatusNotFound, status)
	require.Contains(t, resp, "INGESTD_BTS_WEBHOOK_TOKEN")
}

// TestWebhookAutotrackOff: an untracked order is left alone, a tracked one
// made due.
func TestWebhookAutotrackOff(t *testing.T) {
	t.Parallel()
	b := newBell(t, doorbell.Config{Autotrack: false}, twoAccounts[:1])
	ctx := context.Background()
	_, err := b.wl.Track(ctx, "bts/north", []string{"100"})
	require.NoError(t, err)
	for _, id := range []string{"100", "200"} {
		status, _ := post(t, b.url+doorbell.DefaultPath, "application/json", `{"orderId":`+id+`}`, map[string]string{"token": northToken})
		require.Equal(t, http.StatusOK, status)
	}
	require.Eventually(t, func() bool {
		v, _ := promtest.Sum(t, b.reg, "ingestd_bts_webhook_orders_total", nil)
		return v == 2
	}, 10*time.Second, 5*time.Millisecond)
	v, _ := promtest.Sum(t, b.reg, "ingestd_bts_webhook_orders_total", map[string]string{"result": "ignored"})
	require.Equal(t, 1.0, v, "the untracked order")
	list, err := b.wl.List(ctx, watchlist.ListQuery{SourceID: "bts/north", Limit: 10})
	require.NoError(t, err)
	require.Equal(t, []string{"100"}, orderIDs(list))
}

// TestWebhookFloodIsRefused sends 10,000 forged or bad calls, and a burst
// of good ones over the rate: every forged or bad call gets its status
// (401 or 400), the good ones beyond the rate get 429, nothing forged
// reaches the watch-list, and the heap does not grow with the flood.
func TestWebhookFloodIsRefused(t *testing.T) {
	t.Parallel()
	b := newBell(t, doorbell.Config{Autotrack: true, Rate: 50}, twoAccounts)
	ct, body := form(payload)
	kinds := []struct {
		header map[string]string
		ct     string
		body   string
		status int
	}{
		{map[string]string{"token": "forged-token-forged-token"}, ct, body, http.StatusUnauthorized},
		{nil, ct, body, http.StatusUnauthorized},
		{map[string]string{"Authorization": "Bearer " + strings.Repeat("A", 200)}, ct, body, http.StatusUnauthorized},
		{map[string]string{"token": northToken}, "application/json", `{"orderId":[1]}`, http.StatusBadRequest},
		{map[string]string{"token": southToken}, ct, "text=garbage", http.StatusBadRequest},
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	const flood = 10_000
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		wrong []string
	)
	jobs := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range jobs {
				k := kinds[i%len(kinds)]
				status, resp := post(t, b.url+doorbell.DefaultPath, k.ct, k.body, k.header)
				if status != k.status {
					mu.Lock()
					wrong = append(wrong, resp)
					mu.Unlock()
				}
			}
		})
	}
	for i := range flood {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	require.Empty(t, wrong, "every bad call refused with its status")
	grown := int64(heap()) - int64(before)
	t.Logf("heap after %d refused calls: %+d bytes", flood, grown)
	require.Less(t, grown, int64(8<<20), "the heap stays flat under the flood")

	// Good calls over the rate (50/s, burst 50) are refused with 429.
	statuses := map[int]int{}
	for i := range 200 {
		status, _ := post(t, b.url+doorbell.DefaultPath, "application/json", `{"orderId":`+strconv.Itoa(1+i%9)+`}`, map[string]string{"token": northToken})
		statuses[status]++
	}
	require.Positive(t, statuses[http.StatusTooManyRequests], "%v", statuses)
	require.Positive(t, statuses[http.StatusOK], "%v", statuses)
	require.Equal(t, 200, statuses[http.StatusOK]+statuses[http.StatusTooManyRequests], "%v", statuses)

	v, _ := promtest.Sum(t, b.reg, "ingestd_bts_webhook_calls_total", map[string]string{"outcome": "unauthorized"})
	require.Equal(t, float64(flood*3/5), v)
	require.Eventually(t, func() bool {
		list, err := b.wl.List(context.Background(), watchlist.ListQuery{SourceID: "bts/south", Limit: 10})
		return err == nil && len(list) == 0
	}, 5*time.Second, 10*time.Millisecond, "nothing forged reached south's watch-list")
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  doorbell.Config
		env  string
	}{
		{"relative path", doorbell.Config{Path: "webhook"}, doorbell.EnvPath},
		{"root path", doorbell.Config{Path: "/"}, doorbell.EnvPath},
		{"query in path", doorbell.Config{Path: "/hook?x=1"}, doorbell.EnvPath},
		{"negative rate", doorbell.Config{Rate: -1}, doorbell.EnvRate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := doorbell.New(tt.cfg, func() []doorbell.Account { return nil }, &watchlist.Store{}, func(string) {}, prometheus.NewRegistry(), zaptest.NewLogger(t))
			require.ErrorContains(t, err, tt.env)
		})
	}
}
