package lease_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/pgtest"
)

// tracker records which holders are working, and fails the test if two
// work at once.
type tracker struct {
	mu      sync.Mutex
	active  map[string]bool
	overlap atomic.Bool
	epochs  []int64
}

func (tr *tracker) work(holder string) lease.Work {
	return func(ctx context.Context, h *lease.Held, stop <-chan struct{}) error {
		tr.mu.Lock()
		for other := range tr.active {
			if other != holder {
				tr.overlap.Store(true)
			}
		}
		tr.active[holder] = true
		tr.epochs = append(tr.epochs, h.Lease.Epoch)
		tr.mu.Unlock()
		defer func() {
			tr.mu.Lock()
			delete(tr.active, holder)
			tr.mu.Unlock()
		}()
		select {
		case <-ctx.Done():
		case <-stop:
		}
		return nil
	}
}

func (tr *tracker) activeHolder() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for h := range tr.active {
		return h
	}
	return ""
}

func start(t *testing.T, r *lease.Runner) (cancel func()) {
	t.Helper()
	ctx, c := context.WithCancel(context.Background())
	require.NoError(t, r.Start(ctx))
	var once sync.Once
	cancel = func() {
		once.Do(func() {
			c()
			<-r.Done()
			require.NoError(t, r.Err())
		})
	}
	t.Cleanup(cancel)
	return cancel
}

// newRunner is lease.NewRunner for a valid configuration.
func newRunner(t *testing.T, name string, cfg lease.Config, s *lease.Store, work lease.Work, m *lease.Metrics) *lease.Runner {
	t.Helper()
	r, err := lease.NewRunner(name, cfg, s, work, zaptest.NewLogger(t), m)
	require.NoError(t, err)
	return r
}

func TestOneActiveAndHandoverOnStop(t *testing.T) {
	t.Parallel()
	s := pgtest.Open(t).Leases
	tr := &tracker{active: map[string]bool{}}
	reg := prometheus.NewRegistry()
	m := lease.NewMetrics(reg)
	cfg := func(h string) lease.Config { return lease.Config{TTL: 3 * time.Second, Holder: h} }
	a := newRunner(t, "publisher", cfg("a"), s, tr.work("a"), m)
	b := newRunner(t, "publisher", cfg("b"), s, tr.work("b"), m)
	start(t, a)
	require.Eventually(t, func() bool { return tr.activeHolder() == "a" }, 5*time.Second, 5*time.Millisecond)
	start(t, b)

	// b stands by while a renews, for longer than the TTL.
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		require.Equal(t, "a", tr.activeHolder())
		time.Sleep(50 * time.Millisecond) // sampling over time is the point here
	}

	// A clean stop releases the lease: b takes over well before the TTL.
	stopped := time.Now()
	a.Stop()
	require.Eventually(t, func() bool { return tr.activeHolder() == "b" }, 3*time.Second, 5*time.Millisecond)
	require.Less(t, time.Since(stopped), 2*time.Second)
	require.False(t, tr.overlap.Load(), "two holders never work at once")
	require.Equal(t, []int64{1, 2}, tr.epochs)
}

func TestDeadHolderIsReplacedAfterTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Open(t).Leases
	// A holder that died without releasing: its lease just stops renewing.
	_, ok, err := s.TryAcquire(ctx, "source:x", "dead", time.Second)
	require.NoError(t, err)
	require.True(t, ok)

	tr := &tracker{active: map[string]bool{}}
	b := newRunner(t, "source:x", lease.Config{TTL: 2 * time.Second, Holder: "b"}, s, tr.work("b"), lease.NewMetrics(prometheus.NewRegistry()))
	start(t, b)
	require.Eventually(t, func() bool { return tr.activeHolder() == "b" }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, []int64{2}, tr.epochs)
}

func TestStolenLeaseStopsTheWork(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Open(t).Leases
	tr := &tracker{active: map[string]bool{}}
	a := newRunner(t, "source:x", lease.Config{TTL: 1500 * time.Millisecond, Holder: "a"}, s, tr.work("a"), lease.NewMetrics(prometheus.NewRegistry()))
	start(t, a)
	require.Eventually(t, func() bool { return tr.activeHolder() == "a" }, 5*time.Second, 5*time.Millisecond)

	// An operator tool takes the lease over: a's next renewal fails and its
	// work is cancelled.
	tool, err := s.Steal(ctx, "source:x", "operator", time.Minute)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return tr.activeHolder() == "" }, 3*time.Second, 5*time.Millisecond)

	// When the tool releases, a takes the lease back with a newer epoch.
	require.NoError(t, s.Release(ctx, tool))
	require.Eventually(t, func() bool { return tr.activeHolder() == "a" }, 5*time.Second, 5*time.Millisecond)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	require.Equal(t, []int64{1, 3}, tr.epochs)
}

func TestWorkFencedStandsBy(t *testing.T) {
	t.Parallel()
	s := pgtest.Open(t).Leases
	var runs atomic.Int64
	work := func(ctx context.Context, h *lease.Held, stop <-chan struct{}) error {
		if runs.Add(1) == 1 {
			return lease.ErrFenced // the first epoch's write was refused
		}
		<-ctx.Done()
		return nil
	}
	r := newRunner(t, "publisher", lease.Config{TTL: time.Second, Holder: "a"}, s, work, lease.NewMetrics(prometheus.NewRegistry()))
	start(t, r)
	// It stands by until its own lease expires, then acquires it again.
	require.Eventually(t, func() bool { return runs.Load() == 2 }, 5*time.Second, 10*time.Millisecond)
}

// TestFailedWorkReleasesAndCompetesAgain: work that fails (rather than
// being fenced or stopping) has its lease released and runs again under a
// new epoch.
func TestFailedWorkReleasesAndCompetesAgain(t *testing.T) {
	t.Parallel()
	s := pgtest.Open(t).Leases
	var (
		runs   atomic.Int64
		epochs = make(chan int64, 2)
	)
	work := func(ctx context.Context, h *lease.Held, stop <-chan struct{}) error {
		epochs <- h.Lease.Epoch
		if runs.Add(1) == 1 {
			return errors.New("the work broke")
		}
		<-ctx.Done()
		return nil
	}
	r := newRunner(t, "publisher", lease.Config{TTL: time.Minute, Holder: "a"}, s, work, lease.NewMetrics(prometheus.NewRegistry()))
	start(t, r)
	first, second := <-epochs, <-epochs
	require.Equal(t, first+1, second, "released and taken again, not left to expire (TTL 1m)")
}

func TestNewRunnerValidates(t *testing.T) {
	t.Parallel()
	_, err := lease.NewRunner("publisher", lease.Config{TTL: time.Millisecond}, nil, nil, zaptest.NewLogger(t), lease.NewMetrics(prometheus.NewRegistry()))
	require.ErrorContains(t, err, "INGESTD_LEASE_TTL")
	require.ErrorContains(t, err, "INGESTD_INSTANCE_ID")
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	require.ErrorContains(t, lease.Config{TTL: time.Millisecond, Holder: "x"}.Validate(), "INGESTD_LEASE_TTL")
	require.ErrorContains(t, lease.Config{TTL: time.Second}.Validate(), "INGESTD_INSTANCE_ID")
	require.NoError(t, lease.Config{TTL: 15 * time.Second, Holder: "x"}.Validate())
}
