package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// freeAddr returns a loopback address with a port that was free a moment
// ago. ingestd's /metrics must be on a known port for the harness to read
// the stage timings from it; asking the kernel for a free port and handing
// it over leaves a tiny window in which another process could take it, in
// which case ingestd fails to start and the run reports that.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port for ingestd's metrics: %w", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("find a free port for ingestd's metrics: %w", err)
	}
	return addr, nil
}

// stageTimes are ingestd's own cumulative stage timings, from the
// histograms it exports on /metrics.
type stageTimes struct {
	CommitSeconds float64 `json:"page_commit_seconds"`
	Commits       float64 `json:"page_commits"`
	WriteSeconds  float64 `json:"kafka_write_seconds"`
	Writes        float64 `json:"kafka_writes"`
	// The counters below are nil when the binary does not export them (an
	// older ingestd measured with --ingestd-bin).
	//
	// Mallocs is go_memstats_mallocs_total: every heap allocation of the
	// process since it started, start-up included (a few thousand).
	Mallocs *float64 `json:"heap_allocations,omitempty"`
	// AllocBytes is go_memstats_alloc_bytes_total, the bytes of those
	// allocations.
	AllocBytes *float64 `json:"heap_allocated_bytes,omitempty"`
	// OutboxReadRows is ingestd_publish_outbox_read_rows_total: rows the
	// publisher read back instead of taking them from memory.
	OutboxReadRows *float64 `json:"outbox_read_rows,omitempty"`
	// KafkaBytesSent is ingestd_kafka_bytes_sent_total: bytes the producer
	// wrote to Kafka connections since the process started.
	KafkaBytesSent *float64 `json:"kafka_bytes_sent_total,omitempty"`
}

// bytesSentMetric counts the bytes ingestd's producer wrote to Kafka
// connections.
const bytesSentMetric = "ingestd_kafka_bytes_sent_total"

// scrapeStages reads ingestd_page_commit_seconds and
// ingestd_publish_write_seconds (required), and
// ingestd_publish_outbox_read_rows_total, ingestd_kafka_bytes_sent_total,
// go_memstats_mallocs_total and go_memstats_alloc_bytes_total (when
// exported) from ingestd's /metrics. The histograms' _sum and _count are
// added up over all label sets.
func scrapeStages(ctx context.Context, addr string) (*stageTimes, error) {
	vals, err := scrapeMetrics(ctx, addr)
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"ingestd_page_commit_seconds_sum", "ingestd_page_commit_seconds_count", "ingestd_publish_write_seconds_sum", "ingestd_publish_write_seconds_count"} {
		if _, ok := vals[name]; !ok {
			return nil, fmt.Errorf("read ingestd's metrics: %s not exported", name)
		}
	}
	opt := func(name string) *float64 {
		if v, ok := vals[name]; ok {
			return &v
		}
		return nil
	}
	return &stageTimes{
		CommitSeconds:  vals["ingestd_page_commit_seconds_sum"],
		Commits:        vals["ingestd_page_commit_seconds_count"],
		WriteSeconds:   vals["ingestd_publish_write_seconds_sum"],
		Writes:         vals["ingestd_publish_write_seconds_count"],
		Mallocs:        opt("go_memstats_mallocs_total"),
		AllocBytes:     opt("go_memstats_alloc_bytes_total"),
		OutboxReadRows: opt("ingestd_publish_outbox_read_rows_total"),
		KafkaBytesSent: opt(bytesSentMetric),
	}, nil
}

// scrapeMetrics reads every sample of ingestd's /metrics, adding up the
// values of a name over all its label sets.
func scrapeMetrics(ctx context.Context, addr string) (map[string]float64, error) {
	all, err := scrapeSeries(ctx, addr)
	if err != nil {
		return nil, err
	}
	vals := map[string]float64{}
	for s, v := range all {
		name, _, _ := strings.Cut(s, "{")
		vals[name] += v
	}
	return vals, nil
}

// scrapeSeries reads every sample of ingestd's /metrics, by series: the
// name with its labels exactly as exported, e.g.
// ingestd_lease_holder{lease="publisher"}.
func scrapeSeries(ctx context.Context, addr string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("read ingestd's metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read ingestd's metrics: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read ingestd's metrics: %s", resp.Status)
	}
	vals := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if strings.IndexByte(name, '{') >= 0 {
			// Labels may contain spaces; the value follows the closing brace.
			j := strings.LastIndexByte(line, '}')
			if j < 0 {
				continue
			}
			name, rest, ok = line[:j+1], strings.TrimSpace(line[j+1:]), true
		}
		fields := strings.Fields(rest)
		if !ok || len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("read ingestd's metrics: %s: %w", name, err)
		}
		vals[name] += v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read ingestd's metrics: %w", err)
	}
	return vals, nil
}
