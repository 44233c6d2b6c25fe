package cursor_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pgtest"
)

// TestTakenOverWriterCannotCommit is the fencing guarantee: once a newer
// epoch exists, the former holder's cursor advance, outbox insert and
// watermark update are all refused, and nothing it tried is stored.
func TestTakenOverWriterCannotCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Open(t)
	const src = "yandex/default"
	_, err := s.Outbox.Target(ctx, "t", 2)
	require.NoError(t, err)

	old, ok, err := s.Leases.TryAcquire(ctx, "source:"+src, "old", time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	_, err = s.Cursors.CommitPage(ctx, cursor.Page{Lease: old, SourceID: src, Cursor: "c1", Rows: []outbox.Row{pgtest.Row(1, 0)}})
	require.NoError(t, err)

	// The old instance pauses; an operator tool (or a standby after expiry)
	// takes over.
	next, err := s.Leases.Steal(ctx, "source:"+src, "new", time.Minute)
	require.NoError(t, err)
	require.Equal(t, old.Epoch+1, next.Epoch)

	_, err = s.Cursors.CommitPage(ctx, cursor.Page{Lease: old, SourceID: src, PrevCursor: "c1", Cursor: "c2", Rows: []outbox.Row{pgtest.Row(2, 1)}})
	require.ErrorIs(t, err, lease.ErrFenced)
	st, err := s.Cursors.Source(ctx, src)
	require.NoError(t, err)
	require.Equal(t, "c1", st.Cursor, "the fenced writer did not move the cursor")
	wm, err := s.Outbox.Watermarks(ctx)
	require.NoError(t, err)
	rows, err := s.Outbox.Pending(ctx, wm, 10)
	require.NoError(t, err)
	require.Len(t, rows, 1, "the fenced writer inserted no outbox row")

	// The new holder continues from what is stored.
	_, err = s.Cursors.CommitPage(ctx, cursor.Page{Lease: next, SourceID: src, PrevCursor: "c1", Cursor: "c2", Rows: []outbox.Row{pgtest.Row(2, 1)}})
	require.NoError(t, err)

	// The same holds for publish progress.
	pubOld, ok, err := s.Leases.TryAcquire(ctx, "publisher", "old", time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	_, err = s.Leases.Steal(ctx, "publisher", "new", time.Minute)
	require.NoError(t, err)
	require.ErrorIs(t, s.Outbox.MarkPublished(ctx, pubOld, map[int]int64{0: 1}), lease.ErrFenced)
	wm, err = s.Outbox.Watermarks(ctx)
	require.NoError(t, err)
	require.Equal(t, []int64{0, 0}, wm)

	// A write without any lease is refused outright.
	_, err = s.Cursors.CommitPage(ctx, cursor.Page{SourceID: src, PrevCursor: "c2", Cursor: "c3"})
	require.ErrorContains(t, err, "without a lease")
}

// TestTakeoverWaitsForAnInFlightCommit shows why the fence check locks the
// lease row: a takeover that races a commit waits for it, so the commit is
// either entirely before the new epoch or refused.
func TestTakeoverWaitsForAnInFlightCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Open(t)
	old, ok, err := s.Leases.TryAcquire(ctx, "source:s", "old", time.Minute)
	require.NoError(t, err)
	require.True(t, ok)

	// Commit many pages while another goroutine steals the lease; every
	// commit either succeeds before the steal or fails fenced, and the
	// stored cursor is the last successful one.
	stolen := make(chan lease.Lease, 1)
	go func() {
		l, err := s.Leases.Steal(ctx, "source:s", "new", time.Minute)
		if err == nil {
			stolen <- l
		}
		close(stolen)
	}()
	prev, lastOK := "", ""
	for i := range 200 {
		cur := "c" + time.Duration(i).String()
		_, err := s.Cursors.CommitPage(ctx, cursor.Page{Lease: old, SourceID: "s", PrevCursor: prev, Cursor: cur})
		if err != nil {
			require.ErrorIs(t, err, lease.ErrFenced)
			break
		}
		prev, lastOK = cur, cur
	}
	_, ok = <-stolen
	require.True(t, ok)
	st, err := s.Cursors.Source(ctx, "s")
	require.NoError(t, err)
	require.Equal(t, lastOK, st.Cursor)
}
