package publish_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap/zaptest"

	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/promtest"
	"github.com/ingestd/ingestd/internal/publish"
)

var _ publish.Store = (*outbox.Store)(nil)

// hold acquires name for the test, valid for an hour.
func hold(t *testing.T, s *pgtest.Stores, name string) *lease.Held {
	t.Helper()
	l, ok, err := s.Leases.TryAcquire(context.Background(), name, "test", time.Hour)
	require.NoError(t, err)
	require.True(t, ok)
	return lease.NewHeld(l, time.Now(), time.Hour)
}

// commit commits rows as one page of source yandex/default.
func commit(t *testing.T, s *pgtest.Stores, prev, cur string, rows []outbox.Row) {
	t.Helper()
	l := lease.Lease{Name: "source:yandex/default", Holder: "test"}
	if st, err := s.Leases.List(context.Background()); err == nil {
		for _, x := range st {
			if x.Name == l.Name {
				l.Epoch = x.Epoch
			}
		}
	}
	if l.Epoch == 0 {
		l = hold(t, s, l.Name).Lease
	}
	_, err := s.Cursors.CommitPage(context.Background(), cursor.Page{Lease: l, SourceID: "yandex/default", PrevCursor: prev, Cursor: cur, Rows: rows})
	require.NoError(t, err)
}

func config(addr string) publish.Config {
	cfg := publish.DefaultConfig()
	cfg.Brokers = []string{addr}
	cfg.Topic = "events"
	cfg.Partitions = 3
	cfg.IdlePoll = 50 * time.Millisecond
	return cfg
}

// requireOnceInOrder checks that recs are n records, each event once, and
// each partition's in outbox (seq) order.
func requireOnceInOrder(t *testing.T, recs []kafkatest.Record, n int) {
	t.Helper()
	require.Len(t, recs, n)
	ids := map[string]bool{}
	last := map[int32]int64{}
	for _, r := range recs {
		require.False(t, ids[r.Header("ce_id")], "duplicate %s", r.Header("ce_id"))
		ids[r.Header("ce_id")] = true
		seq, err := strconv.ParseInt(r.Header(publish.HeaderSeq), 10, 64)
		require.NoError(t, err)
		require.Greater(t, seq, last[r.Partition], "partition order is outbox order")
		last[r.Partition] = seq
	}
}

// newPublisher returns a publisher of store's outbox, closed when the test
// ends.
func newPublisher(t *testing.T, cfg publish.Config, store *pgtest.Stores, reg prometheus.Registerer) *publish.Publisher {
	t.Helper()
	p, err := publish.New(context.Background(), cfg, store.Outbox, zaptest.NewLogger(t), reg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// run runs p under the publisher lease until stop is called or the test
// ends; stop returns Run's error.
func run(t *testing.T, p *publish.Publisher, store *pgtest.Stores) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, hold(t, store, "publisher"), nil) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() { _ = stop() })
	return stop
}

func message(t *testing.T, i int) event.Message {
	t.Helper()
	e := event.Event{
		ID:             event.ID("yandex", "default", strconv.Itoa(i)),
		Type:           event.TypeStatusChanged,
		Provider:       event.ProviderYandex,
		Account:        "default",
		OrderID:        fmt.Sprintf("claim-%d", i%10),
		Status:         event.StatusCreated,
		ProviderStatus: "new",
		Revision:       int64(i),
		OccurredAt:     time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC),
		ObservedAt:     time.Date(2026, 1, 1, 0, 1, 0, 0, time.UTC),
	}
	m, err := e.Message()
	require.NoError(t, err)
	return m
}

func TestMissingTopicIsAStartupError(t *testing.T) {
	t.Parallel()
	kc := kafkatest.Start(t)
	cfg := config(kc.Addr)
	cfg.CreateTopic = false
	_, err := publish.New(context.Background(), cfg, pgtest.Open(t).Outbox, zaptest.NewLogger(t), prometheus.NewRegistry())
	require.ErrorIs(t, err, publish.ErrTopicMissing)
	require.ErrorContains(t, err, "INGESTD_KAFKA_CREATE_TOPIC")
}

