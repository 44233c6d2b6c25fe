package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ingestd/ingestd/internal/child"
	"github.com/ingestd/ingestd/internal/cli"
)

// TestRunSmoke runs the whole benchmark with tiny numbers, so the harness
// cannot rot unnoticed: every row of the table must be there with a
// positive figure, every target must have a verdict, and the correctness
// checks must pass.
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds ingestd and runs it against PostgreSQL and an in-process broker")
	}
	// The binary is built before the run's deadline starts: how long a
	// build takes depends on the build cache and the machine's load, not
	// on the benchmark.
	bin, remove, err := child.Build(t.Context(), child.IngestdPackage, buildFlags()...)
	require.NoError(t, err)
	t.Cleanup(remove)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	// The many-accounts scenario has a test of its own (TestRunAccounts).
	err = run(ctx, []string{"--ingestd-bin", bin, "--events", "3000", "--fresh-duration", "3s", "--fresh-rate", "200", "--fresh-backlog", "50", "--accounts", "0", "--paced-delay", "50ms"}, &stdout, &stderr)
	require.NoError(t, err, "stderr:\n%s\nstdout:\n%s", stderr.String(), stdout.String())
	t.Logf("took %v\n%s", time.Since(start).Round(time.Millisecond), stdout.String())
	table := stdout.String()
	require.Contains(t, table, "3,000 events, paced 50ms", "the paced catch-up runs beside today's")
	require.Regexp(t, `refused as too early \(X-Polling-Delay-Ms\)\s+[0-9,]+; 0\s+[0-9,]+; 0\s+0 refused\s+PASS`, table)

	numeric := []string{
		"catch-up, end to end (events/s)",
		"bytes sent to Kafka (per event)",
		"record batches as stored (bytes per event)",
		"time, first request to all published (s)",
		"time, first request to last page committed (s)",
		"stage: simulator answering ingestd's requests (s)",
		"stage: ingestd page commits (s)",
		"stage: ingestd Kafka writes (s)",
		"raw limit: kafka-go produce (events/s)",
		"raw limit: PostgreSQL COPY, 1 commit/page (rows/s)",
		"ratio to the lower raw limit",
		"ingestd CPU (µs/event)",
		"ingestd CPU (s per 100,000 events)",
		"ingestd peak RSS (MiB)",
		"PostgreSQL CPU, ingestd's backends (µs/event)",
		"PostgreSQL CPU, raw COPY run (µs/row)",
		"harness CPU: broker + simulator (µs/event)",
		"harness CPU: broker, raw produce run (µs/event)",
		"CPU busy during catch-up (% of all CPUs)",
		"freshness p50 (ms)",
		"freshness p99 (ms)",
		"freshness max (ms)",
	}
	for _, label := range numeric {
		cells := rowCells(t, table, label)
		v, err := strconv.ParseFloat(strings.ReplaceAll(strings.Fields(cells[0])[0], ",", ""), 64)
		require.NoError(t, err, "row %q: value %q is not a number", label, cells[0])
		require.Greater(t, v, 0.0, "row %q", label)
	}
	for _, label := range []string{
		"catch-up, end to end (events/s)", "ratio to the lower raw limit", "ingestd CPU (µs/event)",
		"ingestd peak RSS (MiB)", "freshness p99 (ms)",
	} {
		cells := rowCells(t, table, label)
		require.Contains(t, []string{"PASS", "MISS"}, cells[len(cells)-1], "row %q has a verdict", label)
	}
	require.Equal(t, "3,000 / 3,000", rowCells(t, table, "check: topic records / outbox rows")[0])
	require.Equal(t, "0 / 0", rowCells(t, table, "check: missing / duplicate events")[0])
	require.Regexp(t, `^\w+ \(default\)$`, rowCells(t, table, "Kafka compression (as stored in the topic)")[0])
	require.NotContains(t, table, "FAIL")
	require.NotContains(t, table, "many accounts")

	// A compression comparison: every codec asked for is the one stored,
	// and compresses these JSON payloads to well under the uncompressed
	// size.
	stdout.Reset()
	stderr.Reset()
	err = run(ctx, []string{"--ingestd-bin", bin, "--events", "2000", "--compare-compression", "none,zstd", "--rounds", "1"}, &stdout, &stderr)
	require.NoError(t, err, "stderr:\n%s\nstdout:\n%s", stderr.String(), stdout.String())
	table = stdout.String()
	t.Logf("%s", table)
	require.Equal(t, []string{"none", "zstd"}, rowCells(t, table, "Kafka compression (as stored in the topic)"))
	require.NotContains(t, table, "freshness p99")
	none := rowCells(t, table, "none")
	zstd := rowCells(t, table, "zstd")
	require.Equal(t, "1", none[0])
	require.Equal(t, "1.000", none[4], "sent vs none of none")
	ratio, err := strconv.ParseFloat(zstd[4], 64)
	require.NoError(t, err, "sent vs none of zstd: %q", zstd[4])
	require.Greater(t, ratio, 0.0)
	require.Less(t, ratio, 0.5)
}

