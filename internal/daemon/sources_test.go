package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
	"github.com/ingestd/ingestd/internal/status"
	"github.com/ingestd/ingestd/internal/watchlist"
)

// TestSourcesFileRunsEveryAccount runs one daemon with the Yandex account
// its INGESTD_YANDEX_* settings describe and, from a sources file, two more
// Yandex accounts (tokens from a file and from a variable, each its own
// journal) and a BTS login: every event of every account reaches Kafka
// once, in per-key order within its account.
func TestSourcesFileRunsEveryAccount(t *testing.T) {
	t.Parallel()
	const (
		journal = 1500
		orders  = 150
		speed   = 27000
	)
	s := newStack(t, sim.YandexConfig{Seed: 41, Backlog: journal})
	dir := t.TempDir()
	sims := map[string]*sim.Yandex{"default": s.sim}
	for i, account := range []string{"shop-a", "shop-b"} {
		y, err := sim.NewYandex(sim.YandexConfig{Seed: int64(42 + i), Token: "tok-" + account, Backlog: journal})
		require.NoError(t, err)
		sims[account] = y
	}
	b, err := sim.NewBTS(sim.BTSConfig{Seed: 6, Login: "tash-login", Password: "tash-pw", Orders: orders, Speed: speed, TokenTTL: 2 * time.Second})
	require.NoError(t, err)
	btsSrv := httptest.NewServer(b)
	t.Cleanup(btsSrv.Close)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "shop-a-token"), []byte("tok-shop-a\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tash-password"), []byte("tash-pw"), 0o600))
	env := map[string]string{"SHOP_B_TOKEN": "tok-shop-b", "TASH_LOGIN": "tash-login"}
	s.cfg.Getenv = func(k string) string { return env[k] }
	doc := fmt.Sprintf(`sources:
  - provider: yandex
    account: shop-a
    token_file: %s
    base_url: %s
  - provider: yandex
    account: shop-b
    token_env: SHOP_B_TOKEN
    base_url: %s
    page_limit: 100
  - provider: bts
    account: tashkent
    login_env: TASH_LOGIN
    password_file: %s
    base_url: %s
    rate: 500
    poll_intervals: "%s"
`, filepath.Join(dir, "shop-a-token"), serve(t, sims["shop-a"]), serve(t, sims["shop-b"]), filepath.Join(dir, "tash-password"), btsSrv.URL,
		scaledIntervals(t, speed))
	s.cfg.SourcesFile = filepath.Join(dir, "sources.yaml")
	require.NoError(t, os.WriteFile(s.cfg.SourcesFile, []byte(doc), 0o600))
	s.cfg.BTS.Schedule.IdlePoll = 50 * time.Millisecond
	s.cfg.AdminToken = secret.New("admin-token")

	ctx := context.Background()
	_, err = s.store.Watchlist.Track(ctx, "bts/tashkent", b.Orders())
	require.NoError(t, err)
	r := s.start(t)

	for account, y := range sims {
		require.Eventually(t, func() bool {
			st, err := s.store.Cursors.Source(ctx, "yandex/"+account)
			return err == nil && st.Cursor == y.CursorAfter(journal)
		}, 90*time.Second, 50*time.Millisecond, "yandex/%s walks its journal", account)
	}
	require.Eventually(t, func() bool {
		c, err := s.store.Watchlist.Count(ctx, "bts/tashkent")
		return err == nil && c[watchlist.Active] == 0
	}, 90*time.Second, 50*time.Millisecond, "every BTS order reaches a terminal state")
	require.Eventually(t, func() bool { st, err := s.store.Outbox.Backlog(ctx); return err == nil && st.Rows == 0 }, 60*time.Second, 50*time.Millisecond)

	stats, err := s.store.Outbox.Stats(ctx)
	require.NoError(t, err)
	recs := s.kafka.ReadTopic(t, s.cfg.Kafka.Topic, int(stats.Rows), 60*time.Second)
	require.Len(t, recs, int(stats.Rows), "every outbox row reached Kafka once")
	ids := map[string]bool{}
	revisions := map[string][]int64{} // ce_source + key -> revisions in topic order
	perSource := map[string]int{}
	for _, r := range recs {
		require.False(t, ids[r.Header("ce_id")], "duplicate %s", r.Header("ce_id"))
		ids[r.Header("ce_id")] = true
		perSource[r.Header("ce_source")]++
		ev, err := event.ParsePayload(r.Value)
		require.NoError(t, err)
		if ev.Provider == event.ProviderYandex {
			k := r.Header("ce_source") + " " + r.Key
			revisions[k] = append(revisions[k], ev.Revision)
		}
	}
	for account, y := range sims {
		require.Equal(t, journal, perSource["/ingestd/yandex/"+account], "events of yandex/%s", account)
		want := map[string][]int64{}
		for i := range journal {
			e := y.Entry(i)
			k := "/ingestd/yandex/" + account + " yandex:" + e.ClaimID
			want[k] = append(want[k], e.Revision)
		}
		for k, revs := range want {
			require.Equal(t, revs, revisions[k], "per-key order of %s", k)
		}
	}
	require.GreaterOrEqual(t, perSource["/ingestd/bts/tashkent"], orders, "at least one event per BTS order")

	// The status API shows every source.
	got := sourcesAPI(t, r)
	require.Len(t, got, 4)
	for account := range sims {
		src := got["yandex/"+account]
		require.Equal(t, int64(journal), src.EventsIngested, "events of yandex/%s", account)
		require.Equal(t, s.cfg.Lease.Holder, src.Instance)
		require.Equal(t, sims[account].CursorAfter(journal), src.Cursor)
		require.NotNil(t, src.LastCommitAgeSeconds)
	}
	require.Equal(t, status.EveryInstance, got["bts/tashkent"].Instance)
	require.False(t, got["bts/tashkent"].Halted)
}

// sourcesAPI reads GET /v1/sources of r (whose admin token is
// "admin-token"), by source id.
func sourcesAPI(t *testing.T, r *running) map[string]status.Source {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+r.d.HTTPAddr()+"/v1/sources", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer admin-token")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var body struct {
		Sources []status.Source `json:"sources"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	got := map[string]status.Source{}
	for _, src := range body.Sources {
		got[src.ID] = src
	}
	return got
}

func serve(t *testing.T, y *sim.Yandex) string {
	t.Helper()
	srv := httptest.NewServer(y)
	t.Cleanup(srv.Close)
	return srv.URL
}

func scaledIntervals(t *testing.T, speed float64) string {
	t.Helper()
	iv, err := bts.ParseIntervals("100=6h,800=4h,1100=1h,default=6h")
	require.NoError(t, err)
	return iv.Scaled(speed).String()
}