func TestPublishesOutboxInOrderWithHeaders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kc := kafkatest.Start(t)
	store := pgtest.Open(t)
	p := newPublisher(t, config(kc.Addr), store, prometheus.NewRegistry())

	const pages, perPage = 5, 40
	prev := ""
	for pg := range pages {
		rows := make([]outbox.Row, perPage)
		for i := range rows {
			m := message(t, pg*perPage+i)
			rows[i] = outbox.Row{Partition: p.Partition(m.Key), Msg: m}
		}
		cur := fmt.Sprintf("c%d", pg)
		commit(t, store, prev, cur, rows)
		prev = cur
	}

	stop := run(t, p, store)
	p.Notify()

	before := time.Now().Add(-time.Second)
	recs := kafkatest.ReadTopic(t, kc.Addr, "events", pages*perPage, 20*time.Second)
	require.Len(t, recs, pages*perPage)
	lastSeq := map[int32]int64{}
	ids := map[string]bool{}
	for _, r := range recs {
		require.Equal(t, int32(p.Partition(r.Key)), r.Partition, "partition follows the key hash")
		seq, err := strconv.ParseInt(r.Header(publish.HeaderSeq), 10, 64)
		require.NoError(t, err)
		require.Greater(t, seq, lastSeq[r.Partition], "partition order is outbox order")
		lastSeq[r.Partition] = seq
		require.Equal(t, "1.0", r.Header("ce_specversion"))
		require.Equal(t, "application/json", r.Header("content-type"))
		require.Equal(t, "delivery.status_changed", r.Header("ce_type"))
		require.Equal(t, "/ingestd/yandex/default", r.Header("ce_source"))
		parsed, err := event.ParsePayload(r.Value)
		require.NoError(t, err)
		require.Equal(t, parsed.ID, r.Header("ce_id"))
		require.Equal(t, "yandex:"+parsed.OrderID, r.Key)
		ids[parsed.ID] = true
		// Kafka's time-based retention and consumers' seeks by time go by
		// the record timestamp: it must be the time of the write, never
		// the zero time (1970), which retention would delete at once.
		require.WithinRange(t, r.Timestamp, before, time.Now(), "record timestamp")
	}
	require.Len(t, ids, pages*perPage, "no duplicates")

	// Watermarks reach the last seq of every partition.
	require.Eventually(t, func() bool {
		b, err := store.Outbox.Backlog(ctx)
		return err == nil && b.Rows == 0
	}, 10*time.Second, 20*time.Millisecond)
	wm, err := store.Outbox.Watermarks(ctx)
	require.NoError(t, err)
	for part, seq := range lastSeq {
		require.Equal(t, seq, wm[part])
	}
	require.NoError(t, stop())
}

func TestDrainPublishesEverythingThenReturns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kc := kafkatest.Start(t)
	store := pgtest.Open(t)
	p := newPublisher(t, config(kc.Addr), store, prometheus.NewRegistry())

	rows := make([]outbox.Row, 2500) // more than one BatchSize
	for i := range rows {
		m := message(t, i)
		rows[i] = outbox.Row{Partition: p.Partition(m.Key), Msg: m}
	}
	commit(t, store, "", "c", rows)

	stop := make(chan struct{})
	close(stop)
	require.NoError(t, p.Run(ctx, hold(t, store, "publisher"), stop), "Run returns by itself once drained")
	b, err := store.Outbox.Backlog(ctx)
	require.NoError(t, err)
	require.Zero(t, b.Rows)
	require.NoError(t, p.Close())
	require.Len(t, kafkatest.ReadTopic(t, kc.Addr, "events", len(rows), 20*time.Second), len(rows))
}

