package outbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ingestd/ingestd/internal/pg"
)

// Outbox rows go in by COPY in PostgreSQL's binary format, encoded here
// rather than by pgx.CopyFrom. pgx encodes each of the ten values of a row
// through its generic type map (a plan lookup per value, and for a uuid
// given as a string a failed binary encoding, an error value and a text
// parse): in a profile of a catch-up that was a tenth of ingestd's CPU. The
// row has fixed, simple types, and the binary format is a documented,
// stable part of PostgreSQL's protocol:
// https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4

// copyOutboxSQL names the columns in the order appendOutboxCopy writes them;
// created_at takes its default.
const copyOutboxSQL = `COPY outbox (seq, event_id, source_id, partition, msg_key, ce_type, ce_source, ce_subject, ce_time, payload) FROM STDIN (FORMAT binary)`

const (
	// copyFields is the number of columns of copyOutboxSQL.
	copyFields = 10
	// pgEpochMicros is 2000-01-01T00:00:00Z, PostgreSQL's timestamp epoch,
	// in Unix microseconds.
	pgEpochMicros = 946_684_800_000_000
	// maxPooledCopyBuf keeps buffers of unusually large pages from being
	// held forever.
	maxPooledCopyBuf = 8 << 20
)

// copySignature starts every binary COPY stream: the signature, a flags
// field and the length of the (empty) header extension.
var copySignature = []byte("PGCOPY\n\377\r\n\000\x00\x00\x00\x00\x00\x00\x00\x00")

// copyBufs recycles the COPY buffers of a Store: a page of 1,000 events is
// about a megabyte. It is a small free list rather than a sync.Pool,
// because a pool is emptied by every other garbage collection, which a
// catch-up runs every few pages: most pages then grew a new buffer.
type copyBufs struct{ free chan *[]byte }

// maxFreeCopyBufs bounds the buffers kept: one per concurrent committer
// (the journal sources and the BTS poller) covers the usual case.
const maxFreeCopyBufs = 4

func newCopyBufs() copyBufs { return copyBufs{free: make(chan *[]byte, maxFreeCopyBufs)} }

func (c *copyBufs) get() *[]byte {
	select {
	case b := <-c.free:
		return b
	default:
		b := make([]byte, 0, 64<<10)
		return &b
	}
}

func (c *copyBufs) put(b *[]byte) {
	if cap(*b) > maxPooledCopyBuf {
		return
	}
	*b = (*b)[:0]
	select {
	case c.free <- b:
	default:
	}
}

// copyRows writes rows into the outbox under tx with one binary COPY.
func (s *Store) copyRows(ctx context.Context, tx pgx.Tx, rows []Row) error {
	bp := s.copyBufs.get()
	buf, err := appendOutboxCopy((*bp)[:0], rows)
	*bp = buf
	if err != nil {
		s.copyBufs.put(bp)
		return err
	}
	if _, err := tx.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(buf), copyOutboxSQL); err != nil {
		// When the connection breaks, pgconn.CopyFrom can return before its
		// goroutine has stopped reading the buffer (pgx v5.12.0 returns
		// without waiting for it), so a failed COPY's buffer is left to the
		// garbage collector: recycling it let the next page overwrite bytes
		// still being read, a data race seen when backends were terminated.
		return err
	}
	s.copyBufs.put(bp)
	return nil
}

