package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ingestd/ingestd/internal/child"
	"github.com/ingestd/ingestd/internal/pg"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
	"github.com/ingestd/ingestd/internal/storage"
)

// monitorEvery is how often the harness checks whether the catch-up is
// complete. Each check is a primary-key lookup (and, once the cursor is at
// the end, a count of unpublished rows), cheap next to ingestd's own work;
// the end is known to within this interval.
const monitorEvery = 20 * time.Millisecond

// pgSampleEvery is how often the CPU of ingestd's PostgreSQL backends is
// sampled, in monitor ticks.
const pgSampleEvery = 10

// catchUpResult is one catch-up run and the raw limits measured after it.
type catchUpResult struct {
	Events    int `json:"events"`
	PageLimit int `json:"page_limit"`
	// PollingDelayMs is the X-Polling-Delay-Ms the simulator asked for
	// (0: none, today's catch-up); TooEarly counts requests it refused as
	// sooner than asked, which must stay 0.
	PollingDelayMs float64 `json:"polling_delay_ms"`
	TooEarly       int64   `json:"too_early_requests"`
	// Seconds runs from ingestd's first upstream request to the moment
	// every event was committed, acknowledged by Kafka and marked
	// published; IngestSeconds ends when the last page was committed.
	Seconds       float64 `json:"seconds"`
	IngestSeconds float64 `json:"ingest_seconds"`
	EventsPerSec  float64 `json:"events_per_sec"`
	Requests      int64   `json:"upstream_requests"`

	RawKafkaPerSec float64 `json:"raw_kafka_events_per_sec"`
	RawPGPerSec    float64 `json:"raw_postgres_rows_per_sec"`
	// Ratio is EventsPerSec over the lower raw limit, named by Lower.
	Ratio float64 `json:"ratio_to_lower_raw_limit"`
	Lower string  `json:"lower_raw_limit"`

	// IngestdCPUSeconds is the child's whole-life user+system CPU (start-up
	// and shutdown included), from its rusage after exit.
	IngestdCPUSeconds    float64 `json:"ingestd_cpu_seconds"`
	IngestdCPUUsPerEvent float64 `json:"ingestd_cpu_us_per_event"`
	IngestdCPUPer100k    float64 `json:"ingestd_cpu_seconds_per_100k_events"`
	// IngestdWindowCPUUsPerEvent counts only the catch-up window, from
	// /proc (10ms resolution).
	IngestdWindowCPUUsPerEvent float64 `json:"ingestd_window_cpu_us_per_event"`
	// PeakRSSMiB is ingestd's VmHWM at the end of the catch-up.
	// RusageMaxRSSMiB is ru_maxrss after exit, which also counts the
	// harness's peak at the time of exec (see procPeakRSS).
	PeakRSSMiB      float64 `json:"ingestd_peak_rss_mib"`
	RusageMaxRSSMiB float64 `json:"ingestd_rusage_maxrss_mib"`

	// PostgreSQL CPU of the backends serving ingestd (and of the one backend
	// of the raw run); nil when the server's processes cannot be seen.
	PGCPUUsPerEvent  *float64 `json:"postgres_cpu_us_per_event,omitempty"`
	PGRawCPUUsPerRow *float64 `json:"postgres_raw_cpu_us_per_row,omitempty"`
	// Harness CPU: the in-process broker and simulator (and the harness's
	// monitoring) during the catch-up, and the broker alone (plus the
	// kafka-go producer) during the raw produce run.
	HarnessCPUUsPerEvent         float64 `json:"harness_cpu_us_per_event"`
	HarnessRawKafkaCPUUsPerEvent float64 `json:"harness_raw_produce_cpu_us_per_event"`
	// CPUBusyPercent is the CPU of ingestd, its PostgreSQL backends and the
	// harness during the catch-up, as a share of all CPUs of the machine.
	CPUBusyPercent float64 `json:"cpu_busy_percent"`

	TopicRecords int64 `json:"topic_records"`
	OutboxRows   int64 `json:"outbox_rows"`
	// Stage timings: the simulator's time serving journal requests (server
	// side, summed), and ingestd's own page-commit and Kafka-write time
	// from its /metrics (nil when it does not export them).
	UpstreamServeSeconds float64     `json:"upstream_serve_seconds"`
	Stages               *stageTimes `json:"ingestd_stages,omitempty"`
	// Sizes of the sampled messages (key, value and headers) and outbox
	// rows (pg_column_size of the whole row), on average.
	AvgMessageBytes float64 `json:"avg_message_bytes"`
	AvgRowBytes     float64 `json:"avg_outbox_row_bytes"`

	// Compression is the INGESTD_KAFKA_COMPRESSION the run set; empty when
	// it left the binary's default. StoredCodec is the codec of the record
	// batches read back from the topic ("none" when uncompressed), which
	// the raw produce run uses too.
	Compression string `json:"compression,omitempty"`
	StoredCodec string `json:"stored_codec"`
	// KafkaBytesSent is the growth of ingestd's
	// ingestd_kafka_bytes_sent_total over the catch-up: bytes written to
	// Kafka connections after compression, request framing and metadata
	// requests included; nil when the binary does not export it.
	KafkaBytesSent         *float64 `json:"kafka_bytes_sent,omitempty"`
	KafkaBytesSentPerEvent *float64 `json:"kafka_bytes_sent_per_event,omitempty"`
	// StoredBytes is the size of the topic's partitions as the broker
	// reports it (DescribeLogDirs): the record batches as ingestd sent them,
	// since kfake stores them without recompressing.
	StoredBytes         int64   `json:"stored_bytes"`
	StoredBytesPerEvent float64 `json:"stored_bytes_per_event"`
}

