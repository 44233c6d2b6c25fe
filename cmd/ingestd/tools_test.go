package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/daemon"
	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
	"github.com/ingestd/ingestd/internal/storage"
)

type historyJSON struct {
	ID         int64     `json:"id"`
	Cursor     string    `json:"cursor"`
	PrevCursor string    `json:"prev_cursor"`
	EventCount int       `json:"event_count"`
	RecordedAt time.Time `json:"recorded_at"`
	Actor      string    `json:"actor"`
	Reason     string    `json:"reason"`
}

func cli(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	require.NoError(t, run(context.Background(), args, &out, &errOut), "ingestd %v: %s", args, errOut.String())
	return out.String()
}

// TestCursorToolsAgainstARunningDaemon moves a running daemon's cursor with
// `cursor set` and `cursor rewind`: the daemon resumes from the new cursor
// (history shows the operator's entry, then the daemon's pages continuing
// from it), and re-read entries reach Kafka no second time.
func TestCursorToolsAgainstARunningDaemon(t *testing.T) {
	const n = 3000
	y, err := sim.NewYandex(sim.YandexConfig{Seed: 31, Token: "tok", Backlog: n})
	require.NoError(t, err)
	srv := httptest.NewServer(y)
	t.Cleanup(srv.Close)
	kc := kafkatest.Start(t)
	dsn := pgtest.Schema(t)
	t.Setenv("INGESTD_DATABASE_URL", dsn)
	t.Setenv("INGESTD_KAFKA_BROKERS", kc.Addr)
	t.Setenv("INGESTD_YANDEX_TOKEN", "tok")
	t.Setenv("INGESTD_YANDEX_BASE_URL", srv.URL)
	cli(t, "migrate")

	cfg := daemon.DefaultConfig()
	cfg.Database.DatabaseURL = secret.New(dsn)
	cfg.Kafka.Brokers = []string{kc.Addr}
	cfg.Kafka.WriteTimeout = time.Second
	cfg.Yandex.Token = secret.New("tok")
	cfg.Yandex.BaseURL = srv.URL
	cfg.Yandex.PageLimit = 200
	cfg.Yandex.PollInterval = 50 * time.Millisecond
	cfg.HTTP.Addr = "off"
	cfg.Lease.TTL = 2 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	d, err := daemon.New(ctx, cfg, zaptest.NewLogger(t))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	store, err := storage.Open(context.Background(), cfg.Database)
	require.NoError(t, err)
	t.Cleanup(store.Close)
	atEnd := func() bool {
		st, err := store.Cursors.Source(context.Background(), "yandex/default")
		return err == nil && st.Cursor == y.CursorAfter(n)
	}
	require.Eventually(t, atEnd, 60*time.Second, 10*time.Millisecond)

	var hist []historyJSON
	require.NoError(t, json.Unmarshal([]byte(cli(t, "cursor", "history", "--source", "yandex/default", "--limit", "100", "--json")), &hist))
	require.Len(t, hist, n/200, "one entry per page")

	// The daemon resumes from whatever an operator sets, and history shows it.
	requirePickedUp := func(value, reasonPart string) {
		t.Helper()
		require.Eventually(t, atEnd, 60*time.Second, 10*time.Millisecond)
		var h []historyJSON
		require.NoError(t, json.Unmarshal([]byte(cli(t, "cursor", "history", "--source", "yandex/default", "--limit", "1000", "--json")), &h))
		for i, e := range h {
			if e.Reason == "" || !bytes.Contains([]byte(e.Reason), []byte(reasonPart)) {
				continue
			}
			require.Equal(t, value, e.Cursor)
			require.Contains(t, e.Actor, "cli:")
			require.Positive(t, i, "the daemon committed after the operator's change")
			require.Equal(t, value, h[i-1].PrevCursor, "the daemon continued from the new cursor")
			require.Equal(t, "ingestd", h[i-1].Actor)
			return
		}
		t.Fatalf("no history entry with reason %q", reasonPart)
	}

	mid := y.CursorAfter(n / 2)
	out := cli(t, "cursor", "set", "--source", "yandex/default", "--value", mid, "--reason", "replay second half")
	require.Contains(t, out, "cursor of yandex/default set by cli:")
	requirePickedUp(mid, "replay second half")

	// Rewind to the third page's entry by its recording time.
	target := hist[len(hist)-3] // history is newest first
	var res map[string]any
	require.NoError(t, json.Unmarshal([]byte(cli(t, "cursor", "rewind", "--source", "yandex/default",
		"--to", target.RecordedAt.Format(time.RFC3339Nano), "--reason", "incident 42", "--json")), &res))
	require.Equal(t, target.Cursor, res["cursor"])
	requirePickedUp(target.Cursor, "incident 42")

	// Nothing re-read reached Kafka twice.
	recs := kafkatest.ReadTopic(t, kc.Addr, "delivery.status-changes", n, 30*time.Second)
	require.Len(t, recs, n)

	var show []map[string]any
	require.NoError(t, json.Unmarshal([]byte(cli(t, "cursor", "show", "--json")), &show))
	require.Len(t, show, 1)
	require.Equal(t, y.CursorAfter(n), show[0]["cursor"])
	require.Equal(t, true, show[0]["lease_live"], "the daemon holds the lease again")

	var stats map[string]any
	require.Eventually(t, func() bool {
		require.NoError(t, json.Unmarshal([]byte(cli(t, "outbox", "stats", "--json")), &stats))
		return stats["unpublished"] == 0.0
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, float64(n), stats["rows"])
	require.Contains(t, cli(t, "outbox", "stats"), "partition 0 published through seq")

	var check map[string]any
	require.NoError(t, json.Unmarshal([]byte(cli(t, "check-config", "--json")), &check))
	require.Equal(t, true, check["valid"])
	require.Equal(t, map[string]any{"postgres": "ok", "kafka": "ok"}, check["checks"])
	require.Equal(t, "[REDACTED]", check["settings"].(map[string]any)["INGESTD_YANDEX_TOKEN"])
}

func TestToolUsageErrors(t *testing.T) {
	t.Setenv("INGESTD_DATABASE_URL", pgtest.Schema(t))
	cli(t, "migrate")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"cursor"}, "usage: ingestd cursor"},
		{[]string{"cursor", "frob"}, "unknown cursor command"},
		{[]string{"cursor", "history"}, "--source is required"},
		{[]string{"cursor", "set", "--source", "yandex/default", "--value", "x"}, "--reason is required"},
		{[]string{"cursor", "set", "--source", "yandex/default", "--reason", "r"}, "--value is required"},
		{[]string{"cursor", "rewind", "--source", "yandex/default", "--reason", "r", "--to", "yesterday"}, "RFC 3339"},
		{[]string{"outbox"}, "usage: ingestd outbox stats"},
	}
	for _, tc := range tests {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tc.args, &out, &errOut)
		require.ErrorContains(t, err, tc.want, "%v", tc.args)
		require.Equal(t, 2, exitCode(err, &errOut), "%v", tc.args)
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"cursor", "rewind", "--source", "yandex/default", "--reason", "r", "--to", "2020-01-01T00:00:00Z"}, &out, &errOut)
	require.ErrorIs(t, err, cursor.ErrNoHistory)
	require.Equal(t, 1, exitCode(err, &errOut))
}
