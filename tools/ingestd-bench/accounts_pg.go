package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ingestd/ingestd/internal/child"
	"github.com/ingestd/ingestd/internal/cli"
)

// benchDB is where the instances of one many-accounts run keep their state:
// a database of its own, so that pg_stat_database counts their
// transactions and nobody else's; or, when the server refuses CREATE
// DATABASE, a schema of the base database, whose transaction counts then
// include every other session's there (an upper bound).
type benchDB struct {
	baseURL string
	name    string // the database's name, or the schema's
	own     bool
	schema  *pgSchema // the schema, when not own
}

func createBenchDB(ctx context.Context, baseURL, prefix string, logf func(string, ...any)) (*benchDB, error) {
	var r [5]byte
	_, _ = rand.Read(r[:])
	name := prefix + "_" + hex.EncodeToString(r[:])
	conn, err := pgx.Connect(ctx, baseURL)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w", cli.Redact(baseURL), err)
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+name)
	_ = conn.Close(context.WithoutCancel(ctx))
	if err == nil {
		return &benchDB{baseURL: baseURL, name: name, own: true}, nil
	}
	logf("no database of its own for the many-accounts run (%v): using a schema; its transaction counts include other sessions'", err)
	sch, err := createSchema(ctx, baseURL, prefix)
	if err != nil {
		return nil, err
	}
	return &benchDB{baseURL: baseURL, name: sch.name, schema: sch}, nil
}

// dsn connects to the run's database (or schema) as app.
func (d *benchDB) dsn(app string) string {
	if !d.own {
		return d.schema.dsn(app)
	}
	if u, err := url.Parse(d.baseURL); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + d.name
		return withParams(u.String(), map[string]string{"application_name": app})
	}
	return withParams(d.baseURL, map[string]string{"dbname": d.name, "application_name": app})
}

// datname is the database whose pg_stat_database row counts the run's
// transactions; conn is connected to the base database.
func (d *benchDB) datname(ctx context.Context, conn *pgx.Conn) (string, error) {
	if d.own {
		return d.name, nil
	}
	var n string
	if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&n); err != nil {
		return "", fmt.Errorf("name the database: %w", err)
	}
	return n, nil
}

// drop removes the database (ending any session left in it) or the schema.
func (d *benchDB) drop() error {
	if !d.own {
		return d.schema.drop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.baseURL)
	if err != nil {
		return fmt.Errorf("connect to drop database %s: %w", d.name, err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, "DROP DATABASE "+d.name+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", d.name, err)
	}
	return nil
}

// connSampler counts the connections of each instance (client backends
// with their application_name in pg_stat_activity; a parallel query's
// workers carry it too, but are not connections) every connSampleEvery,
// keeping the peak of each and of their sum, and, while a phase is marked,
// what the connections are doing on average. It reads from the base
// database, so its own transactions are not counted against ingestd's.
type connSampler struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// measuring is set while the phase whose states are averaged runs;
	// kick asks for a sample at once, so that a short phase gets one.
	measuring atomic.Bool
	kick      chan struct{}
	// Written by the sampler's goroutine; read after it stopped.
	peak    []int
	total   int
	states  connStates
	samples int
	// lockWaits counts, over the measured phase, the statements that
	// waited for a lock (their first words), to name the lock.
	lockWaits map[string]int
	// overPool is the first sample in which an instance had more backends
	// than its pool's size, one line per backend, to explain it.
	poolMax  int
	overPool []string
	once     sync.Once
}

// connStates are connections by what they are doing: summed over a
// phase's samples, then averaged.
type connStates struct {
	// LockWait are waiting for a lock (a row lock shows as transactionid
	// or tuple).
	LockWait float64 `json:"waiting_for_a_lock"`
	// WALWait are waiting for the WAL to be written or flushed, or for
	// another backend writing it (at commit, mostly).
	WALWait float64 `json:"waiting_for_wal"`
	// Active are running a statement, waiting for nothing above.
	Active float64 `json:"active"`
	// IdleInTx are inside a transaction between statements (the client's
	// turn).
	IdleInTx float64 `json:"idle_in_transaction"`
	Idle     float64 `json:"idle"`
	// LockWaitStatement is the statement most often found waiting for a
	// lock, and its share of those waits.
	LockWaitStatement string  `json:"lock_wait_statement,omitempty"`
	LockWaitShare     float64 `json:"lock_wait_statement_share,omitempty"`
}

