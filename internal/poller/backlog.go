package poller

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Backlog estimates the outbox rows waiting for Kafka (outbox.Store), for
// the backlog bound.
type Backlog interface {
	BacklogEstimate(ctx context.Context) (int64, error)
}

// Halts records that a source halted (cursor.Store).
type Halts interface {
	Halt(ctx context.Context, sourceID, reason string) error
}

// backlogBound pauses a source's polling while more than max outbox rows
// wait for Kafka, so that an outage of Kafka cannot grow the table without
// bound, and reports the pause on ingestd_polling_paused. Each poller has
// one, used by one goroutine.
type backlogBound struct {
	max    int64 // 0: no bound
	store  Backlog
	gauge  prometheus.Gauge
	log    *zap.Logger
	paused bool
}

func newBacklogBound(maxRows int64, store Backlog, m *Metrics, sourceID string, log *zap.Logger) *backlogBound {
	return &backlogBound{max: maxRows, store: store, gauge: m.paused.WithLabelValues(sourceID), log: log}
}

// room checks the backlog against the bound without waiting, and logs
// pausing and resuming once each.
func (b *backlogBound) room(ctx context.Context) (bool, error) {
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