func TestPartitionIsStableMurmur2(t *testing.T) {
	t.Parallel()
	kc := kafkatest.Start(t)
	p, err := publish.New(context.Background(), config(kc.Addr), pgtest.Open(t).Outbox, zaptest.NewLogger(t), prometheus.NewRegistry())
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	// The Java client's default partitioner is (murmur2(key) & 0x7fffffff) %
	// partitions; these expectations come from the Java murmur2 values that
	// librdkafka and kafka-go test against, so Java producers of the same
	// keys agree with ingestd on placement.
	for key, want := range map[string]int{"kafka": 1, "1234": 0, "234": 2, "34": 0, "4": 1} {
		require.Equal(t, want, p.Partition(key), key)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mutate  func(*publish.Config)
		wantErr string
	}{
		{"ok", func(*publish.Config) {}, ""},
		{"no brokers", func(c *publish.Config) { c.Brokers = nil }, "INGESTD_KAFKA_BROKERS: required"},
		{"bad broker", func(c *publish.Config) { c.Brokers = []string{"localhost"} }, "INGESTD_KAFKA_BROKERS"},
		{"bad topic", func(c *publish.Config) { c.Topic = "a b" }, "INGESTD_KAFKA_TOPIC"},
		{"partitions", func(c *publish.Config) { c.Partitions = 0 }, "INGESTD_KAFKA_PARTITIONS"},
		{"replication", func(c *publish.Config) { c.ReplicationFactor = 0 }, "INGESTD_KAFKA_REPLICATION_FACTOR"},
		{"batch", func(c *publish.Config) { c.BatchSize = 0 }, "INGESTD_KAFKA_BATCH_SIZE"},
		{"batch bytes", func(c *publish.Config) { c.BatchBytes = 100 }, "INGESTD_KAFKA_BATCH_BYTES"},
		{"write timeout", func(c *publish.Config) { c.WriteTimeout = 0 }, "INGESTD_KAFKA_WRITE_TIMEOUT"},
		{"retention", func(c *publish.Config) { c.Retention = -time.Second }, "INGESTD_OUTBOX_RETENTION"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := config("127.0.0.1:9092")
			tc.mutate(&cfg)
			err := cfg.Validate()
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

// TestLargeWritesAreSplitPerPartition: a partition's share of a write that
// is larger than BatchBytes goes in several requests, in order. With one
// partition, 1,500 events of 1.2 KB are 1.8 MB in one write, which the
// broker refuses as one record batch (its max.message.bytes is about 1 MB,
// as Kafka's); the publisher used to retry that forever.
func TestLargeWritesAreSplitPerPartition(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		partitions int
		batchBytes int
		events     int
		payload    int
	}{
		{name: "one partition, default bytes", partitions: 1, batchBytes: publish.DefaultConfig().BatchBytes, events: 1500, payload: 1200},
		{name: "three partitions, small requests", partitions: 3, batchBytes: 4096, events: 90, payload: 300},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			kc := kafkatest.Start(t)
			store := pgtest.Open(t)
			cfg := config(kc.Addr)
			cfg.Partitions = tc.partitions
			cfg.BatchSize = tc.events
			cfg.BatchBytes = tc.batchBytes
			p := newPublisher(t, cfg, store, prometheus.NewRegistry())
			rows := make([]outbox.Row, tc.events)
			pad := bytes.Repeat([]byte("x"), tc.payload)
			for i := range rows {
				m := message(t, i)
				m.Payload = append(append([]byte(nil), m.Payload[:len(m.Payload)-1]...), []byte(`,"pad":"`+string(pad)+`"}`)...)
				rows[i] = outbox.Row{Partition: p.Partition(m.Key), Msg: m}
			}
			commit(t, store, "", "c1", rows)
			stop := run(t, p, store)
			p.Notify()

			recs := kafkatest.ReadTopic(t, kc.Addr, "events", tc.events, 30*time.Second)
			requireOnceInOrder(t, recs, tc.events)
			require.Eventually(t, func() bool {
				b, err := store.Outbox.Backlog(ctx)
				return err == nil && b.Rows == 0
			}, 10*time.Second, 20*time.Millisecond)
			require.NoError(t, stop())
		})
	}
}

