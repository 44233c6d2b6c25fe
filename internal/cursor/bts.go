package cursor

// The BTS watch-list. BTS Express has no journal to walk, so its source is a
// table of tracked orders (bts_orders, migrations/00003_bts.sql) polled one
// order at a time on a schedule.
//
// Concurrency and exactly-once. Unlike a journal source, which is a single
// fenced writer (one lease per source, see lease.go), the BTS source is safe
// with several replicas polling the same watch-list at once, without a
// lease:
//
//   - Claims use FOR UPDATE SKIP LOCKED and move the claimed orders'
//     next_poll_at to the end of the claim in the same statement, so two
//     claimers never get the same order while a claim lasts, and the orders
//     of a claimer that crashed become due again when its claim runs out.
//   - Every write of an observation is a compare-and-set on the order's
//     change count, the number of status changes recorded for it. A status
//     change updates the order and inserts its event (through insertRows,
//     the one outbox insert path) in one transaction, only if the count is
//     still the one the poll started from. An observation that lost a race,
//     or comes from a claim that outlived its time, changes nothing, so no
//     change is published twice or out of order.
//   - The event id is derived from the order, the status code and the new
//     change count, so even a replayed transaction could only produce an
//     event the outbox already holds (event_id is unique).

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// BTSState is where a watched order is on the watch-list.
type BTSState string

// Watch-list states.
const (
	// BTSActive orders are polled on their schedule.
	BTSActive BTSState = "active"
	// BTSTerminal orders reached a final status; its event was published.
	BTSTerminal BTSState = "terminal"
	// BTSNotFound orders were answered 404 by BTS. Tracking them again makes
	// them active.
	BTSNotFound BTSState = "not_found"
)

// Valid reports whether s is a watch-list state.
func (s BTSState) Valid() bool {
	return s == BTSActive || s == BTSTerminal || s == BTSNotFound
}

// BTSOrder is one watch-list row.
type BTSOrder struct {
	SourceID string
	OrderID  string
	State    BTSState
	// HasStatus is false until the first successful poll; StatusCode and
	// StatusName are the last status seen.
	HasStatus   bool
	StatusCode  int
	StatusName  string
	ChangeCount int64
	// NextPollAt is nil once the order left the active set.
	NextPollAt    *time.Time
	ClaimedUntil  *time.Time
	LastPolledAt  *time.Time
	LastChangedAt *time.Time
	AddedAt       time.Time
	ErrorCount    int
	LastError     string
	LastErrorAt   *time.Time
}

