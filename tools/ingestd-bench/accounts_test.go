package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/child"
	"github.com/ingestd/ingestd/internal/sim"
)

// TestRunAccounts runs the many-accounts scenario with tiny numbers (5
// quiet accounts, a backlog of 5,000, two instances, short windows; the
// single-account baseline runs one) through the real binary, PostgreSQL and the in-process broker,
// and checks that every figure is there and plausible: the table must not
// rot, and no figure may be a placeholder.
func TestRunAccounts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds ingestd and runs it against PostgreSQL and an in-process broker")
	}
	// Built before the deadline starts, as in TestRunSmoke.
	bin, remove, err := child.Build(t.Context(), child.IngestdPackage, buildFlags()...)
	require.NoError(t, err)
	t.Cleanup(remove)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	// 20 entries a second per quiet account, so that some appear while the
	// small backlog drains; a short poll interval keeps the windows short.
	err = run(ctx, []string{"--ingestd-bin", bin, "--json", "--events", "1000", "--fresh-duration", "0", "--poll-interval", "500ms",
		"--accounts", "5", "--accounts-rate", "20", "--accounts-backlog", "5000", "--accounts-instances", "2",
		"--accounts-steady", "1s", "--accounts-idle", "2s"}, &stdout, &stderr)
	require.NoError(t, err, "stderr:\n%s\nstdout:\n%s", stderr.String(), stdout.String())
	var rep report
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &rep), stdout.String())
	var table strings.Builder
	require.NoError(t, rep.writeTable(&table))
	t.Logf("took %v\n%s", time.Since(start).Round(time.Millisecond), table.String())

	a := rep.Accounts
	require.NotNil(t, a)
	require.Equal(t, 5, a.Quiet)
	require.Equal(t, 5000, a.Backlog)
	require.Equal(t, accountsPoolMax, a.PoolMaxConns)
	require.True(t, a.OwnDatabase, "the local server lets the harness create databases")
	requireDrained(t, a.Baseline, 1, 1)
	require.Nil(t, a.Baseline.Idle, "the baseline has no quiet accounts to idle")
	require.Len(t, a.Runs, 1)
	for _, r := range a.Runs {
		n := 2
		requireDrained(t, r, n, 6)
		require.InDelta(t, r.BigEventsPerSec/a.Baseline.BigEventsPerSec, r.BigRatio, 1e-9)
		for _, l := range []latency{r.QuietSteady, r.QuietDrain} {
			require.Positive(t, l.Events, "%d instance(s)", n)
			require.Positive(t, l.P50Ms)
			require.GreaterOrEqual(t, l.P99Ms, l.P50Ms)
			require.GreaterOrEqual(t, l.MaxMs, l.P99Ms)
			require.Less(t, l.MaxMs, 60_000.0)
		}
		require.Len(t, r.Goroutines, n)
		for _, g := range r.Goroutines {
			require.Greater(t, g, 10, "every instance runs more than a few goroutines")
		}

		// Idle: six sources polled every half second, no cursor written
		// while they stay; one history row per change once they move. An
		// unchanged window of 2s may see no WAL at all: the leases are
		// renewed together, every 5s.
		for _, c := range []*idleCost{r.Idle, r.IdleChanged} {
			require.NotNil(t, c)
			require.InDelta(t, 2, c.Seconds, 1)
			require.InDelta(t, 12, c.PollsPerSec, 6, "6 sources every 500ms")
			require.Positive(t, c.Xacts, "every poll checks the outbox backlog")
			require.True(t, c.XactsOwn)
			require.NotNil(t, c.WAL, "pg_walinspect reads the WAL back")
			require.LessOrEqual(t, c.WAL.Bytes, c.WALServerBytes)
			require.InDelta(t, float64(c.WAL.Bytes)/float64(c.Polls), c.WAL.BytesPerPoll, 1e-9)
		}
		require.Positive(t, r.IdleChanged.WAL.Bytes)
		require.Positive(t, r.IdleChanged.WAL.Tables["leases"].Records, "every commit locks its lease row")
		require.Positive(t, r.IdleChanged.WAL.Tables[commitRecords].Records)
		require.Zero(t, r.Idle.WAL.rowWrites("source_cursors", r.Idle.Polls), "an unchanged cursor is not written")
		require.Zero(t, r.Idle.WAL.rowWrites("cursor_history", r.Idle.Polls))
		mean, most, ok := r.IdleChanged.WAL.historyPerChange()
		require.True(t, ok, "every poll changed a cursor")
		require.InDelta(t, 1, mean, 0.1)
		require.Equal(t, int64(1), most)
		require.InDelta(t, 1, r.IdleChanged.WAL.rowWrites("source_cursors", r.IdleChanged.Polls), 0.5)
	}

	// Every target of the scenario has a verdict, per run.
	names := map[string]int{}
	for _, tg := range rep.Targets {
		if strings.HasPrefix(tg.Name, "accounts: ") {
			require.Equal(t, 2, tg.Instances, tg.Name)
			names[tg.Name]++
		}
	}
	for _, name := range []string{tgtQuietP99, tgtBacklogRatio, tgtRSS, tgtConns, tgtIdleStill, tgtIdleChanged} {
		require.Equal(t, 1, names[name], name)
	}
	require.True(t, targetPassed(rep.Targets, tgtIdleStill), "no cursor row written on an unchanged empty page")
	require.True(t, targetPassed(rep.Targets, tgtIdleChanged))
	require.True(t, targetPassed(rep.Targets, tgtConns))

	// The table shows them.
	tbl := table.String()
	for _, label := range []string{
		"quiet accounts while the backlog drains: freshness p99 (ms)", "backlog account: catch-up ÷ single account",
		"ingestd peak RSS (MiB; largest instance)", "PostgreSQL connections (peak per instance; all at once)",
		"idle, unchanged cursors: rows written per poll: cursors / history",
		"idle, new cursor per empty page: history rows per cursor change (most in one transaction)",
	} {
		cells := rowCells(t, tbl, label)
		require.Len(t, cells, 3, "%q: the run, the target and the verdict", label)
		require.Contains(t, []string{"PASS", "MISS"}, cells[2], label)
	}
	require.Equal(t, []string{"0 / 0 / 0", "0 / 0 / 0", "OK"}, rowCells(t, tbl, "check: missing / duplicate / unmatched events"))
	require.Equal(t, []string{"3/3"}, rowCells(t, tbl, "sources held per instance"))
	// Six sources may commit without ever waiting for each other.
	require.Regexp(t, `^(none|.+ \(\d+%\))$`, rowCells(t, tbl, "while draining, statement most often waiting for a lock (share)")[0])
}

