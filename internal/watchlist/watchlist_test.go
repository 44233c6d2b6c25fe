package watchlist_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/watchlist"
)

const btsSource = "bts/default"

// btsStore opens the watch-list in a fresh schema and a plain connection
// to the same schema for assertions.
func btsStore(t *testing.T) (*watchlist.Store, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	s := pgtest.Open(t)
	conn, err := pgx.Connect(ctx, s.DSN)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return s.Watchlist, conn
}

// btsEvent builds the outbox row of a status change, as the poller does.
func btsEvent(t *testing.T, orderID string, code int, changeCount int64) *outbox.Row {
	t.Helper()
	st, terminal := event.BTSStatus(code)
	now := time.Now().UTC()
	ev := event.Event{
		ID:             event.ID(event.ProviderBTS, "default", orderID, strconv.Itoa(code), strconv.FormatInt(changeCount, 10)),
		Type:           event.TypeStatusChanged,
		Provider:       event.ProviderBTS,
		Account:        "default",
		OrderID:        orderID,
		Status:         st,
		ProviderStatus: strconv.Itoa(code),
		Terminal:       terminal,
		Revision:       changeCount,
		OccurredAt:     now,
		ObservedAt:     now,
	}
	msg, err := ev.Message()
	require.NoError(t, err)
	return &outbox.Row{Partition: 0, Msg: msg}
}

// change is an observation of a new status for a claim.
func change(t *testing.T, c watchlist.Claim, code int) watchlist.Observation {
	_, terminal := event.BTSStatus(code)
	return watchlist.Observation{
		OrderID: c.OrderID, ChangeCount: c.ChangeCount, Token: c.Token,
		Code: code, Name: fmt.Sprintf("name %d", code), Terminal: terminal, NextPollIn: time.Hour,
		Event: btsEvent(t, c.OrderID, code, c.ChangeCount+1),
	}
}

