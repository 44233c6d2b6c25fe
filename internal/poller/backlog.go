package poller

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// BacklogBound pauses a source's polling while more than max outbox rows
// wait for Kafka, so that an outage of Kafka cannot grow the table without
// bound, and reports the pause on ingestd_polling_paused. Each poller has
// one, used by one goroutine.
type BacklogBound struct {
	max    int64 // 0: no bound
	store  Backlog
	gauge  prometheus.Gauge
	log    *zap.Logger
	paused bool
}

// NewBacklogBound returns the bound of src at maxRows (0: no bound).
func NewBacklogBound(maxRows int64, store Backlog, src *Source) *BacklogBound {
	return &BacklogBound{max: maxRows, store: store, gauge: src.m.paused.WithLabelValues(src.id), log: src.log}
}

// Room checks the backlog against the bound without waiting, and logs
// pausing and resuming once each.
func (b *BacklogBound) Room(ctx context.Context) (bool, error) {
	if b.max <= 0 {
		return true, nil
	}
	n, err := b.store.BacklogEstimate(ctx)
	if err != nil {
		return false, err
	}
	if n < b.max {
		if b.paused {
			b.log.Info("outbox backlog back under its bound; polling resumed", zap.Int64("backlog", n))
		}
		b.paused = false
		b.gauge.Set(0)
		return true, nil
	}
	if !b.paused {
		b.log.Warn("outbox backlog over its bound; polling paused until the publisher catches up",
			zap.Int64("backlog", n), zap.Int64("max_backlog", b.max))
	}
	b.paused = true
	b.gauge.Set(1)
	return false, nil
}
