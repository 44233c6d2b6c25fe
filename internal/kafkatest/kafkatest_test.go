package kafkatest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// deliveryTimeout bounds how long a test producer retries a record, so that a
// producer the cluster refuses fails within a few seconds instead of retrying
// until its context ends.
const deliveryTimeout = 3 * time.Second

// newProducer returns a franz-go producer for c that writes each record to
// the partition the record names. It uses only opts, not c.ClientOpts, so
// that a test can produce with other credentials than readers use.
func newProducer(t *testing.T, c *Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	base := []kgo.Opt{
		kgo.SeedBrokers(c.Addrs...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RecordDeliveryTimeout(deliveryTimeout),
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// produce writes recs and returns the first error. The context is a
// backstop only: deliveryTimeout fails records well before it ends.
func produce(cl *kgo.Client, recs []*kgo.Record) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cl.ProduceSync(ctx, recs...).FirstErr()
}

// makeRecords returns perPartition records for each of partitions
// partitions of topic, each with a value no other record has.
func makeRecords(topic, tag string, partitions, perPartition int) []*kgo.Record {
	var out []*kgo.Record
	for i := range perPartition {
		for p := range partitions {
			v := fmt.Sprintf("%s-p%d-%d", tag, p, i)
			out = append(out, &kgo.Record{Topic: topic, Partition: int32(p), Key: []byte(v), Value: []byte(v)})
		}
	}
	return out
}

// requireExactly checks that got holds every record of sent exactly once
// and nothing else, ordered by partition, then offset, with each partition's
// offsets starting at 0 without gaps and in the order the records were sent.
// sent must be what one or more ProduceSync calls wrote, one call after the
// other, so that each partition's offsets follow the order in sent.
func requireExactly(t *testing.T, sent []*kgo.Record, got []Record) {
	t.Helper()
	byPartition := map[int32][]string{}
	maxPartition := int32(-1)
	for _, r := range sent {
		byPartition[r.Partition] = append(byPartition[r.Partition], string(r.Value))
		maxPartition = max(maxPartition, r.Partition)
	}
	var want []Record
	for p := range maxPartition + 1 {
		for i, v := range byPartition[p] {
			want = append(want, Record{Partition: p, Offset: int64(i), Key: v, Value: []byte(v)})
		}
	}
	require.NotEmpty(t, want, "the test sent records")
	require.Len(t, got, len(want))
	for i := range want {
		require.Equal(t, want[i].Partition, got[i].Partition, "record %d", i)
		require.Equal(t, want[i].Offset, got[i].Offset, "record %d", i)
		require.Equal(t, want[i].Key, got[i].Key, "record %d", i)
		require.Equal(t, string(want[i].Value), string(got[i].Value), "record %d", i)
	}
}

func TestCollector(t *testing.T) {
	t.Parallel()
	rec := func(p int32, o int64, v string) Record { return Record{Partition: p, Offset: o, Value: []byte(v)} }
	tests := []struct {
		name     string
		in       []Record
		wantKept []bool
		want     []Record
	}{
		{
			name:     "partition rewound to its start after a leader move",
			in:       []Record{rec(0, 0, "a"), rec(0, 1, "b"), rec(0, 2, "c"), rec(0, 0, "a"), rec(0, 1, "b"), rec(0, 2, "c"), rec(0, 3, "d")},
			wantKept: []bool{true, true, true, false, false, false, true},
			want:     []Record{rec(0, 0, "a"), rec(0, 1, "b"), rec(0, 2, "c"), rec(0, 3, "d")},
		},
		{
			name:     "duplicate write at a new offset is kept",
			in:       []Record{rec(0, 0, "a"), rec(0, 1, "a")},
			wantKept: []bool{true, true},
			want:     []Record{rec(0, 0, "a"), rec(0, 1, "a")},
		},
		{
			name:     "same offset in other partitions is kept",
			in:       []Record{rec(1, 0, "x"), rec(0, 0, "x"), rec(2, 0, "x")},
			wantKept: []bool{true, true, true},
			want:     []Record{rec(0, 0, "x"), rec(1, 0, "x"), rec(2, 0, "x")},
		},
		{
			name:     "interleaved partitions come out by partition then offset",
			in:       []Record{rec(1, 0, "p1a"), rec(0, 1, "p0b"), rec(1, 1, "p1b"), rec(0, 0, "p0a"), rec(1, 0, "p1a")},
			wantKept: []bool{true, true, true, true, false},
			want:     []Record{rec(0, 0, "p0a"), rec(0, 1, "p0b"), rec(1, 0, "p1a"), rec(1, 1, "p1b")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var c collector
			var kept []bool
			for _, r := range tc.in {
				kept = append(kept, c.add(r))
			}
			require.Equal(t, tc.wantKept, kept)
			require.Equal(t, len(tc.want), c.len())
			require.Equal(t, tc.want, c.records())
		})
	}
}

func TestSASLOpt(t *testing.T) {
	t.Parallel()
	for _, m := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		require.NotNil(t, SASLOpt(m, "u", "p"), m)
	}
	require.PanicsWithValue(t, `kafkatest: unknown SASL mechanism "GSSAPI" (want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)`, func() { SASLOpt("GSSAPI", "u", "p") })
}

// TestTLSAndSASL starts a cluster that listens with TLS and requires SASL,
// and checks that a producer and Cluster.ReadTopic with the right TLSOpt and
// SASLOpt round-trip records, and that a producer with the wrong ones is
// refused. Each refused case first shows that the same cluster accepts the
// right client, so a refusal is down to what the case changed.
func TestTLSAndSASL(t *testing.T) {
	t.Parallel()
	const user, pass = "ingestd", "secret-pw"
	certs := NewCerts(t, CertOptions{})
	tests := []struct {
		name      string
		mechanism string
		// client, when set, returns the options of a producer the
		// cluster must refuse; wantErr is part of the refusal's text.
		client  func() []kgo.Opt
		wantErr string
	}{
		{name: "SCRAM-SHA-512", mechanism: "SCRAM-SHA-512"},
		{name: "SCRAM-SHA-256", mechanism: "SCRAM-SHA-256"},
		{name: "PLAIN", mechanism: "PLAIN"},
		{
			// kfake drops the connection on a wrong password, so the
			// refusal reads only EOF; there is no text worth matching.
			name:      "wrong password",
			mechanism: "SCRAM-SHA-512",
			client: func() []kgo.Opt {
				return []kgo.Opt{TLSOpt(certs.ClientTLS()), SASLOpt("SCRAM-SHA-512", user, "wrong-pw")}
			},
		},
		{
			name:      "no SASL",
			mechanism: "SCRAM-SHA-512",
			client:    func() []kgo.Opt { return []kgo.Opt{TLSOpt(certs.ClientTLS())} },
			wantErr:   "SASL",
		},
		{
			name:      "server certificate not trusted",
			mechanism: "SCRAM-SHA-512",
			client: func() []kgo.Opt {
				return []kgo.Opt{TLSOpt(&tls.Config{MinVersion: tls.VersionTLS12}), SASLOpt("SCRAM-SHA-512", user, pass)}
			},
			wantErr: "certificate signed by unknown authority",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := Start(t,
				kfake.TLS(certs.ServerTLS(false)),
				kfake.EnableSASL(),
				kfake.Superuser(tc.mechanism, user, pass),
				kfake.SeedTopics(2, "events"),
			)
			c.ClientOpts = []kgo.Opt{TLSOpt(certs.ClientTLS()), SASLOpt(tc.mechanism, user, pass)}

			sent := makeRecords("events", "ok", 2, 5)
			require.NoError(t, produce(newProducer(t, c, c.ClientOpts...), sent))
			requireExactly(t, sent, c.ReadTopic(t, "events", len(sent), 10*time.Second))

			if tc.client == nil {
				return
			}
			err := produce(newProducer(t, c, tc.client()...), makeRecords("events", "refused", 1, 1))
			require.ErrorIs(t, err, kgo.ErrRecordTimeout, "refused within the delivery timeout, not by the backstop context")
			require.ErrorContains(t, err, tc.wantErr)
			// Nothing the refused producer sent may have been written.
			requireExactly(t, sent, c.ReadTopic(t, "events", len(sent), 10*time.Second))
		})
	}
}

