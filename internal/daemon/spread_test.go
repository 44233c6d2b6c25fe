package daemon_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/sim"
)

// TestInstancesShareTheSources runs three instances on one sources file of
// twelve Yandex accounts (thirteen sources with the settings' own): each
// holds its share (max − min ≤ 1); when one stops, the other two take its
// sources over; every account's events reach Kafka once.
func TestInstancesShareTheSources(t *testing.T) {
	t.Parallel()
	const (
		accounts = 12
		journal  = 300
	)
	s := newStack(t, sim.YandexConfig{Seed: 70, Backlog: journal, Rate: 50, MaxEntries: journal})
	s.cfg.Lease.TTL = 2 * time.Second
	s.cfg.Kafka.WriteTimeout = time.Second
	dir := t.TempDir()
	sims := map[string]*sim.Yandex{"default": s.sim}
	var doc strings.Builder
	doc.WriteString("sources:\n")
	for i := range accounts {
		account := fmt.Sprintf("shop-%02d", i)
		// Each journal grows for a while, so that sources are mid-stream
		// when they move between instances.
		y, err := sim.NewYandex(sim.YandexConfig{Seed: int64(71 + i), Token: "tok", Backlog: 20, Rate: 50, MaxEntries: journal})
		require.NoError(t, err)
		sims[account] = y
		fmt.Fprintf(&doc, "  - provider: yandex\n    account: %s\n    token_env: TOKEN\n    base_url: %s\n    poll_interval: 50ms\n", account, serve(t, y))
	}
	s.cfg.Getenv = func(k string) string {
		if k == "TOKEN" {
			return "tok"
		}
		return ""
	}
	s.cfg.SourcesFile = filepath.Join(dir, "sources.yaml")
	require.NoError(t, os.WriteFile(s.cfg.SourcesFile, []byte(doc.String()), 0o600))

	instances := map[string]*running{}
	for _, id := range []string{"a", "b", "c"} {
		cfg := s.cfg
		cfg.Lease.Holder = id
		instances[id] = s.startWith(t, cfg)
	}
	held := func(ids ...string) map[string]int {
		out := map[string]int{}
		for _, id := range ids {
			out[id] = int(metric(t, instances[id], "ingestd_sources_held", nil))
		}
		return out
	}
	spread := func(want int, ids ...string) func() bool {
		return func() bool {
			h := held(ids...)
			lo, hi, total := accounts+1, 0, 0
			for _, n := range h {
				lo, hi, total = min(lo, n), max(hi, n), total+n
			}
			return total == want && hi-lo <= 1
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for !spread(accounts+1, "a", "b", "c")() {
		if time.Now().After(deadline) {
			t.Fatalf("the three did not share the sources: held %v, live %v", held("a", "b", "c"),
				[]float64{metric(t, instances["a"], "ingestd_instances_live", nil), metric(t, instances["b"], "ingestd_instances_live", nil), metric(t, instances["c"], "ingestd_instances_live", nil)})
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("held with three instances: %v", held("a", "b", "c"))

	instances["a"].stop(t)
	require.Eventually(t, spread(accounts+1, "b", "c"), 60*time.Second, 50*time.Millisecond, "the other two take a's sources over")
	t.Logf("held with two instances: %v", held("b", "c"))

	ctx := context.Background()
	for account, y := range sims {
		require.Eventually(t, func() bool {
			st, err := s.store.Cursors.Source(ctx, "yandex/"+account)
			return err == nil && st.Cursor == y.CursorAfter(journal)
		}, 90*time.Second, 50*time.Millisecond, "yandex/%s walks its journal", account)
	}
	perSource := s.eventsPerSource(t)
	for account := range sims {
		require.Equal(t, journal, perSource["yandex/"+account], "events of yandex/%s", account)
	}
}
