package daemon_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
)

// These tests inject one fault each into a running pipeline (real
// PostgreSQL, the in-process broker over TCP, the simulated journal) and
// check the outcome with an independent consumer: every journal entry in
// Kafka exactly once, in per-key journal order, and the cursor at the end
// of the journal.

func (s *stack) waitDone(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		// Errors are transient here: some tests restart PostgreSQL.
		st, err := s.store.Cursors.Source(context.Background(), "yandex/default")
		if err != nil || st.Cursor != s.sim.CursorAfter(n) {
			return false
		}
		b, err := s.store.Outbox.Backlog(context.Background())
		return err == nil && b.Rows == 0
	}, 90*time.Second, 20*time.Millisecond)
}

// produceFailures makes the broker answer produce requests for partition
// part with a NOT_LEADER_FOR_PARTITION error code, times times: a partial
// batch failure (the writer's other partitions succeed in the same call).
func produceFailures(c *kfake.Cluster, part int32, times int64) *atomic.Int64 {
	var failed atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		if len(pr.Topics) != 1 || len(pr.Topics[0].Partitions) != 1 || pr.Topics[0].Partitions[0].Partition != part {
			return nil, nil, false
		}
		if failed.Load() >= times {
			return nil, nil, false
		}
		failed.Add(1)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic = pr.Topics[0].Topic
		rp := kmsg.NewProduceResponseTopicPartition()
		rp.Partition = part
		rp.ErrorCode = 6 // NOT_LEADER_FOR_PARTITION
		rt.Partitions = append(rt.Partitions, rp)
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})
	return &failed
}

func TestPartialBatchFailure(t *testing.T) {
	t.Parallel()
	const n = 4000
	s := newStack(t, sim.YandexConfig{Seed: 11, Backlog: n, ReplayRate: 0.1})
	failed := produceFailures(s.kafka.Cluster, 1, 5)
	s.start(t)
	s.waitDone(t, n)
	require.EqualValues(t, 5, failed.Load(), "partition 1 failed five times while the others were written")
	s.requireExactlyOnce(t, n)
}

// TestTimedOutWriteThatLandsLater is kafka-go#1427: the broker appends a
// batch after the client gave up waiting. ingestd must not send it again.
func TestTimedOutWriteThatLandsLater(t *testing.T) {
	t.Parallel()
	const n = 3000
	s := newStack(t, sim.YandexConfig{Seed: 12, Backlog: n})
	s.cfg.Kafka.WriteTimeout = time.Second
	c := s.kafka.Cluster
	var delayed atomic.Bool
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if delayed.CompareAndSwap(false, true) {
			// Hold the first produce request past the client's timeout,
			// then let the broker append it as usual.
			c.SleepControl(func() { time.Sleep(1500 * time.Millisecond) })
		}
		return nil, nil, false
	})
	r := s.start(t)
	s.waitDone(t, n)
	s.requireExactlyOnce(t, n)
	metrics := get(t, "http://"+r.d.HTTPAddr()+"/metrics").body
	require.Contains(t, metrics, "ingestd_publish_errors_total 1", "the delayed write timed out once")
	require.Regexp(t, `ingestd_publish_reconciled_partitions_total [1-9]`, metrics, "and was found in Kafka by the read-back")
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// TestBrokerDownThenBack stops the broker mid-stream. Ingestion goes on
// into the outbox until the backlog bound, then polling pauses; when the
// broker is back everything is published once.
func TestBrokerDownThenBack(t *testing.T) {
	t.Parallel()
	const n = 6000
	dir := t.TempDir()
	port := freePort(t)
	startBroker := func() *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir))
		require.NoError(t, err)
		return c
	}
	broker := startBroker()
	s := newStack(t, sim.YandexConfig{Seed: 13, Backlog: 1000, Rate: 3000, MaxEntries: n})
	s.kafka = &kafkatest.Cluster{Cluster: broker, Addr: broker.ListenAddrs()[0]}
	s.cfg.Kafka.Brokers = []string{s.kafka.Addr}
	s.cfg.Kafka.WriteTimeout = time.Second
	s.cfg.MaxBacklog = 1500
	r := s.start(t)

	require.Eventually(t, func() bool { return s.sourceState(t).EventsTotal >= 500 }, 30*time.Second, 5*time.Millisecond)
	broker.Close()
	base := "http://" + r.d.HTTPAddr()
	require.Eventually(t, func() bool {
		return strings.Contains(get(t, base+"/metrics").body, `ingestd_polling_paused{source="yandex/default"} 1`)
	}, 60*time.Second, 50*time.Millisecond, "polling pauses at the backlog bound")
	est, err := s.store.Outbox.BacklogEstimate(context.Background())
	require.NoError(t, err)
	// The page in hand and the one already prefetched may still commit.
	require.Less(t, est, int64(1500+2*s.cfg.Yandex.PageLimit+1), "the outbox stops growing near the bound")
	require.Equal(t, 503, get(t, base+"/readyz").status, "not ready without Kafka")

	broker = startBroker()
	t.Cleanup(broker.Close)
	s.kafka.Cluster = broker
	s.waitDone(t, n)
	s.requireExactlyOnce(t, n)
	require.Contains(t, get(t, base+"/metrics").body, `ingestd_polling_paused{source="yandex/default"} 0`)
}

