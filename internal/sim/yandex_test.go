package sim

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNewYandexValidation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  YandexConfig
		want string
	}{
		{"negative backlog", YandexConfig{Backlog: -1}, "Backlog"},
		{"negative rate", YandexConfig{Rate: -1}, "Rate"},
		{"huge rate", YandexConfig{Rate: 1e12}, "Rate"},
		{"negative max", YandexConfig{MaxEntries: -5}, "MaxEntries"},
		{"max below backlog", YandexConfig{Backlog: 10, MaxEntries: 5}, "smaller than Backlog"},
		{"negative claims", YandexConfig{Claims: -1}, "Claims"},
		{"page size too big", YandexConfig{MaxPageSize: 1001}, "MaxPageSize"},
		{"unknown rate", YandexConfig{UnknownStatusRate: 1.5}, "UnknownStatusRate"},
		{"replay rate", YandexConfig{ReplayRate: -0.1}, "ReplayRate"},
		{"backwards rate", YandexConfig{BackwardsTimeRate: 2}, "BackwardsTimeRate"},
		{"fault rate", YandexConfig{Faults: FaultRates{Malformed: 1.1}}, "Faults.Malformed"},
		{"fault sum", YandexConfig{Faults: FaultRates{TooManyRequests: 0.6, ServerError: 0.6}}, "add up"},
		{"slow delay", YandexConfig{Faults: FaultRates{SlowDelay: -time.Second}}, "SlowDelay"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewYandex(tc.cfg)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestTotalResolution(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  YandexConfig
		want int
	}{
		{"backlog only", YandexConfig{Backlog: 7}, 7},
		{"empty", YandexConfig{}, 0},
		{"rate unlimited", YandexConfig{Backlog: 7, Rate: 1}, -1},
		{"rate capped", YandexConfig{Backlog: 7, Rate: 1, MaxEntries: 9}, 9},
		{"cap without rate", YandexConfig{Backlog: 7, MaxEntries: 9}, 9},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			y, err := NewYandex(tc.cfg)
			require.NoError(t, err)
			require.Equal(t, tc.want, y.Total())
			require.Equal(t, tc.cfg.Backlog, y.Available())
		})
	}
}

func TestWalkServesEveryEntryOnceInOrder(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		backlog int
		limit   int
		maxPage int
	}{
		{"one per page", 60, 1, 0},
		{"odd pages", 1_001, 7, 0},
		{"full pages", 3_500, 1000, 0},
		{"server cap", 700, 1000, 64},
		{"empty journal", 0, 10, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			y, srv := newServer(t, YandexConfig{Seed: 20, Token: "tok", Backlog: tc.backlog, MaxPageSize: tc.maxPage})
			w := walk(t, y, srv, "tok", tc.limit)
			pageCap := tc.limit
			if tc.maxPage > 0 {
				pageCap = min(pageCap, tc.maxPage)
			}
			next := 0
			for k, p := range w.pages {
				require.LessOrEqual(t, len(p.Events), pageCap)
				for _, ev := range p.Events {
					require.JSONEq(t, string(y.EntryJSON(next)), string(ev))
					require.Equal(t, string(y.EntryJSON(next)), string(ev), "served bytes must equal EntryJSON")
					next++
				}
				require.Equal(t, y.CursorAfter(next), p.Cursor, "page %d cursor", k)
			}
			require.Equal(t, tc.backlog, next)
			last := w.pages[len(w.pages)-1]
			require.Empty(t, last.Events)
			require.Equal(t, y.CursorAfter(tc.backlog), last.Cursor)
			require.Equal(t, y.CursorAfter(tc.backlog), y.LastCursor())
			require.EqualValues(t, tc.backlog, y.Served())
			require.EqualValues(t, len(w.pages), y.Requests())
		})
	}
}

