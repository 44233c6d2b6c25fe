package sim

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestScriptedFaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		fault Fault
		check func(t *testing.T, y *Yandex, r response)
	}{
		{"none", Fault{Kind: FaultNone}, func(t *testing.T, y *Yandex, r response) {
			require.Equal(t, http.StatusOK, r.status)
			require.Len(t, decodePage(t, r.body).Events, 10)
		}},
		{"429 with Retry-After", Fault{Kind: FaultTooManyRequests, RetryAfter: "7"}, func(t *testing.T, y *Yandex, r response) {
			require.Equal(t, http.StatusTooManyRequests, r.status)
			require.Equal(t, "7", r.header.Get("Retry-After"))
			require.Equal(t, apiError{Code: "too_many_requests", Message: "Слишком много запросов"}, decodeError(t, r.body))
		}},
		{"429 with HTTP date", Fault{Kind: FaultTooManyRequests, RetryAfter: "Wed, 21 Oct 2026 07:28:00 GMT"}, func(t *testing.T, y *Yandex, r response) {
			require.Equal(t, http.StatusTooManyRequests, r.status)
			require.Equal(t, "Wed, 21 Oct 2026 07:28:00 GMT", r.header.Get("Retry-After"))
		}},
		{"429 without Retry-After", Fault{Kind: FaultTooManyRequests}, func(t *testing.T, y *Yandex, r response) {
			require.Equal(t, http.StatusTooManyRequests, r.status)
			require.Empty(t, r.header.Values("Retry-After"))
		}},
		{"default server error", Fault{Kind: FaultServerError}, func(t *testing.T, y *Yandex, r response) {
			require.Equal(t, http.StatusServiceUnavailable, r.status)
			require.NotEmpty(t, r.body)
		}},
		{"500", Fault{Kind: FaultServerError, Status: 500}, func(t *testing.T, y *Yandex, r response) {
			require.Equal(t, http.StatusInternalServerError, r.status)
			require.Equal(t, "internal_error", decodeError(t, r.body).Code)
		}},
		{"502 from nginx", Fault{Kind: FaultServerError, Status: 502}, func(t *testing.T, y *Yandex, r response) {
			require.Equal(t, http.StatusBadGateway, r.status)
			require.Contains(t, string(r.body), "nginx")
		}},
		{"504", Fault{Kind: FaultServerError, Status: 504}, func(t *testing.T, y *Yandex, r response) {
			require.Equal(t, http.StatusGatewayTimeout, r.status)
		}},
		{"truncated page", Fault{Kind: FaultMalformed}, func(t *testing.T, y *Yandex, r response) {
			require.Equal(t, http.StatusOK, r.status)
			require.True(t, strings.HasPrefix(string(r.body), `{"cursor":"`), "starts like a page")
			require.False(t, json.Valid(r.body))
			require.Empty(t, y.LastCursor(), "a broken page does not count as served")
			require.Zero(t, y.Served())
		}},
		{"events not an array", Fault{Kind: FaultEventsNotArray}, func(t *testing.T, y *Yandex, r response) {
			require.Equal(t, http.StatusOK, r.status)
			require.True(t, json.Valid(r.body))
			var p page
			require.Error(t, json.Unmarshal(r.body, &p), "a typed decoder must reject it")
			var loose struct {
				Cursor string                     `json:"cursor"`
				Events map[string]json.RawMessage `json:"events"`
			}
			require.NoError(t, json.Unmarshal(r.body, &loose))
			require.Len(t, loose.Events, 10)
			require.Equal(t, y.CursorAfter(10), loose.Cursor, "the cursor would skip the page")
			require.Zero(t, y.Served())
		}},
		{"bad cursor", Fault{Kind: FaultBadCursor}, func(t *testing.T, y *Yandex, r response) {
			require.Equal(t, http.StatusBadRequest, r.status)
			require.Equal(t, "invalid_cursor", decodeError(t, r.body).Code)
		}},
		{"unauthorized", Fault{Kind: FaultUnauthorized}, func(t *testing.T, y *Yandex, r response) {
			require.Equal(t, http.StatusUnauthorized, r.status)
			require.Equal(t, "unauthorized", decodeError(t, r.body).Code)
		}},
		{"forbidden", Fault{Kind: FaultForbidden}, func(t *testing.T, y *Yandex, r response) {
			require.Equal(t, http.StatusForbidden, r.status)
			require.Equal(t, "forbidden", decodeError(t, r.body).Code)
		}},
		{"short slow answer", Fault{Kind: FaultSlow, Delay: 20 * time.Millisecond}, func(t *testing.T, y *Yandex, r response) {
			require.Equal(t, http.StatusOK, r.status)
			require.Len(t, decodePage(t, r.body).Events, 10)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			y, srv := newServer(t, YandexConfig{Seed: 40, Token: "tok", Backlog: 30})
			y.Inject(tc.fault)
			require.Equal(t, 1, y.Pending())
			r := do(t, srv, request{token: "tok", limit: "10"})
			tc.check(t, y, r)
			require.Zero(t, y.Pending())

			// The fault is consumed: the next request is served normally.
			r = do(t, srv, request{token: "tok", limit: "10"})
			require.Equal(t, http.StatusOK, r.status)
			require.Equal(t, string(y.EntryJSON(0)), string(decodePage(t, r.body).Events[0]))
			require.EqualValues(t, 2, y.Requests())
		})
	}
}

