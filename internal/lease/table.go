package lease

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ingestd/ingestd/internal/pg"
)

// ErrFenced means the write was refused because the writer's lease epoch is
// no longer the current one: another instance took over.
var ErrFenced = errors.New("fenced: the lease was taken over by a newer epoch")

// Lease is a held single-writer lease. Its epoch fences every write made
// under it.
type Lease struct {
	Name   string
	Holder string
	Epoch  int64
}

// IsZero reports whether l is the zero Lease.
func (l Lease) IsZero() bool { return l.Name == "" }

// Names of the leases: one single-writer role per journal source, and one
// for the outbox relay. BTS watch-list sources have no lease: their writes
// are compare-and-set per order (internal/watchlist).
const Publisher = "publisher"

// Source names the lease of a journal source's poller.
func Source(sourceID string) string { return "source:" + sourceID }

// Store is the lease table (leases, migrations/00002): one row per role,
// whose epoch grows by one with every takeover.
type Store struct {
	db *pg.DB
}

// NewStore returns the lease table of db.
func NewStore(db *pg.DB) *Store { return &Store{db: db} }

const acquireSQL = `
INSERT INTO leases AS l (name, holder, epoch, expires_at)
VALUES ($1, $2, 1, now() + make_interval(secs => $3))
ON CONFLICT (name) DO UPDATE
    SET holder = EXCLUDED.holder,
        epoch = l.epoch + 1,
        expires_at = EXCLUDED.expires_at,
        acquired_at = now(),
        renewed_at = now()
    WHERE l.holder IS NULL OR l.expires_at <= now()
RETURNING epoch`

// TryAcquire takes the lease if it is free (never taken, released, or
// expired) and returns it with a new, higher epoch. ok is false when another
// holder's lease is still live.
func (s *Store) TryAcquire(ctx context.Context, name, holder string, ttl time.Duration) (l Lease, ok bool, err error) {
	var epoch int64
	err = s.db.QueryRow(ctx, acquireSQL, name, holder, ttl.Seconds()).Scan(&epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		return Lease{}, false, nil
	}
	if err != nil {
		return Lease{}, false, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	return Lease{Name: name, Holder: holder, Epoch: epoch}, true, nil
}

const renewSQL = `
UPDATE leases SET expires_at = now() + make_interval(secs => $4), renewed_at = now()
WHERE name = $1 AND holder = $2 AND epoch = $3
RETURNING epoch`

// Renew extends a held lease by ttl from now. It returns ErrFenced when the
// lease was taken over or released meanwhile.
func (s *Store) Renew(ctx context.Context, l Lease, ttl time.Duration) error {
	var epoch int64
	err := s.db.QueryRow(ctx, renewSQL, l.Name, l.Holder, l.Epoch, ttl.Seconds()).Scan(&epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("renew lease %s epoch %d: %w", l.Name, l.Epoch, ErrFenced)
	}
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", l.Name, err)
	}
	return nil
}

const releaseSQL = `UPDATE leases SET holder = NULL, expires_at = now() WHERE name = $1 AND holder = $2 AND epoch = $3`

// Release gives the lease up so that a standby can take it at once instead
// of waiting for it to expire. Releasing a lease already lost is not an error.
func (s *Store) Release(ctx context.Context, l Lease) error {
	if _, err := s.db.Exec(ctx, releaseSQL, l.Name, l.Holder, l.Epoch); err != nil {
		return fmt.Errorf("release lease %s: %w", l.Name, err)
	}
	return nil
}

const stealSQL = `
INSERT INTO leases AS l (name, holder, epoch, expires_at)
VALUES ($1, $2, 1, now() + make_interval(secs => $3))
ON CONFLICT (name) DO UPDATE
    SET holder = EXCLUDED.holder, epoch = l.epoch + 1, expires_at = EXCLUDED.expires_at,
        acquired_at = now(), renewed_at = now()
RETURNING epoch`

