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
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pg"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/storage"
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

// Stores are the stores of a test's database.
type Stores struct {
	*storage.Stores
	// DSN is the database's DSN, for tests that also connect to it
	// directly or hand it to a daemon.
	DSN string
}

// Open returns the stores on a fresh, migrated schema, closed when the test
// ends.
func Open(t testing.TB) *Stores {
	t.Helper()
	return OpenDSN(t, Schema(t))
}

// OpenWithParam is Open with one more DSN parameter (application_name,
// default_query_exec_mode, ...).
func OpenWithParam(t testing.TB, key, value string) *Stores {
	t.Helper()
	return OpenDSN(t, WithParam(t, Schema(t), key, value))
}

// Migrate applies the migrations to the database of dsn.
func Migrate(t testing.TB, dsn string) {
	t.Helper()
	if _, err := pg.Migrate(context.Background(), Config(dsn)); err != nil {
		t.Fatalf("pgtest: migrate: %v", err)
	}
}

// Config is the connection configuration of dsn with the default pool.
func Config(dsn string) pg.Config {
	cfg := pg.DefaultConfig()
	cfg.DatabaseURL = secret.New(dsn)
	return cfg
}

// OpenDSN migrates the database of dsn and opens the stores on it, closed
// when the test ends.
func OpenDSN(t testing.TB, dsn string) *Stores {
	t.Helper()
	Migrate(t, dsn)
	db, err := pg.Open(context.Background(), Config(dsn))
	if err != nil {
		t.Fatalf("pgtest: open database: %v", err)
	}
	t.Cleanup(db.Close)
	return &Stores{Stores: storage.New(db), DSN: dsn}
}

// Row is outbox row number id, in partition: its event id, key and
// payload derive from id, so that rows are told apart in assertions, and
// seven claims share the keys.
func Row(id, partition int) outbox.Row {
	return outbox.Row{
		Partition: partition,
		Msg: event.Message{
			ID:      fmt.Sprintf("00000000-0000-0000-0000-%012d", id),
			Key:     fmt.Sprintf("yandex:claim-%d", id%7),
			Source:  "/ingestd/yandex/default",
			Type:    event.TypeStatusChanged,
			Subject: fmt.Sprintf("claim-%d", id%7),
			Time:    time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
			Payload: []byte(fmt.Sprintf(`{"n":%d}`, id)),
		},
	}
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
