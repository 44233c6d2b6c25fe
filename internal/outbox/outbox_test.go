package outbox_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/outbox"
	"github.com/ingestd/ingestd/internal/pg"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/race"
)

// appendRows appends rows of source src in a transaction of their own.
func appendRows(ctx context.Context, s *pgtest.Stores, src string, rows []outbox.Row) (outbox.Appended, error) {
	var a outbox.Appended
	err := s.DB.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		a, err = s.Outbox.Append(ctx, tx, src, rows, true)
		return err
	})
	return a, err
}

// publisherLease takes the publisher lease of the test's database.
func publisherLease(t *testing.T, s *pgtest.Stores) lease.Lease {
	t.Helper()
	l, ok, err := s.Leases.TryAcquire(context.Background(), lease.Publisher, "test-"+t.Name(), time.Minute)
	require.NoError(t, err)
	require.True(t, ok, "the publisher lease is free")
	t.Cleanup(func() { _ = s.Leases.Release(context.Background(), l) })
	return l
}

func TestWatermarksPendingAndPrune(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Open(t)
	n, err := s.Outbox.Target(ctx, "events", 2)
	require.NoError(t, err)
	require.Equal(t, 2, n)

	_, err = appendRows(ctx, s, "a", []outbox.Row{pgtest.Row(1, 0), pgtest.Row(2, 1), pgtest.Row(3, 0), pgtest.Row(4, 1)})
	require.NoError(t, err)

	b, err := s.Outbox.Backlog(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(4), b.Rows)
	require.False(t, b.Oldest.IsZero())

	// Partition 0 acknowledged through seq 3, partition 1 not at all.
	pub := publisherLease(t, s)
	require.NoError(t, s.Outbox.MarkPublished(ctx, pub, map[int]int64{0: 3}))
	wm, err := s.Outbox.Watermarks(ctx)
	require.NoError(t, err)
	require.Equal(t, []int64{3, 0}, wm)
	// Watermarks never go backwards.
	require.NoError(t, s.Outbox.MarkPublished(ctx, pub, map[int]int64{0: 1}))
	wm, err = s.Outbox.Watermarks(ctx)
	require.NoError(t, err)
	require.Equal(t, []int64{3, 0}, wm)

	pending, err := s.Outbox.Pending(ctx, wm, 10)
	require.NoError(t, err)
	require.Len(t, pending, 2)
	require.Equal(t, []int64{2, 4}, []int64{pending[0].Seq, pending[1].Seq})
	require.Equal(t, []byte(`{"n":2}`), pending[0].Msg.Payload)
	require.Equal(t, event.TypeStatusChanged, pending[0].Msg.Type)

	// Nothing is old enough yet; with zero retention only published rows go.
	deleted, err := s.Outbox.Prune(ctx, time.Hour, 100)
	require.NoError(t, err)
	require.Zero(t, deleted)
	deleted, err = s.Outbox.Prune(ctx, 0, 100)
	require.NoError(t, err)
	require.Equal(t, int64(2), deleted)
	b, err = s.Outbox.Backlog(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(2), b.Rows)
}

func TestTargetMismatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Open(t)
	_, err := s.Outbox.Target(ctx, "events", 3)
	require.NoError(t, err)

	n, err := s.Outbox.Target(ctx, "events", 6)
	require.NoError(t, err)
	require.Equal(t, 3, n, "a grown topic keeps the recorded partition count")

	_, err = s.Outbox.Target(ctx, "other", 3)
	require.ErrorIs(t, err, outbox.ErrTargetMismatch)
	require.ErrorContains(t, err, "INGESTD_KAFKA_TOPIC")
	_, err = s.Outbox.Target(ctx, "events", 2)
	require.ErrorIs(t, err, outbox.ErrTargetMismatch)
}

// TestConcurrentFirstTarget is two instances starting at the same moment on
// a fresh database: both record (or find) the same target.
func TestConcurrentFirstTarget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Open(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { _, errs[i] = s.Outbox.Target(ctx, "events", 4) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
}

// TestAppendStoresEveryColumnExactly writes rows with edge values and reads
// them back, which checks the binary COPY encoding of every column: times
// before PostgreSQL's epoch and with nanoseconds, the largest partition,
// multi-byte text, empty and binary payloads. It reads in pgx's default
// query mode (binary rows, decoded from their wire bytes) and in the simple
// protocol (text rows, through pgx's Scan), as with a transaction-pooling
// PgBouncer.
func TestAppendStoresEveryColumnExactly(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"cache_statement", "simple_protocol"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			storesEveryColumnExactly(t, pgtest.OpenWithParam(t, "default_query_exec_mode", mode))
		})
	}
}