// TestMemoryPathFallsBackOnGapsAndOverflow hands most commits to the
// publisher directly, withholds some (as commits of another instance would
// be) and overflows its queue: every row is published exactly once, in
// outbox order per partition.
func TestMemoryPathFallsBackOnGapsAndOverflow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kc := kafkatest.Start(t)
	store := pgtest.Open(t)
	cfg := config(kc.Addr)
	cfg.BatchSize = 20 // a queue of memBatches*20 rows overflows quickly
	p := newPublisher(t, cfg, store, prometheus.NewRegistry())
	stop := run(t, p, store)

	l := hold(t, store, "source:yandex/default").Lease
	prev, total := "", 0
	for pg := range 40 {
		size := 5 + pg%7
		if pg >= 30 {
			size = 60 // a burst larger than the queue
		}
		rows := make([]outbox.Row, size)
		for i := range rows {
			m := message(t, total+i)
			rows[i] = outbox.Row{Partition: p.Partition(m.Key), Msg: m}
		}
		total += size
		cur := fmt.Sprintf("c%d", pg)
		c, err := store.Cursors.CommitPage(ctx, cursor.Page{Lease: l, SourceID: "yandex/default", PrevCursor: prev, Cursor: cur, Rows: rows})
		require.NoError(t, err)
		prev = cur
		if pg%4 == 3 {
			continue // withheld: the publisher must find it in the outbox
		}
		p.Committed(c)
	}

	recs := kafkatest.ReadTopic(t, kc.Addr, "events", total, 30*time.Second)
	requireOnceInOrder(t, recs, total)
	require.NoError(t, stop())
}

// TestLateHandOffIsPublishedFromMemory: a poller hands its commit to the
// publisher a moment after COMMIT returns. A publisher that wakes in that
// moment sees rows committed but not queued; it waits for the hand-off
// rather than reading the rows back from PostgreSQL.
func TestLateHandOffIsPublishedFromMemory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kc := kafkatest.Start(t)
	store := pgtest.Open(t)
	reg := prometheus.NewRegistry()
	p := newPublisher(t, config(kc.Addr), store, reg)
	stop := run(t, p, store)

	l := hold(t, store, "source:yandex/default").Lease
	const pages, perPage = 20, 10
	prev := ""
	var readBefore float64
	for pg := range pages {
		rows := make([]outbox.Row, perPage)
		for i := range rows {
			m := message(t, pg*perPage+i)
			rows[i] = outbox.Row{Partition: p.Partition(m.Key), Msg: m}
		}
		cur := fmt.Sprintf("c%d", pg)
		c, err := store.Cursors.CommitPage(ctx, cursor.Page{Lease: l, SourceID: "yandex/default", PrevCursor: prev, Cursor: cur, Rows: rows})
		require.NoError(t, err)
		prev = cur
		if pg > 0 {
			// The publisher wakes between the commit and its hand-off,
			// which comes late.
			p.Notify()
			time.Sleep(5 * time.Millisecond)
		}
		p.Committed(c)
		// Each page is on Kafka before the next is committed.
		kafkatest.ReadTopic(t, kc.Addr, "events", (pg+1)*perPage, 30*time.Second)
		if pg == 0 {
			// The first page may be read back: a publisher starts from
			// the outbox.
			readBefore = counter(t, reg, "ingestd_publish_outbox_read_rows_total")
		}
	}
	read := counter(t, reg, "ingestd_publish_outbox_read_rows_total") - readBefore
	t.Logf("%.0f of %d rows read back from the outbox", read, (pages-1)*perPage)
	// A slow machine may miss the grace now and then; a publisher that
	// does not wait reads nearly every page back.
	require.LessOrEqual(t, read, float64(pages/4*perPage))
	require.NoError(t, stop())
}

// counter returns the value of the unlabelled counter name in reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	v, series := promtest.Sum(t, reg, name, nil)
	require.Equal(t, 1, series, "%s has one series", name)
	return v
}

// TestCheckingATopicNeverCreatesIt runs against a broker that creates
// topics on any metadata request that allows it: readiness and
// check-config must ask without allowing it.
func TestCheckingATopicNeverCreatesIt(t *testing.T) {
	t.Parallel()
	kc := kafkatest.Start(t, kfake.AllowAutoTopicCreation())
	cfg := config(kc.Addr)
	cfg.Topic = "absent"
	cfg.CreateTopic = false
	for range 2 {
		require.ErrorIs(t, publish.CheckTopic(context.Background(), cfg), publish.ErrTopicMissing)
	}
	_, err := publish.New(context.Background(), cfg, pgtest.Open(t).Outbox, zaptest.NewLogger(t), prometheus.NewRegistry())
	require.ErrorIs(t, err, publish.ErrTopicMissing, "the topic was not created by the checks")
}
