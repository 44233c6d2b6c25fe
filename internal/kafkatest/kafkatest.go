// Package kafkatest starts an in-process Kafka-protocol broker (kfake) for
// tests. Clients reach it over TCP exactly as they reach Kafka.
package kafkatest

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Cluster is a running in-process broker.
type Cluster struct {
	*kfake.Cluster
	// Addr is the first broker's host:port on loopback.
	Addr string
	// Addrs holds every broker's host:port on loopback, in broker order;
	// Addrs[0] == Addr.
	Addrs []string
	// ClientOpts are extra franz-go options (a TLS dialer, SASL) that every
	// reader of this cluster uses. Set them after Start when the cluster
	// was started with kfake.TLS or kfake.EnableSASL.
	ClientOpts []kgo.Opt
}

// Start starts a one-broker cluster on a free loopback port (kfake binds
// 127.0.0.1) and stops it when the test ends; pass kfake.NumBrokers to start
// more brokers. Topics are not auto-created, as on a production cluster.
func Start(t testing.TB, opts ...kfake.Opt) *Cluster {
	t.Helper()
	all := append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)
	c, err := kfake.NewCluster(all...)
	if err != nil {
		t.Fatalf("kafkatest: start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	addrs := c.ListenAddrs()
	if len(addrs) == 0 {
		t.Fatal("kafkatest: kfake has no listen address")
	}
	return &Cluster{Cluster: c, Addr: addrs[0], Addrs: addrs}
}

// Record is a consumed Kafka record.
type Record struct {
	Partition int32
	Offset    int64
	Key       string
	Value     []byte
	Headers   map[string]string
	// Timestamp is the record's timestamp as the broker stored it.
	Timestamp time.Time
}

// Header returns the value of header k.
func (r Record) Header(k string) string { return r.Headers[k] }

// ReadTopic consumes topic from the start with franz-go (a client independent
// of the kafka-go producer under test), seeding it with the one broker at
// addr, until it has read want records or timeout passes. It reads past want
// briefly so that extra records (duplicates) are seen too. As
// [Cluster.ReadTopic] does, it judges each (partition, offset) once, dropping
// records a consumer delivers again after a leader move, and returns records
// ordered by partition, then by offset. It uses no TLS or SASL; use
// Cluster.ReadTopic with ClientOpts for a cluster that needs them.
func ReadTopic(t testing.TB, addr, topic string, want int, timeout time.Duration) []Record {
	t.Helper()
	return readTopic(t, []string{addr}, nil, topic, want, timeout)
}

// ReadTopic consumes topic from the start with franz-go (a client independent
// of the kafka-go producer under test), seeded with every broker in c.Addrs
// and configured with c.ClientOpts, until it has read want records or timeout
// passes. It reads past want briefly so that extra records (duplicates) are
// seen too.
//
// Each (partition, offset) is judged once: when a partition's leader moves,
// the franz-go consumer may rewind that partition to its start and deliver
// records it has already delivered, so a record at a (partition, offset)
// already read is dropped and does not count towards want. A real duplicate
// write by the producer under test sits at a different offset, so it is still
// returned. The result is ordered by partition, then by offset within a
// partition.
func (c *Cluster) ReadTopic(t testing.TB, topic string, want int, timeout time.Duration) []Record {
	t.Helper()
	seeds := c.Addrs
	if len(seeds) == 0 {
		// A Cluster built by hand around a kfake.Cluster may set only Addr.
		seeds = []string{c.Addr}
	}
	return readTopic(t, seeds, c.ClientOpts, topic, want, timeout)
}

// readTopic is the implementation shared by ReadTopic and Cluster.ReadTopic.
func readTopic(t testing.TB, seeds []string, extra []kgo.Opt, topic string, want int, timeout time.Duration) []Record {
	t.Helper()
	opts := []kgo.Opt{
		kgo.SeedBrokers(seeds...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100 * time.Millisecond),
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		t.Fatalf("kafkatest: consumer: %v", err)
	}
	defer cl.Close()

	var col collector
	dropped := 0
	// Fetch errors are logged once each so that a reader that cannot reach
	// or authenticate to the cluster says why it returned too few records.
	logged := map[string]bool{}
	deadline := time.Now().Add(timeout)
	var extraUntil time.Time
	for time.Now().Before(deadline) {
		if col.len() >= want {
			if extraUntil.IsZero() {
				extraUntil = time.Now().Add(300 * time.Millisecond)
			} else if time.Now().After(extraUntil) {
				break
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fetches := cl.PollFetches(ctx)
		cancel()
		fetches.EachError(func(_ string, _ int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return
			}
			if msg := err.Error(); !logged[msg] {
				logged[msg] = true
				t.Logf("kafkatest: reading %s: %v", topic, err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			h := make(map[string]string, len(r.Headers))
			for _, kv := range r.Headers {
				h[kv.Key] = string(kv.Value)
			}
			if !col.add(Record{Partition: r.Partition, Offset: r.Offset, Key: string(r.Key), Value: r.Value, Headers: h, Timestamp: r.Timestamp}) {
				dropped++
			}
		})
	}
	if dropped > 0 {
		t.Logf("kafkatest: reading %s: dropped %d records delivered again at a (partition, offset) already read", topic, dropped)
	}
	return col.records()
}

// partOffset identifies a record's place in a topic.
type partOffset struct {
	partition int32
	offset    int64
}

// collector keeps the first record read at each (partition, offset), so that
// records a consumer delivers again after rewinding a partition are counted
// once.
type collector struct {
	seen map[partOffset]bool
	recs []Record
}

// add keeps r unless a record at its (partition, offset) was already kept,
// and reports whether it kept r.
func (c *collector) add(r Record) bool {
	k := partOffset{r.Partition, r.Offset}
	if c.seen[k] {
		return false
	}
	if c.seen == nil {
		c.seen = map[partOffset]bool{}
	}
	c.seen[k] = true
	c.recs = append(c.recs, r)
	return true
}

// len returns how many distinct records were kept.
func (c *collector) len() int { return len(c.recs) }

// records returns the kept records ordered by partition, then offset. A
// consumer interleaves partitions and may rewind one, so arrival order is
// not that order.
func (c *collector) records() []Record {
	out := slices.Clone(c.recs)
	slices.SortFunc(out, func(a, b Record) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	return out
}