func storesEveryColumnExactly(t *testing.T, s *pgtest.Stores) {
	t.Helper()
	ctx := context.Background()
	const src = "yandex/пример"
	base := pgtest.Row(1, 0).Msg
	tests := []struct {
		name   string
		mutate func(r *outbox.Row)
	}{
		{name: "ordinary", mutate: func(*outbox.Row) {}},
		{name: "nanoseconds are cut to microseconds", mutate: func(r *outbox.Row) {
			r.Msg.Time = time.Date(2026, 11, 22, 21, 30, 1, 123456789, time.UTC)
		}},
		{name: "before 2000", mutate: func(r *outbox.Row) { r.Msg.Time = time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC) }},
		{name: "before 1970", mutate: func(r *outbox.Row) { r.Msg.Time = time.Date(1969, 7, 20, 20, 17, 40, 1000, time.UTC) }},
		{name: "not UTC", mutate: func(r *outbox.Row) {
			r.Msg.Time = time.Date(2026, 3, 1, 5, 0, 0, 0, time.FixedZone("UZT", 5*3600))
		}},
		{name: "largest partition", mutate: func(r *outbox.Row) { r.Partition = math.MaxInt32 }},
		{name: "multi-byte text", mutate: func(r *outbox.Row) {
			r.Msg.Key, r.Msg.Subject = "bts:заказ-😀", "заказ-😀"
		}},
		{name: "binary payload", mutate: func(r *outbox.Row) { r.Msg.Payload = []byte{0, 0xff, '\n', '\\', 0} }},
		{name: "empty payload", mutate: func(r *outbox.Row) { r.Msg.Payload = []byte{} }},
		{name: "large payload", mutate: func(r *outbox.Row) { r.Msg.Payload = bytes.Repeat([]byte("x"), 200_000) }},
	}
	rows := make([]outbox.Row, len(tests))
	for i, tc := range tests {
		rows[i] = outbox.Row{Msg: base}
		rows[i].Msg.ID = fmt.Sprintf("%08x-0000-4000-8000-%012d", i+1, i+1)
		rows[i].Msg.Payload = []byte(fmt.Sprintf(`{"case":%d}`, i))
		tc.mutate(&rows[i])
	}
	c, err := appendRows(ctx, s, src, rows)
	require.NoError(t, err)
	require.Len(t, c.Inserted, len(tests))
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Outbox.Row(ctx, c.Inserted[i].Seq)
			require.NoError(t, err)
			require.NotNil(t, got)
			want := rows[i]
			require.Equal(t, c.Inserted[i].Seq, got.Seq)
			require.Equal(t, want.Partition, got.Partition)
			require.Equal(t, src, got.SourceID)
			require.Equal(t, want.Msg.ID, got.Msg.ID)
			require.Equal(t, want.Msg.Key, got.Msg.Key)
			require.Equal(t, want.Msg.Type, got.Msg.Type)
			require.Equal(t, want.Msg.Source, got.Msg.Source)
			require.Equal(t, want.Msg.Subject, got.Msg.Subject)
			require.Equal(t, want.Msg.Payload, got.Msg.Payload)
			wantTime := want.Msg.Time.Truncate(time.Microsecond)
			require.True(t, wantTime.Equal(got.Msg.Time), "ce_time %s, want %s", got.Msg.Time, wantTime)
			// What is published from memory equals what is read back.
			require.True(t, c.Inserted[i].Msg.Time.Equal(got.Msg.Time))
		})
	}
}

// TestPendingReadsWhatWasCommitted: the publisher's read of many rows
// returns exactly the rows committed, in both query modes (see
// TestAppendStoresEveryColumnExactly), with sources and types shared
// between rows and the rest not.
func TestPendingReadsWhatWasCommitted(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"cache_statement", "simple_protocol"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := pgtest.OpenWithParam(t, "default_query_exec_mode", mode)
			_, err := s.Outbox.Target(ctx, "events", 4)
			require.NoError(t, err)
			var want []outbox.Row
			for page := range 3 {
				rows := make([]outbox.Row, 50)
				for i := range rows {
					rows[i] = pgtest.Row(page*100+i, i%4)
				}
				rows[7].Msg.Payload = []byte{}
				c, err := appendRows(ctx, s, fmt.Sprintf("yandex/acct-%d", page%2), rows)
				require.NoError(t, err)
				want = append(want, c.Inserted...)
			}
			marks, err := s.Outbox.Watermarks(ctx)
			require.NoError(t, err)
			got, err := s.Outbox.Pending(ctx, marks, 1000)
			require.NoError(t, err)
			require.Len(t, got, len(want))
			for i := range got {
				require.Equal(t, want[i].Seq, got[i].Seq)
				require.Equal(t, want[i].Partition, got[i].Partition)
				require.Equal(t, want[i].SourceID, got[i].SourceID)
				require.Equal(t, want[i].Msg.ID, got[i].Msg.ID)
				require.Equal(t, want[i].Msg.Key, got[i].Msg.Key)
				require.Equal(t, want[i].Msg.Type, got[i].Msg.Type)
				require.Equal(t, want[i].Msg.Source, got[i].Msg.Source)
				require.Equal(t, want[i].Msg.Subject, got[i].Msg.Subject)
				require.Equal(t, want[i].Msg.Payload, got[i].Msg.Payload)
				require.True(t, want[i].Msg.Time.Equal(got[i].Msg.Time))
				one, err := s.Outbox.Row(ctx, got[i].Seq)
				require.NoError(t, err)
				require.Equal(t, *one, got[i], "one row read alone equals the same row read with others")
			}
		})
	}
}

