package pg

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/ingestd/ingestd/migrations"
)

// ErrNotMigrated means the schema is older than this binary needs.
var ErrNotMigrated = errors.New("database schema is not migrated (run `ingestd migrate`)")

func (db *DB) checkSchema(ctx context.Context) error {
	want, err := latestVersion()
	if err != nil {
		return err
	}
	var have int64
	err = db.pool.QueryRow(ctx, `SELECT coalesce(max(version_id), 0) FROM goose_db_version WHERE is_applied`).Scan(&have)
	if err != nil {
		var pgErr interface{ SQLState() string }
		if errors.As(err, &pgErr) && pgErr.SQLState() == "42P01" { // undefined_table
			return fmt.Errorf("%w: no migrations applied, this binary needs version %d", ErrNotMigrated, want)
		}
		return fmt.Errorf("read schema version: %w", err)
	}
	if have < want {
		return fmt.Errorf("%w: schema is at version %d, this binary needs %d", ErrNotMigrated, have, want)
	}
	return nil
}

// latestVersion is the highest migration version embedded in this binary.
func latestVersion() (int64, error) {
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		return 0, fmt.Errorf("list embedded migrations: %w", err)
	}
	var latest int64
	for _, n := range names {
		v, err := goose.NumericComponent(n)
		if err != nil {
			return 0, fmt.Errorf("embedded migration %s: %w", n, err)
		}
		latest = max(latest, v)
	}
	if latest == 0 {
		return 0, errors.New("no embedded migrations")
	}
	return latest, nil
}

// MigrationResult is one applied migration.
type MigrationResult struct {
	Version  int64
	Name     string
	Duration time.Duration
}

// Migrate applies every pending embedded migration with goose, holding a
// PostgreSQL advisory lock so that concurrent `ingestd migrate` runs (two
// Jobs, two pods) apply each migration once.
func Migrate(ctx context.Context, cfg Config) ([]MigrationResult, error) {
	pc, err := pgx.ParseConfig(cfg.DatabaseURL.Reveal())
	if err != nil {
		return nil, errors.New("parse INGESTD_DATABASE_URL: not a valid PostgreSQL DSN")
	}
	db := stdlib.OpenDB(*pc)
	defer func() { _ = db.Close() }()
	return migrate(ctx, db)
}

func migrate(ctx context.Context, db *sql.DB) ([]MigrationResult, error) {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, fmt.Errorf("create migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS,
		goose.WithSessionLocker(locker),
		goose.WithSlog(slog.New(slog.NewTextHandler(io.Discard, nil))),
	)
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("apply migrations: %w", err)
	}
	out := make([]MigrationResult, 0, len(results))
	for _, r := range results {
		out = append(out, MigrationResult{Version: r.Source.Version, Name: r.Source.Path, Duration: r.Duration})
	}
	return out, nil
}
