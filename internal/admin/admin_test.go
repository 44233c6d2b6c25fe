package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/ingestd/ingestd/internal/admin"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/status"
	"github.com/ingestd/ingestd/internal/watchlist"
)

const (
	token = "adm1n-T0KEN-for-tests"
	src   = "bts/shop"
)

// newServer serves the admin API over a migrated store; an empty tok
// leaves the API disabled.
func newServer(t *testing.T, tok string) (*httptest.Server, *watchlist.Store) {
	t.Helper()
	store := pgtest.Open(t).Watchlist
	h := admin.New(admin.Config{Token: secret.New(tok), BTSAccounts: func() []string { return []string{"shop"} }}, store, zaptest.NewLogger(t))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, store
}

// call sends a request with the given Authorization header value and
// returns the status and the decoded JSON object.
func call(t *testing.T, srv *httptest.Server, method, path, auth, body string) (int, map[string]any, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL+path, rd)
	require.NoError(t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"), "every answer is JSON: %s", raw)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m), "%s", raw)
	return resp.StatusCode, m, resp.Header
}

const bearer = "Bearer " + token

func TestAuthentication(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t, token)
	tests := []struct {
		name, auth string
		want       int
	}{
		{"no header", "", http.StatusUnauthorized},
		{"wrong token", "Bearer nope", http.StatusUnauthorized},
		{"token prefix", "Bearer " + token[:5], http.StatusUnauthorized},
		{"token with suffix", bearer + "x", http.StatusUnauthorized},
		{"basic scheme", "Basic " + token, http.StatusUnauthorized},
		{"bare token", token, http.StatusUnauthorized},
		{"right token", bearer, http.StatusOK},
		{"scheme is case-insensitive", "bearer " + token, http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			status, body, h := call(t, srv, http.MethodGet, "/v1/bts/orders", tc.auth, "")
			require.Equal(t, tc.want, status, "%v", body)
			if status == http.StatusUnauthorized {
				require.Contains(t, body["error"], "INGESTD_ADMIN_TOKEN")
				require.Equal(t, `Bearer realm="ingestd"`, h.Get("WWW-Authenticate"))
				require.NotContains(t, body["error"], token)
			}
		})
	}
}

func TestDisabledWithoutToken(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t, "")
	for _, auth := range []string{"", "Bearer ", "Bearer anything"} {
		status, body, _ := call(t, srv, http.MethodPost, "/v1/bts/orders", auth, `{"order_ids":["1"]}`)
		require.Equal(t, http.StatusForbidden, status)
		require.Equal(t, "the admin API is disabled: set INGESTD_ADMIN_TOKEN to enable it", body["error"])
	}
}