// dedupe returns ids without repeats, in first-seen order.
func dedupe(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// trackSQL adds orders, and makes not_found ones active again: an order an
// operator tracks anew may have been created upstream since. Active and
// terminal orders are left as they are.
const trackSQL = `
INSERT INTO bts_orders AS o (source_id, order_id)
SELECT $1, id FROM unnest($2::text[]) AS id
ON CONFLICT (source_id, order_id) DO UPDATE
    SET state = 'active', next_poll_at = now(), error_count = 0, last_error = NULL, last_error_at = NULL
    WHERE o.state = 'not_found'
RETURNING order_id`

// TrackBTSOrders adds orders to a source's watch-list and returns the ids
// that were added (or reactivated after not_found), in the order given. An
// added order is due at once. The ids must be valid (bts.ValidOrderID); the
// table's CHECK constraint rejects the whole call otherwise.
func (s *Store) TrackBTSOrders(ctx context.Context, sourceID string, orderIDs []string) ([]string, error) {
	ids := dedupe(orderIDs)
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, trackSQL, sourceID, ids)
	if err != nil {
		return nil, fmt.Errorf("track bts orders of %s: %w", sourceID, err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("track bts orders of %s: %w", sourceID, err)
	}
	return inOrder(ids, got), nil
}

// UntrackBTSOrders removes orders from a source's watch-list and returns the
// ids that were there, in the order given. A poll in flight for a removed
// order records nothing. Tracking an order again later starts its change
// count afresh.
func (s *Store) UntrackBTSOrders(ctx context.Context, sourceID string, orderIDs []string) ([]string, error) {
	ids := dedupe(orderIDs)
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `DELETE FROM bts_orders WHERE source_id = $1 AND order_id = ANY($2::text[]) RETURNING order_id`, sourceID, ids)
	if err != nil {
		return nil, fmt.Errorf("untrack bts orders of %s: %w", sourceID, err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("untrack bts orders of %s: %w", sourceID, err)
	}
	return inOrder(ids, got), nil
}

// inOrder returns the members of got in the order of ids.
func inOrder(ids, got []string) []string {
	in := make(map[string]bool, len(got))
	for _, id := range got {
		in[id] = true
	}
	out := make([]string, 0, len(got))
	for _, id := range ids {
		if in[id] {
			out = append(out, id)
		}
	}
	return out
}

// BTSListQuery selects one page of a watch-list, in order id order.
type BTSListQuery struct {
	SourceID string
	// State filters by state; "" lists every state.
	State BTSState
	// After is the last order id of the previous page; "" starts at the
	// beginning.
	After string
	// Limit is the page size, 1..10000.
	Limit int
}

// MaxBTSListLimit bounds a page of ListBTSOrders.
const MaxBTSListLimit = 10_000

const listSQL = `
SELECT source_id, order_id, state, status_code, coalesce(status_name, ''), change_count, next_poll_at, claimed_until,
       last_polled_at, last_changed_at, added_at, error_count, coalesce(last_error, ''), last_error_at
FROM bts_orders
WHERE source_id = $1 AND ($2 = '' OR state = $2) AND order_id > $3
ORDER BY order_id
LIMIT $4`

// ListBTSOrders returns one page of a watch-list. Pages are keyset-paged on
// the order id, so listing never loads the whole table: pass the last id of
// a page as the next query's After.
func (s *Store) ListBTSOrders(ctx context.Context, q BTSListQuery) ([]BTSOrder, error) {
	if q.State != "" && !q.State.Valid() {
		return nil, fmt.Errorf("list bts orders: unknown state %q", q.State)
	}
	if q.Limit < 1 || q.Limit > MaxBTSListLimit {
		return nil, fmt.Errorf("list bts orders: limit must be between 1 and %d, got %d", MaxBTSListLimit, q.Limit)
	}
	rows, err := s.pool.Query(ctx, listSQL, q.SourceID, string(q.State), q.After, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("list bts orders of %s: %w", q.SourceID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (BTSOrder, error) {
		var (
			o     BTSOrder
			state string
			code  *int32
		)
		err := r.Scan(&o.SourceID, &o.OrderID, &state, &code, &o.StatusName, &o.ChangeCount, &o.NextPollAt, &o.ClaimedUntil,
			&o.LastPolledAt, &o.LastChangedAt, &o.AddedAt, &o.ErrorCount, &o.LastError, &o.LastErrorAt)
		o.State = BTSState(state)
		if code != nil {
			o.HasStatus, o.StatusCode = true, int(*code)
		}
		return o, err
	})
	if err != nil {
		return nil, fmt.Errorf("list bts orders of %s: %w", q.SourceID, err)
	}
	return out, nil
}

// CountBTSOrders returns how many orders of a source are in each state.
func (s *Store) CountBTSOrders(ctx context.Context, sourceID string) (map[BTSState]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT state, count(*) FROM bts_orders WHERE source_id = $1 GROUP BY state`, sourceID)
	if err != nil {
		return nil, fmt.Errorf("count bts orders of %s: %w", sourceID, err)
	}
	out := map[BTSState]int64{BTSActive: 0, BTSTerminal: 0, BTSNotFound: 0}
	var (
		state string
		n     int64
	)
	_, err = pgx.ForEachRow(rows, []any{&state, &n}, func() error {
		out[BTSState(state)] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count bts orders of %s: %w", sourceID, err)
	}
	return out, nil
}

// BTSClaim is a due order claimed for one poll.
type BTSClaim struct {
	OrderID string
	// HasStatus, StatusCode and StatusName are the stored status the poll
	// compares against; ChangeCount is the count its observation must
	// still find to be recorded.
	HasStatus   bool
	StatusCode  int
	StatusName  string
	ChangeCount int64
	// DueAt is when the order was due; Lag how late the claim came.
	DueAt time.Time
	Lag   time.Duration
	// Token identifies the claim, so that only its holder releases it or
	// reschedules the order.
	Token int64
}

// claimSQL claims up to $2 due orders for $3 seconds. SKIP LOCKED makes
// concurrent claimers take disjoint orders instead of queueing behind each
// other; moving next_poll_at to the end of the claim takes the orders out
// of the due set for everyone else until then, and brings them back by
// itself if the claimer dies.
const claimSQL = `
WITH due AS (
    SELECT order_id, next_poll_at FROM bts_orders
    WHERE source_id = $1 AND state = 'active' AND next_poll_at <= now()
    ORDER BY next_poll_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE bts_orders AS o
SET next_poll_at = now() + make_interval(secs => $3),
    claimed_until = now() + make_interval(secs => $3),
    claim_token = $4
FROM due
WHERE o.source_id = $1 AND o.order_id = due.order_id
RETURNING o.order_id, o.status_code, coalesce(o.status_name, ''), o.change_count, due.next_poll_at,
          extract(epoch FROM now() - due.next_poll_at)::float8`

// ClaimDueBTSOrders claims up to limit orders of a source that are due,
// earliest first, for claimFor. Claimed orders are not due for anyone else
// until the claim ends: the holder records an observation, reschedules or
// releases each one before that, or they become due again.
func (s *Store) ClaimDueBTSOrders(ctx context.Context, sourceID string, limit int, claimFor time.Duration) ([]BTSClaim, error) {
	if limit <= 0 {
		return nil, nil
	}
	if claimFor <= 0 {
		return nil, fmt.Errorf("claim bts orders: claim duration must be positive, got %s", claimFor)
	}
	token := rand.Int64()
	rows, err := s.pool.Query(ctx, claimSQL, sourceID, limit, claimFor.Seconds(), token)
	if err != nil {
		return nil, fmt.Errorf("claim bts orders of %s: %w", sourceID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (BTSClaim, error) {
		var (
			c    BTSClaim
			code *int32
			lag  float64
		)
		err := r.Scan(&c.OrderID, &code, &c.StatusName, &c.ChangeCount, &c.DueAt, &lag)
		if code != nil {
			c.HasStatus, c.StatusCode = true, int(*code)
		}
		c.Lag = time.Duration(max(lag, 0) * float64(time.Second))
		c.Token = token
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("claim bts orders of %s: %w", sourceID, err)
	}
	slices.SortFunc(out, func(a, b BTSClaim) int { return a.DueAt.Compare(b.DueAt) })
	return out, nil
}

// NextBTSDue returns how long until the next active order of a source is
// due (zero or negative when one is due now), measured on PostgreSQL's
// clock, which is the one claims use. ok is false when no order is active.
func (s *Store) NextBTSDue(ctx context.Context, sourceID string) (time.Duration, bool, error) {
	var secs *float64
	err := s.pool.QueryRow(ctx, `
SELECT extract(epoch FROM min(next_poll_at) - now())::float8
FROM bts_orders WHERE source_id = $1 AND state = 'active'`, sourceID).Scan(&secs)
	if err != nil {
		return 0, false, fmt.Errorf("next due bts order of %s: %w", sourceID, err)
	}
	if secs == nil {
		return 0, false, nil
	}
	return time.Duration(*secs * float64(time.Second)), true, nil
}

// ReleaseBTSClaims gives claimed orders back unpolled (at shutdown, say):
// they are due at once for any claimer. A claim that already ended and was
// taken over by another claimer is left alone.
func (s *Store) ReleaseBTSClaims(ctx context.Context, sourceID string, claims []BTSClaim) error {
	if len(claims) == 0 {
		return nil
	}
	ids := make([]string, len(claims))
	tokens := make([]int64, len(claims))
	for i, c := range claims {
		ids[i], tokens[i] = c.OrderID, c.Token
	}
	_, err := s.pool.Exec(ctx, `
UPDATE bts_orders AS o SET next_poll_at = now(), claimed_until = NULL, claim_token = NULL
FROM unnest($2::text[], $3::int8[]) AS v(order_id, token)
WHERE o.source_id = $1 AND o.order_id = v.order_id AND o.claim_token = v.token AND o.state = 'active'`, sourceID, ids, tokens)
	if err != nil {
		return fmt.Errorf("release bts claims of %s: %w", sourceID, err)
	}
	return nil
}

// BTSObservation is the result of one successful poll of an order.
type BTSObservation struct {
	OrderID string
	// ChangeCount is the stored change count the poll started from (the
	// claim's); the observation is recorded only if it is still current.
	ChangeCount int64
	// Token is the claim's token: an unchanged status or a 404 is recorded
	// only while no other claim holds the order.
	Token int64
	// NotFound reports that BTS answered 404: the order leaves the active
	// set without an event.
	NotFound bool
	// Code and Name are the observed status.
	Code int
	Name string
	// Terminal reports that Code ends the order's lifecycle: after its
	// event, the order leaves the active set.
	Terminal bool
	// NextPollIn is when to poll again, from now, if the order stays active.
	NextPollIn time.Duration
	// Event is the outbox row announcing the change, built for change count
	// ChangeCount+1. It must be set when Code differs from the stored
	// status; an observation without one is only ever recorded as
	// unchanged.
	Event *Row
}

// BTSOutcome is what recording an observation did.
type BTSOutcome int

// Observation outcomes.
const (
	// BTSStale: the order's change count (or claim) moved since the poll
	// began, or the order is no longer active or tracked; nothing was
	// written.
	BTSStale BTSOutcome = iota
	// BTSChanged: the status changed; the order was updated and the event
	// inserted into the outbox in the same transaction.
	BTSChanged
	// BTSUnchanged: same status; the order was rescheduled.
	BTSUnchanged
	// BTSMarkedNotFound: the order is now not_found.
	BTSMarkedNotFound
)

// String names the outcome for logs and metric labels.
func (o BTSOutcome) String() string {
	switch o {
	case BTSStale:
		return "stale"
	case BTSChanged:
		return "changed"
	case BTSUnchanged:
		return "unchanged"
	case BTSMarkedNotFound:
		return "not_found"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// changedSQL records status changes: compare-and-set on the change count,
// and only where the code really differs from the stored one.
const changedSQL = `
UPDATE bts_orders AS o
SET status_code = v.code, status_name = nullif(v.name, ''), change_count = o.change_count + 1,
    state = CASE WHEN v.terminal THEN 'terminal' ELSE 'active' END,
    next_poll_at = CASE WHEN v.terminal THEN NULL ELSE now() + make_interval(secs => v.next_secs) END,
    claimed_until = NULL, claim_token = NULL, last_polled_at = now(), last_changed_at = now(),
    error_count = 0, last_error = NULL, last_error_at = NULL
FROM unnest($2::text[], $3::int8[], $4::int4[], $5::text[], $6::bool[], $7::float8[])
    AS v(order_id, expected, code, name, terminal, next_secs)
WHERE o.source_id = $1 AND o.order_id = v.order_id AND o.state = 'active'
  AND o.change_count = v.expected AND o.status_code IS DISTINCT FROM v.code
RETURNING o.order_id`

// unchangedSQL reschedules orders whose status did not change, as long as
// the poll is still current: same change count, and no other claim.
const unchangedSQL = `
UPDATE bts_orders AS o
SET next_poll_at = now() + make_interval(secs => v.next_secs), claimed_until = NULL, claim_token = NULL,
    last_polled_at = now(), error_count = 0, last_error = NULL, last_error_at = NULL
FROM unnest($2::text[], $3::int8[], $4::int8[], $5::int4[], $6::float8[]) AS v(order_id, expected, token, code, next_secs)
WHERE o.source_id = $1 AND o.order_id = v.order_id AND o.state = 'active'
  AND o.change_count = v.expected AND (o.claim_token IS NULL OR o.claim_token = v.token)
  AND o.status_code IS NOT DISTINCT FROM v.code
RETURNING o.order_id`

// notFoundSQL takes orders BTS does not know out of the active set.
const notFoundSQL = `
UPDATE bts_orders AS o
SET state = 'not_found', next_poll_at = NULL, claimed_until = NULL, claim_token = NULL,
    last_polled_at = now(), last_error = 'not found upstream (HTTP 404)', last_error_at = now()
FROM unnest($2::text[], $3::int8[], $4::int8[]) AS v(order_id, expected, token)
WHERE o.source_id = $1 AND o.order_id = v.order_id AND o.state = 'active'
  AND o.change_count = v.expected AND (o.claim_token IS NULL OR o.claim_token = v.token)
RETURNING o.order_id`

// RecordBTSObservation records one observation; see RecordBTSObservations.
func (s *Store) RecordBTSObservation(ctx context.Context, sourceID string, o BTSObservation) (BTSOutcome, Commit, error) {
	out, c, err := s.RecordBTSObservations(ctx, sourceID, []BTSObservation{o})
	if err != nil {
		return BTSStale, Commit{}, err
	}
	return out[0], c, nil
}

// RecordBTSObservations records a batch of observations in ONE transaction
// and returns each one's outcome, in order, with the outbox commit of the
// events inserted (to wake the publisher). For each observation:
//
//   - a status different from the stored one updates the order
//     (compare-and-set on its change count) and inserts its event into the
//     outbox, both or neither; a terminal status also takes the order out
//     of the active set, after that last event;
//   - the stored status just reschedules the order;
//   - a 404 marks the order not_found, without an event.
//
// An observation whose change count (or claim) is no longer current is
// stale and writes nothing. Batching lets one transaction, and one outbox
// sequence allocation, serve many polls; an order may appear only once per
// batch (later repeats are stale).
func (s *Store) RecordBTSObservations(ctx context.Context, sourceID string, obs []BTSObservation) ([]BTSOutcome, Commit, error) {
	outcomes := make([]BTSOutcome, len(obs))
	if len(obs) == 0 {
		return outcomes, Commit{}, nil
	}
	var (
		ch, un, nf columns
		seen       = make(map[string]bool, len(obs))
		index      = make(map[string]int, len(obs))
	)
	for i := range obs {
		o := &obs[i]
		if seen[o.OrderID] {
			continue
		}
		seen[o.OrderID] = true
		index[o.OrderID] = i
		if o.NotFound {
			nf.add(o)
			continue
		}
		if o.Event != nil {
			ch.add(o)
		}
		un.add(o)
	}

	var commit Commit
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		clear(outcomes)
		commit = Commit{}
		if len(ch.ids) > 0 {
			changed, err := collectIDs(tx.Query(ctx, changedSQL, sourceID, ch.ids, ch.expected, ch.codes, ch.names, ch.terminal, ch.nextSecs))
			if err != nil {
				return fmt.Errorf("record bts status changes: %w", err)
			}
			for _, id := range changed {
				outcomes[index[id]] = BTSChanged
			}
			// Events go in observation order; insertRows allocates their
			// seqs from the one outbox counter, like every other writer.
			rows := make([]Row, 0, len(changed))
			for i := range obs {
				if outcomes[i] == BTSChanged {
					rows = append(rows, *obs[i].Event)
				}
			}
			if commit, err = s.insertRows(ctx, tx, sourceID, rows, true); err != nil {
				return err
			}
		}
		if len(un.ids) > 0 {
			got, err := collectIDs(tx.Query(ctx, unchangedSQL, sourceID, un.ids, un.expected, un.tokens, un.codes, un.nextSecs))
			if err != nil {
				return fmt.Errorf("reschedule unchanged bts orders: %w", err)
			}
			for _, id := range got {
				if outcomes[index[id]] == BTSStale {
					outcomes[index[id]] = BTSUnchanged
				}
			}
		}
		if len(nf.ids) > 0 {
			got, err := collectIDs(tx.Query(ctx, notFoundSQL, sourceID, nf.ids, nf.expected, nf.tokens))
			if err != nil {
				return fmt.Errorf("mark bts orders not found: %w", err)
			}
			for _, id := range got {
				outcomes[index[id]] = BTSMarkedNotFound
			}
		}
		return nil
	})
	if err != nil {
		return nil, Commit{}, fmt.Errorf("record bts observations of %s: %w", sourceID, err)
	}
	return outcomes, commit, nil
}

// columns holds observations as the parallel arrays unnest takes.
type columns struct {
	ids      []string
	expected []int64
	tokens   []int64
	codes    []int32
	names    []string
	terminal []bool
	nextSecs []float64
}

func (c *columns) add(o *BTSObservation) {
	c.ids = append(c.ids, o.OrderID)
	c.expected = append(c.expected, o.ChangeCount)
	c.tokens = append(c.tokens, o.Token)
	c.codes = append(c.codes, int32(o.Code))
	c.names = append(c.names, o.Name)
	c.terminal = append(c.terminal, o.Terminal)
	c.nextSecs = append(c.nextSecs, max(o.NextPollIn, 0).Seconds())
}

// collectIDs reads a column of order ids.
func collectIDs(rows pgx.Rows, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// BTSRetry reschedules an order whose poll failed (429, 5xx, a timeout):
// it stays active and becomes due again after After.
type BTSRetry struct {
	OrderID     string
	ChangeCount int64
	Token       int64
	After       time.Duration
	// Error is the failure, kept on the order for `ingestd bts list`.
	Error string
}

// maxStoredError bounds the error text stored on an order.
const maxStoredError = 500

// RescheduleBTSOrders puts orders whose poll failed back on the schedule
// after a backoff, counting the failure on each. A retry whose change count
// or claim is no longer current is ignored.
func (s *Store) RescheduleBTSOrders(ctx context.Context, sourceID string, rs []BTSRetry) error {
	if len(rs) == 0 {
		return nil
	}
	var (
		ids      = make([]string, len(rs))
		expected = make([]int64, len(rs))
		tokens   = make([]int64, len(rs))
		after    = make([]float64, len(rs))
		errs     = make([]string, len(rs))
	)
	for i, r := range rs {
		ids[i], expected[i], tokens[i], after[i] = r.OrderID, r.ChangeCount, r.Token, max(r.After, 0).Seconds()
		errs[i] = r.Error
		if len(errs[i]) > maxStoredError {
			errs[i] = errs[i][:maxStoredError]
		}
	}
	_, err := s.pool.Exec(ctx, `
UPDATE bts_orders AS o
SET next_poll_at = now() + make_interval(secs => v.after_secs), claimed_until = NULL, claim_token = NULL,
    last_polled_at = now(), error_count = o.error_count + 1, last_error = nullif(v.err, ''), last_error_at = now()
FROM unnest($2::text[], $3::int8[], $4::int8[], $5::float8[], $6::text[]) AS v(order_id, expected, token, after_secs, err)
WHERE o.source_id = $1 AND o.order_id = v.order_id AND o.state = 'active'
  AND o.change_count = v.expected AND (o.claim_token IS NULL OR o.claim_token = v.token)`,
		sourceID, ids, expected, tokens, after, errs)
	if err != nil {
		return fmt.Errorf("reschedule bts orders of %s: %w", sourceID, err)
	}
	return nil
}

// BTSStatus is a stored entry of the BTS status dictionary.
type BTSStatus struct {
	Code        int
	Name        string
	Description string
	Next        []int
	UpdatedAt   time.Time
}

const upsertStatusSQL = `
INSERT INTO bts_statuses (source_id, code, name, description, next_codes, updated_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (source_id, code) DO UPDATE
    SET name = EXCLUDED.name, description = EXCLUDED.description, next_codes = EXCLUDED.next_codes, updated_at = now()`

// SaveBTSStatuses stores a freshly fetched dictionary for a source. Entries
// BTS no longer lists are kept: a code once defined keeps its name for
// orders that still carry it.
func (s *Store) SaveBTSStatuses(ctx context.Context, sourceID string, defs []BTSStatus) error {
	if len(defs) == 0 {
		return errors.New("save bts statuses: empty dictionary")
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var b pgx.Batch
		for _, d := range defs {
			next := make([]int32, len(d.Next))
			for i, n := range d.Next {
				next[i] = int32(n)
			}
			b.Queue(upsertStatusSQL, sourceID, d.Code, d.Name, d.Description, next)
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return fmt.Errorf("save bts statuses of %s: %w", sourceID, err)
	}
	return nil
}

// BTSStatuses returns a source's stored dictionary, by code.
func (s *Store) BTSStatuses(ctx context.Context, sourceID string) ([]BTSStatus, error) {
	rows, err := s.pool.Query(ctx, `
SELECT code, name, description, next_codes, updated_at FROM bts_statuses WHERE source_id = $1 ORDER BY code`, sourceID)
	if err != nil {
		return nil, fmt.Errorf("load bts statuses of %s: %w", sourceID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (BTSStatus, error) {
		var (
			d    BTSStatus
			next []int32
		)
		err := r.Scan(&d.Code, &d.Name, &d.Description, &next, &d.UpdatedAt)
		d.Next = make([]int, len(next))
		for i, n := range next {
			d.Next[i] = int(n)
		}
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("load bts statuses of %s: %w", sourceID, err)
	}
	return out, nil
}
