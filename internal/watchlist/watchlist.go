// Package watchlist is the BTS watch-list: BTS Express has no journal to
// walk, so its source is a table of tracked orders (bts_orders,
// migrations/00003_bts.sql) polled one order at a time on a schedule, and
// the BTS status dictionary (bts_statuses).
//
// Concurrency and exactly-once. Unlike a journal source, which is a single
// fenced writer (one lease per source, see internal/lease), the BTS source is safe
// with several replicas polling the same watch-list at once, without a
// lease:
//
//   - Claims use FOR UPDATE SKIP LOCKED and move the claimed orders'
//     next_poll_at to the end of the claim in the same statement, so two
//     claimers never get the same order while a claim lasts, and the orders
//     of a claimer that crashed become due again when its claim runs out.
//   - Every write of an observation is a compare-and-set on the order's
//     change count, the number of status changes recorded for it. A status
//     change updates the order and inserts its event (through outbox.Append,
//     the one outbox insert path) in one transaction, only if the count is
//     still the one the poll started from. An observation that lost a race,
//     or comes from a claim that outlived its time, changes nothing, so no
//     change is published twice or out of order.
//   - The event id is derived from the order, the status code and the new
//     change count, so even a replayed transaction could only produce an
//     event the outbox already holds (event_id is unique).
package watchlist

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pg"
)

// State is where a watched order is on the watch-list.
type State string

// Watch-list states.
const (
	// Active orders are polled on their schedule.
	Active State = "active"
	// Terminal orders reached a final status; its event was published.
	Terminal State = "terminal"
	// NotFound orders were answered 404 by BTS. Tracking them again makes
	// them active.
	NotFound State = "not_found"
)

// Valid reports whether s is a watch-list state.
func (s State) Valid() bool {
	return s == Active || s == Terminal || s == NotFound
}

// Order is one watch-list row.
type Order struct {
	SourceID string
	OrderID  string
	State    State
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

// Store is the watch-list and status dictionary of one database.
type Store struct {
	db     *pg.DB
	outbox *outbox.Store
}

// NewStore returns the watch-list of db; status changes' events go into ob,
// in the transaction that records the change.
func NewStore(db *pg.DB, ob *outbox.Store) *Store { return &Store{db: db, outbox: ob} }

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

// Track adds orders to a source's watch-list and returns the ids
// that were added (or reactivated after not_found), in the order given. An
// added order is due at once. The ids must be valid (bts.ValidOrderID); the
// table's CHECK constraint rejects the whole call otherwise.
func (s *Store) Track(ctx context.Context, sourceID string, orderIDs []string) ([]string, error) {
	ids := dedupe(orderIDs)
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := s.db.Query(ctx, trackSQL, sourceID, ids)
	if err != nil {
		return nil, fmt.Errorf("track bts orders of %s: %w", sourceID, err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("track bts orders of %s: %w", sourceID, err)
	}
	return inOrder(ids, got), nil
}

// Untrack removes orders from a source's watch-list and returns the
// ids that were there, in the order given. A poll in flight for a removed
// order records nothing. Tracking an order again later starts its change
// count afresh.
func (s *Store) Untrack(ctx context.Context, sourceID string, orderIDs []string) ([]string, error) {
	ids := dedupe(orderIDs)
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := s.db.Query(ctx, `DELETE FROM bts_orders WHERE source_id = $1 AND order_id = ANY($2::text[]) RETURNING order_id`, sourceID, ids)
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

// ListQuery selects one page of a watch-list, in order id order.
type ListQuery struct {
	SourceID string
	// State filters by state; "" lists every state.
	State State
	// After is the last order id of the previous page; "" starts at the
	// beginning.
	After string
	// Limit is the page size, 1..10000.
	Limit int
}

// MaxListLimit bounds a page of List.
const MaxListLimit = 10_000

const listSQL = `
SELECT source_id, order_id, state, status_code, coalesce(status_name, ''), change_count, next_poll_at, claimed_until,
       last_polled_at, last_changed_at, added_at, error_count, coalesce(last_error, ''), last_error_at
FROM bts_orders
WHERE source_id = $1 AND ($2 = '' OR state = $2) AND order_id > $3
ORDER BY order_id
LIMIT $4`

// List returns one page of a watch-list. Pages are keyset-paged on
// the order id, so listing never loads the whole table: pass the last id of
// a page as the next query's After.
func (s *Store) List(ctx context.Context, q ListQuery) ([]Order, error) {
	if q.State != "" && !q.State.Valid() {
		return nil, fmt.Errorf("list bts orders: unknown state %q", q.State)
	}
	if q.Limit < 1 || q.Limit > MaxListLimit {
		return nil, fmt.Errorf("list bts orders: limit must be between 1 and %d, got %d", MaxListLimit, q.Limit)
	}
	rows, err := s.db.Query(ctx, listSQL, q.SourceID, string(q.State), q.After, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("list bts orders of %s: %w", q.SourceID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Order, error) {
		var (
			o     Order
			state string
			code  *int32
		)
		err := r.Scan(&o.SourceID, &o.OrderID, &state, &code, &o.StatusName, &o.ChangeCount, &o.NextPollAt, &o.ClaimedUntil,
			&o.LastPolledAt, &o.LastChangedAt, &o.AddedAt, &o.ErrorCount, &o.LastError, &o.LastErrorAt)
		o.State = State(state)
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

// Count returns how many orders of a source are in each state.
func (s *Store) Count(ctx context.Context, sourceID string) (map[State]int64, error) {
	rows, err := s.db.Query(ctx, `SELECT state, count(*) FROM bts_orders WHERE source_id = $1 GROUP BY state`, sourceID)
	if err != nil {
		return nil, fmt.Errorf("count bts orders of %s: %w", sourceID, err)
	}
	out := map[State]int64{Active: 0, Terminal: 0, NotFound: 0}
	var (
		state string
		n     int64
	)
	_, err = pgx.ForEachRow(rows, []any{&state, &n}, func() error {
		out[State(state)] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count bts orders of %s: %w", sourceID, err)
	}
	return out, nil
}
