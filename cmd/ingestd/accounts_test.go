package main

import (
	"context"
	"fmt"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/sim"
	"github.com/ingestd/ingestd/internal/watchlist"
)

// TestManyAccountsOnThreeInstances is issue 12's acceptance at its scale:
// three ingestd processes run one sources file of 20 Yandex accounts and 3
// BTS logins (plus the Yandex account of the INGESTD_YANDEX_* settings),
// every account served by one simulator address as the real APIs do. The
// journal sources spread within one of each other; one instance is
// SIGKILLed mid-stream and the other two take its sources over; every
// event of every account reaches Kafka exactly once, in per-key order, and
// every BTS order reaches its final status.
func TestManyAccountsOnThreeInstances(t *testing.T) {
	t.Parallel()
	const (
		yandexAccounts = 20
		btsAccounts    = 3
		journal        = 450 // entries of each account's journal
		orders         = 40  // orders of each BTS account
		speed          = 27000
		defaultJournal = 100
	)
	s := newProcStack(t, sim.YandexConfig{Seed: 200, Backlog: defaultJournal})
	dir := t.TempDir()

	// The Yandex accounts' journals grow while the instances run (for
	// about 30 s, long against the spread even on a loaded machine), so
	// that sources are mid-stream when one instance dies.
	yandexSims := map[string]*sim.Yandex{"default": s.sim}
	var ys []*sim.Yandex
	var doc strings.Builder
	doc.WriteString("sources:\n")
	for i := range yandexAccounts {
		account := fmt.Sprintf("shop-%02d", i)
		token := "tok-" + account
		y, err := sim.NewYandex(sim.YandexConfig{Seed: int64(201 + i), Token: token, Backlog: 30, Rate: 14, MaxEntries: journal})
		require.NoError(t, err)
		yandexSims[account] = y
		ys = append(ys, y)
		tokenFile := filepath.Join(dir, account+"-token")
		require.NoError(t, os.WriteFile(tokenFile, []byte(token+"\n"), 0o600))
		fmt.Fprintf(&doc, "  - provider: yandex\n    account: %s\n    token_file: %s\n    base_url: {{yandex}}\n    page_limit: 50\n    poll_interval: 50ms\n", account, tokenFile)
	}
	yandexSrv, err := sim.NewYandexAccounts(ys...)
	require.NoError(t, err)
	ysrv := httptest.NewServer(yandexSrv)
	t.Cleanup(ysrv.Close)

	iv, err := bts.ParseIntervals("100=6h,800=4h,1100=1h,default=6h")
	require.NoError(t, err)
	btsSims := map[string]*sim.BTS{}
	var bs []*sim.BTS
	var env []string
	ctx := context.Background()
	for i := range btsAccounts {
		account := fmt.Sprintf("region-%d", i)
		login, password := "login-"+account, "pw-"+account
		// Distinct order ids: BTS events are keyed by order id.
		b, err := sim.NewBTS(sim.BTSConfig{Seed: int64(20 + i), Login: login, Password: password, Orders: orders, Speed: speed, FirstOrderID: int64(4_600_000 + 10_000*i), TokenTTL: time.Hour})
		require.NoError(t, err)
		btsSims[account] = b
		bs = append(bs, b)
		upper := strings.ToUpper(strings.ReplaceAll(account, "-", "_"))
		env = append(env, "BTS_"+upper+"_LOGIN="+login, "BTS_"+upper+"_PASSWORD="+password)
		fmt.Fprintf(&doc, "  - provider: bts\n    account: %s\n    login_env: BTS_%s_LOGIN\n    password_env: BTS_%s_PASSWORD\n    base_url: {{bts}}\n    rate: 300\n    concurrency: 4\n    poll_intervals: %q\n",
			account, upper, upper, iv.Scaled(speed).String())
		_, err = s.store.Watchlist.Track(ctx, bts.SourceID(account), b.Orders())
		require.NoError(t, err)
	}
	btsSrv, err := sim.NewBTSAccounts(bs...)
	require.NoError(t, err)
	bsrv := httptest.NewServer(btsSrv)
	t.Cleanup(bsrv.Close)

	sourcesFile := filepath.Join(dir, "sources.yaml")
	content := strings.NewReplacer("{{yandex}}", ysrv.URL, "{{bts}}", bsrv.URL).Replace(doc.String())
	require.NoError(t, os.WriteFile(sourcesFile, []byte(content), 0o600))
	env = append(env, "INGESTD_SOURCES_FILE="+sourcesFile, "INGESTD_BTS_IDLE_POLL=50ms")

	instances := map[string]*proc{}
	for _, id := range []string{"a", "b", "c"} {
		instances[id] = s.spawn(t, id, env...)
	}
	const journalSources = yandexAccounts + 1
	// sourceHolders counts the journal sources' live leases per instance.
	sourceHolders := func() map[string]int {
		ls, err := s.store.Leases.List(ctx)
		require.NoError(t, err)
		out := map[string]int{}
		for _, l := range ls {
			if l.Live && strings.HasPrefix(l.Name, "source:") {
				out[l.Holder]++
			}
		}
		return out
	}
	spreadOver := func(ids ...string) func() bool {
		return func() bool {
			h := sourceHolders()
			lo, hi, total := journalSources, 0, 0
			for _, id := range ids {
				lo, hi, total = min(lo, h[id]), max(hi, h[id]), total+h[id]
			}
			return total == journalSources && hi-lo <= 1
		}
	}
	waitFor := func(cond func() bool, within time.Duration, what string) {
		t.Helper()
		deadline := time.Now().Add(within)
		for !cond() {
			if time.Now().After(deadline) {
				var logs strings.Builder
				for _, id := range slices.Sorted(maps.Keys(instances)) {
					fmt.Fprintf(&logs, "--- %s\n%s\n", id, instances[id].Log().String())
				}
				t.Fatalf("%s within %s: holders %v\n%s", what, within, sourceHolders(), logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor(spreadOver("a", "b", "c"), 60*time.Second, "the three share the journal sources")
	t.Logf("journal sources held by three instances: %v", sourceHolders())

	// Killed while journals still grow: its sources continue on the others.
	behind := 0
	for account, y := range yandexSims {
		st, err := s.store.Cursors.Source(ctx, "yandex/"+account)
		require.NoError(t, err)
		if st.Cursor != y.CursorAfter(y.Total()) {
			behind++
		}
	}
	require.Positive(t, behind, "the kill comes mid-stream")
	t.Logf("at the kill, %d of %d journals are still being read", behind, journalSources)
	require.NoError(t, instances["a"].Signal(syscall.SIGKILL))
	require.True(t, killedBySIGKILL(instances["a"].waitExit(t, 10*time.Second)))
	delete(instances, "a")
	waitFor(spreadOver("b", "c"), 60*time.Second, "b and c take a's sources over")
	t.Logf("journal sources held by two instances after the kill: %v", sourceHolders())

	for account, y := range yandexSims {
		n := journal
		if account == "default" {
			n = defaultJournal
		}
		waitFor(func() bool {
			st, err := s.store.Cursors.Source(ctx, "yandex/"+account)
			return err == nil && st.Cursor == y.CursorAfter(n)
		}, 120*time.Second, "yandex/"+account+" walks its whole journal")
	}
	for account := range btsSims {
		waitFor(func() bool {
			c, err := s.store.Watchlist.Count(ctx, bts.SourceID(account))
			return err == nil && c[watchlist.Active] == 0
		}, 120*time.Second, "every order of bts/"+account+" reaches its final status")
	}
	waitFor(func() bool {
		b, err := s.store.Outbox.Backlog(ctx)
		return err == nil && b.Rows == 0
	}, 60*time.Second, "the outbox drains")
	for _, p := range instances {
		require.NoError(t, p.Signal(syscall.SIGTERM))
		require.NoError(t, p.waitExit(t, 30*time.Second))
	}

	stats, err := s.store.Outbox.Stats(ctx)
	require.NoError(t, err)
	recs := s.kafka.ReadTopic(t, "delivery.status-changes", int(stats.Rows), 60*time.Second)
	require.Len(t, recs, int(stats.Rows), "every outbox row reached Kafka once")

	ids := map[string]bool{}
	revisions := map[string][]int64{}       // ce_source + key -> Yandex revisions in topic order
	btsEvents := map[string][]event.Event{} // order id -> BTS events in topic order
	btsSourceOf := map[string]string{}
	perSource := map[string]int{}
	for _, r := range recs {
		id := r.Header("ce_id")
		require.False(t, ids[id], "duplicate %s", id)
		ids[id] = true
		src := r.Header("ce_source")
		perSource[src]++
		ev, err := event.ParsePayload(r.Value)
		require.NoError(t, err)
		if ev.Provider == event.ProviderYandex {
			k := src + " " + r.Key
			revisions[k] = append(revisions[k], ev.Revision)
			continue
		}
		btsEvents[ev.OrderID] = append(btsEvents[ev.OrderID], ev)
		btsSourceOf[ev.OrderID] = src
	}
	for account, y := range yandexSims {
		n := journal
		if account == "default" {
			n = defaultJournal
		}
		src := "/ingestd/yandex/" + account
		require.Equal(t, n, perSource[src], "events of yandex/%s", account)
		want := map[string][]int64{}
		for i := range n {
			e := y.Entry(i)
			k := src + " yandex:" + e.ClaimID
			want[k] = append(want[k], e.Revision)
		}
		for k, revs := range want {
			require.Equal(t, revs, revisions[k], "per-key order of %s", k)
		}
	}
	for account, b := range btsSims {
		for _, id := range b.Orders() {
			evs := btsEvents[id]
			require.NotEmpty(t, evs, "order %s of bts/%s", id, account)
			require.Equal(t, "/ingestd/bts/"+account, btsSourceOf[id])
			codes := make([]int, len(evs))
			for i, ev := range evs {
				require.Equal(t, int64(i+1), ev.Revision, "order %s: revisions count changes in order", id)
				code, err := strconv.Atoi(ev.ProviderStatus)
				require.NoError(t, err)
				codes[i] = code
			}
			require.NoError(t, b.CheckObserved(id, codes))
			require.True(t, evs[len(evs)-1].Terminal, "order %s ends with its terminal status", id)
		}
	}
	require.Len(t, btsEvents, btsAccounts*orders, "events only of tracked orders")
}
