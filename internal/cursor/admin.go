package cursor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ingestd/ingestd/internal/lease"
)

// ErrNoHistory means no cursor history entry matches a rewind request.
var ErrNoHistory = errors.New("no cursor history entry at or before that time")

// Sources returns the stored state of every source.
func (s *Store) Sources(ctx context.Context) ([]State, error) {
	rows, err := s.db.Query(ctx, `SELECT `+stateColumns+` FROM source_cursors ORDER BY source_id`)
	if err != nil {
		return nil, fmt.Errorf("list sources: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (State, error) { return scanState(r) })
	if err != nil {
		return nil, fmt.Errorf("list sources: %w", err)
	}
	return out, nil
}

// CursorChange is an operator's change of a source's cursor.
type CursorChange struct {
	Lease    lease.Lease
	SourceID string
	Cursor   string
	Actor    string
	Reason   string
}

// SetCursor replaces a source's cursor under the source's lease (which the
// caller took over, so the daemon cannot race it), clears a halt, and
// records who and why in the history. Events already in the outbox are not
// touched; events the new position re-reads are deduplicated by event_id
// within the outbox retention.
func (s *Store) SetCursor(ctx context.Context, c CursorChange) (prev string, err error) {
	if c.Cursor == "" {
		return "", errors.New("set cursor: the new cursor is empty")
	}
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		if err := lease.CheckFence(ctx, tx, c.Lease); err != nil {
			return err
		}
		var p *string
		if err := tx.QueryRow(ctx, `SELECT cursor FROM source_cursors WHERE source_id = $1 FOR UPDATE`, c.SourceID).Scan(&p); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read cursor: %w", err)
		}
		if p != nil {
			prev = *p
		}
		if _, err := tx.Exec(ctx, `
INSERT INTO source_cursors AS c (source_id, cursor, updated_at) VALUES ($1, $2, now())
ON CONFLICT (source_id) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now(), halted_at = NULL, halted_reason = NULL`,
			c.SourceID, c.Cursor); err != nil {
			return fmt.Errorf("write cursor: %w", err)
		}
		_, err := tx.Exec(ctx, `
INSERT INTO cursor_history (source_id, cursor, prev_cursor, event_count, actor, reason)
VALUES ($1, $2, $3, 0, $4, $5)`, c.SourceID, c.Cursor, nullable(prev), c.Actor, c.Reason)
		if err != nil {
			return fmt.Errorf("record history: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("set cursor of %s: %w", c.SourceID, err)
	}
	return prev, nil
}

// HistoryAt returns the newest history entry of a source recorded at or
// before t: the position to rewind to.
func (s *Store) HistoryAt(ctx context.Context, sourceID string, t time.Time) (HistoryEntry, error) {
	var h HistoryEntry
	err := s.db.QueryRow(ctx, `
SELECT id, source_id, cursor, coalesce(prev_cursor, ''), event_count, recorded_at, actor, coalesce(reason, '')
FROM cursor_history WHERE source_id = $1 AND recorded_at <= $2
ORDER BY recorded_at DESC, id DESC LIMIT 1`, sourceID, t).
		Scan(&h.ID, &h.SourceID, &h.Cursor, &h.PrevCursor, &h.EventCount, &h.RecordedAt, &h.Actor, &h.Reason)
	if errors.Is(err, pgx.ErrNoRows) {
		return HistoryEntry{}, fmt.Errorf("%s at %s: %w", sourceID, t.Format(time.RFC3339), ErrNoHistory)
	}
	if err != nil {
		return HistoryEntry{}, fmt.Errorf("read cursor history of %s: %w", sourceID, err)
	}
	return h, nil
}
