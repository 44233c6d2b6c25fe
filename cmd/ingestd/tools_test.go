package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap/zaptest"

	"github.com/ingestd/ingestd/internal/cli"
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

// startDaemon runs a daemon in the test's process against the database of
// dsn, the broker at broker and the Yandex journal at yandexURL, until the
// test ends; it serves /metrics on a port of the kernel's choice. The lease
// and the Kafka write timeout are short, so that a cursor change is picked
// up within a second.
func startDaemon(t *testing.T, dsn, broker, yandexURL string, pageLimit int) (daemon.Config, *daemon.Daemon) {
	t.Helper()
	cfg := daemon.DefaultConfig()
	cfg.Database.DatabaseURL = secret.New(dsn)
	cfg.Kafka.Brokers = []string{broker}
	cfg.Kafka.WriteTimeout = time.Second
	cfg.Yandex.Token = secret.New("tok")
	cfg.Yandex.BaseURL = yandexURL
	cfg.Yandex.PageLimit = pageLimit
	cfg.Yandex.PollInterval = 50 * time.Millisecond
	cfg.HTTP.Addr = "127.0.0.1:0"
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
	return cfg, d
}

func runCLI(t *testing.T, args ...string) string {
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
	runCLI(t, "migrate")

	cfg, _ := startDaemon(t, dsn, kc.Addr, srv.URL, 200)

	store, err := storage.Open(context.Background(), cfg.Database)
	require.NoError(t, err)
	t.Cleanup(store.Close)
	atEnd := func() bool {
		st, err := store.Cursors.Source(context.Background(), "yandex/default")
		return err == nil && st.Cursor == y.CursorAfter(n)
	}
	require.Eventually(t, atEnd, 60*time.Second, 10*time.Millisecond)

	var hist []historyJSON
	require.NoError(t, json.Unmarshal([]byte(runCLI(t, "cursor", "history", "--source", "yandex/default", "--limit", "100", "--json")), &hist))
	require.Len(t, hist, n/200, "one entry per page")

	// The daemon resumes from whatever an operator sets, and history shows it.
	requirePickedUp := func(value, reasonPart string) {
		t.Helper()
		require.Eventually(t, atEnd, 60*time.Second, 10*time.Millisecond)
		var h []historyJSON
		require.NoError(t, json.Unmarshal([]byte(runCLI(t, "cursor", "history", "--source", "yandex/default", "--limit", "1000", "--json")), &h))
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
	out := runCLI(t, "cursor", "set", "--source", "yandex/default", "--value", mid, "--reason", "replay second half")
	require.Contains(t, out, "cursor of yandex/default set by cli:")
	requirePickedUp(mid, "replay second half")

	// Rewind to the third page's entry by its recording time.
	target := hist[len(hist)-3] // history is newest first
	var res map[string]any
	require.NoError(t, json.Unmarshal([]byte(runCLI(t, "cursor", "rewind", "--source", "yandex/default",
		"--to", target.RecordedAt.Format(time.RFC3339Nano), "--reason", "incident 42", "--json")), &res))
	require.Equal(t, target.Cursor, res["cursor"])
	requirePickedUp(target.Cursor, "incident 42")

	// Nothing re-read reached Kafka twice.
	recs := kafkatest.ReadTopic(t, kc.Addr, "delivery.status-changes", n, 30*time.Second)
	require.Len(t, recs, n)

	var show []map[string]any
	require.NoError(t, json.Unmarshal([]byte(runCLI(t, "cursor", "show", "--json")), &show))
	require.Len(t, show, 1)
	require.Equal(t, y.CursorAfter(n), show[0]["cursor"])
	require.Equal(t, true, show[0]["lease_live"], "the daemon holds the lease again")

	var stats map[string]any
	require.Eventually(t, func() bool {
		require.NoError(t, json.Unmarshal([]byte(runCLI(t, "outbox", "stats", "--json")), &stats))
		return stats["unpublished"] == 0.0
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, float64(n), stats["rows"])
	require.Contains(t, runCLI(t, "outbox", "stats"), "partition 0 published through seq")

	var srcs []map[string]any
	require.NoError(t, json.Unmarshal([]byte(runCLI(t, "sources", "list", "--json")), &srcs))
	require.Len(t, srcs, 1)
	require.Equal(t, "yandex/default", srcs[0]["id"])
	require.Equal(t, float64(n), srcs[0]["events_ingested"])
	require.Equal(t, cfg.Lease.Holder, srcs[0]["instance"], "the daemon holds the source")
	require.Equal(t, false, srcs[0]["halted"])
	require.Contains(t, runCLI(t, "sources", "list"), "yandex/default  "+cfg.Lease.Holder)

	var check map[string]any
	require.NoError(t, json.Unmarshal([]byte(runCLI(t, "check-config", "--json")), &check))
	require.Equal(t, true, check["valid"])
	require.Equal(t, map[string]any{"postgres": "ok", "kafka": "ok"}, check["checks"])
	require.Equal(t, "[REDACTED]", check["settings"].(map[string]any)["INGESTD_YANDEX_TOKEN"])
}

func TestToolUsageErrors(t *testing.T) {
	t.Setenv("INGESTD_DATABASE_URL", pgtest.Schema(t))
	runCLI(t, "migrate")
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
		{[]string{"cursor", "set", "--source", "bts/default", "--value", "x", "--reason", "r"}, "bts/default is a BTS watch-list source: it has no cursor"},
	}
	for _, tc := range tests {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tc.args, &out, &errOut)
		require.ErrorContains(t, err, tc.want, "%v", tc.args)
		require.Equal(t, 2, cli.ExitCode("ingestd", err, &errOut), "%v", tc.args)
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"cursor", "rewind", "--source", "yandex/default", "--reason", "r", "--to", "2020-01-01T00:00:00Z"}, &out, &errOut)
	require.ErrorIs(t, err, cursor.ErrNoHistory)
	require.Equal(t, 1, cli.ExitCode("ingestd", err, &errOut))
}

