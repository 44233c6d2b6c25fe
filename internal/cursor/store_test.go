package cursor_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/race"
	"github.com/ingestd/ingestd/internal/secret"
)

// leases caches the test's lease per store and name, so that every commit of
// one source in a test uses the same epoch.
var leases sync.Map

func lease(t *testing.T, s *cursor.Store, name string) cursor.Lease {
	t.Helper()
	key := fmt.Sprintf("%p/%s", s, name)
	if l, ok := leases.Load(key); ok {
		return l.(cursor.Lease)
	}
	l, ok, err := s.TryAcquire(context.Background(), name, "test-"+t.Name(), time.Minute)
	require.NoError(t, err)
	require.True(t, ok, "lease %s is free", name)
	leases.Store(key, l)
	// A later test's store may get the same address once this one is
	// freed (with -count, say), so the entry goes with the test.
	t.Cleanup(func() { leases.Delete(key) })
	return l
}

// withLease sets the page's lease to the test's lease on its source.
func withLease(t *testing.T, s *cursor.Store, p cursor.Page) cursor.Page {
	t.Helper()
	p.Lease = lease(t, s, "source:"+p.SourceID)
	return p
}

func publisherLease(t *testing.T, s *cursor.Store) cursor.Lease {
	t.Helper()
	return lease(t, s, "publisher")
}

func row(id int, partition int) cursor.Row {
	return cursor.Row{
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

func TestOpenRequiresMigration(t *testing.T) {
	t.Parallel()
	cfg := cursor.DefaultConfig()
	cfg.DatabaseURL = secret.New(pgtest.Schema(t))
	_, err := cursor.Open(context.Background(), cfg)
	require.ErrorIs(t, err, cursor.ErrNotMigrated)
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := cursor.DefaultConfig()
	cfg.DatabaseURL = secret.New(pgtest.Schema(t))
	first, err := cursor.Migrate(ctx, cfg)
	require.NoError(t, err)
	require.NotEmpty(t, first)
	again, err := cursor.Migrate(ctx, cfg)
	require.NoError(t, err)
	require.Empty(t, again)
}

func TestCommitPageStoresCursorByteForByte(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Store(t)
	const src = "yandex/default"

	st, err := s.Source(ctx, src)
	require.NoError(t, err)
	require.Empty(t, st.Cursor)

	weird := "a+/=\"\\ é ✓ \t~." // every byte must come back as sent
	c, err := s.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: src, Cursor: weird, Rows: []cursor.Row{row(1, 0), row(2, 1)}}))
	require.NoError(t, err)
	require.Len(t, c.Inserted, 2)
	require.Equal(t, int64(1), c.FirstSeq)
	require.Equal(t, int64(2), c.LastSeq)

	st, err = s.Source(ctx, src)
	require.NoError(t, err)
	require.Equal(t, weird, st.Cursor)
	require.Equal(t, int64(2), st.EventsTotal)

	h, err := s.History(ctx, src, 10)
	require.NoError(t, err)
	require.Len(t, h, 1)
	require.Equal(t, weird, h[0].Cursor)
	require.Equal(t, 2, h[0].EventCount)
}

func TestCommitPageDeduplicatesReplayedEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Store(t)
	const src = "yandex/default"

	_, err := s.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: src, Cursor: "c1", Rows: []cursor.Row{row(1, 0), row(2, 0), row(3, 1)}}))
	require.NoError(t, err)
	// The next page re-serves 2 and 3, then a new event, and repeats 4 within the page.
	c, err := s.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: src, PrevCursor: "c1", Cursor: "c2", Rows: []cursor.Row{row(2, 0), row(3, 1), row(4, 2), row(4, 2)}}))
	require.NoError(t, err)
	require.Len(t, c.Inserted, 1)
	require.Equal(t, 3, c.Duplicates)
	require.Equal(t, "00000000-0000-0000-0000-000000000004", c.Inserted[0].Msg.ID)
	require.Equal(t, int64(4), c.Inserted[0].Seq, "the sequence has no gaps: duplicates take no seq")
	require.Equal(t, c.FirstSeq, c.LastSeq)

	wm, err := s.Target(ctx, "t", 3)
	require.NoError(t, err)
	require.Equal(t, 3, wm)
	marks, err := s.Watermarks(ctx)
	require.NoError(t, err)
	pending, err := s.Pending(ctx, marks, 100)
	require.NoError(t, err)
	var got []string
	for _, r := range pending {
		got = append(got, r.Msg.ID[len(r.Msg.ID)-1:])
	}
	require.Equal(t, []string{"1", "2", "3", "4"}, got)
}

