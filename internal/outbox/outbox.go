// Package outbox is the transactional outbox: the table of normalized events
// waiting for, and kept a while after, their publication to Kafka, with the
// per-partition publish progress.
//
// Writers append rows inside a transaction of their own composition, so that
// events are stored in the same transaction as the state that produced them
// (a journal page's cursor in internal/cursor, an order's status in
// internal/watchlist). The publisher (internal/publish) reads pending rows in
// sequence order and records per-partition watermarks once Kafka has
// acknowledged them.
package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/pg"
)

// Row is one outbox row: an event's Kafka message with its place in the
// outbox (Seq) and in the topic (Partition).
type Row struct {
	Seq       int64
	Partition int
	SourceID  string
	Msg       event.Message
}

// Appended describes rows appended to the outbox by one transaction.
type Appended struct {
	// FirstSeq..LastSeq is the seq range of the inserted rows; the outbox
	// sequence has no gaps, so it holds exactly len(Inserted) numbers.
	FirstSeq, LastSeq int64
	// Inserted are the rows that were new, with Seq set, in seq order.
	Inserted []Row
	// Duplicates counts rows skipped because their event was already stored.
	Duplicates int
}

// ErrEventStored means an appended row's event id is already in the outbox:
// Append was asked not to look stored events up, and one was there. The
// transaction is aborted; the caller retries it with the lookup.
var ErrEventStored = errors.New("an event of the batch is already in the outbox")

// Store is the outbox of one database.
type Store struct {
	db       *pg.DB
	copyBufs copyBufs
}

// NewStore returns the outbox of db.
func NewStore(db *pg.DB) *Store {
	return &Store{db: db, copyBufs: newCopyBufs()}
}

// existingSQL finds which of a batch's events are already stored (a replayed
// page). One indexed lookup per page is much cheaper than INSERT ... ON
// CONFLICT per row, and lets the rows go in by COPY.
const existingSQL = `SELECT event_id::text FROM outbox WHERE event_id = ANY($1::uuid[])`

// allocSQL takes seq numbers for the page's new rows. The single counter row
// also serializes concurrent commits, so seq order is commit order and the
// sequence has no gaps.
const allocSQL = `UPDATE outbox_seq SET last_seq = last_seq + $1 RETURNING last_seq - $1`

const (
	// outboxEventIDKey is the unique constraint on outbox.event_id.
	outboxEventIDKey = "outbox_event_id_key"
	// uniqueViolation is PostgreSQL's SQLSTATE unique_violation.
	uniqueViolation = "23505"
)

// Append inserts rows into the outbox under tx, skipping events repeated
// within rows, and returns what it inserted. With lookup it skips events
// already stored too; without, one of them fails the insert with
// ErrEventStored, which is the cheaper path for the usual batch of new
// events. Every writer of the outbox (journal pages, BTS status changes)
// goes through it, so seq allocation and deduplication have one
// implementation. Callers hold the lease (or per-order compare-and-set)
// that makes them the only writer of these event ids, so the lookup cannot
// race another insert of them.
//
// Append sets the rows' SourceID and Seq, and cuts their Time to
// microseconds, in place; the result's Inserted may share rows' array.
func (s *Store) Append(ctx context.Context, tx pgx.Tx, sourceID string, rows []Row, lookup bool) (Appended, error) {
	if len(rows) == 0 {
		return Appended{}, nil
	}
	skip := make(map[string]struct{}, len(rows))
	if lookup {
		ids := make([]string, len(rows))
		for i := range rows {
			ids[i] = rows[i].Msg.ID
		}
		dbRows, err := tx.Query(ctx, existingSQL, ids)
		if err != nil {
			return Appended{}, fmt.Errorf("look up stored events: %w", err)
		}
		seen, err := pgx.CollectRows(dbRows, pgx.RowTo[string])
		if err != nil {
			return Appended{}, fmt.Errorf("look up stored events: %w", err)
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
	a := Appended{Duplicates: len(rows) - len(fresh)}
	if len(fresh) == 0 {
		return a, nil
	}
	var base int64
	if err := tx.QueryRow(ctx, allocSQL, int64(len(fresh))).Scan(&base); err != nil {
		return Appended{}, fmt.Errorf("allocate outbox seq: %w", err)
	}
	for i := range fresh {
		fresh[i].Seq = base + int64(i) + 1
	}
	if err := s.copyRows(ctx, tx, fresh); err != nil {
		if isStoredEvent(err) {
			return Appended{}, fmt.Errorf("copy outbox rows: %w", ErrEventStored)
		}
		return Appended{}, fmt.Errorf("copy outbox rows: %w", err)
	}
	a.FirstSeq, a.LastSeq, a.Inserted = base+1, base+int64(len(fresh)), fresh
	return a, nil
}

// isStoredEvent reports whether err is the unique violation of an event
// already in the outbox.
func isStoredEvent(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == uniqueViolation && pgErr.ConstraintName == outboxEventIDKey
}
