package status_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/sources"
	"github.com/ingestd/ingestd/internal/status"
	"github.com/ingestd/ingestd/internal/yandex"
)

// TestCollectSaysWhatEachSourceDoes reads the status of two Yandex sources
// and a BTS one from what PostgreSQL holds: the instance holding each lease,
// cursor, events, halts, and the pause that the outbox backlog imposes on
// every source at once.
func TestCollectSaysWhatEachSourceDoes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Open(t)
	srcs := []sources.Source{
		{Provider: sources.ProviderYandex, Yandex: yandex.Config{Account: "shop-a"}},
		{Provider: sources.ProviderYandex, Yandex: yandex.Config{Account: "shop-b"}},
		{Provider: sources.ProviderBTS, BTS: bts.Config{Account: "tashkent"}},
	}
	l, ok, err := s.Leases.TryAcquire(ctx, "source:yandex/shop-a", "instance-1", time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	_, err = s.Cursors.CommitPage(ctx, cursor.Page{Lease: l, SourceID: "yandex/shop-a", Cursor: "c1", Rows: []outbox.Row{pgtest.Row(1, 0), pgtest.Row(2, 1), pgtest.Row(3, 2)}})
	require.NoError(t, err)
	require.NoError(t, s.Cursors.Halt(ctx, "yandex/shop-b", "invalid_cursor: the journal refused the stored cursor"))

	now := time.Now().Add(time.Minute)
	tests := []struct {
		name       string
		maxBacklog int64
		paused     bool
	}{
		{"no bound", 0, false},
		{"backlog under its bound", 4, false},
		{"backlog at its bound", 3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := status.Collector{Cursors: s.Cursors, Leases: s.Leases, Outbox: s.Outbox, MaxBacklog: tt.maxBacklog}
			got, err := c.Collect(ctx, srcs, now)
			require.NoError(t, err)
			require.Len(t, got, 3)
			a, b, tash := got[0], got[1], got[2]

			require.Equal(t, "yandex/shop-a", a.ID)
			require.Equal(t, "shop-a", a.Account)
			require.Equal(t, "instance-1", a.Instance)
			require.Equal(t, "c1", a.Cursor)
			require.EqualValues(t, 3, a.EventsIngested)
			require.NotNil(t, a.LastCommitAgeSeconds)
			require.InDelta(t, 60, *a.LastCommitAgeSeconds, 30)
			require.False(t, a.Halted)

			require.Empty(t, b.Instance, "nobody holds shop-b")
			require.True(t, b.Halted)
			require.Contains(t, b.HaltedReason, "invalid_cursor")

			require.Equal(t, bts.SourceID("tashkent"), tash.ID)
			require.Equal(t, status.EveryInstance, tash.Instance)
			require.Nil(t, tash.LastCommitAt)

			for _, src := range got {
				require.Equal(t, tt.paused, src.Paused, "%s", src.ID)
				if tt.paused {
					require.Contains(t, src.PausedReason, "INGESTD_OUTBOX_MAX_BACKLOG")
				} else {
					require.Empty(t, src.PausedReason)
				}
			}
		})
	}
}
