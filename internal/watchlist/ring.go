package watchlist

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Rang is what a batch of webhooks (doorbells) did to a watch-list.
type Rang struct {
	// Due is how many tracked orders became due at once (or, being
	// polled right now, will be due again as soon as that poll is written).
	Due int
	// Tracked is how many untracked orders were added, due at once.
	Tracked int
	// Ignored is how many named orders were left alone: terminal ones,
	// and untracked ones when autotrack is off.
	Ignored int
}

// ringSQL makes the named orders due now. An order being polled (claimed)
// keeps its claim and is marked rung instead, so that its poll's write
// makes it due again (see changedSQL and unchangedSQL). A not_found order
// is tracked again, as Track does; a terminal one is left alone. With
// autotrack ($3) an unknown order is added. The source's webhook activity
// is recorded in the same statement.
const ringSQL = `
WITH ids AS (
    SELECT DISTINCT id AS order_id FROM unnest($2::text[]) AS id
), rang AS (
    UPDATE bts_orders AS o
    SET next_poll_at = CASE WHEN o.state = 'active' AND o.claimed_until > now() THEN o.next_poll_at ELSE now() END,
        rung = o.state = 'active' AND coalesce(o.claimed_until > now(), false),
        state = 'active',
        error_count = CASE WHEN o.state = 'not_found' THEN 0 ELSE o.error_count END,
        last_error = CASE WHEN o.state = 'not_found' THEN NULL ELSE o.last_error END,
        last_error_at = CASE WHEN o.state = 'not_found' THEN NULL ELSE o.last_error_at END
    FROM ids
    WHERE o.source_id = $1 AND o.order_id = ids.order_id AND o.state <> 'terminal'
    RETURNING o.order_id
), added AS (
    INSERT INTO bts_orders (source_id, order_id)
    SELECT $1, ids.order_id FROM ids
    WHERE $3 AND NOT EXISTS (SELECT 1 FROM bts_orders b WHERE b.source_id = $1 AND b.order_id = ids.order_id)
    ON CONFLICT (source_id, order_id) DO NOTHING
    RETURNING order_id
), seen AS (
    INSERT INTO bts_webhooks AS w (source_id, last_at, calls) VALUES ($1, now(), $4)
    ON CONFLICT (source_id) DO UPDATE SET last_at = now(), calls = w.calls + EXCLUDED.calls
)
SELECT (SELECT count(*) FROM ids), (SELECT count(*) FROM rang), (SELECT count(*) FROM added)`

// Ring acts on a batch of webhooks for a source's orders, which arrived in
// calls calls: each named tracked order is due at once (a webhook is a
// doorbell, never data: the poll that follows reads the order and records
// what changed, exactly as a scheduled poll does), and with autotrack an
// untracked order is added. The order ids must be valid
// (bts.ValidOrderID).
func (s *Store) Ring(ctx context.Context, sourceID string, orderIDs []string, autotrack bool, calls int) (Rang, error) {
	if len(orderIDs) == 0 {
		return Rang{}, nil
	}
	var named, due, added int
	err := s.db.QueryRow(ctx, ringSQL, sourceID, orderIDs, autotrack, calls).Scan(&named, &due, &added)
	if err != nil {
		return Rang{}, fmt.Errorf("ring bts orders of %s: %w", sourceID, err)
	}
	return Rang{Due: due, Tracked: added, Ignored: named - due - added}, nil
}

// LastWebhook returns when a source last got a webhook; ok is false when
// it never did.
func (s *Store) LastWebhook(ctx context.Context, sourceID string) (time.Time, bool, error) {
	var at time.Time
	err := s.db.QueryRow(ctx, `SELECT last_at FROM bts_webhooks WHERE source_id = $1`, sourceID).Scan(&at)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("last webhook of %s: %w", sourceID, err)
	}
	return at, true, nil
}
