package cursor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pg"
)

// Store is the source positions of one database: per-source cursors, their
// history and halt records.
type Store struct {
	db     *pg.DB
	outbox *outbox.Store
}

// NewStore returns the cursors of db; a page's events go into ob, in the
// transaction that moves the cursor.
func NewStore(db *pg.DB, ob *outbox.Store) *Store { return &Store{db: db, outbox: ob} }

// ErrCursorMoved means the stored cursor is not the one the page was fetched
// with: another writer advanced it. The page must not be committed.
var ErrCursorMoved = errors.New("stored cursor changed since the page was fetched")

// Page is what one upstream page produced, to be committed atomically.
type Page struct {
	// Lease is the writer's lease on the source; the commit is refused with
	// lease.ErrFenced if it is no longer the current one.
	Lease    lease.Lease
	SourceID string
	// PrevCursor is the cursor the page was fetched with ("" when the source
	// had none). The commit succeeds only if it is still the stored cursor,
	// so two writers can never both advance from the same position.
	PrevCursor string
	// Cursor is the cursor to store, byte for byte. It must not be empty.
	Cursor string
	// Rows are the page's events in upstream order. CommitPage sets their
	// SourceID and Seq, and cuts their Time to microseconds, in place, and
	// the result's Inserted may share their array: the rows belong to the
	// commit (retrying the same Page is fine).
	Rows []outbox.Row
}

// advanceCursorSQL stores the new cursor only if the stored one is still the
// cursor the page was fetched with; no row back means another writer moved it.
const advanceCursorSQL = `
INSERT INTO source_cursors AS c (source_id, cursor, events_total, updated_at)
VALUES ($1, $2, $4, now())
ON CONFLICT (source_id) DO UPDATE
    SET cursor = EXCLUDED.cursor,
        events_total = c.events_total + EXCLUDED.events_total,
        updated_at = EXCLUDED.updated_at,
        halted_at = NULL,
        halted_reason = NULL
    WHERE c.cursor IS NOT DISTINCT FROM $3
RETURNING source_id`

const insertHistorySQL = `
INSERT INTO cursor_history (source_id, cursor, prev_cursor, event_count)
VALUES ($1, $2, $3, $4)`

// CommitPage inserts the page's new events into the outbox, advances the
// source's cursor and appends a history row, all in one transaction that
// first checks the page's lease: this is where a journal page is committed.
//
// A page is new in all but rare cases (a page replayed after a crash between
// the commit and the upstream's next answer, or an operator's rewind), so
// the rows are first copied without looking their event ids up: the unique
// index on event_id checks them anyway, as part of the insert. If it finds
// one already stored, the transaction is rolled back and the page committed
// again the careful way, skipping the stored events.
func (s *Store) CommitPage(ctx context.Context, p Page) (outbox.Appended, error) {
	if p.Cursor == "" {
		return outbox.Appended{}, errors.New("commit page: empty cursor")
	}
	c, err := s.commitPage(ctx, p, false)
	if errors.Is(err, outbox.ErrEventStored) {
		c, err = s.commitPage(ctx, p, true)
	}
	if err != nil {
		return outbox.Appended{}, fmt.Errorf("commit page of %s: %w", p.SourceID, err)
	}
	return c, nil
}

// commitPage is one attempt of CommitPage; lookup says whether to skip
// events already stored (else one makes the commit fail with
// outbox.ErrEventStored).
func (s *Store) commitPage(ctx context.Context, p Page, lookup bool) (outbox.Appended, error) {
	var c outbox.Appended
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
		if err := lease.CheckFence(ctx, tx, p.Lease); err != nil {
			return err
		}
		var err error
		c, err = s.outbox.Append(ctx, tx, p.SourceID, p.Rows, lookup)
		if err != nil {
			return err
		}
		var id string
		err = tx.QueryRow(ctx, advanceCursorSQL, p.SourceID, p.Cursor, nullable(p.PrevCursor), int64(len(c.Inserted))).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrCursorMoved
		}
		if err != nil {
			return fmt.Errorf("advance cursor: %w", err)
		}
		if _, err := tx.Exec(ctx, insertHistorySQL, p.SourceID, p.Cursor, nullable(p.PrevCursor), len(c.Inserted)); err != nil {
			return fmt.Errorf("append cursor history: %w", err)
		}
		return nil
	})
	return c, err
}