// TestHaltLastsUntilTheSourceRestarts is the halt's contract: a journal
// source whose cursor is rejected halts (the record in `cursor show`, the
// gauge), stays halted while the daemon runs, and resumes in the running
// daemon when an operator sets its cursor, which restarts it; the halt
// record and the gauge are then cleared.
func TestHaltLastsUntilTheSourceRestarts(t *testing.T) {
	const n, page = 1000, 200
	y, err := sim.NewYandex(sim.YandexConfig{Seed: 32, Token: "tok", Backlog: n})
	require.NoError(t, err)
	// Two pages, then the journal rejects the cursor, as after a bad
	// manual change or a cursor that expired upstream.
	y.Inject(sim.Fault{Kind: sim.FaultNone}, sim.Fault{Kind: sim.FaultNone}, sim.Fault{Kind: sim.FaultBadCursor})
	srv := httptest.NewServer(y)
	t.Cleanup(srv.Close)
	kc := kafkatest.Start(t)
	dsn := pgtest.Schema(t)
	t.Setenv("INGESTD_DATABASE_URL", dsn)
	runCLI(t, "migrate")

	cfg, d := startDaemon(t, dsn, kc.Addr, srv.URL, page)

	// show is the source in `cursor show`; empty before its first commit.
	show := func() map[string]any {
		var views []map[string]any
		require.NoError(t, json.Unmarshal([]byte(runCLI(t, "cursor", "show", "--json")), &views))
		if len(views) == 0 {
			return map[string]any{}
		}
		return views[0]
	}
	halted := func() float64 {
		t.Helper()
		resp, err := http.Get("http://" + d.HTTPAddr() + "/metrics")
		require.NoError(t, err)
		defer func() { _ = resp.Body.Close() }()
		p := expfmt.NewTextParser(model.UTF8Validation)
		families, err := p.TextToMetricFamilies(resp.Body)
		require.NoError(t, err)
		f, ok := families["ingestd_source_halted"]
		require.True(t, ok, "ingestd_source_halted is exported")
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" && l.GetValue() == "yandex/default" {
					return m.GetGauge().GetValue()
				}
			}
		}
		return 0
	}

	require.Eventually(t, func() bool { return show()["halted_at"] != nil }, 30*time.Second, 20*time.Millisecond, "the source halts")
	at := show()
	require.Contains(t, at["halted_reason"], "invalid_cursor")
	require.Equal(t, y.CursorAfter(2*page), at["cursor"], "the halt keeps the cursor")
	require.Equal(t, 1.0, halted())
	require.Contains(t, runCLI(t, "cursor", "show"), "HALTED: ")

	// It stays halted while the daemon runs: the lease is renewed, twice
	// over, and nothing moves.
	requests := y.Requests()
	renewed := time.Now().Add(cfg.Lease.TTL)
	require.Eventually(t, func() bool { return time.Now().After(renewed) }, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, requests, y.Requests(), "a halted source sends no request")
	require.NotNil(t, show()["halted_at"])
	require.Equal(t, 1.0, halted())

	// The operator sets the cursor (here back to where it was): the source
	// restarts and walks to the end.
	out := runCLI(t, "cursor", "set", "--source", "yandex/default", "--value", y.CursorAfter(2*page), "--reason", "cursor repaired")
	require.Contains(t, out, "a halted source resumes")
	require.Eventually(t, func() bool { return show()["cursor"] == y.CursorAfter(n) }, 60*time.Second, 20*time.Millisecond, "the source resumes")
	require.Nil(t, show()["halted_at"])
	require.Equal(t, 0.0, halted())
}