func TestWalkWithReplays(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		rate    float64
		limit   int
		backlog int
	}{
		{"some replays", 0.3, 50, 2_000},
		{"always replaying", 1, 20, 2_000},
		{"limit one never replays", 1, 1, 300},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			backlog := tc.backlog
			y, srv := newServer(t, YandexConfig{Seed: 21, Backlog: backlog, ReplayRate: tc.rate})
			w := walk(t, y, srv, "", tc.limit)
			counts := make([]int, backlog)
			pos := 0
			replayed := 0
			for k, p := range w.pages {
				if len(p.Events) == 0 {
					continue
				}
				start := w.starts[k]
				require.GreaterOrEqual(t, start, pos-ReplayCount, "replays only just before the cursor")
				require.LessOrEqual(t, start, pos, "a page never skips entries")
				for j, ev := range p.Events {
					require.Equal(t, string(y.EntryJSON(start+j)), string(ev), "pages are contiguous")
					counts[start+j]++
				}
				replayed += pos - start
				pos = max(pos, start+len(p.Events))
				require.Equal(t, y.CursorAfter(pos), p.Cursor)
			}
			for i, c := range counts {
				require.GreaterOrEqual(t, c, 1, "entry %d never served", i)
			}
			require.EqualValues(t, backlog+replayed, y.Served())
			if tc.limit > 1 {
				require.NotZero(t, replayed)
			} else {
				require.Zero(t, replayed)
			}
		})
	}
}

func TestEmptyPageRepeatsCursor(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	y, srv := newServer(t, YandexConfig{Seed: 22, Backlog: 3, Rate: 10, Now: clock.Now})

	first := decodePage(t, do(t, srv, request{}).body)
	require.Len(t, first.Events, 3)
	empty := decodePage(t, do(t, srv, request{cursor: &first.Cursor}).body)
	require.Empty(t, empty.Events)
	require.Equal(t, first.Cursor, empty.Cursor)

	clock.Advance(250 * time.Millisecond)
	more := decodePage(t, do(t, srv, request{cursor: &empty.Cursor}).body)
	require.Len(t, more.Events, 2)
	require.Equal(t, string(y.EntryJSON(3)), string(more.Events[0]))
	require.Equal(t, y.CursorAfter(5), more.Cursor)

	empty2, err := NewYandex(YandexConfig{Seed: 22})
	require.NoError(t, err)
	startSrv := newHandlerServer(t, empty2)
	p := decodePage(t, do(t, startSrv, request{}).body)
	require.Empty(t, p.Events)
	require.Equal(t, empty2.CursorAfter(0), p.Cursor, "a first call on an empty journal gets the start cursor")
}

func TestCursorIsAwkwardAndEscaped(t *testing.T) {
	t.Parallel()
	y, srv := newServer(t, YandexConfig{Seed: 23, Backlog: 100})
	for _, n := range []int{0, 1, 99, 100} {
		c := y.CursorAfter(n)
		require.Contains(t, c, "+")
		require.Contains(t, c, "/")
		require.True(t, strings.HasSuffix(c, "=="))
		require.Contains(t, c, "~")
	}
	r := do(t, srv, request{limit: "10"})
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, string(r.body), `\/`, "the cursor travels with escaped slashes")
	require.NotContains(t, string(r.body), y.CursorAfter(10), "raw bytes differ from the decoded cursor")
	require.Equal(t, y.CursorAfter(10), decodePage(t, r.body).Cursor)
}