// catchUp drains a backlog of n journal entries with the real ingestd and
// then measures the raw limits of kafka-go and PostgreSQL with the same
// messages and rows.
// codec is the run's INGESTD_KAFKA_COMPRESSION ("" leaves it unset).
func (b *bench) catchUp(ctx context.Context, n int, codec string, pollingDelay time.Duration) (r catchUpResult, err error) {
	ctx, cancel := context.WithTimeout(ctx, b.o.timeout)
	defer cancel()
	r = catchUpResult{Events: n, PageLimit: b.o.pageLimit, Compression: codec, PollingDelayMs: float64(pollingDelay.Milliseconds())}

	sch, err := createSchema(ctx, b.o.databaseURL, "bench_catchup")
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, sch.drop()) }()
	scratch, err := createSchema(ctx, b.o.databaseURL, "bench_raw")
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, scratch.drop()) }()
	app := "ingestd-bench-" + sch.name
	ingestdDSN := sch.dsn(app)
	monitorDSN := sch.dsn("ingestd-bench-monitor")
	rawDSN := scratch.dsn("ingestd-bench-raw")
	if err := migrate(ctx, b.bin, ingestdDSN); err != nil {
		return r, err
	}
	// The raw run's scratch schema gets the very same DDL, indexes included.
	if err := migrate(ctx, b.bin, rawDSN); err != nil {
		return r, err
	}

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(b.o.partitions), topicName, rawTopic))
	if err != nil {
		return r, fmt.Errorf("start the in-process broker: %w", err)
	}
	defer cluster.Close()
	broker := cluster.ListenAddrs()[0]

	// With pollingDelay, every journal answer asks for it
	// (X-Polling-Delay-Ms) and a request that comes sooner is refused, as
	// Yandex may.
	y, err := sim.NewYandex(sim.YandexConfig{Seed: b.o.seed, Token: benchToken, Backlog: n, Claims: b.o.claims, PollingDelay: pollingDelay})
	if err != nil {
		return r, fmt.Errorf("configure the simulator: %w", err)
	}
	first := newFirstRequest(y)
	simAddr, stopSim, err := serveSim(ctx, first)
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, stopSim()) }()

	store, err := storage.Open(ctx, pg.Config{DatabaseURL: secret.New(monitorDSN), MaxConns: 2})
	if err != nil {
		return r, fmt.Errorf("open the outbox for monitoring: %w", err)
	}
	defer store.Close()
	mon, err := pgx.Connect(ctx, monitorDSN)
	if err != nil {
		return r, fmt.Errorf("connect for monitoring: %w", err)
	}
	defer func() { _ = mon.Close(context.WithoutCancel(ctx)) }()
	pgLocal := pgIsLocal(ingestdDSN)
	pgCPU := newBackendCPU(mon, app, pgLocal)
	b.checkpoint(ctx, mon)

	httpAddr, err := freeAddr()
	if err != nil {
		return r, err
	}
	c, err := startIngestd(b.bin, b.childEnv(ingestdDSN, broker, simAddr, httpAddr, codec))
	if err != nil {
		return r, err
	}
	defer c.Kill()

	// The clock starts at ingestd's first upstream request, so process
	// start-up (connecting, checking the schema and the topic) is not
	// counted against throughput.
	if err := waitFirst(ctx, c, first); err != nil {
		return r, err
	}
	start := first.time()
	harness0 := selfCPU()
	child0, childErr := procCPU(c.Pid())
	// Before the first upstream request nothing was committed, so whatever
	// ingestd has sent to Kafka so far is start-up (metadata, reading back
	// the empty partitions); the catch-up's bytes are counted from here.
	sent0, sentErr := scrapeMetrics(ctx, httpAddr)
	if sentErr != nil {
		b.logf("no bytes-sent baseline, counting from 0 (start-up included): %v", sentErr)
	}
	if err := pgCPU.sample(ctx); err != nil {
		return r, err
	}
	pgCPU.markBaseline()

	want := y.CursorAfter(n)
	var ingestedAt, publishedAt time.Time
	tick := time.NewTicker(monitorEvery)
	defer tick.Stop()
	for i := 1; publishedAt.IsZero(); i++ {
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("waiting for the catch-up to finish (%d upstream requests so far): %w", y.Requests(), context.Cause(ctx))
		case <-c.Done():
			return r, exitErr(c)
		case <-tick.C:
		}
		if i%pgSampleEvery == 0 {
			if err := pgCPU.sample(ctx); err != nil {
				return r, err
			}
		}
		if ingestedAt.IsZero() {
			st, err := store.Cursors.Source(ctx, sourceID)
			if err != nil {
				return r, err
			}
			if st.HaltedAt != nil {
				return r, fmt.Errorf("ingestd halted the source: %s", st.HaltedReason)
			}
			if st.Cursor != want {
				continue
			}
			ingestedAt = time.Now()
		}
		bl, err := store.Outbox.Backlog(ctx)
		if err != nil {
			return r, err
		}
		if bl.Rows == 0 {
			publishedAt = time.Now()
		}
	}
	harnessCPU := selfCPU() - harness0
	child1, childErr1 := procCPU(c.Pid())
	if err := pgCPU.sample(ctx); err != nil {
		return r, err
	}
	peak, err := procPeakRSS(c.Pid())
	if err != nil {
		return r, err
	}
	r.UpstreamServeSeconds = first.serveTime().Seconds()
	if r.Stages, err = scrapeStages(ctx, httpAddr); err != nil {
		b.logf("no stage timings: %v", err)
	}
	if r.Stages != nil && r.Stages.KafkaBytesSent != nil {
		v := *r.Stages.KafkaBytesSent - sent0[bytesSentMetric]
		r.KafkaBytesSent = &v
		per := v / float64(n)
		r.KafkaBytesSentPerEvent = &per
	}
	ru, err := stop(ctx, c)
	if err != nil {
		return r, err
	}
	r.Requests = y.Requests()
	r.TooEarly = y.TooEarly()

	// Correctness: every event exactly once in the outbox and in the topic.
	if err := mon.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&r.OutboxRows); err != nil {
		return r, fmt.Errorf("count outbox rows: %w", err)
	}
	if r.TopicRecords, err = topicRecords(ctx, broker, topicName, b.o.partitions); err != nil {
		return r, err
	}
	if r.StoredBytes, err = topicBytes(ctx, broker, topicName, b.o.partitions); err != nil {
		return r, err
	}
	r.StoredBytesPerEvent = float64(r.StoredBytes) / float64(n)

	elapsed := publishedAt.Sub(start)
	r.Seconds = elapsed.Seconds()
	r.IngestSeconds = ingestedAt.Sub(start).Seconds()
	r.EventsPerSec = float64(n) / elapsed.Seconds()
	ingestdCPU := rusageCPU(ru)
	r.IngestdCPUSeconds = ingestdCPU.Seconds()
	r.IngestdCPUUsPerEvent = usPer(ingestdCPU, n)
	r.IngestdCPUPer100k = ingestdCPU.Seconds() * 100_000 / float64(n)
	windowCPU := child1 - child0
	if childErr == nil && childErr1 == nil {
		r.IngestdWindowCPUUsPerEvent = usPer(windowCPU, n)
	}
	r.PeakRSSMiB = float64(peak) / (1 << 20)
	r.RusageMaxRSSMiB = float64(ru.Maxrss) / 1024 // Linux reports KiB
	busy := windowCPU + harnessCPU
	if used, ok := pgCPU.used(); ok {
		v := usPer(used, n)
		r.PGCPUUsPerEvent = &v
		busy += used
	}
	r.HarnessCPUUsPerEvent = usPer(harnessCPU, n)
	r.CPUBusyPercent = 100 * busy.Seconds() / (elapsed.Seconds() * float64(numCPU()))

	// The raw limits, in the same run, on the same broker and server, with
	// the messages ingestd produced and the rows it stored.
	b.logf("raw limits: kafka-go producing %d of ingestd's messages, PostgreSQL taking %d of its rows", n, n)
	sample, stored, err := sampleRecords(ctx, broker, topicName, min(n, rawBatch))
	if err != nil {
		return r, err
	}
	r.AvgMessageBytes = avgMessageBytes(sample)
	r.StoredCodec = stored
	rawCodec, ok := kafkaCodecs[stored]
	if !ok {
		return r, fmt.Errorf("the topic's record batches are compressed with %s, not one codec of %s", stored, strings.Join(codecs, ", "))
	}
	if codec != "" && stored != codec {
		return r, fmt.Errorf("asked ingestd for INGESTD_KAFKA_COMPRESSION=%s, but its record batches are compressed with %s: does the binary support the setting?", codec, stored)
	}
	// The broker keeps every record in this process's memory. Deleting
	// ingestd's topic (and collecting the garbage) gives the raw produce run
	// the same empty broker the catch-up started with, rather than one
	// carrying a heap of n records that the garbage collector must scan.
	if err := deleteTopic(ctx, broker, topicName); err != nil {
		return r, err
	}
	runtime.GC()
	kd, kcpu, err := rawKafka(ctx, broker, sample, n, rawCodec)
	if err != nil {
		return r, err
	}
	r.RawKafkaPerSec = float64(n) / kd.Seconds()
	r.HarnessRawKafkaCPUUsPerEvent = usPer(kcpu, n)

	rows, err := sampleOutbox(ctx, mon, min(n, rawBatch))
	if err != nil {
		return r, err
	}
	r.AvgRowBytes = rows.avgBytes
	b.checkpoint(ctx, mon)
	pd, pcpu, pcpuOK, err := rawPostgres(ctx, rawDSN, rows, n, b.o.pageLimit, y.CursorAfter, pgLocal)
	if err != nil {
		return r, err
	}
	r.RawPGPerSec = float64(n) / pd.Seconds()
	if pcpuOK {
		v := usPer(pcpu, n)
		r.PGRawCPUUsPerRow = &v
	}

	r.Lower, r.Ratio = "kafka-go", r.EventsPerSec/r.RawKafkaPerSec
	if r.RawPGPerSec < r.RawKafkaPerSec {
		r.Lower, r.Ratio = "PostgreSQL", r.EventsPerSec/r.RawPGPerSec
	}
	return r, nil
}

