package cursor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pgtest"
)

// TestCommitPageSurvivesTerminatedBackends commits pages large enough that
// their COPY is often cut off mid-stream while another connection keeps
// terminating the store's backends. Every page is retried until it lands,
// and in the end each event is stored exactly once. Run with -race, it also
// guards the COPY buffer: a buffer recycled after a failed COPY was still
// being read by pgconn's writer goroutine.
func TestCommitPageSurvivesTerminatedBackends(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	app := fmt.Sprintf("ingestd-cursor-fault-%d", time.Now().UnixNano())
	s := pgtest.OpenWithParam(t, "application_name", app)
	_, err := s.Outbox.Target(ctx, "events", 4)
	require.NoError(t, err)

	killer := pgtest.TerminateBackends(t, app, 75*time.Millisecond)

	const (
		src     = "yandex/default"
		pages   = 40
		perPage = 500
	)
	payload := bytes.Repeat([]byte("p"), 2000)
	var failures int
	prev := ""
	for p := range pages {
		rows := make([]outbox.Row, perPage)
		for i := range rows {
			rows[i] = pgtest.Row(p*perPage+i, i%4)
			rows[i].Msg.Payload = payload
		}
		page := withLease(t, s, cursor.Page{SourceID: src, PrevCursor: prev, Cursor: fmt.Sprintf("c%d", p), Rows: rows})
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := s.Cursors.CommitPage(ctx, page)
			if errors.Is(err, cursor.ErrCursorMoved) {
				// The connection broke after the commit landed: the
				// cursor already is the page's.
				st, serr := s.Cursors.Source(ctx, src)
				if serr == nil && st.Cursor == page.Cursor {
					break
				}
			}
			if err == nil {
				break
			}
			failures++
			require.True(t, time.Now().Before(deadline), "page %d never committed: %v", p, err)
		}
		prev = page.Cursor
	}
	killer.Stop()
	require.Positive(t, failures, "no commit was interrupted (%d backends terminated)", killer.Killed())
	t.Logf("%d pages committed through %d failed attempts; %d backends terminated", pages, failures, killer.Killed())

	// The pool may still hold connections terminated since their last use,
	// which fail their next query (seen on a loaded machine): the checks
	// read through a fresh pool.
	s = pgtest.OpenDSN(t, s.DSN)
	st, err := s.Cursors.Source(ctx, src)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("c%d", pages-1), st.Cursor)
	require.Equal(t, int64(pages*perPage), st.EventsTotal)
	marks, err := s.Outbox.Watermarks(ctx)
	require.NoError(t, err)
	stored, err := s.Outbox.Pending(ctx, marks, 2*pages*perPage)
	require.NoError(t, err)
	require.Len(t, stored, pages*perPage)
	seen := make(map[string]bool, len(stored))
	for _, r := range stored {
		require.False(t, seen[r.Msg.ID], "event %s stored twice", r.Msg.ID)
		seen[r.Msg.ID] = true
	}
}