func TestTrackListUntrack(t *testing.T) {
	t.Parallel()
	srv, store := newServer(t, token)
	ctx := context.Background()

	status, body, _ := call(t, srv, http.MethodPost, "/v1/bts/orders", bearer, `{"order_ids":["4293644","11950975","4293644"]}`)
	require.Equal(t, http.StatusCreated, status)
	require.Equal(t, map[string]any{"source": src, "added": []any{"4293644", "11950975"}, "already_tracked": []any{}}, body)

	status, body, _ = call(t, srv, http.MethodPost, "/v1/bts/orders", bearer, `{"order_ids":["11950975","A-7_x"]}`)
	require.Equal(t, http.StatusCreated, status)
	require.Equal(t, []any{"A-7_x"}, body["added"])
	require.Equal(t, []any{"11950975"}, body["already_tracked"])

	status, body, _ = call(t, srv, http.MethodPost, "/v1/bts/orders", bearer, `{"order_ids":["A-7_x"]}`)
	require.Equal(t, http.StatusOK, status, "nothing new: 200, not 201")
	require.Equal(t, []any{}, body["added"])

	// They are in the store, for the configured source only.
	page, err := store.List(ctx, watchlist.ListQuery{SourceID: src, Limit: 10})
	require.NoError(t, err)
	require.Len(t, page, 3)
	other, err := store.List(ctx, watchlist.ListQuery{SourceID: "bts/default", Limit: 10})
	require.NoError(t, err)
	require.Empty(t, other)

	// Paged listing.
	status, body, _ = call(t, srv, http.MethodGet, "/v1/bts/orders?limit=2", bearer, "")
	require.Equal(t, http.StatusOK, status)
	orders := body["orders"].([]any)
	require.Len(t, orders, 2)
	first := orders[0].(map[string]any)
	require.Equal(t, "11950975", first["order_id"])
	require.Equal(t, "active", first["state"])
	require.Nil(t, first["status_code"])
	require.Nil(t, first["last_error"])
	require.NotNil(t, first["next_poll_at"])
	require.EqualValues(t, 0, first["change_count"])
	require.Equal(t, "4293644", body["next_after"])
	status, body, _ = call(t, srv, http.MethodGet, "/v1/bts/orders?limit=2&after=4293644", bearer, "")
	require.Equal(t, http.StatusOK, status)
	require.Len(t, body["orders"], 1)
	require.Equal(t, "A-7_x", body["orders"].([]any)[0].(map[string]any)["order_id"])
	require.Nil(t, body["next_after"], "the last page")
	status, body, _ = call(t, srv, http.MethodGet, "/v1/bts/orders?state=terminal", bearer, "")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, []any{}, body["orders"])

	status, body, _ = call(t, srv, http.MethodDelete, "/v1/bts/orders/4293644", bearer, "")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, map[string]any{"source": src, "removed": "4293644"}, body)
	status, body, _ = call(t, srv, http.MethodDelete, "/v1/bts/orders/4293644", bearer, "")
	require.Equal(t, http.StatusNotFound, status)
	require.Equal(t, "order 4293644 is not tracked", body["error"])
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t, token)
	many := `{"order_ids":["` + strings.Repeat(`1","`, admin.MaxOrdersPerRequest) + `1"]}`
	tests := []struct {
		name, method, path, body string
		want                     int
		wantErr                  string
	}{
		{"empty list", "POST", "/v1/bts/orders", `{"order_ids":[]}`, 400, "order_ids is empty"},
		{"missing list", "POST", "/v1/bts/orders", `{}`, 400, "order_ids is required"},
		{"null list", "POST", "/v1/bts/orders", `{"order_ids":null}`, 400, "order_ids is required"},
		{"typo in field", "POST", "/v1/bts/orders", `{"orders":["1"]}`, 400, `unknown field "orders"`},
		{"not JSON", "POST", "/v1/bts/orders", `order_ids=1`, 400, "syntax error"},
		{"empty body", "POST", "/v1/bts/orders", ``, 400, "empty body"},
		{"two values", "POST", "/v1/bts/orders", `{"order_ids":["1"]} {}`, 400, "more than one JSON value"},
		{"ids are numbers", "POST", "/v1/bts/orders", `{"order_ids":[4293644]}`, 400, "order_ids must be string"},
		{"id with space", "POST", "/v1/bts/orders", `{"order_ids":["1","12 34"]}`, 400, `order_ids[1] "12 34" is not a BTS order id`},
		{"empty id", "POST", "/v1/bts/orders", `{"order_ids":[""]}`, 400, "is not a BTS order id"},
		{"id too long", "POST", "/v1/bts/orders", `{"order_ids":["` + strings.Repeat("9", 65) + `"]}`, 400, "is not a BTS order id"},
		{"too many ids", "POST", "/v1/bts/orders", many, 400, "more than 1000"},
		{"body too large", "POST", "/v1/bts/orders", `{"order_ids":["` + strings.Repeat("x", admin.MaxBodyBytes) + `"]}`, 413, "larger than"},
		{"bad id in path", "DELETE", "/v1/bts/orders/a%20b", "", 400, "is not a BTS order id"},
		{"bad state", "GET", "/v1/bts/orders?state=done", "", 400, "state must be"},
		{"bad limit", "GET", "/v1/bts/orders?limit=0", "", 400, "limit must be"},
		{"huge limit", "GET", "/v1/bts/orders?limit=100000", "", 400, "limit must be"},
		{"bad after", "GET", "/v1/bts/orders?after=%27%3B--", "", 400, "after must be"},
		{"wrong method", "PUT", "/v1/bts/orders", `{}`, 405, "method PUT is not allowed"},
		{"wrong method on an order", "POST", "/v1/bts/orders/1", `{}`, 405, "use DELETE"},
		{"unknown path", "GET", "/v1/yandex/cursor", "", 404, "no such endpoint"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			status, body, _ := call(t, srv, tc.method, tc.path, bearer, tc.body)
			require.Equal(t, tc.want, status, "%v", body)
			require.Contains(t, body["error"], tc.wantErr)
		})
	}
}

func TestWrongContentType(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t, token)
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/bts/orders", strings.NewReader(`{"order_ids":["1"]}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", bearer)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusUnsupportedMediaType, resp.StatusCode)
}

