package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ingestd/ingestd/internal/lease"
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
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
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
	rows, err := s.db.Query(ctx, `SELECT partition, last_seq FROM publish_progress ORDER BY partition`)
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

const markSQL = `
UPDATE publish_progress AS p SET last_seq = v.seq, published_at = now()
FROM unnest($1::int4[], $2::int8[]) AS v(partition, seq)
WHERE p.partition = v.partition AND v.seq > p.last_seq`

// MarkPublished raises partition watermarks under the publisher's lease:
// marks maps a partition to the highest seq Kafka acknowledged in it.
// Watermarks never move backwards.
func (s *Store) MarkPublished(ctx context.Context, l lease.Lease, marks map[int]int64) error {
	if len(marks) == 0 {
		return nil
	}
	parts := make([]int32, 0, len(marks))
	seqs := make([]int64, 0, len(marks))
	for p, seq := range marks {
		parts = append(parts, int32(p))
		seqs = append(seqs, seq)
	}
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
		if err := lease.CheckFence(ctx, tx, l); err != nil {
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
	tag, err := s.db.Exec(ctx, pruneSQL, retention.Seconds(), limit)
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
	if err := s.db.QueryRow(ctx, `SELECT last_seq FROM outbox_seq`).Scan(&n); err != nil {
		return 0, fmt.Errorf("read outbox seq: %w", err)
	}
	return n, nil
}

// BacklogEstimate is a cheap upper bound of the unpublished rows: the last
// allocated seq minus the lowest partition watermark. Pollers check it before
// every page, so it must not scan the outbox.
func (s *Store) BacklogEstimate(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRow(ctx, `
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
	if err := s.db.QueryRow(ctx, backlogSQL).Scan(&b.Rows, &oldest); err != nil {
		return Backlog{}, fmt.Errorf("count outbox backlog: %w", err)
	}
	if oldest != nil {
		b.Oldest = *oldest
	}
	return b, nil
}

// Stats describes the outbox.
type Stats struct {
	Topic      string
	Partitions int
	LastSeq    int64
	Rows       int64
	Backlog    Backlog
	Watermarks []int64
}

// Stats returns the outbox's size, backlog and per-partition progress.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := s.db.QueryRow(ctx, `
SELECT coalesce((SELECT topic FROM outbox_target), ''), coalesce((SELECT partitions FROM outbox_target), 0),
       (SELECT last_seq FROM outbox_seq), (SELECT count(*) FROM outbox)`).Scan(&st.Topic, &st.Partitions, &st.LastSeq, &st.Rows)
	if err != nil {
		return Stats{}, fmt.Errorf("read outbox stats: %w", err)
	}
	if st.Backlog, err = s.Backlog(ctx); err != nil {
		return Stats{}, err
	}
	if st.Watermarks, err = s.Watermarks(ctx); err != nil {
		return Stats{}, err
	}
	return st, nil
}