// TestEveryCommandSpeaksJSON holds the README's promise: every operator
// command in the usage prints JSON with --json. A command added to the
// usage without an entry here fails the test.
func TestEveryCommandSpeaksJSON(t *testing.T) {
	dsn := pgtest.Schema(t)
	t.Setenv("INGESTD_DATABASE_URL", dsn)
	t.Setenv("INGESTD_KAFKA_BROKERS", "127.0.0.1:9")
	t.Setenv("INGESTD_YANDEX_TOKEN", "tok")
	// The webhook commands talk to BTS: a simulated account.
	t.Setenv("INGESTD_BTS_BASE_URL", btsSim(t, "shop"))
	t.Setenv("INGESTD_BTS_LOGIN", "shop")
	t.Setenv("INGESTD_BTS_PASSWORD", secretPassword)
	t.Setenv("INGESTD_BTS_WEBHOOK_TOKEN", hookToken)
	args := map[string][]string{
		"migrate":              {"migrate"},
		"check-config":         {"check-config", "--offline"},
		"cursor show":          {"cursor", "show"},
		"cursor history":       {"cursor", "history", "--source", "yandex/default"},
		"cursor set":           {"cursor", "set", "--source", "yandex/default", "--value", "c1", "--reason", "test"},
		"cursor rewind":        {"cursor", "rewind", "--source", "yandex/default", "--to", "2999-01-01T00:00:00Z", "--reason", "test"},
		"outbox stats":         {"outbox", "stats"},
		"sources list":         {"sources", "list"},
		"bts track":            {"bts", "track", "4293644"},
		"bts untrack":          {"bts", "untrack", "4293644"},
		"bts list":             {"bts", "list"},
		"bts webhook register": {"bts", "webhook", "register", "--url", hookURL},
		"bts webhook show":     {"bts", "webhook", "show"},
		"version":              {"version"},
	}
	// The usage's commands, in its order; the daemon itself logs JSON
	// lines and has no --json. A command is up to three words.
	line := regexp.MustCompile(`(?m)^  ingestd ((?:[a-z-]+)(?: (?:[a-z]+)){0,2})`)
	var commands []string
	for _, m := range line.FindAllStringSubmatch(usage, -1) {
		if cmd := m[1]; !strings.HasPrefix(cmd, "[run]") && cmd != "run" {
			commands = append(commands, cmd)
		}
	}
	require.Len(t, commands, len(args), "every command of the usage is in the table: %v", commands)
	for _, cmd := range commands {
		a, ok := args[cmd]
		require.True(t, ok, "no --json case for %q", cmd)
		out := runCLI(t, append(a, "--json")...)
		require.True(t, json.Valid([]byte(out)), "ingestd %s --json printed %q", cmd, out)
	}
}