// TestPendingAllocatesPayloadsOnly: in pgx's default mode, rows are decoded
// from their binary wire bytes, so a read costs each row's payload and a
// few allocations per read; through Scan a row costs about seven.
func TestPendingAllocatesPayloadsOnly(t *testing.T) {
	if race.Enabled {
		t.Skip("allocation counts are only meaningful without -race")
	}
	ctx := context.Background()
	s := pgtest.Open(t)
	_, err := s.Outbox.Target(ctx, "events", 4)
	require.NoError(t, err)
	rows := make([]outbox.Row, 500)
	for i := range rows {
		rows[i] = pgtest.Row(i, i%4)
	}
	_, err = appendRows(ctx, s, "yandex/default", rows)
	require.NoError(t, err)
	marks, err := s.Outbox.Watermarks(ctx)
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(3, func() {
		if got, err := s.Outbox.Pending(ctx, marks, 1000); err != nil || len(got) != len(rows) {
			panic(fmt.Sprintf("pending: %d rows, %v", len(got), err))
		}
	})
	t.Logf("%.0f allocations to read %d rows", allocs, len(rows))
	require.Less(t, allocs, float64(len(rows)+100))
}

// blockedReader is COPY data that never comes, as from a frozen client,
// until unblocked.
type blockedReader struct{ unblock <-chan struct{} }

func (r blockedReader) Read([]byte) (int, error) {
	<-r.unblock
	return 0, io.EOF
}