// requireDrained checks the figures every run has, the baseline's too.
func requireDrained(t *testing.T, r accountsRun, instances, sources int) {
	t.Helper()
	require.Equal(t, instances, r.Instances)
	require.Equal(t, sources, r.Sources)
	require.Len(t, r.Held, instances)
	sum := 0
	for _, h := range r.Held {
		sum += h
	}
	require.Equal(t, sources, sum, "every source held once the spread settled")
	require.Positive(t, r.SpreadSeconds)
	require.Positive(t, r.BigEventsPerSec)
	require.Positive(t, r.BigSeconds)
	require.Positive(t, r.PublishedPerSec)
	require.Positive(t, r.PublishWriteShare)
	require.Less(t, r.PublishWriteShare, 1.5, "one write at a time, a little over the catch-up at most")
	require.GreaterOrEqual(t, r.BigInstance, 1)
	require.LessOrEqual(t, r.BigInstance, instances)
	require.GreaterOrEqual(t, r.PublisherInstance, 1)
	require.LessOrEqual(t, r.PublisherInstance, instances)
	require.Len(t, r.PeakRSSMiB, instances)
	for _, m := range r.PeakRSSMiB {
		require.Greater(t, m, 5.0)
		require.Less(t, m, 1024.0)
	}
	require.Len(t, r.PGConns, instances)
	for _, c := range r.PGConns {
		require.Positive(t, c)
		require.LessOrEqual(t, c, accountsPoolMax)
	}
	require.GreaterOrEqual(t, r.PGConnsTotal, maxOf(r.PGConns))
	require.LessOrEqual(t, r.PGConnsTotal, accountsPoolMax*instances)
	c := r.PGConnsDraining
	require.Positive(t, c.LockWait+c.WALWait+c.Active+c.IdleInTx+c.Idle, "the pools hold connections while the backlog drains")
	require.LessOrEqual(t, c.LockWait+c.WALWait+c.Active+c.IdleInTx+c.Idle, float64(r.PGConnsTotal))
	require.Positive(t, r.CPUSeconds)
	require.Zero(t, r.Missing)
	require.Zero(t, r.Duplicates)
	require.Zero(t, r.Unmatched)
}

func targetPassed(ts []target, name string) bool {
	seen := false
	for _, tg := range ts {
		if tg.Name == name {
			if !tg.Pass {
				return false
			}
			seen = true
		}
	}
	return seen
}

