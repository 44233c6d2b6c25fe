// Package poller is the loop machinery both upstream sources share: the
// per-source metrics, how a failure is counted and waited out, how a source
// halts (loudly, once, and until it is restarted), and the pause at the
// outbox backlog bound. It knows nothing of Kafka.
//
// The two loops live in its subpackages, because they share this machinery
// and nothing else:
//
//   - journal walks an upstream journal (Yandex) by its cursor: one
//     goroutine per source, under the source's lease, each page committed
//     with the cursor after it (internal/cursor).
//   - watch polls the BTS watch-list: a claim, poll and commit pipeline
//     that runs on every replica, each order's change committed with its
//     event (internal/watchlist).
package poller

import (
	"context"

	"github.com/ingestd/ingestd/internal/outbox"
)

// Outbox is the publisher side of the outbox that a poller talks to: where
// an event goes in Kafka, and the hand-over of what a transaction appended,
// which wakes the publisher. Committed must not block.
type Outbox interface {
	Partition(key string) int
	Committed(a outbox.Appended)
}

// Backlog estimates the outbox rows waiting for Kafka (outbox.Store), for
// the backlog bound. It is asked before every page, so it must be cheap.
type Backlog interface {
	BacklogEstimate(ctx context.Context) (int64, error)
}

// Halts stores halt records (cursor.Store): why a source stopped, for
// `ingestd cursor show` and the operator.
type Halts interface {
	Halt(ctx context.Context, sourceID, reason string) error
	ClearHalt(ctx context.Context, sourceID string) error
}
