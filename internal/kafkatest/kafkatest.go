// Package kafkatest starts an in-process Kafka-protocol broker (kfake) for
// tests. Clients reach it over TCP exactly as they reach Kafka.
package kafkatest

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Cluster is a running in-process broker.
type Cluster struct {
	*kfake.Cluster
	// Addr is the broker's host:port on loopback.
	Addr string
}

// Start starts a one-broker cluster on a free loopback port (kfake binds
// 127.0.0.1) and stops it when
// the test ends. Topics are not auto-created, as on a production cluster.
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
	return &Cluster{Cluster: c, Addr: addrs[0]}
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
// of the kafka-go producer under test) until it has read want records or
// timeout passes, and returns what it read in partition, offset order per
// partition. It reads past want briefly so that extra records (duplicates)
// are seen too.
func ReadTopic(t testing.TB, addr, topic string, want int, timeout time.Duration) []Record {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(addr),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("kafkatest: consumer: %v", err)
	}
	defer cl.Close()

	var out []Record
	deadline := time.Now().Add(timeout)
	var extraUntil time.Time
	for time.Now().Before(deadline) {
		if len(out) >= want {
			if extraUntil.IsZero() {
				extraUntil = time.Now().Add(300 * time.Millisecond)
			} else if time.Now().After(extraUntil) {
				break
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fetches := cl.PollFetches(ctx)
		cancel()
		fetches.EachRecord(func(r *kgo.Record) {
			h := make(map[string]string, len(r.Headers))
			for _, kv := range r.Headers {
				h[kv.Key] = string(kv.Value)
			}
			out = append(out, Record{Partition: r.Partition, Offset: r.Offset, Key: string(r.Key), Value: r.Value, Headers: h, Timestamp: r.Timestamp})
		})
	}
	return out
}
