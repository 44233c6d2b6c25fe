package main

import (
	"context"
	"net/http/httptest"
	"net/url"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/child"
	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/sim"
)

// binary builds ingestd once per test run. The binary is left in the
// temporary directory: the tests that use it run in parallel, and the
// package's test binary has no hook after the last of them.
var binary = sync.OnceValues(func() (string, error) {
	bin, _, err := child.Build(context.Background(), child.IngestdPackage)
	return bin, err
})

func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin, err := binary()
	require.NoError(t, err)
	return bin
}

// TestSIGTERMDrainsAndExitsZero runs the real binary against the simulator,
// PostgreSQL and the in-process broker, sends SIGTERM mid-stream, and
// checks it exits 0 with everything it committed published.
func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	bin := buildBinary(t)
	const n = 20000
	y, err := sim.NewYandex(sim.YandexConfig{Seed: 9, Token: "tok-" + secretPassword, Backlog: 1000, Rate: 4000, MaxEntries: n})
	require.NoError(t, err)
	srv := httptest.NewServer(y)
	t.Cleanup(srv.Close)
	kc := kafkatest.Start(t)
	store := pgtest.Open(t)
	dsn := store.DSN

	// The local server trusts every connection, so a password in the DSN is
	// accepted and ignored: the run carries one that must never be logged.
	dbPassword := "pw-" + secretPassword
	withPassword, err := url.Parse(dsn)
	require.NoError(t, err)
	withPassword.User = url.UserPassword(withPassword.User.Username(), dbPassword)

	c, err := child.Start(bin, child.Options{LogBytes: 16 << 20, Env: []string{
		"INGESTD_DATABASE_URL=" + withPassword.String(),
		"INGESTD_LOG_LEVEL=debug",
		"INGESTD_KAFKA_BROKERS=" + kc.Addr,
		"INGESTD_YANDEX_TOKEN=tok-" + secretPassword,
		"INGESTD_YANDEX_BASE_URL=" + srv.URL,
		"INGESTD_YANDEX_PAGE_LIMIT=200",
		"INGESTD_YANDEX_POLL_INTERVAL=50ms",
		"INGESTD_HTTP_ADDR=127.0.0.1:0",
		"INGESTD_SHUTDOWN_TIMEOUT=10s",
	}})
	require.NoError(t, err)
	t.Cleanup(func() { c.Kill() })
	logs := c.Log()

	// Mid-stream: some events committed, the journal still growing.
	require.Eventually(t, func() bool {
		st, err := store.Cursors.Source(context.Background(), "yandex/default")
		return err == nil && st.EventsTotal >= 3000
	}, 30*time.Second, 5*time.Millisecond, logs.String())
	require.NoError(t, c.Signal(syscall.SIGTERM))
	select {
	case <-c.Done():
		require.NoError(t, c.Wait(), "exit status 0 after SIGTERM\n%s", logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit within 20s of SIGTERM\n%s", logs.String())
	}

	st, err := store.Cursors.Source(context.Background(), "yandex/default")
	require.NoError(t, err)
	require.Less(t, st.EventsTotal, int64(n), "stopped mid-stream")
	b, err := store.Outbox.Backlog(context.Background())
	require.NoError(t, err)
	require.Zero(t, b.Rows, "everything committed was published before exit")
	recs := kafkatest.ReadTopic(t, kc.Addr, "delivery.status-changes", int(st.EventsTotal), 20*time.Second)
	require.Len(t, recs, int(st.EventsTotal))

	out := logs.String()
	require.Contains(t, out, `"msg":"stopped"`, "JSON logs in production format")
	require.NotContains(t, out, secretPassword, "no secret (token, DSN password) in any log line")
	require.NotContains(t, out, dbPassword)
}