// failingStore fails every call, to check that store errors stay private.
type failingStore struct{}

var errDB = errors.New("connection refused: postgres://ingestd:hunter2@db")

func (failingStore) Track(context.Context, string, []string) ([]string, error) {
	return nil, errDB
}

func (failingStore) Untrack(context.Context, string, []string) ([]string, error) {
	return nil, errDB
}

func (failingStore) List(context.Context, watchlist.ListQuery) ([]watchlist.Order, error) {
	return nil, errDB
}

func TestStoreErrorsAreNotExposed(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(admin.New(admin.Config{Token: secret.New(token), BTSAccounts: func() []string { return []string{"shop"} }}, failingStore{}, zaptest.NewLogger(t)))
	t.Cleanup(srv.Close)
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/v1/bts/orders", `{"order_ids":["1"]}`},
		{"GET", "/v1/bts/orders", ""},
		{"DELETE", "/v1/bts/orders/1", ""},
	} {
		status, body, _ := call(t, srv, r.method, r.path, bearer, r.body)
		require.Equal(t, http.StatusInternalServerError, status)
		require.Equal(t, "internal error; see the ingestd log", body["error"])
	}
}

// TestAccountSelection: with several BTS accounts a request names its
// account; with one it may leave it out; an account that does not run here
// is refused.
func TestAccountSelection(t *testing.T) {
	t.Parallel()
	store := pgtest.Open(t).Watchlist
	tests := []struct {
		name       string
		accounts   []string
		query      string
		wantStatus int
		wantSource string
	}{
		{"the only account", []string{"shop"}, "", http.StatusCreated, "bts/shop"},
		{"the only account, named", []string{"shop"}, "?account=shop", http.StatusCreated, "bts/shop"},
		{"one of several", []string{"shop", "tashkent"}, "?account=tashkent", http.StatusCreated, "bts/tashkent"},
		{"several, none named", []string{"shop", "tashkent"}, "", http.StatusBadRequest, ""},
		{"an account not running here", []string{"shop"}, "?account=other", http.StatusNotFound, ""},
		{"no BTS source: the default account", nil, "", http.StatusCreated, "bts/default"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(admin.New(admin.Config{Token: secret.New(token), BTSAccounts: func() []string { return tc.accounts }}, store, zaptest.NewLogger(t)))
			t.Cleanup(srv.Close)
			body := fmt.Sprintf(`{"order_ids": ["sel-%d"]}`, i)
			status, resp, _ := call(t, srv, http.MethodPost, "/v1/bts/orders"+tc.query, "Bearer "+token, body)
			require.Equal(t, tc.wantStatus, status, "%v", resp)
			if tc.wantSource != "" {
				require.Equal(t, tc.wantSource, resp["source"])
			} else {
				require.Contains(t, resp["error"], "account")
			}
		})
	}
}

// TestSourcesEndpoint: GET /v1/sources answers the sources' status, behind
// the token like every endpoint, and a failure is not exposed.
func TestSourcesEndpoint(t *testing.T) {
	t.Parallel()
	list := []status.Source{{ID: "yandex/a", Provider: "yandex", Account: "a", Instance: "pod-1", EventsIngested: 7}}
	tests := []struct {
		name       string
		sources    func(context.Context) ([]status.Source, error)
		auth       string
		wantStatus int
	}{
		{"listed", func(context.Context) ([]status.Source, error) { return list, nil }, "Bearer " + token, http.StatusOK},
		{"no token", func(context.Context) ([]status.Source, error) { return list, nil }, "", http.StatusUnauthorized},
		{"store failure", func(context.Context) ([]status.Source, error) { return nil, errors.New("db password=secret down") }, "Bearer " + token, http.StatusInternalServerError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(admin.New(admin.Config{Token: secret.New(token), Sources: tc.sources}, failingStore{}, zaptest.NewLogger(t)))
			t.Cleanup(srv.Close)
			status, body, _ := call(t, srv, http.MethodGet, "/v1/sources", tc.auth, "")
			require.Equal(t, tc.wantStatus, status, "%v", body)
			if status == http.StatusOK {
				srcs := body["sources"].([]any)
				require.Len(t, srcs, 1)
				require.Equal(t, "pod-1", srcs[0].(map[string]any)["instance"])
			}
			require.NotContains(t, fmt.Sprint(body), "password")
		})
	}
}