func TestCursorTampering(t *testing.T) {
	t.Parallel()
	y, srv := newServer(t, YandexConfig{Seed: 24, Backlog: 50, Rate: 1, Now: newFakeClock().Now})
	other, err := NewYandex(YandexConfig{Seed: 25, Backlog: 50})
	require.NoError(t, err)
	good := y.CursorAfter(10)
	rawB64 := strings.TrimPrefix(good, cursorPrefix)
	bin, err := base64.StdEncoding.DecodeString(rawB64)
	require.NoError(t, err)
	flipped := append([]byte(nil), bin...)
	flipped[15] ^= 1 // an offset byte
	cases := []struct {
		name   string
		cursor string
	}{
		{"garbage", "not a cursor"},
		{"number", "12345"},
		{"no prefix", rawB64},
		{"url-safe alphabet", cursorPrefix + base64.URLEncoding.EncodeToString(bin)},
		{"padding stripped", strings.TrimRight(good, "=")},
		{"plus became space", strings.ReplaceAll(good, "+", " ")},
		{"slash escaped", strings.ReplaceAll(good, "/", `\/`)},
		{"line break inserted", good[:20] + "\n" + good[20:31]},
		{"trailing space", good + " "},
		{"offset edited", cursorPrefix + base64.StdEncoding.EncodeToString(flipped)},
		{"other journal", other.CursorAfter(10)},
		{"beyond available", y.CursorAfter(51)},
	}
	for k := range len(good) {
		if good[k] == '=' {
			continue
		}
		b := []byte(good)
		if b[k] == 'A' {
			b[k] = 'B'
		} else {
			b[k] = 'A'
		}
		cases = append(cases, struct {
			name   string
			cursor string
		}{"char " + strconv.Itoa(k), string(b)})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := tc.cursor
			r := do(t, srv, request{cursor: &c})
			require.Equal(t, http.StatusBadRequest, r.status, "%s", r.body)
			require.Equal(t, apiError{Code: "invalid_cursor", Message: "Неправильный формат cursor"}, decodeError(t, r.body))
		})
	}
	t.Run("untouched cursor works", func(t *testing.T) {
		t.Parallel()
		r := do(t, srv, request{cursor: &good, limit: "1"})
		require.Equal(t, http.StatusOK, r.status)
		require.Equal(t, string(y.EntryJSON(10)), string(decodePage(t, r.body).Events[0]))
	})
}

func TestAuthorization(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		token  string
		header string
		want   int
	}{
		{"right token", "s3cret", "Bearer s3cret", http.StatusOK},
		{"no header", "s3cret", "", http.StatusUnauthorized},
		{"wrong token", "s3cret", "Bearer s3cre", http.StatusUnauthorized},
		{"wrong scheme", "s3cret", "OAuth s3cret", http.StatusUnauthorized},
		{"bare token", "s3cret", "s3cret", http.StatusUnauthorized},
		{"extra space", "s3cret", "Bearer  s3cret", http.StatusUnauthorized},
		{"any token accepted", "", "Bearer whatever", http.StatusOK},
		{"no token needed", "", "", http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			y, err := NewYandex(YandexConfig{Seed: 26, Token: tc.token, Backlog: 5})
			require.NoError(t, err)
			srv := newHandlerServer(t, y)
			hr, err := http.NewRequest(http.MethodPost, srv.URL+YandexJournalPath, strings.NewReader("{}"))
			require.NoError(t, err)
			if tc.header != "" {
				hr.Header.Set("Authorization", tc.header)
			}
			resp, err := srv.Client().Do(hr)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, tc.want, resp.StatusCode)
			if tc.want == http.StatusUnauthorized {
				var e apiError
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
				require.Equal(t, "unauthorized", e.Code)
				require.NotEmpty(t, e.Message)
			}
		})
	}
}

func TestLimitValidation(t *testing.T) {
	t.Parallel()
	y, srv := newServer(t, YandexConfig{Seed: 27, Backlog: 1_500})
	cases := []struct {
		limit  string
		status int
		events int
	}{
		{"", http.StatusOK, 1000},
		{"1", http.StatusOK, 1},
		{"999", http.StatusOK, 999},
		{"1000", http.StatusOK, 1000},
		{"0", http.StatusBadRequest, 0},
		{"-1", http.StatusBadRequest, 0},
		{"1001", http.StatusBadRequest, 0},
		{"abc", http.StatusBadRequest, 0},
		{"10.5", http.StatusBadRequest, 0},
		{"%20", http.StatusBadRequest, 0},
	}
	for _, tc := range cases {
		t.Run("limit="+tc.limit, func(t *testing.T) {
			t.Parallel()
			url := srv.URL + YandexJournalPath
			if tc.limit != "" {
				url += "?limit=" + tc.limit
			}
			resp, err := srv.Client().Post(url, "application/json", strings.NewReader("{}"))
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, tc.status, resp.StatusCode)
			if tc.status != http.StatusOK {
				var e apiError
				require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
				require.Equal(t, "bad_request", e.Code)
				return
			}
			var p page
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&p))
			require.Len(t, p.Events, tc.events)
			require.Equal(t, y.CursorAfter(tc.events), p.Cursor)
		})
	}
	t.Run("empty value", func(t *testing.T) {
		t.Parallel()
		resp, err := srv.Client().Post(srv.URL+YandexJournalPath+"?limit=", "application/json", nil)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	})
}