// TestCheckConfigReachesASecuredKafka runs check-config against brokers that
// require TLS and SCRAM-SHA-512: it connects with the same settings as the
// daemon, names what went wrong when the password, the CA or the broker's
// certificate is wrong (exit status 1: the configuration is valid, a check
// failed), and never prints the password.
func TestCheckConfigReachesASecuredKafka(t *testing.T) {
	const pw = "check-config-kafka-pw"
	certs := kafkatest.NewCerts(t, kafkatest.CertOptions{})
	var refuse atomic.Bool
	kc := kafkatest.Start(t, kfake.TLS(certs.ServerTLS(false)), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "ingestd", pw))
	kc.FailSASL(refuse.Load)
	dsn := pgtest.Schema(t)
	t.Setenv("INGESTD_DATABASE_URL", dsn)
	runCLI(t, "migrate")
	t.Setenv("INGESTD_KAFKA_BROKERS", kc.Addr)
	t.Setenv("INGESTD_YANDEX_TOKEN", "tok")
	t.Setenv("INGESTD_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
	t.Setenv("INGESTD_KAFKA_SASL_USERNAME", "ingestd")
	t.Setenv("INGESTD_KAFKA_SASL_PASSWORD", pw)
	tests := []struct {
		name   string
		caFile string
		refuse bool
		want   string // the kafka check; "ok" passes
	}{
		{"right settings", certs.CAFile, false, "ok"},
		{"wrong password", certs.CAFile, true, "SASL authentication of User:ingestd"},
		{"untrusted CA", kafkatest.NewCerts(t, kafkatest.CertOptions{}).CAFile, false, "TLS handshake"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("INGESTD_KAFKA_TLS_CA_FILE", tc.caFile)
			refuse.Store(tc.refuse)
			var out, errOut bytes.Buffer
			err := run(context.Background(), []string{"check-config", "--json"}, &out, &errOut)
			var report struct {
				Settings map[string]string `json:"settings"`
				Checks   map[string]string `json:"checks"`
			}
			require.NoError(t, json.Unmarshal(out.Bytes(), &report), out.String())
			require.Equal(t, "[REDACTED]", report.Settings["INGESTD_KAFKA_SASL_PASSWORD"])
			require.Contains(t, report.Checks["kafka"], tc.want)
			if tc.want == "ok" {
				require.NoError(t, err)
			} else {
				require.Equal(t, 1, cli.ExitCode("ingestd", err, &errOut))
			}
			require.NotContains(t, out.String()+errOut.String(), pw)
		})
	}
}

// TestCheckConfigListsSources: check-config lists every source, the
// settings' own and the sources file's, with where each secret comes from
// and never its value.
func TestCheckConfigListsSources(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "shop-a")
	require.NoError(t, os.WriteFile(tokenFile, []byte(secretPassword+"\n"), 0o600))
	file := filepath.Join(dir, "sources.yaml")
	require.NoError(t, os.WriteFile(file, []byte("sources:\n  - provider: yandex\n    account: shop-a\n    token_file: "+tokenFile+"\n  - provider: bts\n    account: tash\n    login_env: TASH_LOGIN\n    password_env: TASH_PASSWORD\n"), 0o600))
	for k, v := range validEnv() {
		t.Setenv(k, v)
	}
	t.Setenv("INGESTD_SOURCES_FILE", file)
	t.Setenv("TASH_LOGIN", "tash")
	t.Setenv("TASH_PASSWORD", secretPassword)

	var out, errOut bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"check-config", "--offline", "--json"}, &out, &errOut), errOut.String())
	require.NotContains(t, out.String()+errOut.String(), secretPassword)
	var report struct {
		Sources []map[string]any `json:"sources"`
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &report))
	require.Len(t, report.Sources, 3)
	byID := map[string]map[string]any{}
	for _, s := range report.Sources {
		byID[s["id"].(string)] = s
	}
	require.Equal(t, "settings", byID["yandex/default"]["from"])
	require.Equal(t, map[string]any{"token": "variable INGESTD_YANDEX_TOKEN"}, byID["yandex/default"]["secrets"])
	require.Equal(t, map[string]any{"token": "file " + tokenFile}, byID["yandex/shop-a"]["secrets"])
	require.Equal(t, map[string]any{"login": "variable TASH_LOGIN", "password": "variable TASH_PASSWORD"}, byID["bts/tash"]["secrets"])

	out.Reset()
	require.NoError(t, run(context.Background(), []string{"check-config", "--offline"}, &out, &errOut))
	require.Contains(t, out.String(), "source yandex/shop-a (file, https://b2b.taxi.yandex.net): token from file "+tokenFile)
	require.NotContains(t, out.String(), secretPassword)
}
