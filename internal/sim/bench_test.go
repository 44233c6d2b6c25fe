package sim

import (
	"bytes"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// retainedBytesPerEntry generates n entries and reports the heap they retain.
func retainedBytesPerEntry(tb testing.TB, n int) float64 {
	tb.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	y, err := NewYandex(YandexConfig{Seed: 99, Backlog: n})
	require.NoError(tb, err)
	_ = y.EntryJSON(n - 1) // generates the whole journal
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(y)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// TestMillionEntriesFitMemoryBudget is deliberately not parallel: heap
// measurements are only meaningful while no other test allocates, and the
// testing package runs serial tests before resuming the parallel ones.
func TestMillionEntriesFitMemoryBudget(t *testing.T) {
	const n = 1_000_000
	perEntry := retainedBytesPerEntry(t, n)
	t.Logf("1,000,000 entries retain %.1f bytes/entry", perEntry)
	require.Less(t, perEntry, 150.0)
}

// discardWriter is a ResponseWriter that only counts bytes, so benchmarks
// measure the handler rather than a recorder.
type discardWriter struct {
	header http.Header
	n      int
	status int
}

func (w *discardWriter) Header() http.Header         { return w.header }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }
func (w *discardWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }

// BenchmarkServePage measures the handler alone serving full 1000-entry
// pages; entries/s is the figure that must stay far above what a consumer
// wants (200k+/s).
func BenchmarkServePage(b *testing.B) {
	const backlog = 200_000
	y, err := NewYandex(YandexConfig{Seed: 100, Backlog: backlog})
	require.NoError(b, err)
	_ = y.EntryJSON(backlog - 1)
	cursors := make([]string, 0, backlog/1000)
	for n := 0; n < backlog; n += 1000 {
		cursors = append(cursors, y.CursorAfter(n))
	}
	w := &discardWriter{header: http.Header{}}
	body := &bytes.Reader{}
	b.ReportAllocs()
	b.ResetTimer()
	bytesOut := 0
	for i := 0; b.Loop(); i++ {
		body.Reset([]byte(`{"cursor":"` + cursors[i%len(cursors)] + `"}`))
		req, _ := http.NewRequest(http.MethodPost, YandexJournalPath+"?limit=1000", body)
		w.n, w.status = 0, 0
		y.ServeHTTP(w, req)
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
		bytesOut += w.n
	}
	b.ReportMetric(float64(y.Served())/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(float64(bytesOut)/float64(y.Served()), "bytes/entry")
}

// BenchmarkServePageLoopback measures whole HTTP round trips over loopback,
// including reading the body on the client side.
func BenchmarkServePageLoopback(b *testing.B) {
	const backlog = 200_000
	y, srv := newServer(b, YandexConfig{Seed: 101, Backlog: backlog})
	_ = y.EntryJSON(backlog - 1)
	client := srv.Client()
	url := srv.URL + YandexJournalPath + "?limit=1000"
	cursor := y.CursorAfter(0)
	buf := make([]byte, 0, 1<<20)
	b.ResetTimer()
	for b.Loop() {
		resp, err := client.Post(url, "application/json", strings.NewReader(`{"cursor":"`+cursor+`"}`))
		if err != nil {
			b.Fatal(err)
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := resp.Body.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		resp.Body.Close()
		// The next cursor sits in the response; parsing the page is the
		// client's cost, so it is found by position instead.
		end := bytes.IndexByte(buf[len(`{"cursor":"`):], '"')
		cursor = strings.ReplaceAll(string(buf[len(`{"cursor":"`):len(`{"cursor":"`)+end]), `\/`, "/")
		if cursor == y.CursorAfter(backlog) {
			cursor = y.CursorAfter(0)
		}
	}
	b.ReportMetric(float64(y.Served())/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkGenerate measures journal generation and its retained memory.
func BenchmarkGenerate(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			var perEntry float64
			for b.Loop() {
				perEntry = retainedBytesPerEntry(b, n)
			}
			b.ReportMetric(perEntry, "retained-bytes/entry")
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
