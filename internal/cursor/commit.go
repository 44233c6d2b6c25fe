package cursor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ingestd/ingestd/internal/event"
)

// Row is one outbox row: an event's Kafka message with its place in the
// outbox (Seq) and in the topic (Partition).
type Row struct {
	Seq       int64
	Partition int
	SourceID  string
	Msg       event.Message
}

// Page is what one upstream page produced, to be committed atomically.
type Page struct {
	// Lease is the writer's lease on the source; the commit is refused with
	// ErrFenced if it is no longer the current one.
	Lease    Lease
	SourceID string
	// PrevCursor is the cursor the page was fetched with ("" when the source
	// had none). The commit succeeds only if it is still the stored cursor,
	// so two writers can never both advance from the same position.
	PrevCursor string
	// Cursor is the cursor to store, byte for byte. It must not be empty.
	Cursor string
	// Rows are the page's events in upstream order. CommitPage sets their
	// SourceID and Seq, and cuts their Time to microseconds, in place, and
	// the Commit's Inserted may share their array: the rows belong to the
	// commit (retrying the same Page is fine).
	Rows []Row
}

// Commit describes a committed page.
type Commit struct {
	// FirstSeq..LastSeq is the seq range of the inserted rows; the outbox
	// sequence has no gaps, so it holds exactly len(Inserted) numbers.
	FirstSeq, LastSeq int64
	// Inserted are the rows that were new, with Seq set, in seq order.
	Inserted []Row
	// Duplicates counts rows skipped because their event was already stored.
	Duplicates int
}

// existingSQL finds which of a page's events are already stored (a replayed
// page). One indexed lookup per page is much cheaper than INSERT ... ON
// CONFLICT per row, and lets the rows go in by COPY.
const existingSQL = `SELECT event_id::text FROM outbox WHERE event_id = ANY($1::uuid[])`

// allocSQL takes seq numbers for the page's new rows. The single counter row
// also serializes concurrent commits, so seq order is commit order and the
// sequence has no gaps.
const allocSQL = `UPDATE outbox_seq SET last_seq = last_seq + $1 RETURNING last_seq - $1`

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
// source's cursor and appends a history row, all in one transaction.
//
// A page is new in all but rare cases (a page replayed after a crash between
// the commit and the upstream's next answer, or an operator's rewind), so
// the rows are first copied without looking their event ids up: the unique
// index on event_id checks them anyway, as part of the insert. If it finds
// one already stored, the transaction is rolled back and the page committed
// again the careful way, skipping the stored events.
func (s *Store) CommitPage(ctx context.Context, p Page) (Commit, error) {
	if p.Cursor == "" {
		return Commit{}, errors.New("commit page: empty cursor")
	}
	c, err := s.commitPage(ctx, p, false)
	if isStoredEvent(err) {
		c, err = s.commitPage(ctx, p, true)
	}
	if err != nil {
		return Commit{}, fmt.Errorf("commit page of %s: %w", p.SourceID, err)
	}
	return c, nil
}

// commitPage is one attempt of CommitPage; lookup says whether to skip
// events already stored (else one makes the commit fail, see isStoredEvent).
func (s *Store) commitPage(ctx context.Context, p Page, lookup bool) (Commit, error) {
	var c Commit
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := CheckFence(ctx, tx, p.Lease); err != nil {
			return err
		}
		var err error
		c, err = s.insertRows(ctx, tx, p.SourceID, p.Rows, lookup)
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

const (
	// outboxEventIDKey is the unique constraint on outbox.event_id.
	outboxEventIDKey = "outbox_event_id_key"
	// uniqueViolation is PostgreSQL's SQLSTATE unique_violation.
	uniqueViolation = "23505"
)

// isStoredEvent reports whether err is the unique violation of an event
// already in the outbox.
func isStoredEvent(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == uniqueViolation && pgErr.ConstraintName == outboxEventIDKey
}

// insertRows inserts rows into the outbox under tx, skipping events repeated
// within rows, and returns what it inserted. With lookup it skips events
// already stored too; without, one of them fails the insert (isStoredEvent).
// Every writer of the outbox (journal pages, BTS status changes) goes
// through it, so seq allocation and deduplication have one implementation.
// Callers hold the lease (or per-order compare-and-set) that makes them the
// only writer of these event ids, so the lookup cannot race another insert
// of them.
func (s *Store) insertRows(ctx context.Context, tx pgx.Tx, sourceID string, rows []Row, lookup bool) (Commit, error) {
	if len(rows) == 0 {
		return Commit{}, nil
	}
	skip := make(map[string]struct{}, len(rows))
	if lookup {
		ids := make([]string, len(rows))
		for i := range rows {
			ids[i] = rows[i].Msg.ID
		}
		dbRows, err := tx.Query(ctx, existingSQL, ids)
		if err != nil {
			return Commit{}, fmt.Errorf("look up stored events: %w", err)
		}
		seen, err := pgx.CollectRows(dbRows, pgx.RowTo[string])
		if err != nil {
			return Commit{}, fmt.Errorf("look up stored events: %w", err)
		}
		for _, id := range seen {
			skip[id] = struct{}{}
		}
	}
	// fresh is rows itself unless a row is skipped (rare), which saves
	// copying every row of every page.
	var fresh []Row
	for i := range rows {
		id := rows[i].Msg.ID
		if _, dup := skip[id]; dup {
			if fresh == nil {
				fresh = append(make([]Row, 0, len(rows)-1), rows[:i]...)
			}
			continue
		}
		skip[id] = struct{}{} // a repeat later in the same page
		if fresh != nil {
			fresh = append(fresh, rows[i])
		}
	}
	if fresh == nil {
		fresh = rows
	}
	for i := range fresh {
		fresh[i].SourceID = sourceID
		// PostgreSQL keeps microseconds: rows published straight from
		// memory must carry the same ce_time as rows read back.
		fresh[i].Msg.Time = fresh[i].Msg.Time.Truncate(time.Microsecond)
	}
	c := Commit{Duplicates: len(rows) - len(fresh)}
	if len(fresh) == 0 {
		return c, nil
	}
	var base int64
	if err := tx.QueryRow(ctx, allocSQL, int64(len(fresh))).Scan(&base); err != nil {
		return Commit{}, fmt.Errorf("allocate outbox seq: %w", err)
	}
	for i := range fresh {
		fresh[i].Seq = base + int64(i) + 1
	}
	if err := s.copyOutbox(ctx, tx, fresh); err != nil {
		return Commit{}, fmt.Errorf("copy outbox rows: %w", err)
	}
	c.FirstSeq, c.LastSeq, c.Inserted = base+1, base+int64(len(fresh)), fresh
	return c, nil
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
	st, err := scanState(s.pool.QueryRow(ctx, `SELECT `+stateColumns+` FROM source_cursors WHERE source_id = $1`, sourceID))
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
	if _, err := s.pool.Exec(ctx, haltSQL, sourceID, reason); err != nil {
		return fmt.Errorf("record halt of %s: %w", sourceID, err)
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
	rows, err := s.pool.Query(ctx, historySQL, sourceID, limit)
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
