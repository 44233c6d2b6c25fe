package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/ingestd/ingestd/internal/kafkatest"
)

// testCluster is a cluster-mode broker set as setUp makes it.
type testCluster struct {
	c     *kfake.Cluster
	churn *churner
	log   *produceLog
	// opts reach the brokers (seeds, TLS, SASL).
	opts []kgo.Opt
}

// startCluster starts a cluster-mode broker set as setUp does (three
// brokers, TLS, SASL, the connection tracker, the produce observer wired to
// a churner that is not started) with the topic created.
func startCluster(t *testing.T, every, removeAvg time.Duration) *testCluster {
	t.Helper()
	certs := kafkatest.NewCerts(t, kafkatest.CertOptions{})
	tracker := &connTracker{}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(clusterBrokers),
		kfake.TLS(certs.ServerTLS(false)),
		kfake.EnableSASL(),
		kfake.Superuser(saslMechanism, saslUser, "secret"),
		kfake.ListenFn(tracker.listen),
		kfake.SeedTopics(partitions, topicName),
	)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	tc := &testCluster{c: c, log: newProduceLog(c)}
	tc.churn, err = newChurner(c, tracker, c.ListenAddrs(), every, removeAvg, 1)
	require.NoError(t, err)
	// Stopped before the cluster closes: cleanups run last-in first-out.
	t.Cleanup(tc.churn.stop)
	tc.log.onProduce = tc.churn.onProduce
	c.ControlKey(int16(kmsg.Produce), tc.log.observe)
	tc.opts = []kgo.Opt{
		kgo.SeedBrokers(c.ListenAddrs()...),
		kafkatest.TLSOpt(certs.ClientTLS()),
		kafkatest.SASLOpt(saslMechanism, saslUser, "secret"),
	}
	return tc
}

// TestChurnerMovesLeadersAndBrokers: the churner elects leaders anew,
// removes a broker other than the controller (dropping its connections) and
// adds it back on its port, and stop leaves every broker up.
func TestChurnerMovesLeadersAndBrokers(t *testing.T) {
	t.Parallel()
	tc := startCluster(t, 10*time.Millisecond, 200*time.Millisecond)
	c, ch := tc.c, tc.churn
	// No produce request comes, so every removal is made when its wait
	// for one ends.
	ch.armWait = 50 * time.Millisecond
	addrs := c.ListenAddrs()
	// A raw connection to every broker: the removed one must be dropped.
	conns := make([]net.Conn, len(addrs))
	for i, a := range addrs {
		conn, err := net.Dial("tcp", a)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		conns[i] = conn
	}

	require.Equal(t, []int32{0, 1}, ch.removable, "the controller, the last broker, is never removed")
	ch.start()
	require.Eventually(t, func() bool {
		st := ch.counts()
		return st.Returns >= 2 && st.Shuffles > st.Removals+st.Returns
	}, 30*time.Second, 10*time.Millisecond)
	ch.stop()
	ch.stop() // a second stop is harmless

	st := ch.counts()
	require.Positive(t, st.LeaderChanges)
	require.Equal(t, st.Removals, st.Returns, "stop adds a removed broker back")
	require.Positive(t, st.DroppedConns, "the removed broker's connections were dropped")
	require.Zero(t, st.RemovalsMidProduce)
	events := ch.takeEvents()
	require.Len(t, events, st.Removals+st.Returns, "one event per removal and return: %q", events)
	require.Empty(t, ch.takeEvents(), "events are taken once")

	require.ElementsMatch(t, addrs, c.ListenAddrs(), "every broker is back on its own port")
	dropped := 0
	for i, conn := range conns {
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
		_, err := conn.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue // still open
		}
		require.ErrorIs(t, err, io.EOF, "broker %d", i)
		require.NotEqual(t, len(conns)-1, i, "the controller's connection stays open")
		dropped++
	}
	require.Positive(t, dropped, "a connection to a removed broker was closed")
}

// TestProduceLogCountsBatchesToFormerLeaders: a batch sent to a broker that
// does not lead its partition is refused and counted, not recorded as an
// arrival; one sent to the leader is recorded.
func TestProduceLogCountsBatchesToFormerLeaders(t *testing.T) {
	t.Parallel()
	tc := startCluster(t, time.Hour, time.Hour)
	c, log, opts := tc.c, tc.log, tc.opts
	// Produce v13 names the topic by id only, which kafka-go (ingestd's
	// client) never sends.
	cl, err := kgo.NewClient(append(opts, kgo.MaxVersions(kversion.V3_0_0()))...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)

	leader := c.LeaderFor(topicName, 0)
	require.GreaterOrEqual(t, leader, int32(0))
	other := (leader + 1) % clusterBrokers
	ts := time.UnixMilli(time.Now().UnixMilli())
	produce := func(node int32) int16 {
		t.Helper()
		rec := kgo.KeySliceRecord([]byte("k"), []byte("v"))
		rec.Timestamp = ts
		batch := encodeBatch(t, rec)
		req := kmsg.NewPtrProduceRequest()
		req.Acks = -1
		req.TimeoutMillis = 5000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = topicName
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition = 0
		rp.Records = batch
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := req.RequestWith(ctx, cl.Broker(int(node)))
		require.NoError(t, err)
		return resp.Topics[0].Partitions[0].ErrorCode
	}

	require.Equal(t, kerr.NotLeaderForPartition.Code, produce(other))
	require.Equal(t, 1, log.refusedBatches())
	_, ok := log.arrival(0, ts)
	require.False(t, ok, "a refused batch did not arrive")

	require.Zero(t, produce(leader))
	require.Equal(t, 1, log.refusedBatches())
	at, ok := log.arrival(0, ts)
	require.True(t, ok)
	require.WithinDuration(t, time.Now(), at, 10*time.Second)
}

