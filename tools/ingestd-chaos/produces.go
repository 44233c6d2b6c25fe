package main

import (
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// produceLog records when each produce batch reached the in-process broker.
// A record's timestamp is only when its producer encoded it; the arrival time
// shows when a write actually landed, which is what decides whether a
// successor's read-back could have seen it.
type produceLog struct {
	mu       sync.Mutex
	arrivals map[batchKey][]time.Time
}

// batchKey identifies a produce batch by partition and first timestamp (in
// milliseconds): kafka-go stamps every record of a batch alike, so a
// consumed record's timestamp names its batch.
type batchKey struct {
	partition int32
	ts        int64
}

func newProduceLog() *produceLog {
	return &produceLog{arrivals: map[batchKey][]time.Time{}}
}

// observe is a kfake control function for produce requests: it notes the
// arrival of every batch and leaves the request to the broker (handled is
// false), so the broker behaves exactly as without it.
func (l *produceLog) observe(req kmsg.Request) (kmsg.Response, error, bool) {
	pr, ok := req.(*kmsg.ProduceRequest)
	if !ok {
		return nil, nil, false
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, t := range pr.Topics {
		for _, p := range t.Partitions {
			var b kmsg.RecordBatch
			if err := b.ReadFrom(p.Records); err != nil {
				continue
			}
			k := batchKey{p.Partition, b.FirstTimestamp}
			l.arrivals[k] = append(l.arrivals[k], now)
		}
	}
	return nil, nil, false
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