// checkpoint asks PostgreSQL for a checkpoint before a timed write phase,
// so that both the catch-up and the raw run start with no dirty pages and
// little WAL left over from earlier work (a checkpoint triggered by max_wal_size
// in the middle of one phase but not the other would skew the comparison).
// It needs superuser or pg_checkpoint; without them the phases run as they
// are, and the progress log says so.
func (b *bench) checkpoint(ctx context.Context, conn *pgx.Conn) {
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		b.logf("no CHECKPOINT before a timed phase (%v); write figures may vary more", err)
	}
}

// startupLimit bounds how long ingestd may take from exec to its first
// upstream request.
const startupLimit = time.Minute

// waitFirst waits for ingestd's first upstream request.
func waitFirst(ctx context.Context, c *child.Process, first *firstRequest) error {
	t := time.NewTimer(startupLimit)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("waiting for ingestd's first request: %w", context.Cause(ctx))
	case <-c.Done():
		return exitErr(c)
	case <-t.C:
		return fmt.Errorf("ingestd sent no upstream request within %v of starting; its log ends with:\n%s", startupLimit, c.Log())
	case <-first.seen:
		return nil
	}
}

// childEnv is the complete ingestd configuration of a benchmark run.
// codec sets INGESTD_KAFKA_COMPRESSION; "" leaves the binary's default.
func (b *bench) childEnv(dsn, broker, simAddr, httpAddr, codec string) []string {
	env := []string{
		"INGESTD_DATABASE_URL=" + dsn,
		"INGESTD_KAFKA_BROKERS=" + broker,
		"INGESTD_KAFKA_TOPIC=" + topicName,
		"INGESTD_KAFKA_PARTITIONS=" + strconv.Itoa(b.o.partitions),
		"INGESTD_YANDEX_TOKEN=" + benchToken,
		"INGESTD_YANDEX_BASE_URL=http://" + simAddr,
		"INGESTD_YANDEX_ACCOUNT=" + account,
		"INGESTD_YANDEX_PAGE_LIMIT=" + strconv.Itoa(b.o.pageLimit),
		"INGESTD_YANDEX_POLL_INTERVAL=" + b.o.pollInterval.String(),
		"INGESTD_HTTP_ADDR=" + httpAddr,
		"INGESTD_LOG_LEVEL=warn",
	}
	if codec != "" {
		env = append(env, "INGESTD_KAFKA_COMPRESSION="+codec)
	}
	return env
}