// appendOutboxCopy appends the binary COPY stream of rows to buf.
func appendOutboxCopy(buf []byte, rows []Row) ([]byte, error) {
	n := len(copySignature) + 2
	for i := range rows {
		m := &rows[i].Msg
		n += 2 + 4*copyFields + 8 + 16 + len(rows[i].SourceID) + 4 + len(m.Key) + len(m.Type) +
			len(m.Source) + len(m.Subject) + 8 + len(m.Payload)
	}
	if cap(buf)-len(buf) < n {
		buf = append(make([]byte, 0, len(buf)+n), buf...)
	}
	buf = append(buf, copySignature...)
	for i := range rows {
		r := &rows[i]
		m := &r.Msg
		id, err := uuid.Parse(m.ID)
		if err != nil {
			return buf, fmt.Errorf("event id %q: %w", m.ID, err)
		}
		buf = binary.BigEndian.AppendUint16(buf, copyFields)
		buf = appendInt64Field(buf, r.Seq)
		buf = appendBytesField(buf, id[:])
		buf = appendStringField(buf, r.SourceID)
		buf = binary.BigEndian.AppendUint32(buf, 4)
		buf = binary.BigEndian.AppendUint32(buf, uint32(int32(r.Partition)))
		buf = appendStringField(buf, m.Key)
		buf = appendStringField(buf, string(m.Type))
		buf = appendStringField(buf, m.Source)
		buf = appendStringField(buf, m.Subject)
		buf = appendInt64Field(buf, pgMicros(m.Time))
		buf = appendBytesField(buf, m.Payload)
	}
	// The trailer: a field count of -1.
	return binary.BigEndian.AppendUint16(buf, 0xffff), nil
}

// pgMicros is t as a PostgreSQL timestamptz: microseconds since 2000-01-01
// UTC. Sub-microsecond digits are dropped, as PostgreSQL would.
func pgMicros(t time.Time) int64 { return t.UnixMicro() - pgEpochMicros }

func appendInt64Field(buf []byte, v int64) []byte {
	buf = binary.BigEndian.AppendUint32(buf, 8)
	return binary.BigEndian.AppendUint64(buf, uint64(v))
}

func appendBytesField(buf, v []byte) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(v)))
	return append(buf, v...)
}

func appendStringField(buf []byte, v string) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(v)))
	return append(buf, v...)
}

// endStalledSQL ends the sessions of this database that a frozen client
// left holding locks, and with them every other session in a transaction of
// the same ingestd instance (application_name, see pg.ApplicationName):
//
//   - an outbox COPY that has waited for its client's data for more than
//     $2 seconds (a healthy page's COPY takes milliseconds);
//   - a session idle in its transaction for more than $3 seconds that
//     another session waits for (a healthy transaction's statements follow
//     each other within milliseconds).
//
// The whole instance goes at once because a frozen instance with several
// sources has several transactions queued for the outbox counter: ended
// one at a time, each would take the counter in turn and hold it, frozen,
// until ended too, and the stall would last as many rounds as it has
// sources.
const endStalledSQL = `
WITH stalled AS (
    SELECT a.pid, a.application_name FROM pg_stat_activity a
    WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
      AND ((a.state = 'active' AND a.wait_event = 'ClientRead' AND a.query = $1
            AND a.query_start < now() - make_interval(secs => $2))
        OR (a.state = 'idle in transaction' AND a.state_change < now() - make_interval(secs => $3)
            AND EXISTS (SELECT 1 FROM pg_stat_activity w WHERE a.pid = ANY (pg_blocking_pids(w.pid)))))
)
SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
  AND (a.pid IN (SELECT pid FROM stalled)
    OR (a.xact_start IS NOT NULL AND a.application_name LIKE $4
        AND a.application_name IN (SELECT application_name FROM stalled)))`

// EndStalledWriters ends, and returns how many, sessions that a frozen
// client (SIGSTOP, a VM pause, a partition) left holding the outbox counter,
// which every writer needs, or the lease row its transaction fenced on,
// which its successor needs to take over; and every other session in a
// transaction of the same instance. PostgreSQL ends a client idle in a
// transaction by itself after pg.StallTimeout
// (idle_in_transaction_session_timeout), but only one session at a time,
// and a client in the middle of a COPY is "active" to it, so neither that
// timeout nor a statement timeout applies while it waits for the client. A
// COPY stalled longer than olderThan, or a session idle in its transaction
// for half of it while another waits for it, counts as frozen. Ending the
// sessions rolls their transactions back: nothing half-done is kept, and
// the frozen writer, when it thaws, finds its connections gone and its
// leases taken.
func (s *Store) EndStalledWriters(ctx context.Context, olderThan time.Duration) (int64, error) {
	var n int64
	err := s.db.QueryRow(ctx, endStalledSQL, copyOutboxSQL, olderThan.Seconds(), (olderThan / 2).Seconds(), pg.ApplicationNamePrefix+"%").Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("end stalled outbox writers: %w", err)
	}
	return n, nil
}
