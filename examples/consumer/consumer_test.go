package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/ingestd/ingestd/internal/daemon"
	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
)

// syncBuffer is a goroutine-safe bytes.Buffer for the consumer's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// errCrash is what the hook returns to stop the consumer between the
// PostgreSQL commit and the offset commit.
var errCrash = errors.New("crash before the offset commit")

// consumerRun is one run of the consumer in the background.
type consumerRun struct {
	out, errOut syncBuffer
	cancel      context.CancelFunc
	done        chan struct{} // closed when the run returned
	err         error         // what it returned, once done is closed
}

// lines counts the output lines that start with prefix.
func (r *consumerRun) lines(prefix string) int {
	n := 0
	for _, l := range strings.Split(r.out.String(), "\n") {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// wait waits for the run to end and returns its error.
func (r *consumerRun) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(30 * time.Second):
		t.Fatalf("the consumer did not stop within 30s; stderr:\n%s", r.errOut.String())
		return nil
	}
}

// TestRestartedConsumerAppliesEveryEventOnce runs the real daemon against
// the simulated Yandex journal and the in-process broker, and the consumer
// against its topic while it is still publishing. The first consumer run
// stops between committing a batch in PostgreSQL and committing its
// offsets, as a crash there would; the second is cancelled mid-stream; the
// third reads to the end. Every event must be applied exactly once, the
// crashed batch must come again and be skipped as duplicates, the
// shipment table must hold each key's last state, and an invalid record
// must land in the dead-letter table.
func TestRestartedConsumerAppliesEveryEventOnce(t *testing.T) {
	t.Parallel()
	const (
		n          = 4000 // journal entries, one event each
		crashAfter = 1200 // events applied before the first run stops
		stopAfter  = 2600 // events processed before the second run is cancelled
	)

	// The pipeline, as tools/ingestd-demo runs it: the simulator, kfake
	// and the real daemon on a migrated schema. Entries keep arriving for
	// about three seconds, so the consumer reads while ingestd publishes.
	const token = "consumer-example-token"
	y, err := sim.NewYandex(sim.YandexConfig{Seed: 14, Token: token, Backlog: 1000, Rate: 1000, MaxEntries: n, Claims: 200, ReplayRate: 0.1})
	require.NoError(t, err)
	srv := httptest.NewServer(y)
	t.Cleanup(srv.Close)
	kc := kafkatest.Start(t)
	store := pgtest.Open(t)
	cfg := daemon.DefaultConfig()
	cfg.Database.DatabaseURL = secret.New(store.DSN)
	cfg.Kafka.Brokers = []string{kc.Addr}
	cfg.Kafka.Partitions = 3
	cfg.Kafka.IdlePoll = 50 * time.Millisecond
	cfg.Yandex.Token = secret.New(token)
	cfg.Yandex.BaseURL = srv.URL
	cfg.Yandex.PollInterval = 50 * time.Millisecond
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.ShutdownTimeout = 10 * time.Second
	dctx, stopDaemon := context.WithCancel(context.Background())
	d, err := daemon.New(dctx, cfg, zaptest.NewLogger(t))
	require.NoError(t, err)
	daemonDone := make(chan error, 1)
	go func() { daemonDone <- d.Run(dctx) }()
	daemonStopped := false
	stop := func() {
		if daemonStopped {
			return
		}
		daemonStopped = true
		stopDaemon()
		select {
		case err := <-daemonDone:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("the daemon did not stop within 30s")
		}
	}
	t.Cleanup(stop)

	// The consumer's own schema, named with --schema as an operator would.
	consumerDSN := pgtest.Schema(t)
	u, err := url.Parse(consumerDSN)
	require.NoError(t, err)
	schema := u.Query().Get("search_path")
	require.NotEmpty(t, schema)
	db, err := pgx.Connect(context.Background(), consumerDSN)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close(context.Background()) })
	count := func(table string) int {
		var c int
		err := db.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&c)
		if err != nil {
			// The first run creates the tables; until then there are none.
			return 0
		}
		return c
	}

	args := []string{"--brokers", kc.Addr, "--group", "example-test", "--database-url", pgtest.BaseURL(), "--schema", schema}
	noEnv := func(string) string { return "" }
	start := func(h hooks) *consumerRun {
		ctx, cancel := context.WithCancel(context.Background())
		r := &consumerRun{cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(r.done)
			r.err = runWith(ctx, args, noEnv, &r.out, &r.errOut, h)
		}()
		// A run the test did not stop (it failed first) is stopped before
		// its schema is dropped.
		t.Cleanup(func() {
			cancel()
			select {
			case <-r.done:
			case <-time.After(30 * time.Second):
			}
		})
		return r
	}

	// Run 1 stops right after a batch committed in PostgreSQL, before its
	// offsets are committed.
	var crashedBatch, crashedTotal int
	first := start(hooks{beforeOffsetCommit: func(batch, total int) error {
		if total >= crashAfter && batch > 0 {
			crashedBatch, crashedTotal = batch, total
			return errCrash
		}
		return nil
	}})
	require.ErrorIs(t, first.wait(t), errCrash, first.errOut.String())
	require.Positive(t, crashedBatch)
	require.Less(t, count("processed_events"), n, "the first run stopped mid-stream")

	// Run 2 receives the crashed batch again and is cancelled mid-stream.
	second := start(hooks{})
	require.Eventually(t, func() bool { return count("processed_events") >= stopAfter }, 40*time.Second, 10*time.Millisecond, second.errOut.String())
	second.cancel()
	require.NoError(t, second.wait(t))
	require.Less(t, count("processed_events"), n, "the second run stopped mid-stream")

	// All n events are in the topic; then one record that breaks the
	// contract is appended, once the daemon has stopped (its read-back
	// after a restart trusts only records it wrote itself).
	recs := kafkatest.ReadTopic(t, kc.Addr, cfg.Kafka.Topic, n, 40*time.Second)
	require.Len(t, recs, n, "the daemon published every journal entry once")
	stop()
	pr, err := kgo.NewClient(kgo.SeedBrokers(kc.Addr), kgo.DefaultProduceTopic(cfg.Kafka.Topic))
	require.NoError(t, err)
	bad := &kgo.Record{Key: []byte("yandex:bogus"), Value: []byte(`{"schema_version":1,"status":"teleported"}`),
		Headers: []kgo.RecordHeader{{Key: "ce_id", Value: []byte("00000000-0000-0000-0000-000000000000")}}}
	require.NoError(t, pr.ProduceSync(context.Background(), bad).FirstErr())
	pr.Close()

	// Run 3 reads to the end.
	third := start(hooks{})
	require.Eventually(t, func() bool {
		return count("processed_events") == n && count("rejected_records") == 1
	}, 40*time.Second, 10*time.Millisecond, third.errOut.String())
	third.cancel()
	require.NoError(t, third.wait(t))

	// Exactly once: one processed row per distinct ce_id in the topic, and
	// one "applied" (or "stale") line per event over the three runs.
	ids := map[string]bool{}
	type state struct {
		status   *string
		revision int64
	}
	want := map[string]state{}
	for _, r := range recs { // in partition, then offset order: each key's order
		id := r.Header("ce_id")
		ids[id] = true
		var p payload
		require.NoError(t, json.Unmarshal(r.Value, &p))
		s := want[r.Key]
		if p.Status != nil {
			s.status = p.Status
		}
		require.Greater(t, p.Revision, s.revision, "revisions grow within key %s", r.Key)
		s.revision = p.Revision
		want[r.Key] = s
	}
	require.Len(t, ids, n, "distinct ce_id in the topic")
	require.Equal(t, n, count("processed_events"))
	runs := []*consumerRun{first, second, third}
	applied, duplicates := 0, 0
	for _, r := range runs {
		applied += r.lines("applied ") + r.lines("stale ")
		duplicates += r.lines("duplicate ")
	}
	require.Equal(t, n, applied, "every event applied once over the three runs")
	// The crashed batch comes again in the second or the third run
	// (whichever reads its partitions first); a cancelled run may add a few
	// more from the batch it was in.
	require.GreaterOrEqual(t, duplicates, crashedBatch, "the crashed batch came again and was skipped")

	// The effect: each key's last status and revision.
	rows, err := db.Query(context.Background(), `SELECT key, status, revision FROM shipment_status`)
	require.NoError(t, err)
	got := map[string]state{}
	for rows.Next() {
		var k string
		var s state
		require.NoError(t, rows.Scan(&k, &s.status, &s.revision))
		got[k] = s
	}
	require.NoError(t, rows.Err())
	require.Equal(t, want, got)

	// The invalid record is parked, not applied.
	var reason string
	require.NoError(t, db.QueryRow(context.Background(), `SELECT reason FROM rejected_records`).Scan(&reason))
	require.Contains(t, reason, "delivery-event.v1.json")
	require.Contains(t, third.errOut.String(), "rejected ")
	t.Logf("%d events; first run stopped after %d applied with its last batch of %d uncommitted; %d duplicates skipped across the restarts; %d keys; 1 record dead-lettered",
		n, crashedTotal, crashedBatch, duplicates, len(got))
}