func TestRequestShape(t *testing.T) {
	t.Parallel()
	y, srv := newServer(t, YandexConfig{Seed: 28, Backlog: 20})
	cursor5 := y.CursorAfter(5)
	cases := []struct {
		name   string
		req    request
		status int
		code   string
		first  int // index of the first event on success
	}{
		{"empty body", request{}, http.StatusOK, "", 0},
		{"empty object", request{body: "{}"}, http.StatusOK, "", 0},
		{"null cursor", request{body: `{"cursor":null}`}, http.StatusOK, "", 0},
		{"empty cursor", request{body: `{"cursor":""}`}, http.StatusOK, "", 0},
		{"unknown field", request{body: `{"cursor":"` + cursor5 + `","x":1}`}, http.StatusOK, "", 5},
		{"escaped slashes in request", request{body: `{"cursor":"` + strings.ReplaceAll(cursor5, "/", `\/`) + `"}`}, http.StatusOK, "", 5},
		{"truncated body", request{body: `{"cursor":`}, http.StatusBadRequest, "bad_request", 0},
		{"cursor not a string", request{body: `{"cursor":5}`}, http.StatusBadRequest, "bad_request", 0},
		{"array body", request{body: `[]`}, http.StatusBadRequest, "bad_request", 0},
		{"trailing garbage", request{body: `{} x`}, http.StatusBadRequest, "bad_request", 0},
		{"huge body", request{body: `{"cursor":"` + strings.Repeat("a", maxBody) + `"}`}, http.StatusBadRequest, "bad_request", 0},
		{"GET", request{method: http.MethodGet}, http.StatusMethodNotAllowed, "method_not_allowed", 0},
		{"wrong path", request{path: "/b2b/cargo/integration/v1/claims/journal"}, http.StatusNotFound, "not_found", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := do(t, srv, tc.req)
			require.Equal(t, tc.status, r.status, "%s", r.body)
			if tc.code != "" {
				require.Equal(t, tc.code, decodeError(t, r.body).Code)
				require.Equal(t, "application/json; charset=utf-8", r.header.Get("Content-Type"))
				return
			}
			p := decodePage(t, r.body)
			require.Equal(t, string(y.EntryJSON(tc.first)), string(p.Events[0]))
		})
	}
}

func TestRateUsesInjectedClock(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	start := clock.Now()
	y, srv := newServer(t, YandexConfig{Seed: 29, Backlog: 10, Rate: 4, MaxEntries: 20, Now: clock.Now})
	require.Equal(t, 20, y.Total())
	require.Equal(t, start, y.AppearedAt(0))
	require.Equal(t, start, y.AppearedAt(9))
	require.Equal(t, start.Add(250*time.Millisecond), y.AppearedAt(10))
	require.Equal(t, start.Add(500*time.Millisecond), y.AppearedAt(11))
	require.True(t, y.AppearedAt(20).IsZero(), "beyond the cap nothing appears")

	steps := []struct {
		advance time.Duration
		want    int
	}{
		{0, 10},
		{249 * time.Millisecond, 10},
		{time.Millisecond, 11},
		{750 * time.Millisecond, 14},
		{time.Hour, 20},
	}
	for _, s := range steps {
		clock.Advance(s.advance)
		require.Equal(t, s.want, y.Available(), "after %v", clock.Now().Sub(start))
	}

	// Entries appended later are served like the backlog.
	w := walk(t, y, srv, "", 6)
	served := 0
	for _, p := range w.pages {
		served += len(p.Events)
	}
	require.Equal(t, 20, served)
}