func TestScriptedFaultsQueueInOrder(t *testing.T) {
	t.Parallel()
	y, srv := newServer(t, YandexConfig{Seed: 41, Backlog: 5})
	y.Inject(Fault{Kind: FaultServerError, Status: 500}, Fault{Kind: FaultNone})
	y.Inject(Fault{Kind: FaultTooManyRequests})
	require.Equal(t, 3, y.Pending())
	for _, want := range []int{500, 200, 429, 200} {
		require.Equal(t, want, do(t, srv, request{}).status)
	}
	require.Zero(t, y.Pending())
}

func TestFaultReplay(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		pos, limit int
		wantStart  int
	}{
		{"full replay", 20, 10, 20 - ReplayCount},
		{"near the start", 3, 10, 0},
		{"limit leaves room for progress", 20, 3, 18},
		{"limit one", 20, 1, 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			y, srv := newServer(t, YandexConfig{Seed: 42, Backlog: 40})
			y.Inject(Fault{Kind: FaultReplay})
			cursor := y.CursorAfter(tc.pos)
			r := do(t, srv, request{cursor: &cursor, limit: strconv.Itoa(tc.limit)})
			require.Equal(t, http.StatusOK, r.status)
			p := decodePage(t, r.body)
			require.Len(t, p.Events, tc.limit)
			for j, ev := range p.Events {
				require.Equal(t, string(y.EntryJSON(tc.wantStart+j)), string(ev))
			}
			require.Equal(t, y.CursorAfter(tc.wantStart+tc.limit), p.Cursor)
			require.Greater(t, tc.wantStart+tc.limit, tc.pos, "the page still makes progress")
		})
	}
}

func TestFaultSlowRespectsCancellation(t *testing.T) {
	t.Parallel()
	y, srv := newServer(t, YandexConfig{Seed: 43, Backlog: 5})
	y.Inject(Fault{Kind: FaultSlow, Delay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+YandexJournalPath, strings.NewReader("{}"))
	require.NoError(t, err)
	start := time.Now()
	_, err = srv.Client().Do(hr)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 10*time.Second)
	// srv.Close in cleanup waits for the handler, so a handler that ignored
	// the cancellation would hang the test here for an hour.
}

func TestFaultDropConnection(t *testing.T) {
	t.Parallel()
	y, srv := newServer(t, YandexConfig{Seed: 44, Backlog: 5})
	y.Inject(Fault{Kind: FaultDropConnection})
	resp, err := send(srv, request{})
	if err == nil {
		resp.Body.Close()
	}
	require.Error(t, err, "the client sees a transport error, not a response")
	r := do(t, srv, request{})
	require.Equal(t, http.StatusOK, r.status)
}

func TestFaultDropConnectionWithoutHijacker(t *testing.T) {
	t.Parallel()
	y, err := NewYandex(YandexConfig{Seed: 45, Backlog: 5})
	require.NoError(t, err)
	y.Inject(Fault{Kind: FaultDropConnection})
	req, err := http.NewRequest(http.MethodPost, YandexJournalPath, strings.NewReader("{}"))
	require.NoError(t, err)
	// A ResponseWriter that cannot hijack (as under HTTP/2) gets the
	// handler aborted instead, which net/http turns into a reset stream.
	require.PanicsWithError(t, http.ErrAbortHandler.Error(), func() {
		y.ServeHTTP(plainWriter{header: http.Header{}}, req)
	})
}

// plainWriter is a ResponseWriter without Hijack.
type plainWriter struct{ header http.Header }

func (w plainWriter) Header() http.Header         { return w.header }
func (w plainWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w plainWriter) WriteHeader(int)             {}

