package cursor

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

// ErrTargetMismatch means the outbox was written for another topic, or for a
// topic with more partitions than the configured one has now.
var ErrTargetMismatch = errors.New("outbox target mismatch")

// Target records, on first use, the topic the outbox is written for and its
// partition count, and seeds publish progress for each partition. Later it
// checks that the configured topic is the recorded one, and returns the
// recorded partition count: rows keep being partitioned with it even if the
// topic has grown, so that one shipment's events never split across two
// partitions (which would break their order).
func (s *Store) Target(ctx context.Context, topic string, partitions int) (int, error) {
	if partitions <= 0 {
		return 0, fmt.Errorf("outbox target: topic %s has %d partitions", topic, partitions)
	}
	var recorded int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The first instance records the target; one starting at the same
		// moment finds its row (ON CONFLICT waits for the other insert).
		if _, err := tx.Exec(ctx, `INSERT INTO outbox_target (topic, partitions) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`, topic, partitions); err != nil {
			return fmt.Errorf("record outbox target: %w", err)
		}
		var have string
		err := tx.QueryRow(ctx, `SELECT topic, partitions FROM outbox_target`).Scan(&have, &recorded)
		switch {
		case err != nil:
			return fmt.Errorf("read outbox target: %w", err)
		case have != topic:
			return fmt.Errorf("%w: the outbox in this database is published to topic %q, but INGESTD_KAFKA_TOPIC is %q; use a separate database (or schema) per topic", ErrTargetMismatch, have, topic)
		case partitions < recorded:
			return fmt.Errorf("%w: topic %q has %d partitions, fewer than the %d the outbox was written for (was the topic recreated?)", ErrTargetMismatch, topic, partitions, recorded)
		}
		_, err = tx.Exec(ctx, `
INSERT INTO publish_progress (partition, last_seq)
SELECT p, 0 FROM generate_series(0, $1 - 1) AS p
ON CONFLICT (partition) DO NOTHING`, recorded)
		if err != nil {
			return fmt.Errorf("seed publish progress: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return recorded, nil
}

// Watermarks returns, per partition (the slice index), the highest seq known
// to be acknowledged by Kafka.
func (s *Store) Watermarks(ctx context.Context) ([]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT partition, last_seq FROM publish_progress ORDER BY partition`)
	if err != nil {
		return nil, fmt.Errorf("read publish progress: %w", err)
	}
	var wm []int64
	defer rows.Close()
	for rows.Next() {
		var p int
		var seq int64
		if err := rows.Scan(&p, &seq); err != nil {
			return nil, fmt.Errorf("read publish progress: %w", err)
		}
		if p != len(wm) {
			return nil, fmt.Errorf("read publish progress: partition %d missing", len(wm))
		}
		wm = append(wm, seq)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read publish progress: %w", err)
	}
	return wm, nil
}

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
	rows, err := s.pool.Query(ctx, pendingSQL, low, wm, limit)
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
	rows, err := s.pool.Query(ctx, `
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

const markSQL = `
UPDATE publish_progress AS p SET last_seq = v.seq, published_at = now()
FROM unnest($1::int4[], $2::int8[]) AS v(partition, seq)
WHERE p.partition = v.partition AND v.seq > p.last_seq`

// MarkPublished raises partition watermarks under the publisher's lease:
// marks maps a partition to the highest seq Kafka acknowledged in it.
// Watermarks never move backwards.
func (s *Store) MarkPublished(ctx context.Context, l Lease, marks map[int]int64) error {
	if len(marks) == 0 {
		return nil
	}
	parts := make([]int32, 0, len(marks))
	seqs := make([]int64, 0, len(marks))
	for p, seq := range marks {
		parts = append(parts, int32(p))
		seqs = append(seqs, seq)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := CheckFence(ctx, tx, l); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, markSQL, parts, seqs)
		return err
	})
	if err != nil {
		return fmt.Errorf("record publish progress: %w", err)
	}
	return nil
}

const pruneSQL = `
DELETE FROM outbox WHERE seq IN (
    SELECT o.seq FROM outbox o JOIN publish_progress p ON p.partition = o.partition
    WHERE o.seq <= p.last_seq AND o.created_at < now() - make_interval(secs => $1)
    ORDER BY o.seq
    LIMIT $2)`

// Prune deletes up to limit published rows older than retention and returns
// how many it deleted. Unpublished rows are never deleted, however old. The
// event_id of a pruned row no longer deduplicates a replayed page, so the
// retention is also the window in which replays are recognized.
func (s *Store) Prune(ctx context.Context, retention time.Duration, limit int) (int64, error) {
	tag, err := s.pool.Exec(ctx, pruneSQL, retention.Seconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("prune outbox: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Backlog is the unpublished part of the outbox.
type Backlog struct {
	Rows int64
	// Oldest is the creation time of the oldest unpublished row; zero when
	// the backlog is empty.
	Oldest time.Time
}

// LastSeq returns the last outbox seq allocated by a committed transaction.
func (s *Store) LastSeq(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT last_seq FROM outbox_seq`).Scan(&n); err != nil {
		return 0, fmt.Errorf("read outbox seq: %w", err)
	}
	return n, nil
}

// BacklogEstimate is a cheap upper bound of the unpublished rows: the last
// allocated seq minus the lowest partition watermark. Pollers check it before
// every page, so it must not scan the outbox.
func (s *Store) BacklogEstimate(ctx context.Context) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `
SELECT (SELECT last_seq FROM outbox_seq) - coalesce((SELECT min(last_seq) FROM publish_progress), 0)`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("estimate outbox backlog: %w", err)
	}
	return n, nil
}

const backlogSQL = `
SELECT count(*), min(o.created_at)
FROM outbox o JOIN publish_progress p ON p.partition = o.partition
WHERE o.seq > (SELECT min(last_seq) FROM publish_progress) AND o.seq > p.last_seq`

// Backlog counts unpublished rows.
func (s *Store) Backlog(ctx context.Context) (Backlog, error) {
	var b Backlog
	var oldest *time.Time
	if err := s.pool.QueryRow(ctx, backlogSQL).Scan(&b.Rows, &oldest); err != nil {
		return Backlog{}, fmt.Errorf("count outbox backlog: %w", err)
	}
	if oldest != nil {
		b.Oldest = *oldest
	}
	return b, nil
}
