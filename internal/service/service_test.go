package service_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/service"
)

// worker is a service that records how it ended.
type worker struct {
	service.Base
	name     string
	log      *events
	startErr error
}

type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, s)
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.got...)
}

func (w *worker) Start(ctx context.Context) error {
	if w.startErr != nil {
		return w.startErr
	}
	return w.Go(ctx, func(ctx context.Context, stop <-chan struct{}) error {
		w.log.add(w.name + " started")
		select {
		case <-stop:
			w.log.add(w.name + " stopped gracefully")
			return nil
		case <-ctx.Done():
			w.log.add(w.name + " cancelled")
			return ctx.Err()
		}
	})
}

func waitClosed(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("not closed in time")
	}
}

func TestBaseLifecycle(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// end ends the service and returns what its events must be.
		end     func(w *worker, cancel context.CancelFunc)
		want    []string
		wantErr error
	}{
		{"stop is graceful", func(w *worker, _ context.CancelFunc) { w.Stop() }, []string{"w started", "w stopped gracefully"}, nil},
		{"cancel is hard", func(w *worker, cancel context.CancelFunc) { cancel(); waitClosed(t, w.Done()) }, []string{"w started", "w cancelled"}, context.Canceled},
		{"stop twice", func(w *worker, _ context.CancelFunc) { w.Stop(); w.Stop() }, []string{"w started", "w stopped gracefully"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ev := &events{}
			w := &worker{name: "w", log: ev}
			done := w.Done() // may be taken before Start
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			require.NoError(t, w.Start(ctx))
			require.Eventually(t, func() bool { return len(ev.list()) == 1 }, 10*time.Second, time.Millisecond)
			require.ErrorIs(t, w.Start(ctx), service.ErrStarted, "a service runs once")
			tc.end(w, cancel)
			waitClosed(t, done)
			require.Equal(t, tc.want, ev.list())
			require.ErrorIs(t, w.Err(), tc.wantErr)
			if tc.wantErr == nil {
				require.NoError(t, w.Err())
			}
		})
	}
}

func TestStopWithoutStartDoesNothing(t *testing.T) {
	t.Parallel()
	w := &worker{name: "w", log: &events{}}
	w.Stop()
	require.Empty(t, w.log.list())
}

func TestGroupStartsInOrderAndStopsAll(t *testing.T) {
	t.Parallel()
	ev := &events{}
	a, b := &worker{name: "a", log: ev}, &worker{name: "b", log: ev}
	g := service.Group{a, b}
	require.NoError(t, g.Start(context.Background()))
	require.Eventually(t, func() bool { return len(ev.list()) == 2 }, 10*time.Second, time.Millisecond)
	g.Stop()
	require.ElementsMatch(t, []string{"a started", "b started", "a stopped gracefully", "b stopped gracefully"}, ev.list())
}

func TestGroupStopsWhatStartedWhenOneFails(t *testing.T) {
	t.Parallel()
	ev := &events{}
	boom := errors.New("boom")
	a, b := &worker{name: "a", log: ev}, &worker{name: "b", log: ev, startErr: boom}
	require.ErrorIs(t, service.Group{a, b}.Start(context.Background()), boom)
	waitClosed(t, a.Done())
	require.Equal(t, []string{"a started", "a stopped gracefully"}, ev.list())
}

func TestStopContext(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		stop   bool
		cancel bool
	}{
		{"stop ends it", true, false},
		{"parent ends it", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			parent, cancelParent := context.WithCancel(context.Background())
			defer cancelParent()
			stop := make(chan struct{})
			ctx, cancel := service.StopContext(parent, stop)
			defer cancel()
			require.NoError(t, ctx.Err())
			if tc.stop {
				close(stop)
			}
			if tc.cancel {
				cancelParent()
			}
			waitClosed(t, ctx.Done())
		})
	}
}
