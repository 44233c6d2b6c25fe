package cursor_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pgtest"
)

// leases caches the test's lease per store and name, so that every commit of
// one source in a test uses the same epoch.
var leases sync.Map

func testLease(t *testing.T, s *pgtest.Stores, name string) lease.Lease {
	t.Helper()
	key := fmt.Sprintf("%p/%s", s, name)
	if l, ok := leases.Load(key); ok {
		return l.(lease.Lease)
	}
	l, ok, err := s.Leases.TryAcquire(context.Background(), name, "test-"+t.Name(), time.Minute)
	require.NoError(t, err)
	require.True(t, ok, "lease %s is free", name)
	leases.Store(key, l)
	// A later test's store may get the same address once this one is
	// freed (with -count, say), so the entry goes with the test.
	t.Cleanup(func() { leases.Delete(key) })
	return l
}

// withLease sets the page's lease to the test's lease on its source.
func withLease(t *testing.T, s *pgtest.Stores, p cursor.Page) cursor.Page {
	t.Helper()
	p.Lease = testLease(t, s, "source:"+p.SourceID)
	return p
}

func TestCommitPageStoresCursorByteForByte(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Open(t)
	const src = "yandex/default"

	st, err := s.Cursors.Source(ctx, src)
	require.NoError(t, err)
	require.Empty(t, st.Cursor)

	weird := "a+/=\"\\ é ✓ \t~." // every byte must come back as sent
	c, err := s.Cursors.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: src, Cursor: weird, Rows: []outbox.Row{pgtest.Row(1, 0), pgtest.Row(2, 1)}}))
	require.NoError(t, err)
	require.Len(t, c.Inserted, 2)
	require.Equal(t, int64(1), c.FirstSeq)
	require.Equal(t, int64(2), c.LastSeq)

	st, err = s.Cursors.Source(ctx, src)
	require.NoError(t, err)
	require.Equal(t, weird, st.Cursor)
	require.Equal(t, int64(2), st.EventsTotal)

	h, err := s.Cursors.History(ctx, src, 10)
	require.NoError(t, err)
	require.Len(t, h, 1)
	require.Equal(t, weird, h[0].Cursor)
	require.Equal(t, 2, h[0].EventCount)
}

func TestCommitPageDeduplicatesReplayedEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Open(t)
	const src = "yandex/default"

	_, err := s.Cursors.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: src, Cursor: "c1", Rows: []outbox.Row{pgtest.Row(1, 0), pgtest.Row(2, 0), pgtest.Row(3, 1)}}))
	require.NoError(t, err)
	// The next page re-serves 2 and 3, then a new event, and repeats 4 within the page.
	c, err := s.Cursors.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: src, PrevCursor: "c1", Cursor: "c2", Rows: []outbox.Row{pgtest.Row(2, 0), pgtest.Row(3, 1), pgtest.Row(4, 2), pgtest.Row(4, 2)}}))
	require.NoError(t, err)
	require.Len(t, c.Inserted, 1)
	require.Equal(t, 3, c.Duplicates)
	require.Equal(t, "00000000-0000-0000-0000-000000000004", c.Inserted[0].Msg.ID)
	require.Equal(t, int64(4), c.Inserted[0].Seq, "the sequence has no gaps: duplicates take no seq")
	require.Equal(t, c.FirstSeq, c.LastSeq)

	wm, err := s.Outbox.Target(ctx, "t", 3)
	require.NoError(t, err)
	require.Equal(t, 3, wm)
	marks, err := s.Outbox.Watermarks(ctx)
	require.NoError(t, err)
	pending, err := s.Outbox.Pending(ctx, marks, 100)
	require.NoError(t, err)
	var got []string
	for _, r := range pending {
		got = append(got, r.Msg.ID[len(r.Msg.ID)-1:])
	}
	require.Equal(t, []string{"1", "2", "3", "4"}, got)
}

func TestCommitPageRejectsStaleCursor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Open(t)
	const src = "yandex/default"

	_, err := s.Cursors.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: src, Cursor: "c1", Rows: []outbox.Row{pgtest.Row(1, 0)}}))
	require.NoError(t, err)

	tests := []struct {
		name string
		prev string
	}{
		{"first-call page after a commit", ""},
		{"page fetched with an older cursor", "c0"},
	}
	for _, tc := range tests {
		_, err := s.Cursors.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: src, PrevCursor: tc.prev, Cursor: "other", Rows: []outbox.Row{pgtest.Row(9, 0)}}))
		require.ErrorIs(t, err, cursor.ErrCursorMoved, tc.name)
	}
	st, err := s.Cursors.Source(ctx, src)
	require.NoError(t, err)
	require.Equal(t, "c1", st.Cursor)
	require.Equal(t, int64(1), st.EventsTotal, "rejected pages insert nothing")
}

func TestConcurrentSourcesGetSeqInCommitOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Open(t)
	_, err := s.Outbox.Target(ctx, "t", 2)
	require.NoError(t, err)

	// Two sources commit concurrently; every committed range must be
	// contiguous and non-overlapping, so a watermark can never skip a row.
	var wg sync.WaitGroup
	const pages = 30
	srcLeases := []lease.Lease{testLease(t, s, "source:src0"), testLease(t, s, "source:src1")}
	for src := range 2 {
		wg.Go(func() {
			prev := ""
			for i := range pages {
				cur := fmt.Sprintf("s%d-%d", src, i)
				id := src*1000 + i
				_, err := s.Cursors.CommitPage(ctx, cursor.Page{Lease: srcLeases[src], SourceID: fmt.Sprintf("src%d", src), PrevCursor: prev, Cursor: cur, Rows: []outbox.Row{pgtest.Row(id, id%2)}})
				if !assertNoError(t, err) {
					return
				}
				prev = cur
			}
		})
	}
	wg.Wait()
	wm, err := s.Outbox.Watermarks(ctx)
	require.NoError(t, err)
	rows, err := s.Outbox.Pending(ctx, wm, 1000)
	require.NoError(t, err)
	require.Len(t, rows, 2*pages)
	for i, r := range rows {
		require.Equal(t, int64(i+1), r.Seq)
	}
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Errorf("unexpected error: %v", err)
		return false
	}
	return true
}

func TestHaltKeepsCursor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Open(t)
	require.NoError(t, s.Cursors.Halt(ctx, "never-ran", "auth rejected"))
	st, err := s.Cursors.Source(ctx, "never-ran")
	require.NoError(t, err)
	require.Empty(t, st.Cursor)
	require.NotNil(t, st.HaltedAt)

	_, err = s.Cursors.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: "src", Cursor: "c1"}))
	require.NoError(t, err)
	require.NoError(t, s.Cursors.Halt(ctx, "src", "bad cursor"))
	st, err = s.Cursors.Source(ctx, "src")
	require.NoError(t, err)
	require.Equal(t, "c1", st.Cursor)
	require.Equal(t, "bad cursor", st.HaltedReason)

	// The next committed page clears the halt.
	_, err = s.Cursors.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: "src", PrevCursor: "c1", Cursor: "c2"}))
	require.NoError(t, err)
	st, err = s.Cursors.Source(ctx, "src")
	require.NoError(t, err)
	require.Nil(t, st.HaltedAt)
}