// usPer is d in microseconds per item.
func usPer(d time.Duration, n int) float64 {
	return float64(d.Microseconds()) / float64(n)
}

// firstRequest wraps the simulator to record when ingestd's first request
// arrived, and how long the simulator spent answering requests in all.
type firstRequest struct {
	h     http.Handler
	once  sync.Once
	seen  chan struct{} // closed at the first request
	at    time.Time     // written before seen is closed
	serve atomic.Int64  // nanoseconds spent in the simulator's handler
}

func newFirstRequest(h http.Handler) *firstRequest {
	return &firstRequest{h: h, seen: make(chan struct{})}
}

func (f *firstRequest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t0 := time.Now()
	f.once.Do(func() {
		f.at = t0
		close(f.seen)
	})
	f.h.ServeHTTP(w, r)
	f.serve.Add(int64(time.Since(t0)))
}

// serveTime is the simulator's total time answering requests so far.
func (f *firstRequest) serveTime() time.Duration { return time.Duration(f.serve.Load()) }

// time is when the first request arrived; call it after seen is closed.
func (f *firstRequest) time() time.Time { return f.at }

// serveSim serves h on a free loopback port until the returned stop is
// called (or ctx ends), and stop waits for the server to finish.
func serveSim(ctx context.Context, h http.Handler) (addr string, stop func() error, err error) {
	sctx, cancel := context.WithCancel(ctx)
	addr, wait, err := sim.ListenAndServe(sctx, "127.0.0.1:0", h)
	if err != nil {
		cancel()
		return "", nil, fmt.Errorf("serve the simulator: %w", err)
	}
	return addr, func() error {
		cancel()
		if err := wait(); err != nil {
			return fmt.Errorf("stop the simulator: %w", err)
		}
		return nil
	}, nil
}
