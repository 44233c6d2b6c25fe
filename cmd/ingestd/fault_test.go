package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/child"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/failpoint"
	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/sim"
	"github.com/ingestd/ingestd/internal/watchlist"
)

// procStack is the simulator, a broker and a database for real ingestd
// processes.
type procStack struct {
	bin    string
	sim    *sim.Yandex
	simURL string
	kafka  *kafkatest.Cluster
	// kafkaEnv is how the processes reach kafka beyond the brokers' list
	// (TLS and SASL settings).
	kafkaEnv []string
	dsn      string
	store    *pgtest.Stores
}

func newProcStack(t *testing.T, sc sim.YandexConfig) *procStack {
	t.Helper()
	return newProcStackOn(t, sc, kafkatest.Start(t))
}

// newProcStackOn is newProcStack on the cluster kc; set kafkaEnv for its
// TLS and SASL settings.
func newProcStackOn(t *testing.T, sc sim.YandexConfig, kc *kafkatest.Cluster) *procStack {
	t.Helper()
	bin := buildBinary(t)
	sc.Token = "tok"
	y, err := sim.NewYandex(sc)
	require.NoError(t, err)
	srv := httptest.NewServer(y)
	t.Cleanup(srv.Close)
	store := pgtest.Open(t)
	return &procStack{bin: bin, sim: y, simURL: srv.URL, kafka: kc, dsn: store.DSN, store: store}
}

// proc is one running ingestd process.
type proc struct {
	*child.Process
}

func (s *procStack) spawn(t *testing.T, id string, extraEnv ...string) *proc {
	t.Helper()
	env := append([]string{
		"INGESTD_DATABASE_URL=" + s.dsn,
		"INGESTD_KAFKA_BROKERS=" + s.kafka.Addr,
		"INGESTD_KAFKA_PARTITIONS=3",
		"INGESTD_KAFKA_WRITE_TIMEOUT=1s",
		"INGESTD_YANDEX_TOKEN=tok",
		"INGESTD_YANDEX_BASE_URL=" + s.simURL,
		"INGESTD_YANDEX_PAGE_LIMIT=100",
		"INGESTD_YANDEX_POLL_INTERVAL=50ms",
		"INGESTD_HTTP_ADDR=off",
		"INGESTD_LEASE_TTL=2s",
		"INGESTD_BACKOFF_INITIAL=20ms",
		"INGESTD_BACKOFF_MAX=200ms",
		"INGESTD_INSTANCE_ID=" + id,
	}, append(s.kafkaEnv, extraEnv...)...)
	c, err := child.Start(s.bin, child.Options{Env: env, LogBytes: 1 << 20})
	require.NoError(t, err)
	t.Cleanup(func() { c.Kill() })
	return &proc{c}
}

// waitExit waits for the process to end and returns how.
func (p *proc) waitExit(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case <-p.Done():
		return p.Wait()
	case <-time.After(within):
		t.Fatalf("process still running after %s\n%s", within, p.Log().String())
		return nil
	}
}

func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// finish runs a clean instance until the journal is published, then stops it.
func (s *procStack) finish(t *testing.T, n int) {
	t.Helper()
	p := s.spawn(t, "finisher")
	// It must hold both leases before its drain counts: the journal may
	// be published already, and a SIGTERM before it has set up its signal
	// handling kills it (seen on a loaded machine, exit "signal:
	// terminated").
	require.Eventually(t, func() bool {
		ls, err := s.store.Leases.List(context.Background())
		live := 0
		for _, l := range ls {
			if l.Live && l.Holder == "finisher" {
				live++
			}
		}
		return err == nil && live == 2
	}, 60*time.Second, 20*time.Millisecond, "the finisher takes both leases")
	require.Eventually(t, func() bool {
		st, err := s.store.Cursors.Source(context.Background(), "yandex/default")
		if err != nil || st.Cursor != s.sim.CursorAfter(n) {
			return false
		}
		b, err := s.store.Outbox.Backlog(context.Background())
		return err == nil && b.Rows == 0
	}, 90*time.Second, 20*time.Millisecond, p.Log().String())
	require.NoError(t, p.Signal(syscall.SIGTERM))
	require.NoError(t, p.waitExit(t, 30*time.Second))
}