// encodeBatch encodes one record as a v2 record batch, as a producer sends
// it: with its length and its CRC-32C over what follows the CRC.
func encodeBatch(t *testing.T, r *kgo.Record) []byte {
	t.Helper()
	rec := kmsg.NewRecord()
	rec.Key, rec.Value = r.Key, r.Value
	b := kmsg.NewRecordBatch()
	b.Magic = 2
	b.FirstTimestamp = r.Timestamp.UnixMilli()
	b.MaxTimestamp = b.FirstTimestamp
	b.ProducerID, b.ProducerEpoch, b.FirstSequence = -1, -1, -1
	b.NumRecords = 1
	b.Records = rec.AppendTo(nil)
	b.Length = int32(len(b.AppendTo(nil)) - 12) // after FirstOffset and Length
	raw := b.AppendTo(nil)
	const crcAt = 8 + 4 + 4 + 1 // FirstOffset, Length, PartitionLeaderEpoch, Magic
	binary.BigEndian.PutUint32(raw[crcAt:], crc32.Checksum(raw[crcAt+4:], crc32.MakeTable(crc32.Castagnoli)))
	var check kmsg.RecordBatch
	require.NoError(t, check.ReadFrom(raw))
	require.Equal(t, b.FirstTimestamp, check.FirstTimestamp)
	return raw
}

// TestConsumeTopicJudgesEachOffsetOnce: over TLS and SASL, while leaders
// move, the checker's consumer returns every record once, in partition and
// offset order.
func TestConsumeTopicJudgesEachOffsetOnce(t *testing.T) {
	t.Parallel()
	tc := startCluster(t, 20*time.Millisecond, time.Hour)
	c, opts := tc.c, tc.opts
	cl, err := kgo.NewClient(append(opts, kgo.DefaultProduceTopic(topicName))...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	const n = 400
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range n {
		r := kgo.KeySliceRecord(fmt.Appendf(nil, "yandex:%d", i%37), []byte("not a payload"))
		require.NoError(t, cl.ProduceSync(ctx, r).FirstErr())
	}

	ch := tc.churn
	ch.start()
	got, err := consumeTopic(ctx, c.ListenAddrs(), opts[1:], n, 20*time.Second)
	require.NoError(t, err)
	require.Len(t, got.recs, n, "errors seen: %q", got.errs)
	require.Equal(t, int64(n), got.endTotal())
	seen := offsetSet{}
	for i, r := range got.recs {
		require.True(t, seen.add(r.partition, r.offset), "%s returned twice", &got.recs[i])
		if i > 0 {
			prev := got.recs[i-1]
			require.True(t, prev.partition < r.partition || prev.partition == r.partition && prev.offset < r.offset, "order at %d", i)
		}
		require.Error(t, r.err, "the payload is not an event")
	}
	t.Logf("redelivered and dropped: %d; leader elections during the read: %d", got.again, ch.counts().Shuffles)
}

// TestChurnerRemovesABrokerMidProduce: an armed removal is made by the
// next produce request to a removable broker, which loses its connection
// (the producer cannot tell whether the request was written) and is
// refused; the producer's records still all land once it sends them again.
func TestChurnerRemovesABrokerMidProduce(t *testing.T) {
	t.Parallel()
	tc := startCluster(t, 10*time.Millisecond, 40*time.Millisecond)
	tc.churn.armWait = time.Hour // only a produce request removes
	cl, err := kgo.NewClient(append(tc.opts,
		kgo.DefaultProduceTopic(topicName),
		kgo.MaxVersions(kversion.V3_0_0()),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
		// Leaders move every 10ms: the default 5s between metadata
		// refreshes would hold most requests back.
		kgo.MetadataMinAge(10*time.Millisecond),
	)...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	tc.churn.start()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for n := 0; tc.churn.counts().RemovalsMidProduce == 0; n++ {
		require.NoError(t, ctx.Err(), "no removal during a produce request")
		// Errors are the client's to retry; the deadline bounds them.
		_ = cl.ProduceSync(ctx, kgo.StringRecord(fmt.Sprint(n))).FirstErr()
	}
	tc.churn.stop()
	st := tc.churn.counts()
	require.Equal(t, st.Removals, st.RemovalsMidProduce, "every removal waited for a produce request")
	require.Positive(t, st.DroppedConns, "the producer's connection at least")
	require.Equal(t, st.Removals, st.Returns)
	require.Positive(t, tc.log.refusedBatches(), "the request that removed its broker was refused")
}

func TestOffsetSet(t *testing.T) {
	t.Parallel()
	s := offsetSet{}
	require.True(t, s.add(0, 5))
	require.True(t, s.add(1, 5), "another partition")
	require.True(t, s.add(0, 6))
	require.False(t, s.add(0, 5), "a redelivery")
}