// Steal takes the lease whoever holds it, with a new epoch: the current
// holder's next write is fenced and it steps down. Operator tools use it so
// that a manual cursor change cannot race the daemon.
func (s *Store) Steal(ctx context.Context, name, holder string, ttl time.Duration) (Lease, error) {
	var epoch int64
	if err := s.db.QueryRow(ctx, stealSQL, name, holder, ttl.Seconds()).Scan(&epoch); err != nil {
		return Lease{}, fmt.Errorf("take over lease %s: %w", name, err)
	}
	return Lease{Name: name, Holder: holder, Epoch: epoch}, nil
}

// State is a lease row as stored.
type State struct {
	Name       string
	Holder     string // "" when released
	Epoch      int64
	ExpiresAt  time.Time
	AcquiredAt time.Time
	RenewedAt  time.Time
	Live       bool // held and not expired, by PostgreSQL's clock
}

const listSQL = `
SELECT name, coalesce(holder, ''), epoch, expires_at, acquired_at, renewed_at, holder IS NOT NULL AND expires_at > now()
FROM leases ORDER BY name`

// List returns every lease.
func (s *Store) List(ctx context.Context) ([]State, error) {
	rows, err := s.db.Query(ctx, listSQL)
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (State, error) {
		var l State
		err := r.Scan(&l.Name, &l.Holder, &l.Epoch, &l.ExpiresAt, &l.AcquiredAt, &l.RenewedAt, &l.Live)
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	return out, nil
}

// fenceSQL locks the lease row in share mode for the rest of the
// transaction: a concurrent takeover (an UPDATE of the row) waits until this
// transaction ends, and once it has happened this check fails. Either way no
// write commits under a superseded epoch.
const fenceSQL = `SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND epoch = $3 FOR SHARE`

// CheckFence verifies, inside tx, that l is still the current lease. Every
// transaction that writes under a lease calls it first.
func CheckFence(ctx context.Context, tx pgx.Tx, l Lease) error {
	if l.IsZero() {
		return errors.New("write without a lease: every writer must hold its lease")
	}
	var one int
	err := tx.QueryRow(ctx, fenceSQL, l.Name, l.Holder, l.Epoch).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("lease %s epoch %d: %w", l.Name, l.Epoch, ErrFenced)
	}
	if err != nil {
		return fmt.Errorf("check lease %s: %w", l.Name, err)
	}
	return nil
}

const heartbeatSQL = `
INSERT INTO instances (holder, expires_at) VALUES ($1, now() + make_interval(secs => $2))
ON CONFLICT (holder) DO UPDATE SET expires_at = EXCLUDED.expires_at`

const spreadSQL = `
SELECT i.holder, count(l.name)
FROM instances i
LEFT JOIN leases l ON l.holder = i.holder AND l.expires_at > now() AND l.name LIKE 'source:%'
WHERE i.expires_at > now()
GROUP BY i.holder`

// Heartbeat records that holder is alive for ttl more, and returns every
// live instance (itself included) with the number of source leases it
// holds.
func (s *Store) Heartbeat(ctx context.Context, holder string, ttl time.Duration) (map[string]int, error) {
	if _, err := s.db.Exec(ctx, heartbeatSQL, holder, ttl.Seconds()); err != nil {
		return nil, fmt.Errorf("instance heartbeat: %w", err)
	}
	rows, err := s.db.Query(ctx, spreadSQL)
	if err != nil {
		return nil, fmt.Errorf("count live instances: %w", err)
	}
	out := map[string]int{}
	for rows.Next() {
		var (
			h string
			n int
		)
		if err := rows.Scan(&h, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("count live instances: %w", err)
		}
		out[h] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count live instances: %w", err)
	}
	return out, nil
}

// Forget removes holder's heartbeat on a clean stop, so that the others
// count it out at once rather than after its TTL.
func (s *Store) Forget(ctx context.Context, holder string) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM instances WHERE holder = $1`, holder); err != nil {
		return fmt.Errorf("forget instance: %w", err)
	}
	return nil
}
