package watch

import (
	"context"
	"sync"
	"time"

	"github.com/ingestd/ingestd/internal/retry"
)

// gate is the poller's shared backoff: after a 429, 5xx or timeout, no
// worker sends a request until the wait is over, so that an outage or a rate
// limit is met by the whole source backing off rather than by every due order
// failing in turn.
type gate struct {
	mu      sync.Mutex
	until   time.Time
	bo      *retry.Backoff
	failing bool
	now     func() time.Time
}

func newGate(cfg retry.Config, now func() time.Time) *gate {
	return &gate{bo: cfg.New(), now: now}
}

// wait blocks while a backoff is in force.
func (g *gate) wait(ctx context.Context) error {
	g.mu.Lock()
	d := g.until.Sub(g.now())
	g.mu.Unlock()
	if d <= 0 {
		return nil
	}
	if !retry.Sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}

// fail records a failure at now and returns how long the failed order must
// wait. retryAfter, when the server sent one, is honoured. A failure of a
// request that was already in flight when a backoff began does not extend
// it: only the first failure after a pause escalates.
func (g *gate) fail(retryAfter time.Duration, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.failing = true
	if now.Before(g.until) && retryAfter <= 0 {
		return g.until.Sub(now)
	}
	d := retryAfter
	if d <= 0 {
		d = g.bo.Next()
	}
	if until := now.Add(d); until.After(g.until) {
		g.until = until
	}
	return d
}

// ok records a success and reports whether it ended a run of failures.
func (g *gate) ok() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.failing {
		return false
	}
	g.failing = false
	g.bo.Reset()
	return true
}