func TestCommitPageRejectsStaleCursor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Store(t)
	const src = "yandex/default"

	_, err := s.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: src, Cursor: "c1", Rows: []cursor.Row{row(1, 0)}}))
	require.NoError(t, err)

	tests := []struct {
		name string
		prev string
	}{
		{"first-call page after a commit", ""},
		{"page fetched with an older cursor", "c0"},
	}
	for _, tc := range tests {
		_, err := s.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: src, PrevCursor: tc.prev, Cursor: "other", Rows: []cursor.Row{row(9, 0)}}))
		require.ErrorIs(t, err, cursor.ErrCursorMoved, tc.name)
	}
	st, err := s.Source(ctx, src)
	require.NoError(t, err)
	require.Equal(t, "c1", st.Cursor)
	require.Equal(t, int64(1), st.EventsTotal, "rejected pages insert nothing")
}

func TestConcurrentSourcesGetSeqInCommitOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Store(t)
	_, err := s.Target(ctx, "t", 2)
	require.NoError(t, err)

	// Two sources commit concurrently; every committed range must be
	// contiguous and non-overlapping, so a watermark can never skip a row.
	var wg sync.WaitGroup
	const pages = 30
	srcLeases := []cursor.Lease{lease(t, s, "source:src0"), lease(t, s, "source:src1")}
	for src := range 2 {
		wg.Go(func() {
			prev := ""
			for i := range pages {
				cur := fmt.Sprintf("s%d-%d", src, i)
				id := src*1000 + i
				_, err := s.CommitPage(ctx, cursor.Page{Lease: srcLeases[src], SourceID: fmt.Sprintf("src%d", src), PrevCursor: prev, Cursor: cur, Rows: []cursor.Row{row(id, id%2)}})
				if !assertNoError(t, err) {
					return
				}
				prev = cur
			}
		})
	}
	wg.Wait()
	wm, err := s.Watermarks(ctx)
	require.NoError(t, err)
	rows, err := s.Pending(ctx, wm, 1000)
	require.NoError(t, err)
	require.Len(t, rows, 2*pages)
	for i, r := range rows {
		require.Equal(t, int64(i+1), r.Seq)
	}
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Errorf("unexpected error: %v", err)
		return false
	}
	return true
}

func TestWatermarksPendingAndPrune(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Store(t)
	n, err := s.Target(ctx, "events", 2)
	require.NoError(t, err)
	require.Equal(t, 2, n)

	_, err = s.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: "a", Cursor: "c1", Rows: []cursor.Row{row(1, 0), row(2, 1), row(3, 0), row(4, 1)}}))
	require.NoError(t, err)

	b, err := s.Backlog(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(4), b.Rows)
	require.False(t, b.Oldest.IsZero())

	// Partition 0 acknowledged through seq 3, partition 1 not at all.
	require.NoError(t, s.MarkPublished(ctx, publisherLease(t, s), map[int]int64{0: 3}))
	wm, err := s.Watermarks(ctx)
	require.NoError(t, err)
	require.Equal(t, []int64{3, 0}, wm)
	// Watermarks never go backwards.
	require.NoError(t, s.MarkPublished(ctx, publisherLease(t, s), map[int]int64{0: 1}))
	wm, err = s.Watermarks(ctx)
	require.NoError(t, err)
	require.Equal(t, []int64{3, 0}, wm)

	pending, err := s.Pending(ctx, wm, 10)
	require.NoError(t, err)
	require.Len(t, pending, 2)
	require.Equal(t, []int64{2, 4}, []int64{pending[0].Seq, pending[1].Seq})
	require.Equal(t, []byte(`{"n":2}`), pending[0].Msg.Payload)
	require.Equal(t, event.TypeStatusChanged, pending[0].Msg.Type)

	// Nothing is old enough yet; with zero retention only published rows go.
	deleted, err := s.Prune(ctx, time.Hour, 100)
	require.NoError(t, err)
	require.Zero(t, deleted)
	deleted, err = s.Prune(ctx, 0, 100)
	require.NoError(t, err)
	require.Equal(t, int64(2), deleted)
	b, err = s.Backlog(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(2), b.Rows)
}

func TestTargetMismatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Store(t)
	_, err := s.Target(ctx, "events", 3)
	require.NoError(t, err)

	n, err := s.Target(ctx, "events", 6)
	require.NoError(t, err)
	require.Equal(t, 3, n, "a grown topic keeps the recorded partition count")

	_, err = s.Target(ctx, "other", 3)
	require.ErrorIs(t, err, cursor.ErrTargetMismatch)
	require.ErrorContains(t, err, "INGESTD_KAFKA_TOPIC")
	_, err = s.Target(ctx, "events", 2)
	require.ErrorIs(t, err, cursor.ErrTargetMismatch)
}

func TestHaltKeepsCursor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Store(t)
	require.NoError(t, s.Halt(ctx, "never-ran", "auth rejected"))
	st, err := s.Source(ctx, "never-ran")
	require.NoError(t, err)
	require.Empty(t, st.Cursor)
	require.NotNil(t, st.HaltedAt)

	_, err = s.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: "src", Cursor: "c1"}))
	require.NoError(t, err)
	require.NoError(t, s.Halt(ctx, "src", "bad cursor"))
	st, err = s.Source(ctx, "src")
	require.NoError(t, err)
	require.Equal(t, "c1", st.Cursor)
	require.Equal(t, "bad cursor", st.HaltedReason)

	// The next committed page clears the halt.
	_, err = s.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: "src", PrevCursor: "c1", Cursor: "c2"}))
	require.NoError(t, err)
	st, err = s.Source(ctx, "src")
	require.NoError(t, err)
	require.Nil(t, st.HaltedAt)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     cursor.Config
		wantErr string
	}{
		{"missing url", cursor.Config{MaxConns: 8}, "INGESTD_DATABASE_URL: required"},
		{"bad url", cursor.Config{DatabaseURL: secret.New("postgres://u:hunter2@[::1"), MaxConns: 8}, "INGESTD_DATABASE_URL: not a valid"},
		{"pool too small", cursor.Config{DatabaseURL: secret.New("postgres://localhost/db"), MaxConns: 1}, "INGESTD_DATABASE_MAX_CONNS"},
		{"ok", cursor.Config{DatabaseURL: secret.New("postgres://localhost/db"), MaxConns: 8}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
			require.NotContains(t, err.Error(), "hunter2")
		})
	}
}

// TestConcurrentFirstTarget is two instances starting at the same moment on
// a fresh database: both record (or find) the same target.
func TestConcurrentFirstTarget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := pgtest.Store(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { _, errs[i] = s.Target(ctx, "events", 4) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
}

// TestCommitPageStoresEveryColumnExactly reads back rows with edge values
// through pgx's own decoding, which checks the binary COPY encoding of
// every column: times before PostgreSQL's epoch and with nanoseconds, the
// largest partition, multi-byte text, empty and binary payloads.
// TestCommitPageStoresEveryColumnExactly writes edge values and reads them
// back, in pgx's default query mode (binary rows, decoded from their wire
// bytes) and in the simple protocol (text rows, through pgx's Scan), as
// with a transaction-pooling PgBouncer.
func TestCommitPageStoresEveryColumnExactly(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"cache_statement", "simple_protocol"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			storesEveryColumnExactly(t, pgtest.StoreWithParam(t, "default_query_exec_mode", mode))
		})
	}
}

