// Package kafkatest starts an in-process Kafka-protocol broker (kfake) for
// tests. Clients reach it over TCP exactly as they reach Kafka.
package kafkatest

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
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
