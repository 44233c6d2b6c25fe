package watchlist

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Status is a stored entry of the BTS status dictionary.
type Status struct {
	Code        int
	Name        string
	Description string
	Next        []int
	UpdatedAt   time.Time
}

const upsertStatusSQL = `
INSERT INTO bts_statuses (source_id, code, name, description, next_codes, updated_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (source_id, code) DO UPDATE
    SET name = EXCLUDED.name, description = EXCLUDED.description, next_codes = EXCLUDED.next_codes, updated_at = now()`

// SaveStatuses stores a freshly fetched dictionary for a source. Entries
// BTS no longer lists are kept: a code once defined keeps its name for
// orders that still carry it.
func (s *Store) SaveStatuses(ctx context.Context, sourceID string, defs []Status) error {
	if len(defs) == 0 {
		return errors.New("save bts statuses: empty dictionary")
	}
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
		var b pgx.Batch
		for _, d := range defs {
			next := make([]int32, len(d.Next))
			for i, n := range d.Next {
				next[i] = int32(n)
			}
			b.Queue(upsertStatusSQL, sourceID, d.Code, d.Name, d.Description, next)
		}
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return fmt.Errorf("save bts statuses of %s: %w", sourceID, err)
	}
	return nil
}

// Statuses returns a source's stored dictionary, by code.
func (s *Store) Statuses(ctx context.Context, sourceID string) ([]Status, error) {
	rows, err := s.db.Query(ctx, `
SELECT code, name, description, next_codes, updated_at FROM bts_statuses WHERE source_id = $1 ORDER BY code`, sourceID)
	if err != nil {
		return nil, fmt.Errorf("load bts statuses of %s: %w", sourceID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Status, error) {
		var (
			d    Status
			next []int32
		)
		err := r.Scan(&d.Code, &d.Name, &d.Description, &next, &d.UpdatedAt)
		d.Next = make([]int, len(next))
		for i, n := range next {
			d.Next[i] = int(n)
		}
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("load bts statuses of %s: %w", sourceID, err)
	}
	return out, nil
}
