package cursor_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/pgtest"
)

func TestLeaseLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Store(t)

	a, ok, err := s.TryAcquire(ctx, "source:x", "a", time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(1), a.Epoch)

	// A live lease cannot be acquired by another holder, nor by a new
	// process of the same one.
	_, ok, err = s.TryAcquire(ctx, "source:x", "b", time.Minute)
	require.NoError(t, err)
	require.False(t, ok)

	require.NoError(t, s.Renew(ctx, a, time.Minute))

	// Released: the standby takes it at once, with a higher epoch.
	require.NoError(t, s.Release(ctx, a))
	b, ok, err := s.TryAcquire(ctx, "source:x", "b", time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(2), b.Epoch)

	// The former holder can no longer renew.
	require.ErrorIs(t, s.Renew(ctx, a, time.Minute), cursor.ErrFenced)
	// Releasing a lost lease changes nothing.
	require.NoError(t, s.Release(ctx, a))
	st, err := s.Leases(ctx)
	require.NoError(t, err)
	require.Len(t, st, 1)
	require.Equal(t, "b", st[0].Holder)
	require.True(t, st[0].Live)
}

func TestExpiredLeaseIsTakenOver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Store(t)
	a, ok, err := s.TryAcquire(ctx, "publisher", "a", 50*time.Millisecond)
	require.NoError(t, err)
	require.True(t, ok)
	var b cursor.Lease
	require.Eventually(t, func() bool {
		b, ok, err = s.TryAcquire(ctx, "publisher", "b", time.Minute)
		return err == nil && ok
	}, 5*time.Second, 10*time.Millisecond)
	require.Greater(t, b.Epoch, a.Epoch)
	require.ErrorIs(t, s.Renew(ctx, a, time.Minute), cursor.ErrFenced)
}

// TestTakenOverWriterCannotCommit is the fencing guarantee: once a newer
// epoch exists, the former holder's cursor advance, outbox insert and
// watermark update are all refused, and nothing it tried is stored.
func TestTakenOverWriterCannotCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Store(t)
	const src = "yandex/default"
	_, err := s.Target(ctx, "t", 2)
	require.NoError(t, err)

	old, ok, err := s.TryAcquire(ctx, "source:"+src, "old", time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	_, err = s.CommitPage(ctx, cursor.Page{Lease: old, SourceID: src, Cursor: "c1", Rows: []cursor.Row{row(1, 0)}})
	require.NoError(t, err)

	// The old instance pauses; an operator tool (or a standby after expiry)
	// takes over.
	next, err := s.Steal(ctx, "source:"+src, "new", time.Minute)
	require.NoError(t, err)
	require.Equal(t, old.Epoch+1, next.Epoch)

	_, err = s.CommitPage(ctx, cursor.Page{Lease: old, SourceID: src, PrevCursor: "c1", Cursor: "c2", Rows: []cursor.Row{row(2, 1)}})
	require.ErrorIs(t, err, cursor.ErrFenced)
	st, err := s.Source(ctx, src)
	require.NoError(t, err)
	require.Equal(t, "c1", st.Cursor, "the fenced writer did not move the cursor")
	wm, err := s.Watermarks(ctx)
	require.NoError(t, err)
	rows, err := s.Pending(ctx, wm, 10)
	require.NoError(t, err)
	require.Len(t, rows, 1, "the fenced writer inserted no outbox row")

	// The new holder continues from what is stored.
	_, err = s.CommitPage(ctx, cursor.Page{Lease: next, SourceID: src, PrevCursor: "c1", Cursor: "c2", Rows: []cursor.Row{row(2, 1)}})
	require.NoError(t, err)

	// The same holds for publish progress.
	pubOld, ok, err := s.TryAcquire(ctx, "publisher", "old", time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	_, err = s.Steal(ctx, "publisher", "new", time.Minute)
	require.NoError(t, err)
	require.ErrorIs(t, s.MarkPublished(ctx, pubOld, map[int]int64{0: 1}), cursor.ErrFenced)
	wm, err = s.Watermarks(ctx)
	require.NoError(t, err)
	require.Equal(t, []int64{0, 0}, wm)

	// A write without any lease is refused outright.
	_, err = s.CommitPage(ctx, cursor.Page{SourceID: src, PrevCursor: "c2", Cursor: "c3"})
	require.ErrorContains(t, err, "without a lease")
}

// TestTakeoverWaitsForAnInFlightCommit shows why the fence check locks the
// lease row: a takeover that races a commit waits for it, so the commit is
// either entirely before the new epoch or refused.
func TestTakeoverWaitsForAnInFlightCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Store(t)
	old, ok, err := s.TryAcquire(ctx, "source:s", "old", time.Minute)
	require.NoError(t, err)
	require.True(t, ok)

	// Commit many pages while another goroutine steals the lease; every
	// commit either succeeds before the steal or fails fenced, and the
	// stored cursor is the last successful one.
	stolen := make(chan cursor.Lease, 1)
	go func() {
		l, err := s.Steal(ctx, "source:s", "new", time.Minute)
		if err == nil {
			stolen <- l
		}
		close(stolen)
	}()
	prev, lastOK := "", ""
	for i := range 200 {
		cur := "c" + time.Duration(i).String()
		_, err := s.CommitPage(ctx, cursor.Page{Lease: old, SourceID: "s", PrevCursor: prev, Cursor: cur})
		if err != nil {
			require.ErrorIs(t, err, cursor.ErrFenced)
			break
		}
		prev, lastOK = cur, cur
	}
	_, ok = <-stolen
	require.True(t, ok)
	st, err := s.Source(ctx, "s")
	require.NoError(t, err)
	require.Equal(t, lastOK, st.Cursor)
}
