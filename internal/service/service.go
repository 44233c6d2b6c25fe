// Package service is the one lifecycle shape of ingestd's long-running
// components (the lease runners, the BTS watch-list poller, the HTTP
// server): each is started once with a context that bounds its whole life,
// and stopped gracefully with Stop, which returns when it has stopped. The
// daemon starts them as a list and stops them in reverse, so the ordered
// shutdown reads in one place.
//
// Two signals reach a running service. Stop is the graceful one: finish
// what is in hand (commit the page already fetched, publish what was
// committed) and return. The end of the context given to Start is the hard
// one: return at once. The daemon gives every service a context that it
// cancels only when the shutdown timeout runs out.
//
// The shape follows river's internal/startstop, reduced to what ingestd
// needs.
package service

import (
	"context"
	"errors"
	"sync"
)

// Service is a long-running component.
type Service interface {
	// Start launches the service in the background and returns at once;
	// an error means it did not start. ctx bounds the service's life: when
	// it ends, the service returns without finishing gracefully.
	Start(ctx context.Context) error
	// Stop asks the service to finish gracefully and returns when it has
	// stopped. Stopping a service that never started, or stopping it
	// twice, does nothing.
	Stop()
}

// ErrStarted is returned by a second Start: a service runs once.
var ErrStarted = errors.New("service already started")

// Base does the bookkeeping of a Service for a type that embeds it: the
// type's Start calls Go with its run function, and Base provides Stop, Done
// and Err.
type Base struct {
	mu      sync.Mutex
	started bool
	stop    chan struct{}
	done    chan struct{}
	err     error
}

// Go runs run in a goroutine owned by b, the first time it is called; later
// calls return ErrStarted. run must return when ctx ends, and finish
// gracefully and return when stop is closed. Its error is kept for Err.
func (b *Base) Go(ctx context.Context, run func(ctx context.Context, stop <-chan struct{}) error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started {
		return ErrStarted
	}
	b.started = true
	b.init()
	go func() {
		err := run(ctx, b.stop)
		b.mu.Lock()
		b.err = err
		b.mu.Unlock()
		close(b.done)
	}()
	return nil
}

// init allocates the channels; b.mu must be held.
func (b *Base) init() {
	if b.done == nil {
		b.stop = make(chan struct{})
		b.done = make(chan struct{})
	}
}

// Stop closes the stop channel and waits until run has returned. It does
// nothing when the service was never started.
func (b *Base) Stop() {
	b.mu.Lock()
	if !b.started {
		b.mu.Unlock()
		return
	}
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	done := b.done
	b.mu.Unlock()
	<-done
}

// Done returns a channel closed when the service's run has returned, by
// itself or after Stop. It may be taken before Start.
func (b *Base) Done() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
	return b.done
}

// Err returns what run returned, once Done is closed; nil before.
func (b *Base) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Group is services started and stopped together.
type Group []Service

var _ Service = Group(nil)

// Start starts the services in order. If one fails to start, those already
// started are stopped and its error is returned.
func (g Group) Start(ctx context.Context) error {
	for i, s := range g {
		if err := s.Start(ctx); err != nil {
			g[:i].Stop()
			return err
		}
	}
	return nil
}

// Stop stops every service at once and returns when all have stopped, so
// that each finishes its work in hand in parallel with the others.
func (g Group) Stop() {
	var wg sync.WaitGroup
	for _, s := range g {
		wg.Go(s.Stop)
	}
	wg.Wait()
}

// StopContext returns a context that ends when stop is closed or ctx ends,
// for work that finishes gracefully by cancellation (a poller abandons the
// request in flight, but commits a page already fetched). Call cancel when
// done; it waits for the goroutine that watches stop.
func StopContext(ctx context.Context, stop <-chan struct{}) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-stop:
			cancel()
		case <-c.Done():
		}
	}()
	return c, func() {
		cancel()
		<-done
	}
}
