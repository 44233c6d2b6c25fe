// Package pgtest gives each test its own schema on a real PostgreSQL server,
// so tests run in parallel without seeing each other's rows.
//
// The server is INGESTD_TEST_DATABASE_URL, or the local one at
// 127.0.0.1:5432 (user postgres, trust auth) when that is unset.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/jackc/pgx/v5"
)

// DefaultURL is the server used when INGESTD_TEST_DATABASE_URL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// BaseURL returns the DSN of the test server.
func BaseURL() string {
	if v := os.Getenv("INGESTD_TEST_DATABASE_URL"); v != "" {
		return v
	}
	return DefaultURL
}

// Schema creates a fresh, empty schema and returns a DSN whose search_path
// points at it, so unqualified table names (and goose's version table) live
// there. The schema is dropped when the test ends.
func Schema(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])

	conn, err := pgx.Connect(ctx, BaseURL())
	if err != nil {
		t.Fatalf("pgtest: connect to %s (start PostgreSQL or set INGESTD_TEST_DATABASE_URL): %v", redact(BaseURL()), err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("pgtest: create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, BaseURL())
		if err != nil {
			t.Errorf("pgtest: connect for cleanup: %v", err)
			return
		}
		defer func() { _ = conn.Close(ctx) }()
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+name+" CASCADE"); err != nil {
			t.Errorf("pgtest: drop schema %s: %v", name, err)
		}
	})
	return WithSearchPath(t, BaseURL(), name)
}

// WithSearchPath returns dsn with its search_path set to schema.
func WithSearchPath(t testing.TB, dsn, schema string) string {
	t.Helper()
	return WithParam(t, dsn, "search_path", schema)
}

// WithParam returns dsn, a URL, with the query parameter key set to value.
func WithParam(t testing.TB, dsn, key, value string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("pgtest: INGESTD_TEST_DATABASE_URL must be a URL: %v", err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "the configured server"
	}
	return u.Redacted()
}

// Store returns a store on a fresh, migrated schema, closed when the test
// ends.
func Store(t testing.TB) *cursor.Store {
	t.Helper()
	s, _ := StoreDSN(t)
	return s
}

// StoreDSN is Store, with the DSN of the schema for tests that also connect
// to it directly or hand it to a daemon.
func StoreDSN(t testing.TB) (*cursor.Store, string) {
	t.Helper()
	dsn := Schema(t)
	return open(t, dsn), dsn
}

// StoreWithParam is Store with one more DSN parameter (application_name,
// default_query_exec_mode, ...).
func StoreWithParam(t testing.TB, key, value string) *cursor.Store {
	t.Helper()
	return open(t, WithParam(t, Schema(t), key, value))
}

// open migrates the schema of dsn and opens a store on it, closed when the
// test ends.
func open(t testing.TB, dsn string) *cursor.Store {
	t.Helper()
	ctx := context.Background()
	cfg := cursor.DefaultConfig()
	cfg.DatabaseURL = secret.New(dsn)
	if _, err := cursor.Migrate(ctx, cfg); err != nil {
		t.Fatalf("pgtest: migrate: %v", err)
	}
	s, err := cursor.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("pgtest: open store: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Killer terminates PostgreSQL backends of one application_name over and
// over, as an administrator or a failover would; see TerminateBackends.
type Killer struct {
	killed atomic.Int64
	stop   func()
}

// Killed returns how many backends it has terminated so far.
func (k *Killer) Killed() int64 { return k.killed.Load() }

// Stop stops it and waits until it has; it is safe to call twice.
func (k *Killer) Stop() { k.stop() }

// TerminateBackends terminates, every interval until Stop or the end of the
// test, the backends whose application_name is app.
func TerminateBackends(t testing.TB, app string, every time.Duration) *Killer {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, BaseURL())
	if err != nil {
		t.Fatalf("pgtest: connect to terminate backends: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(ctx) })
	k := &Killer{}
	done := make(chan struct{})
	var wg sync.WaitGroup
	k.stop = sync.OnceFunc(func() { close(done); wg.Wait() })
	// Cleanups run last first: the killer stops before its connection
	// closes, also when the test fails early.
	t.Cleanup(k.stop)
	wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			var n int64
			_ = conn.QueryRow(ctx,
				`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n)
			k.killed.Add(n)
		}
	})
	return k
}