// requireExactlyOnce reads the topic and checks every entry arrived once,
// in per-key journal order.
func (s *procStack) requireExactlyOnce(t *testing.T, n int) {
	t.Helper()
	recs := s.kafka.ReadTopic(t, "delivery.status-changes", n, 60*time.Second)
	seen := map[string]bool{}
	got := map[string][]int64{}
	for _, r := range recs {
		id := r.Header("ce_id")
		require.False(t, seen[id], "duplicate %s (seq %s epoch %s)", id, r.Header("ingestd_seq"), r.Header("ingestd_epoch"))
		seen[id] = true
		ev, err := event.ParsePayload(r.Value)
		require.NoError(t, err)
		got[r.Key] = append(got[r.Key], ev.Revision)
	}
	require.Len(t, recs, n)
	want := map[string][]int64{}
	for i := range n {
		e := s.sim.Entry(i)
		want["yandex:"+e.ClaimID] = append(want["yandex:"+e.ClaimID], e.Revision)
	}
	require.Equal(t, want, got)
}

// TestKillAtEveryPoint kills ingestd with SIGKILL at exact points of the
// data path, then lets a fresh instance finish: nothing is lost and
// nothing is duplicated.
func TestKillAtEveryPoint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		point string
	}{
		{"after commit before produce", failpoint.AfterCommit + "=4"},
		{"before a kafka write", failpoint.BeforeWrite + "=3"},
		{"after ack before mark", failpoint.AfterAck + "=3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 2000
			s := newProcStack(t, sim.YandexConfig{Seed: 21, Backlog: n, ReplayRate: 0.1})
			p := s.spawn(t, "victim", "INGESTD_FAILPOINTS="+tc.point)
			err := p.waitExit(t, 60*time.Second)
			require.True(t, killedBySIGKILL(err), "killed itself at %s: %v\n%s", tc.point, err, p.Log().String())
			s.finish(t, n)
			s.requireExactlyOnce(t, n)
		})
	}
}

// TestPausedInstanceIsFenced freezes the active instance (SIGSTOP) past its
// lease, lets a second instance take over, then thaws the first: its writes
// are refused and it stands by, and downstream sees every event once. It
// runs on plaintext and on TLS with SASL SCRAM-SHA-512, where the fence sits
// under the TLS layer and must refuse there too.
func TestPausedInstanceIsFenced(t *testing.T) {
	t.Parallel()
	const kafkaPassword = "fence-test-password"
	tests := []struct {
		name  string
		stack func(t *testing.T, sc sim.YandexConfig) *procStack
	}{
		{"plaintext", newProcStack},
		{"TLS and SCRAM-SHA-512", func(t *testing.T, sc sim.YandexConfig) *procStack {
			certs := kafkatest.NewCerts(t, kafkatest.CertOptions{})
			kc := kafkatest.Start(t, kfake.TLS(certs.ServerTLS(false)), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "ingestd", kafkaPassword))
			kc.ClientOpts = append(kc.ClientOpts, kafkatest.TLSOpt(certs.ClientTLS()), kafkatest.SASLOpt("SCRAM-SHA-512", "ingestd", kafkaPassword))
			s := newProcStackOn(t, sc, kc)
			s.kafkaEnv = []string{
				"INGESTD_KAFKA_TLS_CA_FILE=" + certs.CAFile,
				"INGESTD_KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
				"INGESTD_KAFKA_SASL_USERNAME=ingestd",
				"INGESTD_KAFKA_SASL_PASSWORD=" + kafkaPassword,
			}
			return s
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pausedInstanceIsFenced(t, tc.stack(t, sim.YandexConfig{Seed: 22, Backlog: 500, Rate: 1000, MaxEntries: 6000}), 6000)
		})
	}
}