// TestMutualTLS starts a cluster that requires a client certificate signed by
// its CA and checks that a client presenting one round-trips records and a
// client presenting none, or one from another CA, is refused.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	certs := NewCerts(t, CertOptions{})
	foreign := NewCerts(t, CertOptions{})
	tests := []struct {
		name string
		// client, when set, is the TLS config of a producer the cluster
		// must refuse; wantErr is part of the refusal's text.
		client  func() *tls.Config
		wantErr string
	}{
		{name: "client certificate"},
		{
			name:    "no client certificate",
			client:  func() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: certs.CAPool} },
			wantErr: "certificate required",
		},
		{
			name: "client certificate from another CA",
			client: func() *tls.Config {
				cfg := foreign.ClientTLS()
				cfg.RootCAs = certs.CAPool
				return cfg
			},
			wantErr: "unknown certificate authority",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := Start(t, kfake.TLS(certs.ServerTLS(true)), kfake.SeedTopics(1, "events"))
			c.ClientOpts = []kgo.Opt{TLSOpt(certs.ClientTLS())}

			sent := makeRecords("events", "ok", 1, 5)
			require.NoError(t, produce(newProducer(t, c, c.ClientOpts...), sent))
			requireExactly(t, sent, c.ReadTopic(t, "events", len(sent), 10*time.Second))

			if tc.client == nil {
				return
			}
			start := time.Now()
			err := produce(newProducer(t, c, TLSOpt(tc.client())), makeRecords("events", "refused", 1, 1))
			t.Logf("refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
			require.ErrorIs(t, err, kgo.ErrRecordTimeout, "refused within the delivery timeout, not by the backstop context")
			require.ErrorContains(t, err, tc.wantErr)
			requireExactly(t, sent, c.ReadTopic(t, "events", len(sent), 10*time.Second))
		})
	}
}

