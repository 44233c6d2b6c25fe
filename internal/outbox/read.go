package outbox

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/ingestd/ingestd/internal/event"
)

const pendingSQL = `
SELECT seq, partition, source_id, event_id::text, msg_key, ce_type, ce_source, ce_subject, ce_time, payload
FROM outbox
WHERE seq > $1 AND seq > ($2::int8[])[partition + 1]
ORDER BY seq
LIMIT $3`

// Pending returns up to limit unpublished rows in seq order: rows above
// their partition's watermark in wm.
func (s *Store) Pending(ctx context.Context, wm []int64, limit int) ([]Row, error) {
	if len(wm) == 0 {
		return nil, errors.New("read pending outbox rows: no partitions")
	}
	low := wm[0]
	for _, w := range wm[1:] {
		low = min(low, w)
	}
	rows, err := s.db.Query(ctx, pendingSQL, low, wm, limit)
	if err != nil {
		return nil, fmt.Errorf("read pending outbox rows: %w", err)
	}
	out, err := scanRows(rows, min(limit, 1024))
	if err != nil {
		return nil, fmt.Errorf("read pending outbox rows: %w", err)
	}
	return out, nil
}

// Row returns the outbox row with the given seq, or nil when there is none
// (never inserted, or pruned).
func (s *Store) Row(ctx context.Context, seq int64) (*Row, error) {
	rows, err := s.db.Query(ctx, `
SELECT seq, partition, source_id, event_id::text, msg_key, ce_type, ce_source, ce_subject, ce_time, payload
FROM outbox WHERE seq = $1`, seq)
	if err != nil {
		return nil, fmt.Errorf("read outbox row %d: %w", seq, err)
	}
	out, err := scanRows(rows, 1)
	if err != nil {
		return nil, fmt.Errorf("read outbox row %d: %w", seq, err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return &out[0], nil
}

// scanRows reads outbox rows selected with the column list of pendingSQL.
// When the columns arrive in binary format with the types of the outbox,
// as they do in pgx's default query mode, a row is decoded straight from
// its wire bytes: its strings come from one Arena per call (or, for the few
// distinct sources and types, are shared) and its payload is its only
// allocation. The publisher reads the outbox this way whenever it is behind
// its in-memory queue, so a catch-up can run on this path for many pages.
// Other formats (the simple protocol, say) go through pgx's Scan.
func scanRows(rows pgx.Rows, capHint int) ([]Row, error) {
	defer rows.Close()
	out := make([]Row, 0, capHint)
	var (
		strs event.Arena
		fast = -1 // unknown until the first row's field descriptions
	)
	for rows.Next() {
		if fast < 0 {
			fast = 0
			if binaryOutboxRows(rows.FieldDescriptions()) {
				fast = 1
			}
		}
		// Decoded in place: a local Row would escape through Scan's
		// arguments and cost an allocation per row.
		out = append(out, Row{})
		r := &out[len(out)-1]
		if fast == 1 {
			if err := decodeOutboxRow(rows.RawValues(), r, &strs); err != nil {
				return nil, err
			}
			continue
		}
		var typ string
		if err := rows.Scan(&r.Seq, &r.Partition, &r.SourceID, &r.Msg.ID, &r.Msg.Key, &typ, &r.Msg.Source, &r.Msg.Subject, &r.Msg.Time, &r.Msg.Payload); err != nil {
			return nil, err
		}
		r.Msg.Type = event.Type(typ)
	}
	return out, rows.Err()
}

// outboxRowOIDs are the types of pendingSQL's columns, in order.
var outboxRowOIDs = [...]uint32{
	pgtype.Int8OID, pgtype.Int4OID, pgtype.TextOID, pgtype.TextOID, pgtype.TextOID,
	pgtype.TextOID, pgtype.TextOID, pgtype.TextOID, pgtype.TimestamptzOID, pgtype.ByteaOID,
}

// binaryOutboxRows reports whether fields are pendingSQL's columns in
// binary format. A text column's text and binary formats are the same
// bytes, so it may come in either (pgx asks for text).
func binaryOutboxRows(fields []pgconn.FieldDescription) bool {
	if len(fields) != len(outboxRowOIDs) {
		return false
	}
	for i, f := range fields {
		if f.DataTypeOID != outboxRowOIDs[i] || (f.Format != pgx.BinaryFormatCode && f.DataTypeOID != pgtype.TextOID) {
			return false
		}
	}
	return true
}

// decodeOutboxRow decodes one row of pendingSQL's columns in binary format
// (see binaryOutboxRows) into r. Every column is NOT NULL.
func decodeOutboxRow(v [][]byte, r *Row, strs *event.Arena) error {
	if len(v) != len(outboxRowOIDs) {
		return fmt.Errorf("outbox row has %d columns, want %d", len(v), len(outboxRowOIDs))
	}
	for i, b := range v {
		if b == nil {
			return fmt.Errorf("outbox row column %d is NULL", i+1)
		}
	}
	if len(v[0]) != 8 || len(v[1]) != 4 || len(v[8]) != 8 {
		return fmt.Errorf("outbox row has a seq, partition or ce_time of %d, %d, %d bytes, want 8, 4, 8", len(v[0]), len(v[1]), len(v[8]))
	}
	r.Seq = int64(binary.BigEndian.Uint64(v[0]))
	r.Partition = int(int32(binary.BigEndian.Uint32(v[1])))
	r.SourceID = strs.Intern(v[2])
	r.Msg.ID = strs.String(v[3])
	r.Msg.Key = strs.String(v[4])
	r.Msg.Type = event.Type(strs.Intern(v[5]))
	r.Msg.Source = strs.Intern(v[6])
	r.Msg.Subject = strs.String(v[7])
	// As pgx decodes a timestamptz: in the local time zone.
	r.Msg.Time = time.UnixMicro(int64(binary.BigEndian.Uint64(v[8])) + pgEpochMicros)
	// RawValues are only valid until the next row: the payload is copied.
	r.Msg.Payload = append(make([]byte, 0, len(v[9])), v[9]...)
	return nil
}
