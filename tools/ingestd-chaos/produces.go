package main

import (
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// produceLog records when each produce batch reached the in-process broker
// that leads its partition. A record's timestamp is only when its producer
// encoded it; the arrival time shows when a write actually landed, which is
// what decides whether a successor's read-back could have seen it.
type produceLog struct {
	// c is the cluster observed: with several brokers, a batch sent to a
	// broker that no longer leads its partition is refused, so it is
	// counted rather than recorded as an arrival.
	c *kfake.Cluster
	// onProduce, when set, is called first with the node every produce
	// request reached (cluster mode: churner.onProduce may remove it).
	onProduce func(node int32)

	mu       sync.Mutex
	arrivals map[batchKey][]time.Time
	// refused counts partition batches sent to a broker that did not lead
	// the partition (the broker answers NOT_LEADER_OR_FOLLOWER).
	refused int
}

// batchKey identifies a produce batch by partition and first timestamp (in
// milliseconds): kafka-go stamps every record of a batch alike, so a
// consumed record's timestamp names its batch.
type batchKey struct {
	partition int32
	ts        int64
}

func newProduceLog(c *kfake.Cluster) *produceLog {
	return &produceLog{c: c, arrivals: map[batchKey][]time.Time{}}
}

// observe is a kfake control function for produce requests, on whichever
// broker they reach: it notes the arrival of every batch at its partition's
// leader, counts the batches sent elsewhere, and leaves the request to the
// broker (handled is false), so the broker behaves exactly as without it.
func (l *produceLog) observe(req kmsg.Request) (kmsg.Response, error, bool) {
	pr, ok := req.(*kmsg.ProduceRequest)
	if !ok {
		return nil, nil, false
	}
	now := time.Now()
	// Control functions run while the cluster serves admin calls, so the
	// leader can be asked here. A leader move between this question and
	// the broker's handling of the request is possible but rare; it only
	// misplaces an arrival time used in evidence.
	node := l.c.CurrentNode()
	if l.onProduce != nil {
		// Before the leaders are asked: a broker removed here leads
		// nothing, and the broker refuses this request.
		l.onProduce(node)
	}
	type part struct {
		key    batchKey
		leader bool
	}
	var parts []part
	for _, t := range pr.Topics {
		if t.Topic == "" {
			// Produce v13 names topics by id only; kafka-go, ingestd's
			// client, does not send it.
			continue
		}
		for _, p := range t.Partitions {
			leader := l.c.LeaderFor(t.Topic, p.Partition) == node
			var b kmsg.RecordBatch
			if err := b.ReadFrom(p.Records); err != nil {
				continue
			}
			parts = append(parts, part{batchKey{p.Partition, b.FirstTimestamp}, leader})
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range parts {
		if !p.leader {
			l.refused++
			continue
		}
		l.arrivals[p.key] = append(l.arrivals[p.key], now)
	}
	return nil, nil, false
}

// refusedBatches returns how many partition batches reached a broker that
// did not lead their partition.
func (l *produceLog) refusedBatches() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refused
}

// arrival returns when the batch of a record with this partition and
// timestamp reached the broker; false when unknown, or ambiguous because
// several batches share the key.
func (l *produceLog) arrival(partition int32, ts time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.arrivals[batchKey{partition, ts.UnixMilli()}]
	if len(a) != 1 {
		return time.Time{}, false
	}
	return a[0], true
}
