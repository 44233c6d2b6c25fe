package sim

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	btsLogin    = "sim-login"
	btsPassword = "sim-password"
)

// btsClock is a settable clock for the BTS simulator.
type btsClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *btsClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *btsClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *btsClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// btsEnv is a simulator behind a test server, with a raw HTTP client.
type btsEnv struct {
	sim   *BTS
	clock *btsClock
	url   string
	hc    *http.Client
}

func newBTSEnv(t *testing.T, cfg BTSConfig) *btsEnv {
	t.Helper()
	clk := &btsClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	cfg.Login, cfg.Password = btsLogin, btsPassword
	if cfg.Now == nil {
		cfg.Now = clk.Now
	}
	s, err := NewBTS(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &btsEnv{sim: s, clock: clk, url: srv.URL, hc: srv.Client()}
}

// do sends a request and returns the status and decoded JSON body.
func (e *btsEnv) do(t *testing.T, method, path, token, body string) (int, map[string]any, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.hc.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m, string(raw)
}

// login returns a fresh token pair.
func (e *btsEnv) login(t *testing.T) (access, refresh string) {
	t.Helper()
	status, m, raw := e.do(t, http.MethodPost, BTSLoginPath, "", `{"login":"`+btsLogin+`","password":"`+btsPassword+`"}`)
	require.Equal(t, http.StatusOK, status, raw)
	data := m["data"].(map[string]any)
	return data["access_token"].(string), data["refresh_token"].(string)
}

func TestBTSLoginRefreshAndExpiry(t *testing.T) {
	t.Parallel()
	e := newBTSEnv(t, BTSConfig{Seed: 1, Orders: 10, TokenTTL: time.Hour, RefreshTTL: 48 * time.Hour})
	id := e.sim.OrderID(0)

	status, _, raw := e.do(t, http.MethodPost, BTSLoginPath, "", `{"login":"`+btsLogin+`","password":"wrong"}`)
	require.Equal(t, http.StatusUnauthorized, status)
	require.JSONEq(t, `{"name":"Unauthorized","message":"Incorrect login or password.","code":0,"status":401}`, raw)
	status, m, _ := e.do(t, http.MethodPost, BTSLoginPath, "", `{"login":"`+btsLogin+`"}`)
	require.Equal(t, http.StatusUnprocessableEntity, status)
	require.Equal(t, false, m["status"])

	access, refresh := e.login(t)
	require.Len(t, strings.Split(access, "."), 3, "tokens are JWT-shaped, so clients can read exp")
	status, _, raw = e.do(t, http.MethodGet, BTSTrackPath+"?orderId="+id, access, "")
	require.Equal(t, http.StatusOK, status, raw)

	// Without a token, with a garbled one, and with an expired one: the
	// documented 401.
	const expired = `{"name":"Unauthorized","message":"Your request was made with invalid credentials.","status":401}`
	for _, tok := range []string{"", access + "x", access[:len(access)-4]} {
		status, _, raw = e.do(t, http.MethodGet, BTSTrackPath+"?orderId="+id, tok, "")
		require.Equal(t, http.StatusUnauthorized, status)
		require.JSONEq(t, expired, raw)
	}
	e.clock.Advance(time.Hour)
	status, _, raw = e.do(t, http.MethodGet, BTSTrackPath+"?orderId="+id, access, "")
	require.Equal(t, http.StatusUnauthorized, status)
	require.JSONEq(t, expired, raw)
	require.EqualValues(t, 4, e.sim.Unauthorized())

	// The refresh token outlives the access token.
	status, m, raw = e.do(t, http.MethodPost, BTSRefreshPath, "", `{"refresh_token":"`+refresh+`"}`)
	require.Equal(t, http.StatusOK, status, raw)
	access2 := m["data"].(map[string]any)["access_token"].(string)
	status, _, _ = e.do(t, http.MethodGet, BTSTrackPath+"?orderId="+id, access2, "")
	require.Equal(t, http.StatusOK, status)
	require.EqualValues(t, 1, e.sim.Refreshes())
	require.EqualValues(t, 1, e.sim.Logins())

	// Forced expiry invalidates access tokens only.
	e.sim.ForceExpireTokens()
	status, _, _ = e.do(t, http.MethodGet, BTSTrackPath+"?orderId="+id, access2, "")
	require.Equal(t, http.StatusUnauthorized, status)
	status, _, _ = e.do(t, http.MethodPost, BTSRefreshPath, "", `{"refresh_token":"`+refresh+`"}`)
	require.Equal(t, http.StatusOK, status)

	e.sim.ForceExpireRefreshTokens()
	status, m, _ = e.do(t, http.MethodPost, BTSRefreshPath, "", `{"refresh_token":"`+refresh+`"}`)
	require.Equal(t, http.StatusUnprocessableEntity, status)
	require.Contains(t, m["errors"], "refresh_token")
	status, _, _ = e.do(t, http.MethodPost, BTSRefreshPath, "", `{"refresh_token":"`+access2+`"}`)
	require.Equal(t, http.StatusUnprocessableEntity, status, "an access token is not a refresh token")
}

// documentedItems extracts the dictionary items from the documentation
// sample, which has a trailing comma the JSON grammar does not allow.
func documentedItems(t *testing.T) []map[string]any {
	t.Helper()
	raw, err := os.ReadFile("../../../shared/upstream/bts-status-index.txt")
	if err != nil {
		t.Skipf("documentation sample not available: %v", err)
	}
	s := string(raw)
	start := strings.Index(s, "{\n    \"status\": true")
	end := strings.LastIndex(s, "}")
	require.Positive(t, start)
	body := regexp.MustCompile(`,\s*([\]}])`).ReplaceAllString(s[start:end+1], "$1")
	var doc struct {
		Data struct {
			Items []map[string]any `json:"items"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &doc))
	return doc.Data.Items
}

func TestBTSDictionaryIsTheDocumentedOne(t *testing.T) {
	t.Parallel()
	want := documentedItems(t)
	require.Len(t, want, 12)
	e := newBTSEnv(t, BTSConfig{Seed: 1})
	access, _ := e.login(t)
	status, m, raw := e.do(t, http.MethodGet, BTSStatusPath, access, "")
	require.Equal(t, http.StatusOK, status, raw)
	require.Equal(t, true, m["status"])
	require.EqualValues(t, 200, m["status_code"])
	data := m["data"].(map[string]any)
	items := data["items"].([]any)
	require.Len(t, items, len(want))
	for i, it := range items {
		require.Equal(t, want[i], it, "item %d", i)
	}
	require.Equal(t, map[string]any{
		"self": "/v1/status/index?page=1", "first": "/v1/status/index?page=1", "last": "/v1/status/index?page=1",
		"next": nil, "prev": nil,
	}, data["_links"])
	require.Equal(t, map[string]any{"totalCount": 12.0, "pageCount": 1.0, "currentPage": 1.0, "perPage": 20.0, "params": []any{}}, data["_meta"])
}

func TestBTSDictionaryPagination(t *testing.T) {
	t.Parallel()
	e := newBTSEnv(t, BTSConfig{Seed: 1, StatusPageSize: 5})
	access, _ := e.login(t)
	var codes []float64
	next := BTSStatusPath
	for next != "" {
		status, m, raw := e.do(t, http.MethodGet, next, access, "")
		require.Equal(t, http.StatusOK, status, raw)
		data := m["data"].(map[string]any)
		for _, it := range data["items"].([]any) {
			codes = append(codes, it.(map[string]any)["code"].(float64))
		}
		next, _ = data["_links"].(map[string]any)["next"].(string)
		require.EqualValues(t, 3, data["_meta"].(map[string]any)["pageCount"])
	}
	require.Equal(t, []float64{100, 200, 300, 400, 500, 600, 700, 800, 1100, 1200, 1300, 1400}, codes)
}

func TestBTSTrackAndDetail(t *testing.T) {
	t.Parallel()
	e := newBTSEnv(t, BTSConfig{Seed: 7, Orders: 2000, Speed: 3600})
	access, _ := e.login(t)

	// Find a cancelled and a delivered order.
	var cancelled, delivered string
	for _, id := range e.sim.Orders() {
		h := e.sim.History(id)
		switch h[len(h)-1].Code {
		case BTSCancelled:
			cancelled = id
		case 1200:
			delivered = id
		}
	}
	require.NotEmpty(t, cancelled)
	require.NotEmpty(t, delivered)

	status, _, raw := e.do(t, http.MethodGet, BTSTrackPath+"?orderId="+delivered, access, "")
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `{"status":true,"message":"Данные успешно получены.","status_code":200,"data":{"orderId":`+delivered+`,"status":{"code":100,"name":"У отправителя"}}}`, raw)

	// Walk the delivered order's history on the clock.
	for _, ch := range e.sim.History(delivered) {
		e.clock.Set(ch.At)
		_, m, _ := e.do(t, http.MethodGet, BTSTrackPath+"?orderId="+delivered, access, "")
		st := m["data"].(map[string]any)["status"].(map[string]any)
		require.EqualValues(t, ch.Code, st["code"])
		require.Equal(t, BTSStatusName(ch.Code), st["name"])
	}
	h := e.sim.History(cancelled)
	e.clock.Set(h[len(h)-1].At)
	_, _, raw = e.do(t, http.MethodGet, BTSTrackPath+"?orderId="+cancelled, access, "")
	require.JSONEq(t, `{"status":true,"message":"Данные успешно получены.","status_code":200,"data":{"orderId":`+cancelled+`,"status":{"id":0,"name":"Cancelled Order"}}}`, raw)
	_, m, _ := e.do(t, http.MethodGet, BTSDetailPath+"?orderId="+cancelled, access, "")
	st := m["data"].(map[string]any)["status"].(map[string]any)
	require.Nil(t, st["code"], "detail's status.code may be null")
	require.Equal(t, "sim-"+cancelled, m["data"].(map[string]any)["clientId"])

	for _, id := range []string{"1", "0" + delivered, "abc", "99999999999999999999"} {
		status, _, raw = e.do(t, http.MethodGet, BTSTrackPath+"?orderId="+id, access, "")
		require.Equal(t, http.StatusNotFound, status, id)
		require.JSONEq(t, `{"status":false,"message":"Buyurtma topilmadi","status_code":404,"data":null}`, raw)
	}
	status, _, _ = e.do(t, http.MethodGet, BTSTrackPath, access, "")
	require.Equal(t, http.StatusBadRequest, status)
	status, _, _ = e.do(t, http.MethodPost, BTSTrackPath+"?orderId="+delivered, access, "")
	require.Equal(t, http.StatusMethodNotAllowed, status)
	status, _, _ = e.do(t, http.MethodGet, "/v1/nope", access, "")
	require.Equal(t, http.StatusNotFound, status)

	// The first track, one per change, and the rejected POST: every request
	// naming the order counts.
	require.EqualValues(t, len(e.sim.History(delivered))+2, e.sim.Calls(delivered))
	require.EqualValues(t, 2, e.sim.Calls(cancelled))
}

func TestBTSLifecycles(t *testing.T) {
	t.Parallel()
	const n = 20_000
	s, err := NewBTS(BTSConfig{Seed: 3, Login: "l", Password: "p", Orders: n, Speed: 1, UnknownRate: 0.1})
	require.NoError(t, err)
	again, err := NewBTS(BTSConfig{Seed: 3, Login: "l", Password: "p", Orders: n, Speed: 1, UnknownRate: 0.1, Now: s.Start})
	require.NoError(t, err)

	fates := map[int]int{}
	skips, unknown := 0, 0
	var total time.Duration
	for i := range n {
		id := s.OrderID(i)
		h := s.History(id)
		require.Equal(t, h, again.History(id), "lifecycles are deterministic")
		require.Equal(t, 100, h[0].Code)
		require.Equal(t, s.Start(), h[0].At)
		last := h[len(h)-1]
		require.True(t, BTSTerminal(last.Code), "order %s ends at %d", id, last.Code)
		fates[last.Code]++
		total += last.At.Sub(h[0].At)
		for k := 1; k < len(h); k++ {
			require.True(t, h[k].At.After(h[k-1].At), "times increase")
			require.False(t, BTSTerminal(h[k-1].Code), "nothing follows a terminal status")
			if BTSTerminal(h[k].Code) || h[k].Code == BTSUndefined || h[k-1].Code == BTSUndefined {
				continue
			}
			require.Greater(t, h[k].Code, h[k-1].Code)
			if h[k-1].Code != 800 && h[k].Code-h[k-1].Code > 100 {
				skips++
			}
		}
		for _, c := range h {
			if c.Code == BTSUndefined {
				unknown++
			}
		}
	}
	require.InDelta(t, 0.90, float64(fates[1200])/n, 0.02)
	require.InDelta(t, 0.04, float64(fates[BTSCancelled])/n, 0.01)
	require.InDelta(t, 0.02, float64(fates[1300])/n, 0.01)
	require.InDelta(t, 0.04, float64(fates[1400])/n, 0.01)
	require.InDelta(t, 0.1*0.92, float64(skips)/n, 0.02)
	require.InDelta(t, 0.1*0.90, float64(unknown)/n, 0.02)
	mean := total / n
	require.Greater(t, mean, 24*time.Hour, "lifecycles take days")
	require.Less(t, mean, 96*time.Hour)

	fast, err := NewBTS(BTSConfig{Seed: 3, Login: "l", Password: "p", Orders: n, Speed: 3600, UnknownRate: 0.1, Now: s.Start})
	require.NoError(t, err)
	h, hf := s.History(s.OrderID(5)), fast.History(s.OrderID(5))
	require.Equal(t, len(h), len(hf))
	for k := range h {
		require.Equal(t, h[k].Code, hf[k].Code)
		require.InDelta(t, float64(h[k].At.Sub(s.Start()))/3600, float64(hf[k].At.Sub(s.Start())), float64(time.Millisecond), "Speed compresses time")
	}
	require.Nil(t, s.History("123"))

	// Backdating moves lifecycles back in time without changing them.
	back, err := NewBTS(BTSConfig{Seed: 3, Login: "l", Password: "p", Orders: n, Speed: 1, UnknownRate: 0.1, Now: s.Start, Backdate: 48 * time.Hour})
	require.NoError(t, err)
	codesAt := map[int]int{}
	for i := range n {
		id := s.OrderID(i)
		h, hb := s.History(id), back.History(id)
		shift := h[0].At.Sub(hb[0].At)
		require.True(t, shift >= 0 && shift <= 48*time.Hour, "shift %s", shift)
		for k := range h {
			require.Equal(t, h[k].Code, hb[k].Code)
			require.Equal(t, h[k].At.Add(-shift), hb[k].At)
		}
		c, _ := back.StatusAt(id, back.Start())
		codesAt[c.Code]++
	}
	require.Greater(t, codesAt[100], n/10)
	require.Greater(t, codesAt[700], n/20, "at the start, orders are found in transit")
	require.Greater(t, codesAt[1200], n/20, "and some have been delivered already")
}

func TestBTSScriptedFaults(t *testing.T) {
	t.Parallel()
	e := newBTSEnv(t, BTSConfig{Seed: 1, Orders: 5})
	access, _ := e.login(t)
	path := BTSTrackPath + "?orderId=" + e.sim.OrderID(1)
	e.sim.Inject(
		BTSFault{Kind: BTSFaultExpiredToken},
		BTSFault{Kind: BTSFaultTooManyRequests, RetryAfter: "3"},
		BTSFault{Kind: BTSFaultTooManyRequests},
		BTSFault{Kind: BTSFaultServerError},
		BTSFault{Kind: BTSFaultServerError, Status: 500},
		BTSFault{Kind: BTSFaultNotFound},
		BTSFault{Kind: BTSFaultMalformed},
		BTSFault{Kind: BTSFaultMalformed, Malformed: BTSHTMLPage},
		BTSFault{Kind: BTSFaultMalformed, Malformed: BTSStatusFalse},
		BTSFault{Kind: BTSFaultValidation},
		BTSFault{Kind: BTSFaultForbidden},
		BTSFault{Kind: BTSFaultSlow, Delay: time.Millisecond},
		BTSFault{Kind: BTSFaultNone},
	)
	require.Equal(t, 13, e.sim.Pending())
	want := []struct {
		status int
		check  func(raw string, h http.Header)
	}{
		{401, func(raw string, _ http.Header) { require.Contains(t, raw, "invalid credentials") }},
		{429, func(_ string, h http.Header) { require.Equal(t, "3", h.Get("Retry-After")) }},
		{429, func(_ string, h http.Header) { require.Empty(t, h.Get("Retry-After")) }},
		{503, nil},
		{500, func(raw string, _ http.Header) { require.Contains(t, raw, "Internal Server Error") }},
		{404, func(raw string, _ http.Header) { require.Contains(t, raw, "Buyurtma topilmadi") }},
		{200, func(raw string, _ http.Header) { require.False(t, json.Valid([]byte(raw))) }},
		{200, func(raw string, _ http.Header) { require.True(t, strings.HasPrefix(raw, "<html>")) }},
		{200, func(raw string, _ http.Header) { require.Contains(t, raw, `"status":false`) }},
		{422, func(raw string, _ http.Header) { require.Contains(t, raw, "errors") }},
		{403, nil},
		{200, func(raw string, _ http.Header) { require.True(t, json.Valid([]byte(raw))) }},
		{200, nil},
	}
	for i, w := range want {
		req, err := http.NewRequest(http.MethodGet, e.url+path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+access)
		resp, err := e.hc.Do(req)
		require.NoError(t, err)
		raw, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, w.status, resp.StatusCode, "fault %d: %s", i, raw)
		if w.check != nil {
			w.check(string(raw), resp.Header)
		}
	}
	require.Zero(t, e.sim.Pending())
	require.EqualValues(t, 13, e.sim.Calls(e.sim.OrderID(1)))

	// Login and refresh never consume faults.
	e.sim.Inject(BTSFault{Kind: BTSFaultDropConnection})
	e.login(t)
	require.Equal(t, 1, e.sim.Pending())
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, e.url+BTSStatusPath, nil)
	require.NoError(t, err)
	// A fresh connection, since net/http retries a GET that failed on a
	// reused one.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	_, err = fresh.Do(req)
	require.Error(t, err, "the connection is dropped")
	require.EqualValues(t, 11, e.sim.Faulted(), "every error answer but the expired token")
}

func TestBTSRandomFaults(t *testing.T) {
	t.Parallel()
	e := newBTSEnv(t, BTSConfig{Seed: 2, Orders: 3, Faults: BTSFaultRates{ServerError: 0.3, TooManyRequests: 0.2}})
	access, _ := e.login(t)
	counts := map[int]int{}
	for range 400 {
		status, _, _ := e.do(t, http.MethodGet, BTSTrackPath+"?orderId="+e.sim.OrderID(0), access, "")
		counts[status]++
	}
	require.InDelta(t, 0.5*400, counts[200], 40)
	require.InDelta(t, 0.2*400, counts[429], 30)
	require.EqualValues(t, 400, e.sim.TotalCalls())
}

func TestNewBTSRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []BTSConfig{
		{Password: "p"},
		{Login: "l", Password: "p", Orders: -1},
		{Login: "l", Password: "p", Speed: -1},
		{Login: "l", Password: "p", UnknownRate: 2},
		{Login: "l", Password: "p", Faults: BTSFaultRates{ServerError: 0.7, Malformed: 0.7}},
		{Login: "l", Password: "p", TokenTTL: -time.Second},
	} {
		_, err := NewBTS(cfg)
		require.Error(t, err, "%+v", cfg)
	}
	require.Panics(t, func() {
		s, _ := NewBTS(BTSConfig{Login: "l", Password: "p"})
		s.Inject(BTSFault{Kind: BTSFaultServerError, Status: 404})
	})
}

func TestBTSHoldsManyOrdersCheaply(t *testing.T) {
	t.Parallel()
	s, err := NewBTS(BTSConfig{Seed: 9, Login: "l", Password: "p", Orders: 100_000, Speed: 1000})
	require.NoError(t, err)
	ids := s.Orders()
	require.Len(t, ids, 100_000)
	require.NotNil(t, s.History(ids[99_999]))
	require.True(t, s.LastChangeAt().After(s.Start()))
	c, ok := s.StatusAt(ids[0], s.Start())
	require.True(t, ok)
	require.Equal(t, 100, c.Code)
}