// connSampleEvery is how often pg_stat_activity is read.
const connSampleEvery = 200 * time.Millisecond

func startConnSampler(ctx context.Context, baseURL string, apps []string, poolMax int) (*connSampler, error) {
	conn, err := pgx.Connect(ctx, withParams(baseURL, map[string]string{"application_name": "ingestd-bench-conn-sampler"}))
	if err != nil {
		return nil, fmt.Errorf("connect to sample connections: %w", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &connSampler{cancel: cancel, peak: make([]int, len(apps)), kick: make(chan struct{}, 1), lockWaits: map[string]int{}, poolMax: poolMax}
	index := make(map[string]int, len(apps))
	for i, a := range apps {
		index[a] = i
	}
	s.wg.Go(func() {
		defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
		tick := time.NewTicker(connSampleEvery)
		defer tick.Stop()
		for {
			rows, err := conn.Query(sctx, `
SELECT application_name, pid, coalesce(state, ''), coalesce(wait_event_type, ''), coalesce(wait_event, ''),
       to_char(backend_start, 'HH24:MI:SS.MS'), left(regexp_replace(coalesce(query, ''), '\s+', ' ', 'g'), 48)
FROM pg_stat_activity WHERE application_name = ANY($1) AND backend_type = 'client backend'`, apps)
			if err == nil {
				counts := make([]int, len(apps))
				var st connStates
				var lines []string
				var app, state, waitType, wait, started, query string
				var pid int32
				_, err = pgx.ForEachRow(rows, []any{&app, &pid, &state, &waitType, &wait, &started, &query}, func() error {
					counts[index[app]]++
					lines = append(lines, fmt.Sprintf("%s pid %d started %s: %s %s/%s %q", app, pid, started, state, waitType, wait, query))
					switch {
					case waitType == "Lock":
						st.LockWait++
						if s.measuring.Load() {
							s.lockWaits[strings.TrimSpace(query)]++
						}
					case strings.HasPrefix(wait, "WAL"):
						// WALSync and WALWrite (I/O), WALWrite and
						// WALInsert (waiting for another backend's).
						st.WALWait++
					case state == "active":
						st.Active++
					case strings.HasPrefix(state, "idle in transaction"):
						st.IdleInTx++
					default:
						st.Idle++
					}
					return nil
				})
				sum := 0
				for i, n := range counts {
					s.peak[i] = max(s.peak[i], n)
					sum += n
					if n > s.poolMax && s.overPool == nil {
						s.overPool = lines
					}
				}
				s.total = max(s.total, sum)
				if err == nil && s.measuring.Load() {
					s.samples++
					s.states.LockWait += st.LockWait
					s.states.WALWait += st.WALWait
					s.states.Active += st.Active
					s.states.IdleInTx += st.IdleInTx
					s.states.Idle += st.Idle
				}
			}
			// A failed sample is skipped: the peak is over the samples
			// taken, and a run always takes many.
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			case <-s.kick:
			}
		}
	})
	return s, nil
}

// measure starts or ends the phase whose connection states are averaged.
func (s *connSampler) measure(on bool) {
	s.measuring.Store(on)
	if on {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// stop ends the sampling and returns the peaks, per instance and of all
// instances at one time, and the mean states over the measured phase.
// Calling it again returns the same.
func (s *connSampler) stop() (peak []int, total int, states connStates) {
	s.once.Do(func() {
		s.cancel()
		s.wg.Wait()
		if n := float64(s.samples); n > 0 {
			s.states = connStates{LockWait: s.states.LockWait / n, WALWait: s.states.WALWait / n, Active: s.states.Active / n,
				IdleInTx: s.states.IdleInTx / n, Idle: s.states.Idle / n}
		}
		all := 0
		for q, n := range s.lockWaits {
			all += n
			if n > s.lockWaits[s.states.LockWaitStatement] || (n == s.lockWaits[s.states.LockWaitStatement] && q < s.states.LockWaitStatement) {
				s.states.LockWaitStatement = q
			}
		}
		if all > 0 {
			s.states.LockWaitShare = float64(s.lockWaits[s.states.LockWaitStatement]) / float64(all)
		}
	})
	return s.peak, s.total, s.states
}

// idleCost is what the instances cost while every journal is still, over
// one window: CPU, PostgreSQL transactions and WAL, per poll.
type idleCost struct {
	Seconds     float64 `json:"seconds"`
	Polls       int64   `json:"polls"`
	PollsPerSec float64 `json:"polls_per_sec"`
	// CPUSeconds is every instance's CPU over the window (from /proc, 10ms
	// resolution).
	CPUSeconds   float64 `json:"ingestd_cpu_seconds"`
	CPUUsPerPoll float64 `json:"ingestd_cpu_us_per_poll"`
	CPUPercent   float64 `json:"ingestd_cpu_percent_of_one_cpu"`
	// Xacts is the growth of xact_commit + xact_rollback of the run's
	// database (all of the base database when XactsOwn is false).
	Xacts        int64   `json:"postgres_transactions"`
	XactsPerPoll float64 `json:"postgres_transactions_per_poll"`
	XactsOwn     bool    `json:"postgres_transactions_own_database"`
	// WALServerBytes is the whole server's WAL over the window, every
	// other session's included: an upper bound.
	WALServerBytes   int64   `json:"wal_bytes_server"`
	WALServerPerPoll float64 `json:"wal_bytes_server_per_poll"`
	// WAL is the part of it that concerns the run's tables, from
	// pg_walinspect; nil when it could not be read.
	WAL *walBreakdown `json:"wal_ingestd,omitempty"`

	fromLSN, toLSN string
}

// walBreakdown attributes the WAL of a window to ingestd's tables: the
// records that touch a table (its heap, indexes or TOAST) and the commit
// records of the transactions that wrote them.
type walBreakdown struct {
	Bytes        int64   `json:"bytes"`
	BytesPerPoll float64 `json:"bytes_per_poll"`
	// WriteXacts counts the distinct transactions that wrote them.
	WriteXacts        int64   `json:"write_transactions"`
	WriteXactsPerPoll float64 `json:"write_transactions_per_poll"`
	// Tables is per table; "(commit records)" holds the commit records.
	Tables map[string]*tableWAL `json:"tables"`
	// MaxHistoryPerXact is the most cursor_history rows one transaction
	// wrote.
	MaxHistoryPerXact int64 `json:"max_history_rows_per_transaction"`
}

// tableWAL is one table's share of a window's WAL.
type tableWAL struct {
	Records int64 `json:"records"`
	Bytes   int64 `json:"bytes"`
	// RowWrites counts heap inserts, updates and deletes of its rows (not
	// row locks, pruning or index records).
	RowWrites int64 `json:"row_writes"`
}

// commitRecords is the walBreakdown entry of commit records.
const commitRecords = "(commit records)"

// rowWrites returns the table's row writes per poll, 0 when absent.
func (w *walBreakdown) rowWrites(table string, polls int64) float64 {
	if t := w.Tables[table]; t != nil && polls > 0 {
		return float64(t.RowWrites) / float64(polls)
	}
	return 0
}

// historyPerChange is the history rows written per cursor row written
// (1 when every change of a cursor appends one history row), and the most
// history rows one transaction wrote (1 when none appends more: a window's
// edges can only cut a transaction's records short, never add to them). ok
// is false when no cursor changed.
func (w *walBreakdown) historyPerChange() (mean float64, most int64, ok bool) {
	c, h := w.Tables["source_cursors"], w.Tables["cursor_history"]
	if c == nil || c.RowWrites == 0 {
		return 0, 0, false
	}
	if h == nil {
		return 0, 0, true
	}
	return float64(h.RowWrites) / float64(c.RowWrites), w.MaxHistoryPerXact, true
}

// bytesPerPoll adds the WAL bytes of tables up, per poll.
func (w *walBreakdown) bytesPerPoll(polls int64, tables ...string) float64 {
	var n int64
	for _, t := range tables {
		if x := w.Tables[t]; x != nil {
			n += x.Bytes
		}
	}
	if polls == 0 {
		return 0
	}
	return float64(n) / float64(polls)
}

// idleProbe measures idle windows of one run.
type idleProbe struct {
	mon     *pgx.Conn // on the base database
	datname string
	own     bool // datname is the run's own database
	insts   []*instance
	accts   []*journalAccount
}

// idleMark is the state of the counters at one moment.
type idleMark struct {
	at       time.Time
	requests int64
	cpu      time.Duration
	xacts    int64
	lsn      string
}

func (p *idleProbe) mark(ctx context.Context) (idleMark, error) {
	m := idleMark{at: time.Now()}
	for _, a := range p.accts {
		m.requests += a.y.Requests()
	}
	for _, in := range p.insts {
		c, err := procCPU(in.c.Pid())
		if err != nil {
			return m, err
		}
		m.cpu += c
	}
	err := p.mon.QueryRow(ctx, `SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1), pg_current_wal_insert_lsn()::text`, p.datname).Scan(&m.xacts, &m.lsn)
	if err != nil {
		return m, fmt.Errorf("read transaction and WAL counters: %w", err)
	}
	return m, nil
}

// measure takes the counters, lets d pass and takes them again.
func (p *idleProbe) measure(ctx context.Context, procs []*child.Process, d time.Duration) (*idleCost, error) {
	a, err := p.mark(ctx)
	if err != nil {
		return nil, err
	}
	if err := holdProcs(ctx, procs, d); err != nil {
		return nil, err
	}
	z, err := p.mark(ctx)
	if err != nil {
		return nil, err
	}
	c := &idleCost{Seconds: z.at.Sub(a.at).Seconds(), Polls: z.requests - a.requests, CPUSeconds: (z.cpu - a.cpu).Seconds(),
		Xacts: z.xacts - a.xacts, XactsOwn: p.own, fromLSN: a.lsn, toLSN: z.lsn}
	c.PollsPerSec = float64(c.Polls) / c.Seconds
	c.CPUPercent = 100 * c.CPUSeconds / c.Seconds
	from, err1 := parseLSN(a.lsn)
	to, err2 := parseLSN(z.lsn)
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	c.WALServerBytes = int64(to - from)
	if c.Polls > 0 {
		per := func(v float64) float64 { return v / float64(c.Polls) }
		c.CPUUsPerPoll = per(c.CPUSeconds * 1e6)
		c.XactsPerPoll = per(float64(c.Xacts))
		c.WALServerPerPoll = per(float64(c.WALServerBytes))
	}
	return c, nil
}

// parseLSN reads a pg_lsn's text form, two hexadecimal halves.
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("not an LSN: %q", s)
	}
	return h<<32 | l, nil
}

// maxInspectBytes bounds the WAL pg_walinspect is asked to decode for one
// window: beyond it, other sessions wrote so much that reading it all back
// would take long, and the breakdown is left out.
const maxInspectBytes = 512 << 20

// blockRef matches one block reference of pg_walinspect's block_ref:
// "blkref #0: rel 1663/16384/16385 fork main blk 0".
var blockRef = regexp.MustCompile(`rel \d+/\d+/(\d+) fork (\w+)`)

// walBreakdown reads the windows' WAL back with pg_walinspect (which needs
// a superuser or pg_read_server_files) and attributes it to ingestd's
// tables, whose relations it looks up in the run's database.
func (b *bench) walBreakdown(ctx context.Context, db *benchDB, windows []*idleCost) error {
	conn, err := pgx.Connect(ctx, db.dsn("ingestd-bench-walinspect"))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	// In a database of its own the extension goes with the database; in a
	// shared one it is created in the run's schema, and goes with it,
	// unless someone installed it already.
	if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_walinspect SCHEMA `+pgx.Identifier{currentSchema(db)}.Sanitize()); err != nil {
		return fmt.Errorf("create extension pg_walinspect: %w", err)
	}
	var ns string
	if err := conn.QueryRow(ctx, `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_walinspect'`).Scan(&ns); err != nil {
		return fmt.Errorf("find pg_walinspect: %w", err)
	}
	// Every relation of ingestd's tables: the heap, its indexes, its TOAST
	// table and the TOAST table's index, by file node.
	rows, err := conn.Query(ctx, `
SELECT pg_relation_filenode(r.oid)::text, t.relname, r.oid = t.oid
FROM pg_class t
CROSS JOIN LATERAL (
    SELECT t.oid
    UNION ALL SELECT i.indexrelid FROM pg_index i WHERE i.indrelid = t.oid
    UNION ALL SELECT t.reltoastrelid WHERE t.reltoastrelid <> 0
    UNION ALL SELECT i.indexrelid FROM pg_index i WHERE t.reltoastrelid <> 0 AND i.indrelid = t.reltoastrelid
) r(oid)
WHERE t.relnamespace = current_schema()::text::regnamespace AND t.relkind = 'r' AND pg_relation_filenode(r.oid) IS NOT NULL`)
	if err != nil {
		return fmt.Errorf("list ingestd's relations: %w", err)
	}
	type rel struct {
		table string
		heap  bool
	}
	rels := map[string]rel{}
	var node, table string
	var heap bool
	if _, err := pgx.ForEachRow(rows, []any{&node, &table, &heap}, func() error { rels[node] = rel{table, heap}; return nil }); err != nil {
		return fmt.Errorf("list ingestd's relations: %w", err)
	}
	if len(rels) == 0 {
		return errors.New("no table of ingestd's found")
	}
	var dboid string
	if err := conn.QueryRow(ctx, `SELECT oid::text FROM pg_database WHERE datname = current_database()`).Scan(&dboid); err != nil {
		return fmt.Errorf("find the database: %w", err)
	}
	nodes := make([]string, 0, len(rels))
	for n := range rels {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	pattern := `rel \d+/` + dboid + `/(` + strings.Join(nodes, "|") + `) fork`
	fn := pgx.Identifier{ns, "pg_get_wal_records_info"}.Sanitize()
	for _, w := range windows {
		if w == nil {
			continue
		}
		if w.WALServerBytes > maxInspectBytes {
			b.logf("the server wrote %d MiB of WAL in an idle window: other sessions were busy; no breakdown by table", w.WALServerBytes>>20)
			continue
		}
		rows, err := conn.Query(ctx, `
WITH r AS (
    SELECT xid::text AS xid, resource_manager, record_type, record_length, coalesce(block_ref, '') AS block_ref
    FROM `+fn+`($1::pg_lsn, $2::pg_lsn)
), own AS (
    SELECT * FROM r WHERE block_ref ~ $3
)
SELECT * FROM own
UNION ALL
SELECT * FROM r WHERE resource_manager = 'Transaction' AND xid <> '0' AND xid IN (SELECT xid FROM own)`, w.fromLSN, w.toLSN, pattern)
		if err != nil {
			return fmt.Errorf("read the WAL back: %w", err)
		}
		br := &walBreakdown{Tables: map[string]*tableWAL{}}
		xids := map[string]bool{}
		history := map[string]int64{} // history rows by transaction
		var xid, rmgr, typ, refs string
		var length int64
		_, err = pgx.ForEachRow(rows, []any{&xid, &rmgr, &typ, &length, &refs}, func() error {
			br.Bytes += length
			name := commitRecords
			heapRow := false
			if rmgr != "Transaction" {
				for _, m := range blockRef.FindAllStringSubmatch(refs, -1) {
					if r, ok := rels[m[1]]; ok {
						name = r.table
						heapRow = r.heap && m[2] == "main" && rmgr == "Heap" && isRowWrite(typ)
						break
					}
				}
				if xid != "0" {
					xids[xid] = true
				}
			}
			t := br.Tables[name]
			if t == nil {
				t = &tableWAL{}
				br.Tables[name] = t
			}
			t.Records++
			t.Bytes += length
			if heapRow {
				t.RowWrites++
				if name == "cursor_history" {
					history[xid]++
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("read the WAL back: %w", err)
		}
		br.WriteXacts = int64(len(xids))
		for _, n := range history {
			br.MaxHistoryPerXact = max(br.MaxHistoryPerXact, n)
		}
		if w.Polls > 0 {
			br.BytesPerPoll = float64(br.Bytes) / float64(w.Polls)
			br.WriteXactsPerPoll = float64(br.WriteXacts) / float64(w.Polls)
		}
		w.WAL = br
	}
	return nil
}

// isRowWrite tells a heap record that writes a row (INSERT, INSERT+INIT,
// UPDATE, HOT_UPDATE, DELETE) from one that locks, prunes or freezes.
func isRowWrite(recordType string) bool {
	for _, p := range []string{"INSERT", "UPDATE", "HOT_UPDATE", "DELETE"} {
		if strings.HasPrefix(recordType, p) {
			return true
		}
	}
	return false
}

// currentSchema is where ingestd's tables are: public in a database of its
// own, else the run's schema.
func currentSchema(db *benchDB) string {
	if db.own {
		return "public"
	}
	return db.name
}
