package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ingestd/ingestd/internal/cli"
)

// pgSchema is a PostgreSQL schema created for one measurement and dropped
// after it.
type pgSchema struct {
	baseURL string
	name    string
}

// createSchema creates an empty schema with a random name starting with
// prefix.
func createSchema(ctx context.Context, baseURL, prefix string) (*pgSchema, error) {
	var r [5]byte
	_, _ = rand.Read(r[:])
	s := &pgSchema{baseURL: baseURL, name: prefix + "_" + hex.EncodeToString(r[:])}
	conn, err := pgx.Connect(ctx, baseURL)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w", cli.Redact(baseURL), err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+s.name); err != nil {
		return nil, fmt.Errorf("create schema %s: %w", s.name, err)
	}
	return s, nil
}

// drop removes the schema and everything in it. It runs on the way out,
// also after a cancellation, so it uses a fresh bounded context.
func (s *pgSchema) drop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.baseURL)
	if err != nil {
		return fmt.Errorf("connect to drop schema %s: %w", s.name, err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, "DROP SCHEMA "+s.name+" CASCADE"); err != nil {
		return fmt.Errorf("drop schema %s: %w", s.name, err)
	}
	return nil
}

// dsn returns a DSN whose search_path is the schema, with the connections
// named app in pg_stat_activity, which is how the harness finds the
// PostgreSQL backends serving ingestd.
func (s *pgSchema) dsn(app string) string {
	return withParams(s.baseURL, map[string]string{"search_path": s.name, "application_name": app})
}

// withParams adds connection parameters to a URL or key=value DSN. The
// values are generated identifiers that need no quoting.
func withParams(dsn string, params map[string]string) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		for _, k := range keys {
			q.Set(k, params[k])
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	for _, k := range keys {
		dsn += " " + k + "=" + params[k]
	}
	return dsn
}

// pgIsLocal reports whether the server is on this machine, where its
// backends' CPU time can be read from /proc.
func pgIsLocal(dsn string) bool {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return false
	}
	if cfg.Host == "" || cfg.Host[0] == '/' || cfg.Host == "localhost" {
		return true
	}
	ip := net.ParseIP(cfg.Host)
	return ip != nil && ip.IsLoopback()
}

// backendCPU tracks the CPU time of the PostgreSQL backends serving one
// application_name, by sampling pg_stat_activity for their pids and
// /proc/<pid>/stat for their CPU. A backend that connects after the
// baseline counts from zero; one that disconnects between two samples loses
// at most one sampling interval of CPU. Auxiliary processes (WAL writer,
// checkpointer) serve every database on the server, including other
// people's tests, so they are not counted.
type backendCPU struct {
	conn *pgx.Conn
	app  string
	ok   bool // false when /proc cannot tell (a remote server)
	base map[int]time.Duration
	last map[int]time.Duration
}

func newBackendCPU(conn *pgx.Conn, app string, local bool) *backendCPU {
	return &backendCPU{conn: conn, app: app, ok: local, last: map[int]time.Duration{}}
}

// sample reads the current CPU time of every backend of the application.
func (b *backendCPU) sample(ctx context.Context) error {
	if !b.ok {
		return nil
	}
	rows, err := b.conn.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = $1`, b.app)
	if err != nil {
		return fmt.Errorf("list PostgreSQL backends: %w", err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return fmt.Errorf("list PostgreSQL backends: %w", err)
	}
	for _, pid := range pids {
		t, err := procCPU(int(pid))
		if err != nil {
			// The backend exited between the query and the read, or /proc
			// does not show the server's processes (another PID namespace).
			continue
		}
		b.last[int(pid)] = t
	}
	return nil
}

// markBaseline makes the current sample the zero point.
func (b *backendCPU) markBaseline() {
	b.base = make(map[int]time.Duration, len(b.last))
	for pid, t := range b.last {
		b.base[pid] = t
	}
}

// used is the CPU time used since the baseline, and whether it could be
// measured at all.
func (b *backendCPU) used() (time.Duration, bool) {
	if !b.ok || len(b.last) == 0 {
		return 0, false
	}
	var sum time.Duration
	for pid, t := range b.last {
		sum += t - b.base[pid]
	}
	return sum, true
}
