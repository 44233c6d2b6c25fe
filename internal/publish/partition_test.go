package publish_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/publish"
)

// commitN commits rows from..from+n-1 as one page after prev.
func commitN(t *testing.T, s *pgtest.Stores, p *publish.Publisher, prev, cur string, from, n int) {
	t.Helper()
	rows := make([]outbox.Row, n)
	for i := range rows {
		m := message(t, from+i)
		rows[i] = outbox.Row{Partition: p.Partition(m.Key), Msg: m}
	}
	commit(t, s, prev, cur, rows)
}

// answerProduce makes the broker answer produce requests to partition part
// with code for as long as fail returns true; with code -1 it does not
// answer at all, as a broker that hangs.
func answerProduce(kc *kafkatest.Cluster, part int32, code int16, fail func() bool) {
	kc.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		if len(pr.Topics) != 1 || len(pr.Topics[0].Partitions) != 1 || pr.Topics[0].Partitions[0].Partition != part || !fail() {
			return nil, nil, false
		}
		if code < 0 {
			return nil, nil, true
		}
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic = pr.Topics[0].Topic
		rp := kmsg.NewProduceResponseTopicPartition()
		rp.Partition, rp.ErrorCode = part, code
		rt.Partitions = append(rt.Partitions, rp)
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})
}

// TestMovedLeaderIsSentAgainWithoutReadBack: a produce answered
// NOT_LEADER_OR_FOLLOWER was certainly not written, so it is sent again on
// fresh metadata at once, and nothing is read back.
func TestMovedLeaderIsSentAgainWithoutReadBack(t *testing.T) {
	t.Parallel()
	kc := kafkatest.Start(t)
	store := pgtest.Open(t)
	reg := prometheus.NewRegistry()
	p := newPublisher(t, config(kc.Addr), store, reg)
	var refused atomic.Int32
	answerProduce(kc, 1, 6, func() bool { return refused.Add(1) <= 2 })

	const n = 300
	commitN(t, store, p, "", "c1", 0, n)
	stop := run(t, p, store)
	requireOnceInOrder(t, kafkatest.ReadTopic(t, kc.Addr, "events", n, 20*time.Second), n)
	require.NoError(t, stop())
	require.Equal(t, 2.0, counter(t, reg, "ingestd_publish_retried_writes_total"), "both refusals were sent again")
	require.Zero(t, counter(t, reg, "ingestd_publish_unknown_writes_total"))
	require.Equal(t, 3.0, counter(t, reg, "ingestd_publish_readbacks_total"), "only the three read-backs of the term's start")
	require.Zero(t, counter(t, reg, "ingestd_publish_errors_total"), "the moves were handled within the write")
}

// TestAPartitionHeldBackHoldsUpOnlyItself: while one partition's leader
// does not answer (a write of unknown outcome, then a leader refusing for
// longer than the write's retries), the other partitions keep publishing;
// once it answers again, it is read back (only after a write of unknown
// outcome) and catches up, each event once and in order.
func TestAPartitionHeldBackHoldsUpOnlyItself(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		code int16
		// writeTimeout is short where the broker hangs, so that the
		// test does not wait long for the outcome to be unknown; and the
		// default elsewhere, so that a slow machine never turns a write
		// into one of unknown outcome.
		writeTimeout time.Duration
		wantUnknown  bool
	}{
		{"a hung broker: outcome unknown, read back", -1, time.Second, true},
		{"a leader gone for longer than the retries: not read back", 5 /* LEADER_NOT_AVAILABLE */, 10 * time.Second, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			kc := kafkatest.Start(t)
			store := pgtest.Open(t)
			reg := prometheus.NewRegistry()
			cfg := config(kc.Addr)
			cfg.WriteTimeout = tc.writeTimeout
			p := newPublisher(t, cfg, store, reg)
			var blocked atomic.Bool
			blocked.Store(true)
			answerProduce(kc, 2, tc.code, blocked.Load)

			const n = 300
			commitN(t, store, p, "", "c1", 0, n)
			stop := run(t, p, store)
			p.Notify()
			last := lastSeqs(t, store)
			caughtUp := func(parts ...int) func() bool {
				return func() bool {
					wm, err := store.Outbox.Watermarks(ctx)
					require.NoError(t, err)
					for _, part := range parts {
						if wm[part] != last[part] {
							return false
						}
					}
					return true
				}
			}
			require.Eventually(t, caughtUp(0, 1), 20*time.Second, 10*time.Millisecond)
			// More rows while partition 2 is still held back: the others
			// publish them too.
			commitN(t, store, p, "c1", "c2", n, n)
			p.Notify()
			last = lastSeqs(t, store)
			require.Eventually(t, caughtUp(0, 1), 20*time.Second, 10*time.Millisecond)
			wm, err := store.Outbox.Watermarks(ctx)
			require.NoError(t, err)
			require.Zero(t, wm[2], "partition 2 is held back")

			blocked.Store(false)
			require.Eventually(t, caughtUp(0, 1, 2), 30*time.Second, 10*time.Millisecond)
			requireOnceInOrder(t, kafkatest.ReadTopic(t, kc.Addr, "events", 2*n, 20*time.Second), 2*n)
			require.NoError(t, stop())
			unknown := counter(t, reg, "ingestd_publish_unknown_writes_total")
			readbacks := counter(t, reg, "ingestd_publish_readbacks_total")
			if tc.wantUnknown {
				require.Positive(t, unknown)
				require.Greater(t, readbacks, 3.0, "the hung partition was read back")
			} else {
				require.Zero(t, unknown)
				require.Equal(t, 3.0, readbacks, "a refusal is never read back")
				require.Positive(t, counter(t, reg, "ingestd_publish_retried_writes_total"))
			}
		})
	}
}