func TestInjectRejectsNonsense(t *testing.T) {
	t.Parallel()
	y, err := NewYandex(YandexConfig{Backlog: 1})
	require.NoError(t, err)
	require.Panics(t, func() { y.Inject(Fault{Kind: FaultKind(99)}) })
	require.Panics(t, func() { y.Inject(Fault{Kind: FaultServerError, Status: 404}) })
	require.Panics(t, func() { y.Inject(Fault{Kind: FaultSlow, Delay: -1}) })
	require.Zero(t, y.Pending())
	require.Equal(t, "FaultReplay", FaultReplay.String())
	require.Equal(t, "FaultKind(99)", FaultKind(99).String())
}

func TestRandomFaults(t *testing.T) {
	t.Parallel()
	cfg := YandexConfig{
		Seed:    46,
		Backlog: 50,
		Faults: FaultRates{
			TooManyRequests: 0.2,
			ServerError:     0.2,
			Slow:            0.1,
			Malformed:       0.2,
			RetryAfter:      "2",
			SlowDelay:       time.Millisecond,
		},
	}
	run := func() []int {
		_, srv := newServer(t, cfg)
		var statuses []int
		malformed := 0
		for range 250 {
			r := do(t, srv, request{limit: "5"})
			statuses = append(statuses, r.status)
			switch r.status {
			case http.StatusTooManyRequests:
				require.Equal(t, "2", r.header.Get("Retry-After"))
			case http.StatusOK:
				var p page
				if json.Unmarshal(r.body, &p) != nil || p.Events == nil {
					malformed++
				}
			default:
				require.Contains(t, []int{500, 502, 503}, r.status)
			}
		}
		count := map[int]int{}
		for _, s := range statuses {
			count[s]++
		}
		require.InDelta(t, 50, count[429], 20)
		require.InDelta(t, 50, count[500]+count[502]+count[503], 20)
		require.InDelta(t, 50, malformed, 20)
		require.NotZero(t, count[500])
		require.NotZero(t, count[502])
		require.NotZero(t, count[503])
		return statuses
	}
	// With sequential requests the fault stream is deterministic too.
	require.Equal(t, run(), run())
}

func TestRandomFaultsNeverCorruptProgress(t *testing.T) {
	t.Parallel()
	// A client that retries every failure must still read the journal
	// exactly once in order: faults never skip or reorder entries.
	const backlog = 500
	y, srv := newServer(t, YandexConfig{Seed: 47, Backlog: backlog,
		Faults: FaultRates{TooManyRequests: 0.15, ServerError: 0.15, Malformed: 0.15}})
	var cursor *string
	next := 0
	for attempts := 0; next < backlog; attempts++ {
		require.Less(t, attempts, 10_000)
		r := do(t, srv, request{cursor: cursor, limit: "37"})
		if r.status != http.StatusOK {
			continue
		}
		var p page
		if err := json.Unmarshal(r.body, &p); err != nil || p.Events == nil {
			continue
		}
		for _, ev := range p.Events {
			require.Equal(t, string(y.EntryJSON(next)), string(ev))
			next++
		}
		c := p.Cursor
		cursor = &c
	}
	require.EqualValues(t, backlog, y.Served())
}

func TestListenAndServe(t *testing.T) {
	t.Parallel()
	y, err := NewYandex(YandexConfig{Seed: 48, Backlog: 3})
	require.NoError(t, err)
	y.Inject(Fault{Kind: FaultNone}, Fault{Kind: FaultSlow, Delay: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, wait, err := ListenAndServe(ctx, "127.0.0.1:0", y)
	require.NoError(t, err)

	resp, err := http.Post("http://"+addr+YandexJournalPath, "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	var p page
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&p))
	resp.Body.Close()
	require.Len(t, p.Events, 3)

	// A request stuck in a slow answer must not hold up shutdown.
	slowDone := make(chan error, 1)
	go func() {
		resp, err := http.Post("http://"+addr+YandexJournalPath, "application/json", strings.NewReader("{}"))
		if err == nil {
			resp.Body.Close()
			err = errors.New("slow request unexpectedly answered")
		}
		slowDone <- err
	}()
	require.Eventually(t, func() bool { return y.Pending() == 0 }, 5*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, wait())
	require.NoError(t, wait(), "wait may be called again")
	require.Error(t, <-slowDone)

	_, err = http.Post("http://"+addr+YandexJournalPath, "application/json", strings.NewReader("{}"))
	require.Error(t, err, "the server is gone")
}

func TestListenAndServeBadAddress(t *testing.T) {
	t.Parallel()
	_, _, err := ListenAndServe(context.Background(), "256.0.0.1:http", http.NotFoundHandler())
	require.Error(t, err)
}
