// Package pg is ingestd's PostgreSQL connection: the pool, the schema
// migrations embedded from migrations/, the check that a database is
// migrated far enough for this binary, and the transaction helper every
// store package composes its writes with.
//
// It holds no table of its own. The tables belong to the packages that own
// their rows: internal/lease (leases), internal/outbox (the outbox and its
// publish progress), internal/cursor (source positions and history) and
// internal/watchlist (the BTS watch-list). A write that must be atomic
// across them, such as a journal page's events with the cursor after them,
// is composed in one place with InTx, and the pieces take the transaction
// as an argument.
package pg

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ingestd/ingestd/internal/secret"
)

// Config is the PostgreSQL connection configuration.
type Config struct {
	// DatabaseURL is the DSN (INGESTD_DATABASE_URL), required. It may hold a
	// password, so it is a secret.
	DatabaseURL secret.String
	// MaxConns bounds the pool (INGESTD_DATABASE_MAX_CONNS, default 8).
	MaxConns int
	// ApplicationName names the pool's sessions in pg_stat_activity, unless
	// the DSN names them itself; the daemon sets ApplicationName(instance),
	// so that the sessions of a frozen instance can be told apart and ended
	// together (see outbox.Store.EndStalledWriters).
	ApplicationName string
}

// ApplicationNamePrefix starts the application_name of every ingestd
// instance's sessions.
const ApplicationNamePrefix = "ingestd:"

// maxApplicationName is PostgreSQL's bound (NAMEDATALEN - 1); a longer
// name is cut, so it is cut here alike.
const maxApplicationName = 63

// ApplicationName is the application_name of an instance's sessions.
func ApplicationName(instance string) string {
	name := ApplicationNamePrefix + instance
	if len(name) > maxApplicationName {
		name = name[:maxApplicationName]
	}
	return name
}

// DefaultConfig returns the defaults; DatabaseURL has none.
func DefaultConfig() Config {
	return Config{MaxConns: 8}
}

// Validate reports every problem, naming the environment variable.
func (c Config) Validate() error {
	var errs []error
	if !c.DatabaseURL.IsSet() {
		errs = append(errs, errors.New("INGESTD_DATABASE_URL: required (a PostgreSQL DSN such as postgres://user@host:5432/db)"))
	} else if _, err := pgxpool.ParseConfig(c.DatabaseURL.Reveal()); err != nil {
		// pgx's parse errors redact passwords, but they echo the rest of the
		// DSN; say only that it did not parse.
		errs = append(errs, errors.New("INGESTD_DATABASE_URL: not a valid PostgreSQL DSN (URL or key=value form)"))
	}
	if c.MaxConns < 2 || c.MaxConns > 100 {
		errs = append(errs, fmt.Errorf("INGESTD_DATABASE_MAX_CONNS: must be between 2 and 100, got %d", c.MaxConns))
	}
	return errors.Join(errs...)
}

// StallTimeout bounds how long a client that stopped answering in the
// middle of a transaction (frozen by SIGSTOP, a VM pause, a partition) keeps
// its locks: the lease row it fenced on and the outbox counter, which every
// other writer waits for. It is short against the lease TTL (default 15s)
// and long against any gap between the statements of a healthy
// transaction, or against a healthy page's COPY.
const StallTimeout = 5 * time.Second

// DB is a pool of connections to a migrated database.
type DB struct {
	pool *pgxpool.Pool
}

// Open connects to PostgreSQL and checks that the schema is migrated to the
// version this binary embeds.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	pc, err := pgxpool.ParseConfig(cfg.DatabaseURL.Reveal())
	if err != nil {
		return nil, errors.New("parse INGESTD_DATABASE_URL: not a valid PostgreSQL DSN")
	}
	pc.MaxConns = int32(cfg.MaxConns)
	// A process frozen in the middle of a transaction (SIGSTOP, a VM pause,
	// a partition) keeps its row locks: the lease row it fenced on and the
	// outbox counter. Its successor's takeover and commits would wait for
	// it indefinitely. PostgreSQL ends such a session after StallTimeout idle
	// inside a transaction, releasing the locks (the transaction rolls back,
	// so nothing half-done is kept). A client frozen in the middle of a
	// COPY is not idle but "active" for PostgreSQL, which does not end it:
	// see outbox.Store.EndStalledWriters.
	pc.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = StallTimeout.String()
	if cfg.ApplicationName != "" && pc.ConnConfig.RuntimeParams["application_name"] == "" {
		pc.ConnConfig.RuntimeParams["application_name"] = cfg.ApplicationName
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	db := &DB{pool: pool}
	if err := db.checkSchema(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return db, nil
}

// Close closes the pool.
func (db *DB) Close() { db.pool.Close() }

// Ping checks that PostgreSQL answers; /readyz uses it.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping PostgreSQL: %w", err)
	}
	return nil
}

// InTx runs fn in one transaction, committed when fn returns nil and rolled
// back otherwise. Every write that must be atomic is composed in an fn, and
// the pieces it calls take tx as an argument: none opens a transaction of
// its own inside it.
func (db *DB) InTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, db.pool, fn)
}

// Exec runs a statement outside any transaction of the caller's.
func (db *DB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return db.pool.Exec(ctx, sql, args...)
}

// Query runs a query outside any transaction of the caller's.
func (db *DB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return db.pool.Query(ctx, sql, args...)
}

// QueryRow runs a query that returns at most one row.
func (db *DB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return db.pool.QueryRow(ctx, sql, args...)
}