// nullable maps the "no cursor" value to SQL NULL.
func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// State is a source's stored position.
type State struct {
	SourceID     string
	Cursor       string // "" when no page was committed yet
	EventsTotal  int64
	UpdatedAt    time.Time
	HaltedAt     *time.Time
	HaltedReason string
}

// stateColumns are scanned by scanState, in this order.
const stateColumns = `source_id, coalesce(cursor, ''), events_total, updated_at, halted_at, coalesce(halted_reason, '')`

func scanState(row pgx.Row) (State, error) {
	var st State
	err := row.Scan(&st.SourceID, &st.Cursor, &st.EventsTotal, &st.UpdatedAt, &st.HaltedAt, &st.HaltedReason)
	return st, err
}

// Source returns a source's stored state; a source never committed has an
// empty cursor.
func (s *Store) Source(ctx context.Context, sourceID string) (State, error) {
	st, err := scanState(s.db.QueryRow(ctx, `SELECT `+stateColumns+` FROM source_cursors WHERE source_id = $1`, sourceID))
	if errors.Is(err, pgx.ErrNoRows) {
		return State{SourceID: sourceID}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("load cursor of %s: %w", sourceID, err)
	}
	return st, nil
}

const haltSQL = `
INSERT INTO source_cursors AS c (source_id, cursor, halted_at, halted_reason)
VALUES ($1, NULL, now(), $2)
ON CONFLICT (source_id) DO UPDATE SET halted_at = now(), halted_reason = EXCLUDED.halted_reason`

// Halt records that a source stopped on an error that needs an operator. The
// cursor is left exactly as it is.
func (s *Store) Halt(ctx context.Context, sourceID, reason string) error {
	if _, err := s.db.Exec(ctx, haltSQL, sourceID, reason); err != nil {
		return fmt.Errorf("record halt of %s: %w", sourceID, err)
	}
	return nil
}

const clearHaltSQL = `
UPDATE source_cursors SET halted_at = NULL, halted_reason = NULL
WHERE source_id = $1 AND halted_at IS NOT NULL`

// ClearHalt removes a source's halt record, when the source starts again.
func (s *Store) ClearHalt(ctx context.Context, sourceID string) error {
	if _, err := s.db.Exec(ctx, clearHaltSQL, sourceID); err != nil {
		return fmt.Errorf("clear halt of %s: %w", sourceID, err)
	}
	return nil
}

// HistoryEntry is one recorded cursor change.
type HistoryEntry struct {
	ID         int64
	SourceID   string
	Cursor     string
	PrevCursor string
	EventCount int
	RecordedAt time.Time
	Actor      string
	Reason     string
}

const historySQL = `
SELECT id, source_id, cursor, coalesce(prev_cursor, ''), event_count, recorded_at, actor, coalesce(reason, '')
FROM cursor_history WHERE source_id = $1 ORDER BY id DESC LIMIT $2`

// History returns a source's most recent cursor changes, newest first.
func (s *Store) History(ctx context.Context, sourceID string, limit int) ([]HistoryEntry, error) {
	rows, err := s.db.Query(ctx, historySQL, sourceID, limit)
	if err != nil {
		return nil, fmt.Errorf("read cursor history of %s: %w", sourceID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (HistoryEntry, error) {
		var h HistoryEntry
		err := r.Scan(&h.ID, &h.SourceID, &h.Cursor, &h.PrevCursor, &h.EventCount, &h.RecordedAt, &h.Actor, &h.Reason)
		return h, err
	})
	if err != nil {
		return nil, fmt.Errorf("read cursor history of %s: %w", sourceID, err)
	}
	return out, nil
}