// TestAStalledCopyIsEnded: a client that stops sending in the middle of an
// outbox COPY (frozen by SIGSTOP, say) is not idle in its transaction, so
// idle_in_transaction_session_timeout never ends it, and it holds the
// counter row every writer needs (and its lease row) until it thaws; the
// chaos harness caught a paused instance blocking its successor's takeover
// so. EndStalledWriters ends such a session, and the next writer goes
// through; a COPY younger than the bound is left alone.
func TestAStalledCopyIsEnded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	app := fmt.Sprintf("stalled-copy-%d", time.Now().UnixNano())
	s := pgtest.OpenWithParam(t, "application_name", app)
	unblock := make(chan struct{})
	t.Cleanup(func() { close(unblock) })
	stalled := make(chan error, 1)
	go func() {
		stalled <- s.DB.InTx(ctx, func(tx pgx.Tx) error {
			var base int64
			if err := tx.QueryRow(ctx, outbox.AllocSQL, 1).Scan(&base); err != nil {
				return err
			}
			_, err := tx.Conn().PgConn().CopyFrom(ctx, blockedReader{unblock}, outbox.CopyOutboxSQL)
			return err
		})
	}()
	// The stalled COPY holds the counter once PostgreSQL shows it waiting
	// for its client.
	require.Eventually(t, func() bool {
		var n int
		err := s.DB.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND wait_event = 'ClientRead' AND query = $2`, app, outbox.CopyOutboxSQL).Scan(&n)
		return err == nil && n == 1
	}, 10*time.Second, 10*time.Millisecond, "the COPY starts")

	n, err := s.Outbox.EndStalledWriters(ctx, time.Hour)
	require.NoError(t, err)
	require.Zero(t, n, "a COPY younger than the bound is left alone")

	// A writer that comes now waits for the counter until the stalled
	// session is ended.
	written := make(chan error, 1)
	var next outbox.Appended
	go func() {
		var err error
		next, err = appendRows(ctx, s, "yandex/default", []outbox.Row{pgtest.Row(1, 0)})
		written <- err
	}()
	require.Eventually(t, func() bool {
		n, err := s.Outbox.EndStalledWriters(ctx, 100*time.Millisecond)
		require.NoError(t, err)
		return n == 1
	}, 10*time.Second, 20*time.Millisecond, "the stalled COPY is ended")
	select {
	case err := <-written:
		require.NoError(t, err, "the next writer gets the counter")
	case <-time.After(30 * time.Second):
		t.Fatal("the next writer still waits for the counter")
	}
	require.Error(t, <-stalled, "the stalled transaction rolled back")
	require.Equal(t, int64(1), next.FirstSeq, "the stalled seq was rolled back with it: no gap")
	st, err := s.Outbox.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), st.Rows, "only the next writer's row is stored")
}

// TestAFrozenInstancesSessionsEndTogether: a frozen instance with several
// sources has one transaction holding the outbox counter, idle, and others
// queued behind it. Ended one at a time (as PostgreSQL's idle timeout
// does), each queued one would take the counter in turn and hold it, frozen,
// for another round: the chaos harness saw commits stall for 25 to 36 s so.
// EndStalledWriters ends the holder and every other transaction of the same
// instance in one go, and the healthy instance's writer goes through.
func TestAFrozenInstancesSessionsEndTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.Schema(t)
	frozenApp := pg.ApplicationName(fmt.Sprintf("frozen-%d", time.Now().UnixNano()))
	frozen := pgtest.OpenDSN(t, pgtest.WithParam(t, dsn, "application_name", frozenApp))
	healthy := pgtest.OpenDSN(t, pgtest.WithParam(t, dsn, "application_name", pg.ApplicationName("healthy")))
	unblock := make(chan struct{})
	t.Cleanup(func() { close(unblock) })

	// The holder allocates from the counter, then its client freezes.
	holder := make(chan error, 1)
	go func() {
		holder <- frozen.DB.InTx(ctx, func(tx pgx.Tx) error {
			var base int64
			if err := tx.QueryRow(ctx, outbox.AllocSQL, 1).Scan(&base); err != nil {
				return err
			}
			<-unblock
			return nil
		})
	}()
	waitFor := func(query string, args ...any) {
		t.Helper()
		require.Eventually(t, func() bool {
			var n int
			err := healthy.DB.QueryRow(ctx, query, args...).Scan(&n)
			return err == nil && n > 0
		}, 10*time.Second, 10*time.Millisecond, "%s: %s", query, activity(t, healthy))
	}
	waitFor(`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction'`, frozenApp)
	// Another of its sources queues behind it, and so does the healthy
	// instance's writer.
	queued := make(chan error, 1)
	go func() {
		_, err := appendRows(ctx, frozen, "yandex/b", []outbox.Row{pgtest.Row(2, 0)})
		queued <- err
	}()
	waitFor(`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, frozenApp)
	written := make(chan error, 1)
	var next outbox.Appended
	go func() {
		var err error
		next, err = appendRows(ctx, healthy, "yandex/c", []outbox.Row{pgtest.Row(3, 0)})
		written <- err
	}()
	waitFor(`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, pg.ApplicationName("healthy"))

	var ended int64
	require.Eventually(t, func() bool {
		n, err := healthy.Outbox.EndStalledWriters(ctx, 400*time.Millisecond)
		require.NoError(t, err)
		ended = n
		return n > 0
	}, 10*time.Second, 20*time.Millisecond, "the frozen holder is found")
	require.EqualValues(t, 2, ended, "the holder and the transaction queued behind it end together")
	select {
	case err := <-written:
		require.NoError(t, err, "the healthy writer gets the counter")
	case <-time.After(30 * time.Second):
		t.Fatal("the healthy writer still waits for the counter")
	}
	require.Equal(t, int64(1), next.FirstSeq, "both frozen allocations rolled back: no gap")
	require.Error(t, <-queued, "the queued transaction of the frozen instance was ended")
	unblock <- struct{}{}
	require.Error(t, <-holder, "the holder's transaction rolled back")
}

// activity lists the sessions of the test's database (application name,
// state, wait), for failure messages.
func activity(t *testing.T, s *pgtest.Stores) string {
	t.Helper()
	rows, err := s.DB.Query(context.Background(), `SELECT application_name, coalesce(state, ''), coalesce(wait_event_type, '') FROM pg_stat_activity WHERE datname = current_database()`)
	require.NoError(t, err)
	var b strings.Builder
	for rows.Next() {
		var a, st, w string
		require.NoError(t, rows.Scan(&a, &st, &w))
		fmt.Fprintf(&b, "[%s|%s|%s] ", a, st, w)
	}
	return b.String()
}
