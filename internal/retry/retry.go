// Package retry is how every loop of ingestd waits: the jittered exponential
// backoff after a failure (INGESTD_BACKOFF_INITIAL, INGESTD_BACKOFF_MAX),
// and a sleep that ends early when the loop's context ends or it is woken.
// The pollers, the publisher and the lease runner all wait through it, so
// that one setting bounds every retry and no loop can sleep through a
// shutdown.
package retry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Environment variables of the backoff, named in Validate's errors.
const (
	EnvInitial = "INGESTD_BACKOFF_INITIAL"
	EnvMax     = "INGESTD_BACKOFF_MAX"
)

// Config bounds the backoff after a failure.
type Config struct {
	// Initial is the first wait after a failure (INGESTD_BACKOFF_INITIAL,
	// default 500ms).
	Initial time.Duration
	// Max is the longest wait between retries (INGESTD_BACKOFF_MAX, default
	// 30s).
	Max time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Initial: 500 * time.Millisecond, Max: 30 * time.Second}
}

// Validate reports every problem, naming the environment variables.
func (c Config) Validate() error {
	var errs []error
	if c.Initial <= 0 {
		errs = append(errs, fmt.Errorf("%s: must be positive, got %s", EnvInitial, c.Initial))
	}
	if c.Max < c.Initial {
		errs = append(errs, fmt.Errorf("%s: must be at least %s (%s), got %s", EnvMax, EnvInitial, c.Initial, c.Max))
	}
	return errors.Join(errs...)
}

// Backoff is a jittered exponential backoff that never gives up: a transient
// failure is retried until it passes. It is not safe for concurrent use;
// each loop has its own.
type Backoff struct {
	b *backoff.ExponentialBackOff
}

// New returns a backoff bounded by c, at its first interval.
func (c Config) New() *Backoff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = c.Initial
	b.MaxInterval = c.Max
	// Half of each wait is random, so that instances (and orders) failing
	// together do not retry in lockstep.
	b.RandomizationFactor = 0.5
	b.Multiplier = 2
	b.MaxElapsedTime = 0
	b.Reset()
	return &Backoff{b: b}
}

// Next returns the wait before the next attempt, longer after each failure
// up to the maximum.
func (b *Backoff) Next() time.Duration { return b.b.NextBackOff() }

// Reset starts over from the first interval, after a success.
func (b *Backoff) Reset() { b.b.Reset() }

// Sleep waits d, or until one of wake fires, and reports whether ctx is still
// live afterwards: false means the caller must stop. A nil channel in wake
// never fires. It takes at most two wake channels (a loop's wake-up and its
// graceful stop).
func Sleep(ctx context.Context, d time.Duration, wake ...<-chan struct{}) bool {
	var w1, w2 <-chan struct{}
	switch len(wake) {
	case 0:
	case 1:
		w1 = wake[0]
	case 2:
		w1, w2 = wake[0], wake[1]
	default:
		panic("retry.Sleep: at most two wake channels")
	}
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-w1:
	case <-w2:
	}
	return ctx.Err() == nil
}