func TestSetRate(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	start := clock.Now()
	y, err := NewYandex(YandexConfig{Seed: 30, Backlog: 2, Rate: 1, Now: clock.Now})
	require.NoError(t, err)
	require.Equal(t, -1, y.Total())

	clock.Advance(3 * time.Second)
	require.Equal(t, 5, y.Available())
	y.SetRate(0)
	clock.Advance(time.Hour)
	require.Equal(t, 5, y.Available(), "a zero rate freezes the journal")
	require.True(t, y.AppearedAt(5).IsZero())

	y.SetRate(100)
	require.Equal(t, 5, y.Available())
	clock.Advance(time.Second)
	require.Equal(t, 105, y.Available())
	resumed := start.Add(3*time.Second + time.Hour)
	require.Equal(t, start.Add(time.Second), y.AppearedAt(2))
	require.Equal(t, start.Add(3*time.Second), y.AppearedAt(4))
	require.Equal(t, resumed.Add(10*time.Millisecond), y.AppearedAt(5))
	require.Equal(t, resumed.Add(time.Second), y.AppearedAt(104))
	require.Equal(t, resumed.Add(1010*time.Millisecond), y.AppearedAt(105), "future entries are predicted")

	for _, i := range []int{0, 4, 5, 50, 104} {
		at := y.AppearedAt(i)
		require.False(t, at.After(clock.Now()), "entry %d is available, so it appeared by now", i)
	}
	require.Panics(t, func() { y.SetRate(-1) })
}

func TestAvailableNeverShrinks(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	y, err := NewYandex(YandexConfig{Seed: 31, Backlog: 0, Rate: 10, Now: clock.Now})
	require.NoError(t, err)
	clock.Advance(time.Second)
	require.Equal(t, 10, y.Available())
	clock.Advance(-time.Minute)
	require.Equal(t, 10, y.Available(), "a clock stepping back must not invalidate cursors")
}

func TestAccessorsPanicOutOfRange(t *testing.T) {
	t.Parallel()
	y, err := NewYandex(YandexConfig{Seed: 32, Backlog: 3})
	require.NoError(t, err)
	require.Panics(t, func() { y.Entry(3) })
	require.Panics(t, func() { y.Entry(-1) })
	require.Panics(t, func() { y.EntryJSON(3) })
	require.Panics(t, func() { y.CursorAfter(4) })
	require.Panics(t, func() { y.AppearedAt(-1) })
	require.NotPanics(t, func() { y.CursorAfter(3) })
	require.Empty(t, y.LastCursor())
}

func TestConcurrentClients(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	y, srv := newServer(t, YandexConfig{Seed: 33, Backlog: 1_000, Rate: 1_000, MaxEntries: 2_000,
		ReplayRate: 0.2, Now: clock.Now})
	const walkers = 3
	errs := make(chan error, walkers+1)
	for range walkers {
		go func() {
			var cursor *string
			next := 0
			for attempts := 0; next < 2_000; attempts++ {
				if attempts > 100_000 {
					errs <- errors.New("walker made no progress")
					return
				}
				resp, err := send(srv, request{cursor: cursor, limit: "300"})
				if err != nil {
					errs <- err
					return
				}
				var p page
				err = json.NewDecoder(resp.Body).Decode(&p)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					continue // an injected fault; retry
				}
				for _, ev := range p.Events {
					var e struct {
						OperationID int64 `json:"operation_id"`
					}
					if err := json.Unmarshal(ev, &e); err != nil {
						errs <- err
						return
					}
					if e.OperationID == y.Entry(next).OperationID {
						next++
					}
				}
				c := p.Cursor
				cursor = &c
			}
			errs <- nil
		}()
	}
	go func() {
		// Time, rate and faults change while the walkers read.
		for k := range 100 {
			clock.Advance(10 * time.Millisecond)
			y.SetRate(float64(500 + k))
			y.Inject(Fault{Kind: FaultTooManyRequests})
			_ = y.Available()
			_ = y.LastCursor()
		}
		y.SetRate(1_000_000)
		clock.Advance(time.Hour)
		errs <- nil
	}()
	for range walkers + 1 {
		require.NoError(t, <-errs)
	}
	require.Equal(t, 2_000, y.Available())
	require.GreaterOrEqual(t, y.Served(), int64(walkers*2_000))
}