// TestTwoInstancesAtOnce runs two daemons on one database and topic, as a
// rolling update does: one writes, the other stands by, and when the first
// stops the second takes over at once.
func TestTwoInstancesAtOnce(t *testing.T) {
	t.Parallel()
	const n = 8000
	s := newStack(t, sim.YandexConfig{Seed: 14, Backlog: 1000, Rate: 3000, MaxEntries: n, ReplayRate: 0.1})
	s.cfg.HTTP.Addr = ""
	a := s.start(t)
	// b starts once a holds both leases (publisher and source), so that a
	// is the writer and b the stand-by, whatever the scheduling.
	require.Eventually(t, func() bool {
		leases, err := s.store.Leases.List(context.Background())
		live := 0
		for _, l := range leases {
			if l.Live {
				live++
			}
		}
		return err == nil && live == 2
	}, 30*time.Second, 5*time.Millisecond)
	b := s.start(t)
	require.Eventually(t, func() bool { return s.sourceState(t).EventsTotal >= 3000 }, 30*time.Second, 5*time.Millisecond)
	a.stop(t)
	s.waitDone(t, n)
	s.requireExactlyOnce(t, n)
	leases, err := s.store.Leases.List(context.Background())
	require.NoError(t, err)
	for _, l := range leases {
		require.GreaterOrEqual(t, l.Epoch, int64(2), "lease %s was handed over", l.Name)
	}
	b.stop(t)
}

// TestDatabaseConnectionsKilled terminates ingestd's PostgreSQL connections
// over and over while it runs.
func TestDatabaseConnectionsKilled(t *testing.T) {
	t.Parallel()
	const n = 6000
	s := newStack(t, sim.YandexConfig{Seed: 15, Backlog: 1000, Rate: 2000, MaxEntries: n})
	app := fmt.Sprintf("ingestd-fault-%d", time.Now().UnixNano())
	s.cfg.Database.DatabaseURL = secret.New(pgtest.WithParam(t, s.cfg.Database.DatabaseURL.Reveal(), "application_name", app))
	s.start(t)

	killer := pgtest.TerminateBackends(t, app, 250*time.Millisecond)
	require.Eventually(t, func() bool { return s.sim.Available() == n && killer.Killed() >= 10 }, 60*time.Second, 20*time.Millisecond)
	killer.Stop()
	s.waitDone(t, n)
	s.requireExactlyOnce(t, n)
}

// privatePostgres runs a PostgreSQL server of its own for a test that
// restarts it, so the shared server of the other tests is never touched.
type privatePostgres struct {
	bin, dir, port string
}

func startPrivatePostgres(t *testing.T) (*privatePostgres, string) {
	t.Helper()
	bin := "/usr/lib/postgresql/15/bin"
	if _, err := os.Stat(filepath.Join(bin, "initdb")); err != nil {
		t.Skipf("no PostgreSQL server binaries at %s: %v", bin, err)
	}
	dir, err := os.MkdirTemp("", "ingestd-pg")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	p := &privatePostgres{bin: bin, dir: filepath.Join(dir, "data"), port: fmt.Sprint(freePort(t))}
	// initdb refuses to run as root, so run the server as postgres.
	p.run(t, "initdb", "-D", p.dir, "-A", "trust", "-U", "postgres", "--no-sync")
	p.ctl(t, "start")
	t.Cleanup(func() { _ = p.cmd("stop", "-m", "immediate").Run() })
	return p, fmt.Sprintf("postgres://postgres@127.0.0.1:%s/postgres?sslmode=disable", p.port)
}

func (p *privatePostgres) cmd(action string, extra ...string) *exec.Cmd {
	// The log file keeps the server from inheriting our output pipe, which
	// would make CombinedOutput wait for the server to exit.
	args := append([]string{"-u", "postgres", "--", filepath.Join(p.bin, "pg_ctl"), action, "-D", p.dir, "-w",
		"-l", filepath.Join(filepath.Dir(p.dir), "server.log"),
		"-o", fmt.Sprintf("-p %s -k %s -c listen_addresses=127.0.0.1 -c fsync=off", p.port, filepath.Dir(p.dir))}, extra...)
	return exec.Command("runuser", args...)
}

func (p *privatePostgres) ctl(t *testing.T, action string, extra ...string) {
	t.Helper()
	out, err := p.cmd(action, extra...).CombinedOutput()
	require.NoError(t, err, "pg_ctl %s: %s", action, out)
}

func (p *privatePostgres) run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(p.bin, name)}, args...)...).CombinedOutput()
	require.NoError(t, err, "%s: %s", name, out)
}

// TestPostgresRestarted restarts PostgreSQL (fast mode: every connection is
// dropped) twice while ingestd runs against it.
func TestPostgresRestarted(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("runuser"); err != nil {
		t.Skip("runuser not available")
	}
	server, dsn := startPrivatePostgres(t)
	const n = 6000
	s := newStack(t, sim.YandexConfig{Seed: 16, Backlog: 1000, Rate: 1500, MaxEntries: n})
	s.cfg.Database.DatabaseURL = secret.New(dsn)
	s.store = pgtest.OpenDSN(t, dsn)
	s.start(t)

	for _, after := range []int64{1500, 3500} {
		require.Eventually(t, func() bool {
			st, err := s.store.Cursors.Source(context.Background(), "yandex/default")
			return err == nil && st.EventsTotal >= after
		}, 60*time.Second, 10*time.Millisecond)
		server.ctl(t, "restart", "-m", "fast")
	}
	s.waitDone(t, n)
	s.requireExactlyOnce(t, n)
}