func storesEveryColumnExactly(t *testing.T, s *cursor.Store) {
	t.Helper()
	ctx := context.Background()
	const src = "yandex/пример"
	base := row(1, 0).Msg
	tests := []struct {
		name   string
		mutate func(r *cursor.Row)
	}{
		{name: "ordinary", mutate: func(*cursor.Row) {}},
		{name: "nanoseconds are cut to microseconds", mutate: func(r *cursor.Row) {
			r.Msg.Time = time.Date(2026, 11, 22, 21, 30, 1, 123456789, time.UTC)
		}},
		{name: "before 2000", mutate: func(r *cursor.Row) { r.Msg.Time = time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC) }},
		{name: "before 1970", mutate: func(r *cursor.Row) { r.Msg.Time = time.Date(1969, 7, 20, 20, 17, 40, 1000, time.UTC) }},
		{name: "not UTC", mutate: func(r *cursor.Row) {
			r.Msg.Time = time.Date(2026, 3, 1, 5, 0, 0, 0, time.FixedZone("UZT", 5*3600))
		}},
		{name: "largest partition", mutate: func(r *cursor.Row) { r.Partition = math.MaxInt32 }},
		{name: "multi-byte text", mutate: func(r *cursor.Row) {
			r.Msg.Key, r.Msg.Subject = "bts:заказ-😀", "заказ-😀"
		}},
		{name: "binary payload", mutate: func(r *cursor.Row) { r.Msg.Payload = []byte{0, 0xff, '\n', '\\', 0} }},
		{name: "empty payload", mutate: func(r *cursor.Row) { r.Msg.Payload = []byte{} }},
		{name: "large payload", mutate: func(r *cursor.Row) { r.Msg.Payload = bytes.Repeat([]byte("x"), 200_000) }},
	}
	rows := make([]cursor.Row, len(tests))
	for i, tc := range tests {
		rows[i] = cursor.Row{Msg: base}
		rows[i].Msg.ID = fmt.Sprintf("%08x-0000-4000-8000-%012d", i+1, i+1)
		rows[i].Msg.Payload = []byte(fmt.Sprintf(`{"case":%d}`, i))
		tc.mutate(&rows[i])
	}
	c, err := s.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: src, Cursor: "c1", Rows: rows}))
	require.NoError(t, err)
	require.Len(t, c.Inserted, len(tests))
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Row(ctx, c.Inserted[i].Seq)
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
// TestCommitPageStoresEveryColumnExactly), with sources and types shared
// between rows and the rest not.
func TestPendingReadsWhatWasCommitted(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"cache_statement", "simple_protocol"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := pgtest.StoreWithParam(t, "default_query_exec_mode", mode)
			_, err := s.Target(ctx, "events", 4)
			require.NoError(t, err)
			var want []cursor.Row
			for page := range 3 {
				rows := make([]cursor.Row, 50)
				for i := range rows {
					rows[i] = row(page*100+i, i%4)
				}
				rows[7].Msg.Payload = []byte{}
				p := cursor.Page{SourceID: fmt.Sprintf("yandex/acct-%d", page%2), Cursor: fmt.Sprintf("c%d", page)}
				if page > 1 {
					p.PrevCursor = "c0"
				}
				p.Rows = rows
				c, err := s.CommitPage(ctx, withLease(t, s, p))
				require.NoError(t, err)
				want = append(want, c.Inserted...)
			}
			marks, err := s.Watermarks(ctx)
			require.NoError(t, err)
			got, err := s.Pending(ctx, marks, 1000)
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
				one, err := s.Row(ctx, got[i].Seq)
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
	s := pgtest.Store(t)
	_, err := s.Target(ctx, "events", 4)
	require.NoError(t, err)
	rows := make([]cursor.Row, 500)
	for i := range rows {
		rows[i] = row(i, i%4)
	}
	_, err = s.CommitPage(ctx, withLease(t, s, cursor.Page{SourceID: "yandex/default", Cursor: "c1", Rows: rows}))
	require.NoError(t, err)
	marks, err := s.Watermarks(ctx)
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(3, func() {
		if got, err := s.Pending(ctx, marks, 1000); err != nil || len(got) != len(rows) {
			panic(fmt.Sprintf("pending: %d rows, %v", len(got), err))
		}
	})
	t.Logf("%.0f allocations to read %d rows", allocs, len(rows))
	require.Less(t, allocs, float64(len(rows)+100))
}
