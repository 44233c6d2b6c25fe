package daemon_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
)

// writeAtomically replaces path as Kubernetes and careful editors do: the
// new content appears at once, never half written.
func writeAtomically(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(content), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// TestSourcesFileReload changes the sources file and a secret file while
// the daemon runs: an added source starts (with a wrong token it cannot
// read, then with the rotated right one), a changed source restarts, a
// broken file changes nothing and is counted, a removed source stops and
// releases its lease; and every account's events reach Kafka once. The
// status API (GET /v1/sources) shows each step.
func TestSourcesFileReload(t *testing.T) {
	t.Parallel()
	const journal = 800
	s := newStack(t, sim.YandexConfig{Seed: 51, Backlog: journal})
	dir := t.TempDir()
	sims := map[string]*sim.Yandex{}
	urls := map[string]string{}
	for i, account := range []string{"shop-a", "shop-b"} {
		y, err := sim.NewYandex(sim.YandexConfig{Seed: int64(52 + i), Token: "tok-" + account, Backlog: journal})
		require.NoError(t, err)
		sims[account], urls[account] = y, serve(t, y)
		writeAtomically(t, filepath.Join(dir, account+"-token"), "tok-"+account+"\n")
	}
	source := func(account, extra string) string {
		return fmt.Sprintf("  - provider: yandex\n    account: %s\n    token_file: %s\n    base_url: %s\n%s", account, filepath.Join(dir, account+"-token"), urls[account], extra)
	}
	s.cfg.SourcesFile = filepath.Join(dir, "sources.yaml")
	writeAtomically(t, s.cfg.SourcesFile, "sources:\n"+source("shop-a", ""))
	s.cfg.AdminToken = secret.New("admin-token")
	r := s.start(t)
	ctx := context.Background()
	listed := func() []string {
		var ids []string
		for id := range sourcesAPI(t, r) {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return ids
	}

	atEnd := func(account string) func() bool {
		return func() bool {
			st, err := s.store.Cursors.Source(ctx, "yandex/"+account)
			return err == nil && st.Cursor == sims[account].CursorAfter(journal)
		}
	}
	leases := func() map[string]struct {
		live  bool
		epoch int64
	} {
		ls, err := s.store.Leases.List(ctx)
		require.NoError(t, err)
		out := map[string]struct {
			live  bool
			epoch int64
		}{}
		for _, l := range ls {
			out[l.Name] = struct {
				live  bool
				epoch int64
			}{l.Live, l.Epoch}
		}
		return out
	}
	require.Eventually(t, atEnd("shop-a"), 60*time.Second, 20*time.Millisecond)
	require.Equal(t, []string{"yandex/default", "yandex/shop-a"}, listed())

	// Added, with a token the upstream refuses: it starts but cannot read.
	writeAtomically(t, filepath.Join(dir, "shop-b-token"), "not-the-token\n")
	writeAtomically(t, s.cfg.SourcesFile, "sources:\n"+source("shop-a", "")+source("shop-b", ""))
	require.Eventually(t, func() bool { return leases()["source:yandex/shop-b"].live }, 30*time.Second, 20*time.Millisecond, "the added source runs")
	require.Eventually(t, func() bool {
		return metric(t, r, "ingestd_upstream_requests_total", map[string]string{"source": "yandex/shop-b"}) > 0
	}, 30*time.Second, 20*time.Millisecond)
	st, err := s.store.Cursors.Source(ctx, "yandex/shop-b")
	require.NoError(t, err)
	require.Zero(t, st.EventsTotal, "nothing read with the wrong token")
	b := sourcesAPI(t, r)["yandex/shop-b"]
	require.Equal(t, s.cfg.Lease.Holder, b.Instance, "the status API shows the added source running")
	require.Zero(t, b.EventsIngested)

	// The token is rotated in its file: the source restarts with it.
	writeAtomically(t, filepath.Join(dir, "shop-b-token"), "tok-shop-b\n")
	require.Eventually(t, atEnd("shop-b"), 60*time.Second, 20*time.Millisecond, "the rotated token is used")
	b = sourcesAPI(t, r)["yandex/shop-b"]
	require.EqualValues(t, journal, b.EventsIngested)
	require.Equal(t, sims["shop-b"].CursorAfter(journal), b.Cursor)

	// A changed source restarts: its lease is taken again.
	before := leases()["source:yandex/shop-a"].epoch
	writeAtomically(t, s.cfg.SourcesFile, "sources:\n"+source("shop-a", "    page_limit: 100\n")+source("shop-b", ""))
	require.Eventually(t, func() bool {
		l := leases()["source:yandex/shop-a"]
		return l.live && l.epoch > before
	}, 30*time.Second, 20*time.Millisecond, "shop-a restarted with its new settings")

	// A broken file changes nothing, and is counted.
	require.Zero(t, metric(t, r, "ingestd_config_reload_failures_total", nil))
	writeAtomically(t, s.cfg.SourcesFile, "sources:\n"+source("shop-a", "    page-limit: 100\n"))
	require.Eventually(t, func() bool {
		return metric(t, r, "ingestd_config_reload_failures_total", nil) >= 1
	}, 30*time.Second, 20*time.Millisecond)
	require.True(t, leases()["source:yandex/shop-b"].live, "the running set carries on")
	require.Equal(t, []string{"yandex/default", "yandex/shop-a", "yandex/shop-b"}, listed(), "the status API still shows the running set")

	// Removed: it stops and releases its lease; its cursor stays. (shop-a
	// goes back to its first settings, so it restarts too.)
	writeAtomically(t, s.cfg.SourcesFile, "sources:\n"+source("shop-a", ""))
	require.Eventually(t, func() bool { return !leases()["source:yandex/shop-b"].live }, 30*time.Second, 20*time.Millisecond, "the removed source stopped")
	require.True(t, atEnd("shop-b")(), "its cursor is kept")
	require.Equal(t, []string{"yandex/default", "yandex/shop-a"}, listed(), "the status API lists configured sources only")
	require.Eventually(t, func() bool { return leases()["source:yandex/shop-a"].live }, 30*time.Second, 20*time.Millisecond, "shop-a runs on")

	// Every account's events reached Kafka once.
	perSource := s.eventsPerSource(t)
	require.Equal(t, map[string]int{"yandex/default": journal, "yandex/shop-a": journal, "yandex/shop-b": journal}, perSource)
	r.stop(t)
}

// TestReloadReadsTheEnvironmentAgain: a secret taken from a variable is
// read again on Reload (SIGHUP), since no file event announces it.
func TestReloadReadsTheEnvironmentAgain(t *testing.T) {
	t.Parallel()
	const journal = 300
	s := newStack(t, sim.YandexConfig{Seed: 61, Backlog: 10})
	y, err := sim.NewYandex(sim.YandexConfig{Seed: 62, Token: "tok-right", Backlog: journal})
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		token = "tok-wrong"
	)
	s.cfg.Getenv = func(k string) string {
		mu.Lock()
		defer mu.Unlock()
		if k == "SHOP_TOKEN" {
			return token
		}
		return ""
	}
	s.cfg.SourcesFile = filepath.Join(t.TempDir(), "sources.yaml")
	writeAtomically(t, s.cfg.SourcesFile, "sources:\n  - provider: yandex\n    account: shop\n    token_env: SHOP_TOKEN\n    base_url: "+serve(t, y)+"\n")
	r := s.start(t)
	require.Eventually(t, func() bool {
		return metric(t, r, "ingestd_upstream_requests_total", map[string]string{"source": "yandex/shop"}) > 0
	}, 30*time.Second, 20*time.Millisecond)

	mu.Lock()
	token = "tok-right"
	mu.Unlock()
	r.d.Reload()
	require.Eventually(t, func() bool {
		st, err := s.store.Cursors.Source(context.Background(), "yandex/shop")
		return err == nil && st.Cursor == y.CursorAfter(journal)
	}, 60*time.Second, 20*time.Millisecond, "the source restarted with the variable's new value")
	r.stop(t)
}

// eventsPerSource waits until the outbox is published, reads the whole
// topic, requires every ce_id once, and returns the events per source id
// ("yandex/<account>").
func (s *stack) eventsPerSource(t *testing.T) map[string]int {
	t.Helper()
	ctx := context.Background()
	require.Eventually(t, func() bool { b, err := s.store.Outbox.Backlog(ctx); return err == nil && b.Rows == 0 }, 60*time.Second, 20*time.Millisecond)
	stats, err := s.store.Outbox.Stats(ctx)
	require.NoError(t, err)
	recs := s.kafka.ReadTopic(t, s.cfg.Kafka.Topic, int(stats.Rows), 60*time.Second)
	require.Len(t, recs, int(stats.Rows), "every outbox row reached Kafka once")
	ids := map[string]bool{}
	perSource := map[string]int{}
	for _, rec := range recs {
		require.False(t, ids[rec.Header("ce_id")], "duplicate %s", rec.Header("ce_id"))
		ids[rec.Header("ce_id")] = true
		perSource[strings.TrimPrefix(rec.Header("ce_source"), "/ingestd/")]++
	}
	return perSource
}