// outboxEvents returns the payloads of a source's outbox rows in seq order.
func outboxEvents(t *testing.T, conn *pgx.Conn) []event.Event {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT payload FROM outbox ORDER BY seq`)
	require.NoError(t, err)
	payloads, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	require.NoError(t, err)
	out := make([]event.Event, len(payloads))
	for i, p := range payloads {
		out[i], err = event.ParsePayload(p)
		require.NoError(t, err)
	}
	return out
}

// claimAll claims everything due.
func claimAll(t *testing.T, s *watchlist.Store) []watchlist.Claim {
	t.Helper()
	c, err := s.ClaimDue(context.Background(), btsSource, "", 10_000, time.Minute)
	require.NoError(t, err)
	return c
}

func TestBTSTrackUntrackList(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, conn := btsStore(t)

	added, err := s.Track(ctx, btsSource, []string{"300", "100", "200", "100"})
	require.NoError(t, err)
	require.Equal(t, []string{"300", "100", "200"}, added, "duplicates collapse; order as given")
	added, err = s.Track(ctx, btsSource, []string{"200", "400"})
	require.NoError(t, err)
	require.Equal(t, []string{"400"}, added, "already tracked orders are not added again")
	added, err = s.Track(ctx, "bts/other", []string{"100"})
	require.NoError(t, err)
	require.Equal(t, []string{"100"}, added, "watch-lists are per source")

	// The documented plain SQL insert works and is idempotent.
	for range 2 {
		_, err = conn.Exec(ctx, `INSERT INTO bts_orders (source_id, order_id) VALUES ('bts/default', '12345') ON CONFLICT DO NOTHING;`)
		require.NoError(t, err)
	}
	_, err = s.Track(ctx, btsSource, []string{"ok", "not ok"})
	require.Error(t, err, "the CHECK constraint rejects invalid ids")

	var ids []string
	after := ""
	for {
		page, err := s.List(ctx, watchlist.ListQuery{SourceID: btsSource, After: after, Limit: 2})
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		require.LessOrEqual(t, len(page), 2)
		for _, o := range page {
			ids = append(ids, o.OrderID)
			require.Equal(t, watchlist.Active, o.State)
			require.False(t, o.HasStatus)
			require.NotNil(t, o.NextPollAt)
			require.False(t, o.AddedAt.IsZero())
		}
		after = page[len(page)-1].OrderID
	}
	require.Equal(t, []string{"100", "12345", "200", "300", "400"}, ids)

	counts, err := s.Count(ctx, btsSource)
	require.NoError(t, err)
	require.Equal(t, map[watchlist.State]int64{watchlist.Active: 5, watchlist.Terminal: 0, watchlist.NotFound: 0}, counts)

	removed, err := s.Untrack(ctx, btsSource, []string{"999", "300", "100"})
	require.NoError(t, err)
	require.Equal(t, []string{"300", "100"}, removed)
	page, err := s.List(ctx, watchlist.ListQuery{SourceID: btsSource, State: watchlist.Active, Limit: 100})
	require.NoError(t, err)
	require.Len(t, page, 3)

	_, err = s.List(ctx, watchlist.ListQuery{SourceID: btsSource, State: "bogus", Limit: 1})
	require.ErrorContains(t, err, "unknown state")
	_, err = s.List(ctx, watchlist.ListQuery{SourceID: btsSource, Limit: 0})
	require.ErrorContains(t, err, "limit")
}

func TestBTSRecordObservationLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, conn := btsStore(t)
	_, err := s.Track(ctx, btsSource, []string{"1"})
	require.NoError(t, err)

	// First poll: the current status is the first change.
	c := claimAll(t, s)
	require.Len(t, c, 1)
	require.False(t, c[0].HasStatus)
	require.Zero(t, c[0].ChangeCount)
	out, commit, err := s.RecordObservation(ctx, btsSource, change(t, c[0], 100))
	require.NoError(t, err)
	require.Equal(t, watchlist.Changed, out)
	require.Len(t, commit.Inserted, 1)
	require.Positive(t, commit.Inserted[0].Seq)
	require.Equal(t, btsSource, commit.Inserted[0].SourceID)
	require.Empty(t, claimAll(t, s), "rescheduled an hour out")

	// Make it due again, then observe the same status: rescheduled only.
	_, err = conn.Exec(ctx, `UPDATE bts_orders SET next_poll_at = now()`)
	require.NoError(t, err)
	c = claimAll(t, s)
	require.Len(t, c, 1)
	require.True(t, c[0].HasStatus)
	require.Equal(t, 100, c[0].StatusCode)
	require.Equal(t, "name 100", c[0].StatusName)
	require.EqualValues(t, 1, c[0].ChangeCount)
	same := change(t, c[0], 100)
	out, commit, err = s.RecordObservation(ctx, btsSource, same)
	require.NoError(t, err)
	require.Equal(t, watchlist.Unchanged, out, "an event offered for an unchanged status is not published")
	require.Empty(t, commit.Inserted)

	// A skip to 700, then the terminal status.
	for _, code := range []int{700, 1200} {
		_, err = conn.Exec(ctx, `UPDATE bts_orders SET next_poll_at = now()`)
		require.NoError(t, err)
		c = claimAll(t, s)
		require.Len(t, c, 1)
		out, _, err = s.RecordObservation(ctx, btsSource, change(t, c[0], code))
		require.NoError(t, err)
		require.Equal(t, watchlist.Changed, out)
	}
	page, err := s.List(ctx, watchlist.ListQuery{SourceID: btsSource, Limit: 10})
	require.NoError(t, err)
	require.Len(t, page, 1)
	o := page[0]
	require.Equal(t, watchlist.Terminal, o.State)
	require.Equal(t, 1200, o.StatusCode)
	require.EqualValues(t, 3, o.ChangeCount)
	require.Nil(t, o.NextPollAt, "a terminal order leaves the active set")
	require.Nil(t, o.ClaimedUntil)
	require.NotNil(t, o.LastChangedAt)

	_, err = conn.Exec(ctx, `UPDATE bts_orders SET next_poll_at = now() WHERE state = 'active'`)
	require.NoError(t, err)
	require.Empty(t, claimAll(t, s), "terminal orders are never claimed again")
	_, ok, err := s.NextDue(ctx, btsSource)
	require.NoError(t, err)
	require.False(t, ok)

	evs := outboxEvents(t, conn)
	require.Len(t, evs, 3)
	for i, want := range []string{"100", "700", "1200"} {
		require.Equal(t, want, evs[i].ProviderStatus)
		require.EqualValues(t, i+1, evs[i].Revision)
	}
	require.True(t, evs[2].Terminal)
}

func TestBTSNotFoundAndRetrack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, conn := btsStore(t)
	_, err := s.Track(ctx, btsSource, []string{"404"})
	require.NoError(t, err)
	c := claimAll(t, s)
	out, commit, err := s.RecordObservation(ctx, btsSource, watchlist.Observation{OrderID: "404", ChangeCount: c[0].ChangeCount, Token: c[0].Token, NotFound: true})
	require.NoError(t, err)
	require.Equal(t, watchlist.MarkedNotFound, out)
	require.Empty(t, commit.Inserted)
	require.Empty(t, outboxEvents(t, conn))

	page, err := s.List(ctx, watchlist.ListQuery{SourceID: btsSource, State: watchlist.NotFound, Limit: 10})
	require.NoError(t, err)
	require.Len(t, page, 1)
	require.Contains(t, page[0].LastError, "404")
	require.Nil(t, page[0].NextPollAt)

	added, err := s.Track(ctx, btsSource, []string{"404"})
	require.NoError(t, err)
	require.Equal(t, []string{"404"}, added, "tracking a not_found order again reactivates it")
	require.Len(t, claimAll(t, s), 1)
}

func TestBTSStaleObservationLosesCAS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, conn := btsStore(t)
	_, err := s.Track(ctx, btsSource, []string{"7"})
	require.NoError(t, err)

	// Claimer A's claim runs out before it records (a long GC pause, say)...
	a, err := s.ClaimDue(ctx, btsSource, "", 10, 50*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, a, 1)
	var b []watchlist.Claim
	require.Eventually(t, func() bool {
		b, err = s.ClaimDue(ctx, btsSource, "", 10, time.Minute)
		require.NoError(t, err)
		return len(b) == 1
	}, 10*time.Second, 10*time.Millisecond)
	require.NotEqual(t, a[0].Token, b[0].Token)

	// ...so claimer B polled the order too, and records first.
	out, _, err := s.RecordObservation(ctx, btsSource, change(t, b[0], 200))
	require.NoError(t, err)
	require.Equal(t, watchlist.Changed, out)

	// A's observations, whatever they say, lose the compare-and-set.
	for _, code := range []int{100, 200, 300} {
		out, commit, err := s.RecordObservation(ctx, btsSource, change(t, a[0], code))
		require.NoError(t, err)
		require.Equal(t, watchlist.Stale, out, "code %d", code)
		require.Empty(t, commit.Inserted)
	}
	out, _, err = s.RecordObservation(ctx, btsSource, watchlist.Observation{OrderID: "7", ChangeCount: a[0].ChangeCount, Token: a[0].Token, NotFound: true})
	require.NoError(t, err)
	require.Equal(t, watchlist.Stale, out)
	require.NoError(t, s.Reschedule(ctx, btsSource, []watchlist.Retry{{OrderID: "7", ChangeCount: a[0].ChangeCount, Token: a[0].Token, After: 0, Error: "stale"}}))

	evs := outboxEvents(t, conn)
	require.Len(t, evs, 1)
	require.Equal(t, "200", evs[0].ProviderStatus)
	page, err := s.List(ctx, watchlist.ListQuery{SourceID: btsSource, Limit: 1})
	require.NoError(t, err)
	require.Empty(t, page[0].LastError, "the stale retry wrote nothing")
	require.EqualValues(t, 1, page[0].ChangeCount)

	// A stale claim's unchanged status does not reschedule over a newer
	// claim either.
	_, err = conn.Exec(ctx, `UPDATE bts_orders SET next_poll_at = now()`)
	require.NoError(t, err)
	newer := claimAll(t, s)
	require.Len(t, newer, 1)
	old := newer[0]
	old.Token++
	o := change(t, old, 200)
	o.Event = nil
	out, _, err = s.RecordObservation(ctx, btsSource, o)
	require.NoError(t, err)
	require.Equal(t, watchlist.Stale, out)
}

func TestBTSConcurrentClaimersNeverShareAnOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := btsStore(t)
	const n = 3000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = strconv.Itoa(100000 + i)
	}
	_, err := s.Track(ctx, btsSource, ids)
	require.NoError(t, err)

	var (
		mu  sync.Mutex
		got = map[string]int{}
		wg  sync.WaitGroup
	)
	for range 6 {
		wg.Go(func() {
			for {
				c, err := s.ClaimDue(ctx, btsSource, "", 37, time.Minute)
				if !btsNoError(t, err) || len(c) == 0 {
					return
				}
				mu.Lock()
				for _, cl := range c {
					got[cl.OrderID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Len(t, got, n, "every order was claimed")
	for id, k := range got {
		require.Equal(t, 1, k, "order %s claimed %d times", id, k)
	}
}

func TestBTSClaimOrderLagAndRelease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, conn := btsStore(t)
	_, err := s.Track(ctx, btsSource, []string{"a", "b", "c"})
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `UPDATE bts_orders SET next_poll_at = now() - CASE order_id WHEN 'a' THEN interval '1 minute' WHEN 'b' THEN interval '3 minutes' ELSE interval '-1 hour' END`)
	require.NoError(t, err)

	wait, ok, err := s.NextDue(ctx, btsSource)
	require.NoError(t, err)
	require.True(t, ok)
	require.InDelta(t, -3*time.Minute.Seconds(), wait.Seconds(), 5)

	c, err := s.ClaimDue(ctx, btsSource, "", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, c, 1)
	require.Equal(t, "b", c[0].OrderID, "the most overdue first")
	require.InDelta(t, 3*time.Minute.Seconds(), c[0].Lag.Seconds(), 5)

	rest := claimAll(t, s)
	require.Len(t, rest, 1)
	require.Equal(t, "a", rest[0].OrderID, "c is not due for an hour")

	// Released claims are due at once; a release with another claim's token
	// does nothing.
	bogus := rest[0]
	bogus.Token++
	require.NoError(t, s.ReleaseClaims(ctx, btsSource, []watchlist.Claim{bogus}))
	require.NoError(t, s.ReleaseClaims(ctx, btsSource, c))
	again := claimAll(t, s)
	require.Len(t, again, 1)
	require.Equal(t, "b", again[0].OrderID)

	// A failed poll reschedules after the backoff and keeps the error.
	require.NoError(t, s.Reschedule(ctx, btsSource, []watchlist.Retry{
		{OrderID: "b", ChangeCount: 0, Token: again[0].Token, After: time.Hour, Error: "bts track order: retry: HTTP 503"},
	}))
	page, err := s.List(ctx, watchlist.ListQuery{SourceID: btsSource, After: "a", Limit: 1})
	require.NoError(t, err)
	require.Equal(t, "b", page[0].OrderID)
	require.Equal(t, 1, page[0].ErrorCount)
	require.Equal(t, "bts track order: retry: HTTP 503", page[0].LastError)
	require.Nil(t, page[0].ClaimedUntil)
	require.WithinDuration(t, time.Now().Add(time.Hour), *page[0].NextPollAt, time.Minute)
}

func TestBTSBatchRecordsInOneTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, conn := btsStore(t)
	_, err := s.Track(ctx, btsSource, []string{"1", "2", "3", "4"})
	require.NoError(t, err)
	c := claimAll(t, s)
	require.Len(t, c, 4)
	byID := map[string]watchlist.Claim{}
	for _, cl := range c {
		byID[cl.OrderID] = cl
	}
	obs := []watchlist.Observation{
		change(t, byID["3"], 300),
		change(t, byID["1"], 100),
		{OrderID: "2", ChangeCount: 0, Token: byID["2"].Token, NotFound: true},
		change(t, byID["4"], 0),
		change(t, byID["1"], 200), // a repeat within the batch is stale
	}
	out, commit, err := s.RecordObservations(ctx, btsSource, obs)
	require.NoError(t, err)
	require.Equal(t, []watchlist.Outcome{watchlist.Changed, watchlist.Changed, watchlist.MarkedNotFound, watchlist.Changed, watchlist.Stale}, out)
	require.Len(t, commit.Inserted, 3)
	require.Equal(t, commit.FirstSeq, commit.Inserted[0].Seq)
	require.Equal(t, commit.LastSeq, commit.Inserted[2].Seq)

	evs := outboxEvents(t, conn)
	var got []string
	for _, ev := range evs {
		got = append(got, ev.OrderID+"="+ev.ProviderStatus)
	}
	require.Equal(t, []string{"3=300", "1=100", "4=0"}, got, "events in observation order")
	counts, err := s.Count(ctx, btsSource)
	require.NoError(t, err)
	require.Equal(t, map[watchlist.State]int64{watchlist.Active: 2, watchlist.Terminal: 1, watchlist.NotFound: 1}, counts)

	// An order untracked while its poll was in flight records nothing.
	_, err = s.Untrack(ctx, btsSource, []string{"3"})
	require.NoError(t, err)
	o, _, err := s.RecordObservation(ctx, btsSource, change(t, watchlist.Claim{OrderID: "3", ChangeCount: 1}, 400))
	require.NoError(t, err)
	require.Equal(t, watchlist.Stale, o)
	require.Len(t, outboxEvents(t, conn), 3)
}

func TestBTSStatusesRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := btsStore(t)
	got, err := s.Statuses(ctx, btsSource)
	require.NoError(t, err)
	require.Empty(t, got)
	require.Error(t, s.SaveStatuses(ctx, btsSource, nil))

	defs := []watchlist.Status{
		{Code: 800, Name: "В офисе доставки", Description: "d", Next: []int{900, 1000, 1100}},
		{Code: 1200, Name: "Доставлен", Next: []int{}},
	}
	require.NoError(t, s.SaveStatuses(ctx, btsSource, defs))
	require.NoError(t, s.SaveStatuses(ctx, btsSource, []watchlist.Status{{Code: 800, Name: "Yetkazib berish ofisida", Next: []int{1100}}}))
	got, err = s.Statuses(ctx, btsSource)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, 800, got[0].Code)
	require.Equal(t, "Yetkazib berish ofisida", got[0].Name, "a refresh updates names")
	require.Equal(t, []int{1100}, got[0].Next)
	require.Equal(t, "Доставлен", got[1].Name, "codes no longer listed are kept")
	require.Equal(t, []int{}, got[1].Next)
	require.False(t, got[1].UpdatedAt.IsZero())
	other, err := s.Statuses(ctx, "bts/other")
	require.NoError(t, err)
	require.Empty(t, other)
}

func TestBTSClaimUsesTheDueIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, conn := btsStore(t)
	ids := make([]string, 20_000)
	for i := range ids {
		ids[i] = strconv.Itoa(i)
	}
	_, err := s.Track(ctx, btsSource, ids)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `ANALYZE bts_orders`)
	require.NoError(t, err)
	rows, err := conn.Query(ctx, `EXPLAIN SELECT order_id FROM bts_orders
WHERE source_id = 'bts/default' AND state = 'active' AND next_poll_at <= now() ORDER BY next_poll_at LIMIT 50`)
	require.NoError(t, err)
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(plan, func(l string) bool { return strings.Contains(l, "bts_orders_due_idx") }),
		"the claim walks the due index instead of scanning the watch-list:\n%v", plan)
}

// btsNoError reports err from a goroutine other than the test's, where
// require must not be used.
func btsNoError(t *testing.T, err error) bool {
	if err != nil {
		t.Errorf("unexpected error: %v", err)
		return false
	}
	return true
}

// TestClaimsOfADeadInstanceAreFreeAtOnce: orders claimed by an instance
// whose heartbeat expired are due again at once, not at the end of their
// claim; a live instance's claims, and claims taken without an instance,
// last until they end.
func TestClaimsOfADeadInstanceAreFreeAtOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := pgtest.Open(t)
	s := st.Watchlist
	_, err := s.Track(ctx, btsSource, []string{"1", "2", "3", "4", "5", "6"})
	require.NoError(t, err)
	_, err = st.Leases.Heartbeat(ctx, "dying", 300*time.Millisecond)
	require.NoError(t, err)
	_, err = st.Leases.Heartbeat(ctx, "alive", time.Hour)
	require.NoError(t, err)

	dying, err := s.ClaimDue(ctx, btsSource, "dying", 2, time.Hour)
	require.NoError(t, err)
	require.Len(t, dying, 2)
	alive, err := s.ClaimDue(ctx, btsSource, "alive", 2, time.Hour)
	require.NoError(t, err)
	require.Len(t, alive, 2)
	anonymous, err := s.ClaimDue(ctx, btsSource, "", 2, time.Hour)
	require.NoError(t, err)
	require.Len(t, anonymous, 2)
	none, err := s.ClaimDue(ctx, btsSource, "alive", 10, time.Hour)
	require.NoError(t, err)
	require.Empty(t, none, "every order is claimed while the dying instance lives")

	// The dying instance's heartbeat expires: only its two orders are free.
	var freed []watchlist.Claim
	require.Eventually(t, func() bool {
		freed, err = s.ClaimDue(ctx, btsSource, "alive", 10, time.Hour)
		require.NoError(t, err)
		return len(freed) > 0
	}, 10*time.Second, 20*time.Millisecond)
	ids := func(cs []watchlist.Claim) []string {
		out := make([]string, len(cs))
		for i, c := range cs {
			out[i] = c.OrderID
		}
		slices.Sort(out)
		return out
	}
	require.Equal(t, ids(dying), ids(freed))
}
