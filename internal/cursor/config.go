// Package cursor is ingestd's PostgreSQL state: per-source cursors and their
// history, the transactional outbox of normalized events, and publish
// progress. A page's events and the cursor after it are committed in one
// transaction, so a restart, or kill -9, resumes exactly where it stopped.
package cursor

import (
	"errors"
	"fmt"

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
