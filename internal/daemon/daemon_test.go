package daemon_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/daemon"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/kafkaconn"
	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
	"github.com/ingestd/ingestd/schemas"
)

const token = "e2e-token"

type stack struct {
	cfg   daemon.Config
	store *pgtest.Stores // the test's own view of the database
	sim   *sim.Yandex
	kafka *kafkatest.Cluster
	// log is the daemon's logger; nil logs to the test.
	log *zap.Logger
}

func newStack(t *testing.T, sc sim.YandexConfig) *stack {
	t.Helper()
	return newStackOn(t, sc, kafkatest.Start(t), kafkaconn.Config{})
}

// newStackOn is newStack on the cluster kc, reached with conn.
func newStackOn(t *testing.T, sc sim.YandexConfig, kc *kafkatest.Cluster, conn kafkaconn.Config) *stack {
	t.Helper()
	sc.Token = token
	y, err := sim.NewYandex(sc)
	require.NoError(t, err)
	srv := httptest.NewServer(y)
	t.Cleanup(srv.Close)

	store := pgtest.Open(t)
	dsn := store.DSN
	cfg := daemon.DefaultConfig()
	cfg.Database.DatabaseURL = secret.New(dsn)
	cfg.Kafka.Brokers = kc.Addrs
	if len(cfg.Kafka.Brokers) == 0 {
		cfg.Kafka.Brokers = []string{kc.Addr}
	}
	cfg.Kafka.Conn = conn
	cfg.Kafka.Partitions = 4
	cfg.Kafka.IdlePoll = 50 * time.Millisecond
	cfg.Yandex.Token = secret.New(token)
	cfg.Yandex.BaseURL = srv.URL
	cfg.Yandex.PageLimit = 250
	cfg.Yandex.PollInterval = 50 * time.Millisecond
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Backoff.Initial = 10 * time.Millisecond
	cfg.Backoff.Max = 100 * time.Millisecond
	cfg.ShutdownTimeout = 10 * time.Second
	return &stack{cfg: cfg, store: store, sim: y, kafka: kc}
}

// running is a daemon started in the background.
type running struct {
	d      *daemon.Daemon
	cancel context.CancelFunc
	done   chan error
}

func (s *stack) start(t *testing.T) *running {
	t.Helper()
	return s.startWith(t, s.cfg)
}

// startWith starts a daemon on the stack with cfg.
func (s *stack) startWith(t *testing.T, cfg daemon.Config) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := s.log
	if log == nil {
		log = zaptest.NewLogger(t)
	}
	d, err := daemon.New(ctx, cfg, log)
	require.NoError(t, err)
	r := &running{d: d, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the daemon, as SIGTERM does, and waits for a clean exit.
func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop within 30s")
	}
}

func (s *stack) sourceState(t *testing.T) cursor.State {
	t.Helper()
	st, err := s.store.Cursors.Source(context.Background(), "yandex/default")
	require.NoError(t, err)
	return st
}

// requireExactlyOnce consumes the topic and checks every journal entry
// arrived exactly once, each key's events in journal order, every payload
// valid against the published JSON Schema.
func (s *stack) requireExactlyOnce(t *testing.T, n int) {
	t.Helper()
	recs := s.kafka.ReadTopic(t, s.cfg.Kafka.Topic, n, 60*time.Second)

	sch, err := schemas.CompileDeliveryEventV1()
	require.NoError(t, err)

	ids := make(map[string]bool, n)
	got := map[string][]int64{} // key -> revisions in topic order
	for _, r := range recs {
		id := r.Header("ce_id")
		require.False(t, ids[id], "duplicate event %s", id)
		ids[id] = true

		inst, err := jsonschema.UnmarshalJSON(strings.NewReader(string(r.Value)))
		require.NoError(t, err)
		require.NoError(t, sch.Validate(inst), "payload %s", r.Value)

		ev, err := event.ParsePayload(r.Value)
		require.NoError(t, err)
		require.Equal(t, id, ev.ID)
		require.Equal(t, "yandex:"+ev.OrderID, r.Key)
		got[r.Key] = append(got[r.Key], ev.Revision)
	}
	require.Len(t, ids, n, "distinct ce_id")
	require.Len(t, recs, n, "records")

	want := map[string][]int64{}
	for i := range n {
		e := s.sim.Entry(i)
		want["yandex:"+e.ClaimID] = append(want["yandex:"+e.ClaimID], e.Revision)
	}
	require.Equal(t, len(want), len(got), "keys")
	for k, revs := range want {
		require.Equal(t, revs, got[k], "per-key order of %s follows the journal", k)
	}
}

