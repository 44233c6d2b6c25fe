package watchlist_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/watchlist"
)

// claimedIDs claims everything due and returns the order ids.
func claimedIDs(t *testing.T, s *watchlist.Store) []string {
	t.Helper()
	var ids []string
	for _, c := range claimAll(t, s) {
		ids = append(ids, c.OrderID)
	}
	return ids
}

// TestRingMakesOrdersDue: a webhook makes a tracked order due at once,
// whatever its schedule; an order being polled stays its poller's but is
// due again as soon as that poll is written; a not_found order is tracked
// again; a terminal one is left alone; an unknown one is added only with
// autotrack. The source's webhook activity is recorded.
func TestRingMakesOrdersDue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := btsStore(t)

	_, err := s.Track(ctx, btsSource, []string{"scheduled", "polling", "done", "gone"})
	require.NoError(t, err)
	claims := claimAll(t, s)
	require.Len(t, claims, 4)
	byID := map[string]watchlist.Claim{}
	for _, c := range claims {
		byID[c.OrderID] = c
	}
	// scheduled: polled, next poll in an hour; done: terminal; gone: 404.
	obs := []watchlist.Observation{change(t, byID["scheduled"], 100), change(t, byID["done"], 1200),
		{OrderID: "gone", ChangeCount: 0, Token: byID["gone"].Token, NotFound: true}}
	_, _, err = s.RecordObservations(ctx, btsSource, obs)
	require.NoError(t, err)
	require.Empty(t, claimedIDs(t, s), "nothing due: polling is claimed, the rest scheduled or done")

	_, ok, err := s.LastWebhook(ctx, btsSource)
	require.NoError(t, err)
	require.False(t, ok, "no webhook yet")

	before := time.Now()
	r, err := s.Ring(ctx, btsSource, []string{"scheduled", "polling", "done", "gone", "unknown", "scheduled"}, false, 6)
	require.NoError(t, err)
	require.Equal(t, watchlist.Rang{Due: 3, Tracked: 0, Ignored: 2}, r)
	require.ElementsMatch(t, []string{"scheduled", "gone"}, claimedIDs(t, s), "due at once; polling stays claimed")

	// The poll in flight when the webhook came is written: the order is
	// due again at once, not in an hour, since it may have read the order
	// before the change the webhook announced.
	out, _, err := s.RecordObservation(ctx, btsSource, change(t, byID["polling"], 200))
	require.NoError(t, err)
	require.Equal(t, watchlist.Changed, out)
	require.Equal(t, []string{"polling"}, claimedIDs(t, s))
	c := claimAll(t, s)
	require.Empty(t, c, "its new claim cleared the ring")

	r, err = s.Ring(ctx, btsSource, []string{"unknown", "done"}, true, 2)
	require.NoError(t, err)
	require.Equal(t, watchlist.Rang{Tracked: 1, Ignored: 1}, r)
	require.Equal(t, []string{"unknown"}, claimedIDs(t, s))

	at, ok, err := s.LastWebhook(ctx, btsSource)
	require.NoError(t, err)
	require.True(t, ok)
	require.WithinDuration(t, before, at, time.Minute)
	_, ok, err = s.LastWebhook(ctx, "bts/other")
	require.NoError(t, err)
	require.False(t, ok, "per source")

	r, err = s.Ring(ctx, btsSource, nil, true, 0)
	require.NoError(t, err)
	require.Zero(t, r)
}

// TestRingDuringAnUnchangedPoll: an unchanged poll written after a webhook
// came during it also leaves the order due at once.
func TestRingDuringAnUnchangedPoll(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := btsStore(t)
	_, err := s.Track(ctx, btsSource, []string{"1"})
	require.NoError(t, err)
	c := claimAll(t, s)
	require.Len(t, c, 1)
	_, _, err = s.RecordObservation(ctx, btsSource, change(t, c[0], 300))
	require.NoError(t, err)

	_, err = s.Ring(ctx, btsSource, []string{"1"}, false, 1)
	require.NoError(t, err)
	c = claimAll(t, s)
	require.Len(t, c, 1)
	_, err = s.Ring(ctx, btsSource, []string{"1"}, false, 1)
	require.NoError(t, err)
	same := watchlist.Observation{OrderID: "1", ChangeCount: c[0].ChangeCount, Token: c[0].Token, Code: 300, NextPollIn: time.Hour}
	out, _, err := s.RecordObservation(ctx, btsSource, same)
	require.NoError(t, err)
	require.Equal(t, watchlist.Unchanged, out)
	require.Equal(t, []string{"1"}, claimedIDs(t, s))
}
