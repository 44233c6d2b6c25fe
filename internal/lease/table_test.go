package lease_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/pgtest"
)

func TestLeaseLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Open(t)

	a, ok, err := s.Leases.TryAcquire(ctx, "source:x", "a", time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(1), a.Epoch)

	// A live lease cannot be acquired by another holder, nor by a new
	// process of the same one.
	_, ok, err = s.Leases.TryAcquire(ctx, "source:x", "b", time.Minute)
	require.NoError(t, err)
	require.False(t, ok)

	require.NoError(t, s.Leases.Renew(ctx, a, time.Minute))

	// Released: the standby takes it at once, with a higher epoch.
	require.NoError(t, s.Leases.Release(ctx, a))
	b, ok, err := s.Leases.TryAcquire(ctx, "source:x", "b", time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(2), b.Epoch)

	// The former holder can no longer renew.
	require.ErrorIs(t, s.Leases.Renew(ctx, a, time.Minute), lease.ErrFenced)
	// Releasing a lost lease changes nothing.
	require.NoError(t, s.Leases.Release(ctx, a))
	st, err := s.Leases.List(ctx)
	require.NoError(t, err)
	require.Len(t, st, 1)
	require.Equal(t, "b", st[0].Holder)
	require.True(t, st[0].Live)
}

func TestExpiredLeaseIsTakenOver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Open(t)
	a, ok, err := s.Leases.TryAcquire(ctx, "publisher", "a", 50*time.Millisecond)
	require.NoError(t, err)
	require.True(t, ok)
	var b lease.Lease
	require.Eventually(t, func() bool {
		b, ok, err = s.Leases.TryAcquire(ctx, "publisher", "b", time.Minute)
		return err == nil && ok
	}, 5*time.Second, 10*time.Millisecond)
	require.Greater(t, b.Epoch, a.Epoch)
	require.ErrorIs(t, s.Leases.Renew(ctx, a, time.Minute), lease.ErrFenced)
}

// TestHeartbeatCountsLiveInstancesAndTheirSources: the heartbeat lists
// every live instance with the source leases it holds (not the publisher
// lease); an instance that stopped renewing drops out after its TTL, one
// that stops cleanly at once.
func TestHeartbeatCountsLiveInstancesAndTheirSources(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Open(t)
	for _, name := range []string{lease.Source("yandex/a"), lease.Source("yandex/b"), lease.Publisher} {
		_, ok, err := s.Leases.TryAcquire(ctx, name, "x", time.Minute)
		require.NoError(t, err)
		require.True(t, ok)
	}
	_, err := s.Leases.Heartbeat(ctx, "x", time.Minute)
	require.NoError(t, err)
	_, err = s.Leases.Heartbeat(ctx, "short", 300*time.Millisecond)
	require.NoError(t, err)
	spread, err := s.Leases.Heartbeat(ctx, "y", time.Minute)
	require.NoError(t, err)
	require.Equal(t, map[string]int{"x": 2, "y": 0, "short": 0}, spread)

	require.Eventually(t, func() bool {
		spread, err := s.Leases.Heartbeat(ctx, "y", time.Minute)
		require.NoError(t, err)
		_, alive := spread["short"]
		return !alive
	}, 10*time.Second, 20*time.Millisecond, "an instance that stopped renewing drops out after its TTL")

	require.NoError(t, s.Leases.Forget(ctx, "x"))
	spread, err = s.Leases.Heartbeat(ctx, "y", time.Minute)
	require.NoError(t, err)
	require.Equal(t, map[string]int{"y": 0}, spread, "a clean stop drops out at once")
}