func TestEndToEndExactlyOnce(t *testing.T) {
	t.Parallel()
	const n = 12000
	s := newStack(t, sim.YandexConfig{Seed: 42, Backlog: n, Claims: 800, ReplayRate: 0.2, UnknownStatusRate: 0.01, BackwardsTimeRate: 0.05})
	r := s.start(t)

	require.Eventually(t, func() bool { return s.sourceState(t).Cursor == s.sim.CursorAfter(n) }, 60*time.Second, 20*time.Millisecond)
	s.requireExactlyOnce(t, n)
	st := s.sourceState(t)
	require.Equal(t, s.sim.LastCursor(), st.Cursor, "the stored cursor is the last one served")
	require.Equal(t, int64(n), st.EventsTotal)

	// The operational endpoints answer.
	base := "http://" + r.d.HTTPAddr()
	require.Equal(t, http.StatusOK, get(t, base+"/healthz").status)
	ready := get(t, base+"/readyz")
	require.Equal(t, http.StatusOK, ready.status, ready.body)
	metrics := get(t, base+"/metrics").body
	for _, m := range []string{
		`ingestd_events_ingested_total{source="yandex/default"} 12000`,
		`ingestd_events_published_total{source="yandex/default"} 12000`,
		"ingestd_pages_total", "ingestd_upstream_requests_total", "ingestd_outbox_backlog",
		`ingestd_cursor_age_seconds{source="yandex/default"}`, "ingestd_unknown_status_total",
	} {
		require.Contains(t, metrics, m)
	}
	r.stop(t)
}

func TestRestartResumesFromStoredCursor(t *testing.T) {
	t.Parallel()
	const n = 10000
	// Entries keep arriving for a while, so the first daemon is stopped
	// while the journal is still growing.
	s := newStack(t, sim.YandexConfig{Seed: 7, Backlog: 2000, Rate: 5000, MaxEntries: n, ReplayRate: 0.1})
	first := s.start(t)
	require.Eventually(t, func() bool { return s.sourceState(t).EventsTotal >= 3000 }, 30*time.Second, time.Millisecond)
	first.stop(t)
	stopped := s.sourceState(t).EventsTotal
	require.Less(t, stopped, int64(n), "stopped mid-stream")

	second := s.start(t)
	require.Eventually(t, func() bool { return s.sourceState(t).Cursor == s.sim.CursorAfter(n) }, 60*time.Second, 20*time.Millisecond)
	s.requireExactlyOnce(t, n)
	second.stop(t)
}

func TestStartupErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*daemon.Config)
		// atRun: New succeeds and Run fails (Kafka is checked by Run,
		// which waits for it).
		atRun   bool
		wantErr string
	}{
		{"missing topic", func(c *daemon.Config) { c.Kafka.CreateTopic = false; c.Kafka.Topic = "absent" }, true, "INGESTD_KAFKA_CREATE_TOPIC"},
		{"unmigrated database", func(c *daemon.Config) { c.Database.DatabaseURL = secret.New(pgtest.Schema(t)) }, false, "ingestd migrate"},
		{"no source", func(c *daemon.Config) { c.Yandex.Token = secret.String{} }, false, "INGESTD_YANDEX_TOKEN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, sim.YandexConfig{Seed: 1, Backlog: 10})
			tc.mutate(&s.cfg)
			d, err := daemon.New(context.Background(), s.cfg, zaptest.NewLogger(t))
			if tc.atRun {
				require.NoError(t, err)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				err = d.Run(ctx)
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

type response struct {
	status int
	body   string
}

func get(t *testing.T, url string) response {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{resp.StatusCode, string(b)}
}