func pausedInstanceIsFenced(t *testing.T, s *procStack, n int) {
	a := s.spawn(t, "a")
	require.Eventually(t, func() bool {
		st, err := s.store.Cursors.Source(context.Background(), "yandex/default")
		return err == nil && st.EventsTotal >= 300
	}, 30*time.Second, 5*time.Millisecond, a.Log().String())
	require.NoError(t, a.Signal(syscall.SIGSTOP))

	b := s.spawn(t, "b")
	deadlineB := time.Now().Add(30 * time.Second)
	for holders(t, s.store)["b"] != 2 {
		if time.Now().After(deadlineB) {
			ls, _ := s.store.Leases.List(context.Background())
			t.Fatalf("b did not take both leases once a's expired: %+v\n%s", ls, b.Log().String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, a.Signal(syscall.SIGCONT))

	// a notices at its next renewal (or its next write) and stands by.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(a.Log().String(), "stepping down") && !strings.Contains(a.Log().String(), "lease lost") {
		if time.Now().After(deadline) {
			t.Fatalf("the thawed instance did not step down:\n%s", a.Log().String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.Equal(t, 2, holders(t, s.store)["b"], "b keeps both leases")

	require.NoError(t, b.Signal(syscall.SIGTERM))
	require.NoError(t, b.waitExit(t, 30*time.Second))
	require.NoError(t, a.Signal(syscall.SIGTERM))
	require.NoError(t, a.waitExit(t, 30*time.Second), "the thawed instance exits 0 on SIGTERM\n%s", a.Log().String())
	s.finish(t, n)
	s.requireExactlyOnce(t, n)
}

// holders counts live leases per holder.
func holders(t *testing.T, s *pgtest.Stores) map[string]int {
	t.Helper()
	ls, err := s.Leases.List(context.Background())
	require.NoError(t, err)
	out := map[string]int{}
	for _, l := range ls {
		if l.Live {
			out[l.Holder]++
		}
	}
	return out
}

// TestKilledInstancesBTSClaimsComeBack SIGKILLs an instance while it holds
// BTS claims: the other instance polls those orders again once the dead
// one's heartbeat expires (INGESTD_LEASE_TTL, 2s here), long before the
// claims would time out (60s), and every order reaches its final status.
func TestKilledInstancesBTSClaimsComeBack(t *testing.T) {
	t.Parallel()
	const orders = 200
	s := newProcStack(t, sim.YandexConfig{Seed: 90, Backlog: 10})
	b, err := sim.NewBTS(sim.BTSConfig{Seed: 9, Login: "ingestd", Password: "pw", Orders: orders, Speed: 27000, TokenTTL: time.Hour})
	require.NoError(t, err)
	// Each BTS answer takes 300ms, so that an instance always holds claims.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		b.ServeHTTP(w, r)
	}))
	t.Cleanup(slow.Close)
	ctx := context.Background()
	_, err = s.store.Watchlist.Track(ctx, "bts/default", b.Orders())
	require.NoError(t, err)
	iv, err := bts.ParseIntervals("100=6h,800=4h,1100=1h,default=6h")
	require.NoError(t, err)
	s.kafkaEnv = append(s.kafkaEnv,
		"INGESTD_BTS_BASE_URL="+slow.URL, "INGESTD_BTS_LOGIN=ingestd", "INGESTD_BTS_PASSWORD=pw",
		"INGESTD_BTS_POLL_INTERVALS="+iv.Scaled(27000).String(), "INGESTD_BTS_RATE=200", "INGESTD_BTS_CONCURRENCY=8",
		"INGESTD_BTS_CLAIM_TIMEOUT=60s", "INGESTD_BTS_IDLE_POLL=50ms")
	a := s.spawn(t, "a")
	conn, err := pgx.Connect(ctx, s.dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	claimedBy := func(holder string) int {
		var n int
		require.NoError(t, conn.QueryRow(ctx,
			`SELECT count(*) FROM bts_orders WHERE claimed_by = $1 AND claimed_until > now()`, holder).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool { return claimedBy("a") >= 4 }, 30*time.Second, 5*time.Millisecond, a.Log().String())
	bb := s.spawn(t, "b")
	require.NoError(t, a.Signal(syscall.SIGKILL))
	_ = a.waitExit(t, 10*time.Second)
	orphaned := claimedBy("a")
	require.Positive(t, orphaned, "the killed instance died holding claims")
	killed := time.Now()
	require.Eventually(t, func() bool { return claimedBy("a") == 0 }, 20*time.Second, 20*time.Millisecond, bb.Log().String())
	t.Logf("%d orders claimed by the killed instance were claimed again after %s (claim timeout 60s)", orphaned, time.Since(killed).Round(100*time.Millisecond))

	require.Eventually(t, func() bool {
		c, err := s.store.Watchlist.Count(ctx, "bts/default")
		return err == nil && c[watchlist.Active] == 0
	}, 120*time.Second, 50*time.Millisecond, "every order reaches its final status")
	require.NoError(t, bb.Signal(syscall.SIGTERM))
	require.NoError(t, bb.waitExit(t, 30*time.Second))
}
