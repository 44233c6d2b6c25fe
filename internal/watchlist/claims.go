package watchlist

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Claim is a due order claimed for one poll.
type Claim struct {
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
), orphaned AS (
    -- Claimed by an instance whose heartbeat expired (or was removed): it
    -- died with them, so they are due now rather than at the claim's end.
    SELECT order_id, next_poll_at FROM bts_orders o
    WHERE source_id = $1 AND state = 'active' AND claimed_until > now() AND claimed_by IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.holder = o.claimed_by AND i.expires_at > now())
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT order_id, next_poll_at FROM due
    UNION
    SELECT order_id, next_poll_at FROM orphaned
    ORDER BY next_poll_at
    LIMIT $2
)
UPDATE bts_orders AS o
SET next_poll_at = now() + make_interval(secs => $3),
    claimed_until = now() + make_interval(secs => $3),
    claim_token = $4,
    claimed_by = nullif($5, ''),
    rung = false
FROM picked
WHERE o.source_id = $1 AND o.order_id = picked.order_id
RETURNING o.order_id, o.status_code, coalesce(o.status_name, ''), o.change_count, picked.next_poll_at,
          extract(epoch FROM now() - picked.next_poll_at)::float8`

// ClaimDue claims up to limit orders of a source that are due,
// earliest first, for claimFor, on behalf of instance holder (whose
// heartbeat row is in the instances table; "" for none). Claimed orders
// are not due for anyone else until the claim ends: the holder records an
// observation, reschedules or releases each one before that, or they
// become due again; and at once when the holder's heartbeat expires.
func (s *Store) ClaimDue(ctx context.Context, sourceID, holder string, limit int, claimFor time.Duration) ([]Claim, error) {
	if limit <= 0 {
		return nil, nil
	}
	if claimFor <= 0 {
		return nil, fmt.Errorf("claim bts orders: claim duration must be positive, got %s", claimFor)
	}
	token := rand.Int64()
	rows, err := s.db.Query(ctx, claimSQL, sourceID, limit, claimFor.Seconds(), token, holder)
	if err != nil {
		return nil, fmt.Errorf("claim bts orders of %s: %w", sourceID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Claim, error) {
		var (
			c    Claim
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
	slices.SortFunc(out, func(a, b Claim) int { return a.DueAt.Compare(b.DueAt) })
	return out, nil
}

// NextDue returns how long until the next active order of a source is
// due (zero or negative when one is due now), measured on PostgreSQL's
// clock, which is the one claims use. ok is false when no order is active.
func (s *Store) NextDue(ctx context.Context, sourceID string) (time.Duration, bool, error) {
	var secs *float64
	err := s.db.QueryRow(ctx, `
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

// ReleaseClaims gives claimed orders back unpolled (at shutdown, say):
// they are due at once for any claimer. A claim that already ended and was
// taken over by another claimer is left alone.
func (s *Store) ReleaseClaims(ctx context.Context, sourceID string, claims []Claim) error {
	if len(claims) == 0 {
		return nil
	}
	ids := make([]string, len(claims))
	tokens := make([]int64, len(claims))
	for i, c := range claims {
		ids[i], tokens[i] = c.OrderID, c.Token
	}
	_, err := s.db.Exec(ctx, `
UPDATE bts_orders AS o SET next_poll_at = now(), claimed_until = NULL, claim_token = NULL
FROM unnest($2::text[], $3::int8[]) AS v(order_id, token)
WHERE o.source_id = $1 AND o.order_id = v.order_id AND o.claim_token = v.token AND o.state = 'active'`, sourceID, ids, tokens)
	if err != nil {
		return fmt.Errorf("release bts claims of %s: %w", sourceID, err)
	}
	return nil
}

// Retry reschedules an order whose poll failed (429, 5xx, a timeout):
// it stays active and becomes due again after After.
type Retry struct {
	OrderID     string
	ChangeCount int64
	Token       int64
	After       time.Duration
	// Error is the failure, kept on the order for `ingestd bts list`.
	Error string
}

// maxStoredError bounds the error text stored on an order.
const maxStoredError = 500

// Reschedule puts orders whose poll failed back on the schedule
// after a backoff, counting the failure on each. A retry whose change count
// or claim is no longer current is ignored.
func (s *Store) Reschedule(ctx context.Context, sourceID string, rs []Retry) error {
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
	_, err := s.db.Exec(ctx, `
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