// lastSeqs returns the last committed seq of each partition.
func lastSeqs(t *testing.T, s *pgtest.Stores) map[int]int64 {
	t.Helper()
	rows, err := s.Outbox.Pending(context.Background(), []int64{0, 0, 0}, 100000)
	require.NoError(t, err)
	last := map[int]int64{}
	for _, r := range rows {
		last[r.Partition] = max(last[r.Partition], r.Seq)
	}
	require.Len(t, last, 3, "rows in every partition")
	return last
}

// TestEveryCodecIsReadByteForByte publishes with each codec and reads the
// topic back with franz-go, a client other than kafka-go: kfake stores
// record batches as sent, so this checks that what ingestd compressed
// decodes to exactly the outbox's keys, payloads and headers, and that the
// batches on the wire really carry the codec.
func TestEveryCodecIsReadByteForByte(t *testing.T) {
	t.Parallel()
	codecs := []struct {
		name string
		id   int16 // the record batch attributes' codec bits
	}{{"none", 0}, {"gzip", 1}, {"snappy", 2}, {"lz4", 3}, {"zstd", 4}}
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			kc := kafkatest.Start(t)
			var (
				mu   sync.Mutex
				seen = map[int16]int{}
			)
			kc.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
				kc.KeepControl()
				for _, tp := range req.(*kmsg.ProduceRequest).Topics {
					for _, pp := range tp.Partitions {
						var b kmsg.RecordBatch
						if err := b.ReadFrom(pp.Records); err == nil {
							mu.Lock()
							seen[b.Attributes&0x7]++
							mu.Unlock()
						}
					}
				}
				return nil, nil, false
			})
			store := pgtest.Open(t)
			cfg := config(kc.Addr)
			cfg.Compression = c.name
			p := newPublisher(t, cfg, store, prometheus.NewRegistry())
			const n = 400
			commitN(t, store, p, "", "c1", 0, n)
			stop := run(t, p, store)
			recs := kafkatest.ReadTopic(t, kc.Addr, "events", n, 20*time.Second)
			require.NoError(t, stop())
			requireOnceInOrder(t, recs, n)

			rows, err := store.Outbox.Pending(context.Background(), []int64{0, 0, 0}, n)
			require.NoError(t, err)
			bySeq := map[string]outbox.Row{}
			for _, r := range rows {
				bySeq[strconv.FormatInt(r.Seq, 10)] = r
			}
			for _, rec := range recs {
				row, ok := bySeq[rec.Header(publish.HeaderSeq)]
				require.True(t, ok, "record %d/%d has an outbox seq", rec.Partition, rec.Offset)
				require.Equal(t, row.Msg.Key, rec.Key)
				require.True(t, bytes.Equal(row.Msg.Payload, rec.Value), "payload of seq %d byte for byte", row.Seq)
				var hdrs []string
				for _, h := range row.Msg.AppendHeaders(nil) {
					hdrs = append(hdrs, fmt.Sprintf("%s=%s", h.Key, h.Value))
					require.Equal(t, string(h.Value), rec.Header(h.Key), "header %s of seq %d", h.Key, row.Seq)
				}
				require.Len(t, rec.Headers, len(hdrs)+2, "the CloudEvents headers, seq and epoch")
			}
			mu.Lock()
			defer mu.Unlock()
			require.Positive(t, seen[c.id], "batches went out with codec %s: %v", c.name, seen)
			require.Len(t, seen, 1, "every batch with codec %s: %v", c.name, seen)
		})
	}
}
