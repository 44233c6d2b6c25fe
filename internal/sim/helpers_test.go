package sim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is a manually advanced clock for rate tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newServer builds a simulator behind an httptest server.
func newServer(t testing.TB, cfg YandexConfig) (*Yandex, *httptest.Server) {
	t.Helper()
	y, err := NewYandex(cfg)
	require.NoError(t, err)
	return y, newHandlerServer(t, y)
}

// newHandlerServer puts an existing simulator behind an httptest server.
func newHandlerServer(t testing.TB, y *Yandex) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(y)
	t.Cleanup(srv.Close)
	return srv
}

// response is one raw HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

// request describes one call to the journal endpoint. A nil cursor sends an
// empty body; limit 0 omits the parameter.
type request struct {
	method string
	path   string
	token  string
	cursor *string
	body   string // used verbatim when not empty
	limit  string // raw query value when not empty
}

// do performs the request and reads the whole answer.
func do(t testing.TB, srv *httptest.Server, req request) response {
	t.Helper()
	resp, err := send(srv, req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

// send performs the request and returns the raw response or transport error.
func send(srv *httptest.Server, req request) (*http.Response, error) {
	method := req.method
	if method == "" {
		method = http.MethodPost
	}
	path := req.path
	if path == "" {
		path = YandexJournalPath
	}
	url := srv.URL + path
	if req.limit != "" {
		url += "?limit=" + req.limit
	}
	var body io.Reader = http.NoBody
	switch {
	case req.body != "":
		body = bytes.NewBufferString(req.body)
	case req.cursor != nil:
		b, _ := json.Marshal(map[string]string{"cursor": *req.cursor})
		body = bytes.NewReader(b)
	}
	hr, err := http.NewRequest(method, url, body)
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	if req.token != "" {
		hr.Header.Set("Authorization", "Bearer "+req.token)
	}
	return srv.Client().Do(hr)
}

// page is a decoded 200 answer.
type page struct {
	Cursor string            `json:"cursor"`
	Events []json.RawMessage `json:"events"`
}

func decodePage(t testing.TB, body []byte) page {
	t.Helper()
	var p page
	require.NoError(t, json.Unmarshal(body, &p), "body: %.300s", body)
	require.NotNil(t, p.Events, "events must be an array, body: %.300s", body)
	return p
}

// apiError is a decoded JSON error answer.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func decodeError(t testing.TB, body []byte) apiError {
	t.Helper()
	var e apiError
	require.NoError(t, json.Unmarshal(body, &e), "body: %s", body)
	return e
}

// walkResult is everything a cursor walk saw.
type walkResult struct {
	pages  []page
	starts []int // index of the first event of each page, -1 if empty
	bodies [][]byte
}

// walk pages through the journal from the start until a page brings nothing
// new, mapping every event back to its index via operation_id.
func walk(t testing.TB, y *Yandex, srv *httptest.Server, token string, limit int) walkResult {
	t.Helper()
	index := make(map[int64]int, y.Available())
	for i := range y.Available() {
		index[y.Entry(i).OperationID] = i
	}
	var res walkResult
	var cursor *string
	for range 1_000_000 {
		r := do(t, srv, request{token: token, cursor: cursor, limit: strconv.Itoa(limit)})
		require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
		p := decodePage(t, r.body)
		res.pages = append(res.pages, p)
		res.bodies = append(res.bodies, r.body)
		start := -1
		if len(p.Events) > 0 {
			var ev struct {
				OperationID int64 `json:"operation_id"`
			}
			require.NoError(t, json.Unmarshal(p.Events[0], &ev))
			var ok bool
			start, ok = index[ev.OperationID]
			require.True(t, ok, "unknown operation_id %d", ev.OperationID)
		}
		res.starts = append(res.starts, start)
		if cursor != nil && p.Cursor == *cursor {
			return res
		}
		c := p.Cursor
		cursor = &c
	}
	t.Fatal("walk did not terminate")
	return res
}