// TestAccountsHandlerBumpsEmptyPages checks the cursor wrapper of the idle
// window on the simulator itself: an empty page carries a new cursor each
// time, and a request with such a cursor reaches the simulator with the
// cursor it issued.
func TestAccountsHandlerBumpsEmptyPages(t *testing.T) {
	y, err := sim.NewYandex(sim.YandexConfig{Seed: 1, Token: "t", Backlog: 2})
	require.NoError(t, err)
	h := newAccountsHandler(y, "other")
	srv := httptest.NewServer(h)
	defer srv.Close()
	page := func(cursor string) (string, int) {
		t.Helper()
		body := `{}`
		if cursor != "" {
			b, err := json.Marshal(map[string]string{"cursor": cursor})
			require.NoError(t, err)
			body = string(b)
		}
		req, err := http.NewRequest(http.MethodPost, srv.URL+sim.YandexJournalPath, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer t")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer func() { _ = resp.Body.Close() }()
		raw, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
		var p struct {
			Cursor string            `json:"cursor"`
			Events []json.RawMessage `json:"events"`
		}
		require.NoError(t, json.Unmarshal(raw, &p), string(raw))
		return p.Cursor, len(p.Events)
	}

	c0, n := page("")
	require.Equal(t, 2, n)
	c1, n := page(c0)
	require.Zero(t, n)
	require.Equal(t, c0, c1, "the simulator repeats the cursor of an empty page")

	h.bumpCursors()
	c2, n := page(c1)
	require.Zero(t, n)
	require.Equal(t, c0+bumpMark+"1", c2)
	c3, n := page(c2)
	require.Zero(t, n, "the bumped cursor is accepted")
	require.Equal(t, c0+bumpMark+"2", c3)
	_, ok := h.firstBig()
	require.False(t, ok, "the big account's token was never seen")
}

func TestParseLSN(t *testing.T) {
	for in, want := range map[string]uint64{"0/0": 0, "0/950A808": 0x950A808, "1/0": 1 << 32, "A/FF": 10<<32 | 0xFF} {
		got, err := parseLSN(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "0", "x/1", "1/2/3", "100000000/0"} {
		_, err := parseLSN(in)
		require.Error(t, err, in)
	}
}

func TestScrapeSeriesKeepsLabels(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `# TYPE ingestd_lease_holder gauge
ingestd_lease_holder{lease="publisher"} 1
ingestd_lease_holder{lease="source:yandex/backlog"} 0
ingestd_events_published_total{source="yandex/a"} 3
ingestd_events_published_total{source="yandex/b"} 4
go_goroutines 12
`)
	}))
	defer srv.Close()
	s, err := scrapeSeries(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
	require.NoError(t, err)
	require.Equal(t, 1.0, s[`ingestd_lease_holder{lease="publisher"}`])
	require.Equal(t, 12.0, s["go_goroutines"])
	all := []series{s, {`ingestd_lease_holder{lease="source:yandex/backlog"}`: 1, "ingestd_events_published_total": 5}}
	require.Equal(t, 1, holderOf(all, "publisher"))
	require.Equal(t, 2, holderOf(all, "source:yandex/backlog"))
	require.Equal(t, 0, holderOf(all, "source:yandex/none"))
	require.Equal(t, 12.0, sumOf(all, "ingestd_events_published_total"), "every label set of every instance")
	require.Equal(t, 12.0, sumOf(all, "go_goroutines"))
}

func TestWALBreakdownPerChange(t *testing.T) {
	w := &walBreakdown{Tables: map[string]*tableWAL{
		"source_cursors": {RowWrites: 100, Bytes: 15_000},
		"cursor_history": {RowWrites: 99, Bytes: 35_000},
		"leases":         {RowWrites: 40, Bytes: 4_000},
	}, MaxHistoryPerXact: 1}
	mean, most, ok := w.historyPerChange()
	require.True(t, ok)
	require.InDelta(t, 0.99, mean, 1e-9)
	require.Equal(t, int64(1), most)
	require.InDelta(t, 500, w.bytesPerPoll(100, "source_cursors", "cursor_history"), 1e-9)
	require.InDelta(t, 0.4, w.rowWrites("leases", 100), 1e-9)
	require.Zero(t, w.rowWrites("instances", 100))
	_, _, ok = (&walBreakdown{Tables: map[string]*tableWAL{}}).historyPerChange()
	require.False(t, ok, "no cursor changed")
	for typ, want := range map[string]bool{"INSERT": true, "INSERT+INIT": true, "HOT_UPDATE": true, "UPDATE": true, "DELETE": true, "LOCK": false, "PRUNE": false} {
		require.Equal(t, want, isRowWrite(typ), typ)
	}
}