// rowCells returns the cells after label on its line of the table; cells
// are separated by at least two spaces.
func rowCells(t *testing.T, table, label string) []string {
	t.Helper()
	for _, line := range strings.Split(table, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), label)
		if !ok || !strings.HasPrefix(rest, "  ") {
			continue
		}
		var cells []string
		for _, c := range strings.Split(rest, "  ") {
			if c = strings.TrimSpace(c); c != "" {
				cells = append(cells, c)
			}
		}
		require.NotEmpty(t, cells, "row %q has no value", label)
		return cells
	}
	t.Fatalf("row %q missing from the table:\n%s", label, table)
	return nil
}

func TestParseCount(t *testing.T) {
	for in, want := range map[string]int{"3000": 3000, "100k": 100_000, "1M": 1_000_000, "1_000_000": 1_000_000, " 250 ": 250} {
		got, err := parseCount(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "1.5M", "ten", "100M"} {
		_, err := parseCount(in)
		require.Error(t, err, in)
	}
}

func TestParseOptionsRejectsBadValues(t *testing.T) {
	for _, args := range [][]string{
		{"--page-limit", "0"}, {"--page-limit", "1001"}, {"--sizes", "100k,0"}, {"--fresh-rate", "0"}, {"extra"},
		{"--compression", "brotli"}, {"--compare-compression", "lz4,brotli"}, {"--compare-compression", "lz4,lz4"},
		{"--compare-compression", "all", "--compression", "lz4"}, {"--compare-compression", "all", "--sizes", "100k,1M"},
		{"--compare-compression", "all", "--rounds", "0"},
		{"--accounts", "-1"}, {"--accounts-backlog", "0"}, {"--accounts-instances", "0"}, {"--accounts-instances", "1,1"},
		{"--accounts-instances", "1,x"}, {"--accounts-rate", "0"}, {"--accounts-idle", "-1s"},
	} {
		_, err := parseOptions(args, &bytes.Buffer{})
		var ue *cli.UsageError
		require.ErrorAs(t, err, &ue, "%v", args)
	}
	o, err := parseOptions([]string{"--sizes", "100k,1M", "--page-limit", "250"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, []int{100_000, 1_000_000}, o.sizes)
	require.Equal(t, 250, o.pageLimit)
	require.Empty(t, o.compression)
	require.Empty(t, o.compare)

	require.Equal(t, accountsOptions{quiet: 200, rate: 1, backlog: 200_000, instances: []int{1, 3}, steady: 10 * time.Second, idle: 15 * time.Second}, o.accounts)
	o, err = parseOptions([]string{"--accounts", "0", "--accounts-instances", " 3, 1", "--accounts-backlog", "1M"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 0, o.accounts.quiet)
	require.Equal(t, []int{3, 1}, o.accounts.instances)
	require.Equal(t, 1_000_000, o.accounts.backlog)

	o, err = parseOptions([]string{"--compression", "zstd"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, "zstd", o.compression)
	o, err = parseOptions([]string{"--compare-compression", "all", "--events", "200k", "--rounds", "3"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, []string{"none", "lz4", "zstd", "snappy", "gzip"}, o.compare)
	require.Equal(t, []int{200_000}, o.sizes)
	require.Equal(t, 3, o.rounds)
	o, err = parseOptions([]string{"--compare-compression", " gzip, none "}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, []string{"gzip", "none"}, o.compare)
}

func TestCompareOrder(t *testing.T) {
	require.Equal(t, []string{"a", "b", "c"}, compareOrder([]string{"a", "b", "c"}, 1))
	require.Equal(t, []string{"a", "b", "c", "c", "b", "a", "a", "b", "c"}, compareOrder([]string{"a", "b", "c"}, 3))
	// Over an even number of rounds every codec's mean position is the same.
	order := compareOrder(codecs, 4)
	pos := map[string]int{}
	for i, c := range order {
		pos[c] += i
	}
	for _, c := range codecs {
		require.Equal(t, pos[codecs[0]], pos[c], c)
	}
}

func TestCodecNames(t *testing.T) {
	for i, want := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		require.Equal(t, want, codecName(uint8(i)))
		_, ok := kafkaCodecs[want]
		require.True(t, ok, want)
	}
	require.Equal(t, "codec 7", codecName(7))
	var h batchCodecs
	require.Equal(t, "", h.name())
	h.OnFetchBatchRead(kgo.BrokerMetadata{}, "t", 0, kgo.FetchBatchMetrics{CompressionType: 3})
	h.OnFetchBatchRead(kgo.BrokerMetadata{}, "t", 1, kgo.FetchBatchMetrics{CompressionType: 3})
	require.Equal(t, "lz4", h.name())
	h.OnFetchBatchRead(kgo.BrokerMetadata{}, "t", 2, kgo.FetchBatchMetrics{CompressionType: 0})
	require.Equal(t, "lz4+none", h.name())
}

func TestSummarizeCompression(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	runs := []catchUpResult{
		{Events: 1000, Compression: "none", EventsPerSec: 40_000, IngestdCPUUsPerEvent: 10, KafkaBytesSentPerEvent: f(1000), StoredBytesPerEvent: 990, PeakRSSMiB: 40, RawKafkaPerSec: 100_000},
		{Events: 1000, Compression: "lz4", EventsPerSec: 44_000, IngestdCPUUsPerEvent: 11, KafkaBytesSentPerEvent: f(200), StoredBytesPerEvent: 190, PeakRSSMiB: 41, RawKafkaPerSec: 120_000},
		{Events: 1000, Compression: "lz4", EventsPerSec: 46_000, IngestdCPUUsPerEvent: 12, KafkaBytesSentPerEvent: f(210), StoredBytesPerEvent: 200, PeakRSSMiB: 43, RawKafkaPerSec: 140_000},
		{Events: 1000, Compression: "none", EventsPerSec: 42_000, IngestdCPUUsPerEvent: 9, KafkaBytesSentPerEvent: f(1000), StoredBytesPerEvent: 990, PeakRSSMiB: 42, RawKafkaPerSec: 110_000},
		{Events: 1000, Compression: "gzip", EventsPerSec: 30_000, IngestdCPUUsPerEvent: 20, StoredBytesPerEvent: 100, PeakRSSMiB: 40, RawKafkaPerSec: 50_000},
	}
	sum := summarize(runs, []string{"none", "lz4", "zstd", "gzip"})
	require.Len(t, sum, 3, "zstd did not run")
	require.Equal(t, "none", sum[0].Codec)
	require.Equal(t, 2, sum[0].Runs)
	require.Equal(t, stat{Mean: 41_000, Min: 40_000, Max: 42_000}, sum[0].EventsPerSec)
	require.Equal(t, stat{Mean: 9.5, Min: 9, Max: 10}, sum[0].IngestdCPUUsPerEvent)
	require.InDelta(t, 1.0, *sum[0].SentToNone, 1e-9)
	require.Equal(t, "lz4", sum[1].Codec)
	require.Equal(t, stat{Mean: 205, Min: 200, Max: 210}, *sum[1].KafkaBytesSentPerEvent)
	require.InDelta(t, 0.205, *sum[1].SentToNone, 1e-9)
	require.Equal(t, stat{Mean: 195, Min: 190, Max: 200}, sum[1].StoredBytesPerEvent)
	require.Nil(t, sum[2].KafkaBytesSentPerEvent, "gzip's run lacks the counter")
	require.Nil(t, sum[2].SentToNone)

	rep := &report{Config: config{PageLimit: 1000, Rounds: 2}, CatchUp: runs, Compression: sum}
	table := rep.compressionTable()
	require.Contains(t, table, "1,000 events per catch-up (page limit 1000), 2 runs per codec")
	require.Equal(t, []string{"2", "41,000 (40,000–42,000)", "9.50 (9.00–10.00)", "1000.0 (1000.0–1000.0)", "1.000", "990.0", "41.0", "105,000 (100,000–110,000)"},
		rowCells(t, table, "none"))
	require.Equal(t, []string{"2", "45,000 (44,000–46,000)", "11.50 (11.00–12.00)", "205.0 (200.0–210.0)", "0.205", "195.0", "42.0", "130,000 (120,000–140,000)"},
		rowCells(t, table, "lz4"))
	require.Equal(t, "not exported", rowCells(t, table, "gzip")[3])
	require.Equal(t, "–", rowCells(t, table, "gzip")[4])
}

func TestFormatting(t *testing.T) {
	require.Equal(t, "0", fmtInt(0))
	require.Equal(t, "999", fmtInt(999.4))
	require.Equal(t, "1,000", fmtInt(999.5))
	require.Equal(t, "1,234,567", fmtInt(1_234_567))
	require.Equal(t, "-12,345", fmtInt(-12_345))
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	require.Equal(t, time.Duration(5), percentile(d, 0.5))
	require.Equal(t, time.Duration(10), percentile(d, 0.99))
	require.Equal(t, time.Duration(1), percentile(d[:1], 0.99))
}

func TestScrapeStages(t *testing.T) {
	const histograms = `# HELP ingestd_page_commit_seconds Time to commit one page.
# TYPE ingestd_page_commit_seconds histogram
ingestd_page_commit_seconds_bucket{le="0.1"} 3
ingestd_page_commit_seconds_sum 1.5
ingestd_page_commit_seconds_count 3
ingestd_publish_write_seconds_sum{partition="0"} 0.25
ingestd_publish_write_seconds_sum{partition="1", note="a b"} 0.5
ingestd_publish_write_seconds_count{partition="0"} 2
ingestd_publish_write_seconds_count{partition="1", note="a b"} 4
`
	const counters = `# TYPE go_memstats_mallocs_total counter
go_memstats_mallocs_total 1.234567e+06
go_memstats_alloc_bytes_total 8.5e+08
ingestd_publish_outbox_read_rows_total 3000
ingestd_kafka_bytes_sent_total 2.5e+06
`
	f := func(v float64) *float64 { return &v }
	tests := []struct {
		name    string
		body    string
		want    stageTimes
		wantErr string
	}{
		{name: "everything", body: histograms + counters, want: stageTimes{CommitSeconds: 1.5, Commits: 3, WriteSeconds: 0.75, Writes: 6,
			Mallocs: f(1_234_567), AllocBytes: f(850_000_000), OutboxReadRows: f(3000), KafkaBytesSent: f(2_500_000)}},
		{name: "an older binary without the counters", body: histograms,
			want: stageTimes{CommitSeconds: 1.5, Commits: 3, WriteSeconds: 0.75, Writes: 6}},
		{name: "no write histogram", body: strings.Split(histograms, "ingestd_publish_write")[0] + counters,
			wantErr: "ingestd_publish_write_seconds_sum not exported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			st, err := scrapeStages(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, *st)
		})
	}
}

func TestWithParams(t *testing.T) {
	require.Equal(t, "x=1 search_path=s", withParams("x=1", map[string]string{"search_path": "s"}))
	require.Equal(t, "postgres://u@h/db?application_name=a&search_path=s&sslmode=disable",
		withParams("postgres://u@h/db?sslmode=disable", map[string]string{"search_path": "s", "application_name": "a"}))
}
