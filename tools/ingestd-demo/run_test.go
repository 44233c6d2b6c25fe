package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/cli"
	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/pgtest"
)

// syncBuffer is a goroutine-safe bytes.Buffer for the demo's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// TestDemoShowsEventsToAnIndependentConsumer runs the demo as `make demo`
// does (on other ports and its own schema) and reads its topic with a
// separate Kafka client while it runs.
func TestDemoShowsEventsToAnIndependentConsumer(t *testing.T) {
	t.Setenv("INGESTD_DATABASE_URL", pgtest.BaseURL())
	schema := fmt.Sprintf("demo_test_%d", time.Now().UnixNano())
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), pgtest.BaseURL())
		require.NoError(t, err)
		defer func() { _ = conn.Close(context.Background()) }()
		_, err = conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
		require.NoError(t, err)
	})

	port := freePort(t)
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(context.Background(), []string{
			"-duration", "8s", "-kafka-port", fmt.Sprint(port), "-http-addr", "127.0.0.1:0",
			"-schema", schema, "-backlog", "3000", "-sample-every", "1s",
		}, &out, &errOut)
	}()

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "Ctrl-C stops the demo") }, 30*time.Second, 20*time.Millisecond)
	recs := kafkatest.ReadTopic(t, addr, "delivery.status-changes", 3000, 20*time.Second)
	require.GreaterOrEqual(t, len(recs), 3000, "an independent client reads the demo's events while it runs")
	require.NotEmpty(t, recs[0].Header("ce_id"))

	// Every operational metric is exported after the demo ran a while.
	m := regexp.MustCompile(`http://(\S+)/metrics`).FindStringSubmatch(out.String())
	require.NotNil(t, m, "the demo prints its metrics address")
	resp, err := http.Get("http://" + m[1] + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	_ = resp.Body.Close()
	for _, name := range []string{
		`ingestd_events_ingested_total{source="yandex/shop-a"}`,
		`ingestd_events_published_total{source="yandex/shop-a"}`,
		`ingestd_upstream_requests_total{outcome="ok",source="yandex/shop-a"}`,
		`ingestd_upstream_backoff_seconds{source="yandex/shop-a"}`,
		`ingestd_cursor_age_seconds{source="yandex/shop-a"}`,
		"ingestd_e2e_lag_seconds_bucket",
		"ingestd_outbox_backlog",
		"ingestd_outbox_oldest_unpublished_age_seconds",
		`ingestd_lease_holder{lease="publisher"} 1`,
		`ingestd_lease_holder{lease="source:yandex/shop-a"} 1`,
		`ingestd_lease_epoch{lease="publisher"}`,
		`ingestd_lease_takeovers_total{lease="publisher"}`,
		`ingestd_source_halted{source="yandex/shop-a"} 0`,
		`ingestd_unknown_status_total{provider_status=`,
		`ingestd_polling_paused{source="yandex/shop-a"}`,
		// The sources file's other accounts run beside it.
		`ingestd_events_ingested_total{source="yandex/shop-b"}`,
		`ingestd_lease_holder{lease="source:yandex/shop-b"} 1`,
		`ingestd_upstream_requests_total{outcome="ok",source="bts/tashkent"}`,
		`ingestd_sources_held 2`,
	} {
		require.Contains(t, string(body), name)
	}

	// BTS calls the webhook the demo registered.
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + m[1] + "/metrics")
		if err != nil {
			return false
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		return err == nil && strings.Contains(string(b), `ingestd_bts_webhook_calls_total{outcome="accepted"}`)
	}, 20*time.Second, 50*time.Millisecond, "the simulated BTS calls ingestd's webhook")

	// Every curl line the demo prints works, one per admin route.
	curls := regexp.MustCompile(`(?m)^\s+curl (.*)$`).FindAllStringSubmatch(out.String(), -1)
	require.Len(t, curls, 4, "one curl line per admin route")
	for _, c := range curls {
		status := runCurl(t, c[1])
		require.True(t, status >= 200 && status < 300, "curl %s: HTTP %d", c[1], status)
	}

	select {
	case err := <-done:
		require.NoError(t, err, errOut.String())
	case <-time.After(60 * time.Second):
		t.Fatal("demo did not stop after -duration")
	}
	text := out.String()
	require.Contains(t, text, "sample event")
	require.Contains(t, text, "key yandex:", "Yandex journal events")
	require.Contains(t, text, "key bts:", "and BTS events beside them")
	require.Contains(t, text, "kafka:")
	require.Contains(t, text, "demo stopped:")
}

func TestDemoRejectsBadSchemaName(t *testing.T) {
	t.Parallel()
	err := run(context.Background(), []string{"-schema", "x; DROP TABLE y"}, &bytes.Buffer{}, &bytes.Buffer{})
	var ue *cli.UsageError
	require.ErrorAs(t, err, &ue)
}

// runCurl performs the request of a printed curl command line (its -X, -H
// and -d options and URL) and returns the HTTP status.
func runCurl(t *testing.T, line string) int {
	t.Helper()
	args := regexp.MustCompile(`'[^']*'|\S+`).FindAllString(line, -1)
	method, body, target := http.MethodGet, "", ""
	header := http.Header{}
	for i := 0; i < len(args); i++ {
		a := strings.Trim(args[i], "'")
		switch a {
		case "-X":
			i++
			method = args[i]
		case "-H":
			i++
			k, v, _ := strings.Cut(strings.Trim(args[i], "'"), ": ")
			header.Set(k, v)
		case "-d":
			i++
			body, method = strings.Trim(args[i], "'"), http.MethodPost
		default:
			target = a
		}
	}
	req, err := http.NewRequest(method, target, strings.NewReader(body))
	require.NoError(t, err)
	req.Header = header
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	return resp.StatusCode
}