// TestReadTopicThreeBrokers reads a six-partition topic spread over three
// brokers while a second batch is produced, optionally moving partition
// leaders as it reads, and checks every record comes back exactly once.
func TestReadTopicThreeBrokers(t *testing.T) {
	t.Parallel()
	const (
		topic        = "events"
		partitions   = 6
		perPartition = 25
	)
	tests := []struct {
		name    string
		shuffle bool
	}{
		{name: "stable leaders"},
		{name: "leaders shuffled while reading", shuffle: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := Start(t, kfake.NumBrokers(3), kfake.SeedTopics(partitions, topic))
			require.Len(t, c.Addrs, 3)
			require.Equal(t, c.Addrs[0], c.Addr)
			require.Len(t, map[string]bool{c.Addrs[0]: true, c.Addrs[1]: true, c.Addrs[2]: true}, 3, "distinct addresses")

			first := makeRecords(topic, "first", partitions, perPartition)
			require.NoError(t, produce(newProducer(t, c), first))

			// The reader's first fetch at a non-zero offset shows it has
			// received records, so what follows happens while it reads.
			reading := make(chan struct{}, 1)
			c.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
				for _, ft := range req.(*kmsg.FetchRequest).Topics {
					for _, fp := range ft.Partitions {
						if fp.FetchOffset > 0 {
							select {
							case reading <- struct{}{}:
							default:
							}
							c.DropControl()
							return nil, nil, false
						}
					}
				}
				return nil, nil, false
			})

			second := makeRecords(topic, "second", partitions, perPartition)
			secondProducer := newProducer(t, c)
			done := make(chan error, 1)
			go func() {
				done <- func() error {
					select {
					case <-reading:
					case <-time.After(20 * time.Second):
						return errors.New("the reader fetched no records")
					}
					if tc.shuffle {
						if err := moveLeaders(c, topic, partitions); err != nil {
							return err
						}
					}
					if err := produce(secondProducer, second); err != nil {
						return fmt.Errorf("produce second batch: %w", err)
					}
					if tc.shuffle {
						return moveLeaders(c, topic, partitions)
					}
					return nil
				}()
			}()

			got := c.ReadTopic(t, topic, len(first)+len(second), 30*time.Second)
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Fatal("the producing goroutine did not finish")
			}
			requireExactly(t, append(first, second...), got)
		})
	}
}

// moveLeaders calls c.ShufflePartitionLeaders until at least one of topic's
// partitions has a new leader: a shuffle picks leaders at random, so it may
// leave every partition where it was.
func moveLeaders(c *Cluster, topic string, partitions int) error {
	before := make([]int32, partitions)
	for p := range partitions {
		before[p] = c.LeaderFor(topic, int32(p))
	}
	for range 20 {
		c.ShufflePartitionLeaders()
		for p := range partitions {
			if c.LeaderFor(topic, int32(p)) != before[p] {
				return nil
			}
		}
	}
	return errors.New("20 shuffles moved no partition leader")
}
