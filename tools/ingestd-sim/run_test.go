package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/ingestd/ingestd/internal/cli"
	"github.com/ingestd/ingestd/internal/sim"
)

// syncBuffer is a goroutine-safe bytes.Buffer for run's output.
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

// server is one run of the simulator command in this process.
type server struct {
	base   string
	stdout *syncBuffer
	stderr *syncBuffer
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned
	err    error         // run's result, set before done is closed
}

// stop sends the equivalent of SIGTERM (cancelling run's context) and
// returns run's result.
func (s *server) stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case <-s.done:
		return s.err
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after its context was cancelled")
		return nil
	}
}

var listenLine = regexp.MustCompile(`ingestd-sim listening on (http://\S+)`)

// start runs the command with args on a free loopback port and waits until
// it prints the address it bound.
func start(t *testing.T, args ...string) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{stdout: &syncBuffer{}, stderr: &syncBuffer{}, cancel: cancel, done: make(chan struct{})}
	args = append([]string{"-addr", "127.0.0.1:0", "-log-format", "json"}, args...)
	go func() {
		s.err = run(ctx, args, s.stdout, s.stderr)
		close(s.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	// A plain loop rather than require.Eventually: failing from inside its
	// condition would call t.Fatal off the test goroutine.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if m := listenLine.FindStringSubmatch(s.stdout.String()); m != nil {
			s.base = m[1]
			break
		}
		select {
		case <-s.done:
			t.Fatalf("run returned before listening: %v\n%s", s.err, s.stderr)
		case <-time.After(5 * time.Millisecond):
		}
		require.True(t, time.Now().Before(deadline), "run did not print its address:\n%s", s.stderr)
	}
	return s
}

// page is a journal answer with its entries kept byte for byte.
type page struct {
	Cursor string            `json:"cursor"`
	Events []json.RawMessage `json:"events"`
}

// post asks the journal for the page after cursor.
func post(t *testing.T, base, token, cursor string, limit string) (*http.Response, []byte) {
	t.Helper()
	body, err := json.Marshal(map[string]string{"cursor": cursor})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, base+sim.YandexJournalPath+"?limit="+limit, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, raw
}

// TestRunWalksTheJournalOverHTTP walks a whole small journal page by page,
// compares every entry with an independently built simulator of the same
// configuration (so the flags really reach internal/sim), and checks that a
// cancelled context (SIGTERM in main) shuts the server down cleanly without
// the token ever reaching the logs.
func TestRunWalksTheJournalOverHTTP(t *testing.T) {
	t.Parallel()
	const token = "sim-token-4f9a2c"
	s := start(t, "-yandex-token", token, "-seed", "77", "-backlog", "25", "-rate", "0",
		"-replay-rate", "0", "-fault-429", "0", "-fault-5xx", "0", "-fault-malformed", "0",
		"-stats-interval", "10ms", "-polling-delay", "0")
	want, err := sim.NewYandex(sim.YandexConfig{Seed: 77, Backlog: 25, UnknownStatusRate: 0.01, BackwardsTimeRate: 0.02})
	require.NoError(t, err)

	var (
		cursor string
		got    int
	)
	for _, wantLen := range []int{10, 10, 5, 0} {
		resp, raw := post(t, s.base, token, cursor, "10")
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", raw)
		require.Empty(t, resp.Header.Values(sim.HeaderPollingDelay), "-polling-delay 0 sends no delay")
		var p page
		require.NoError(t, json.Unmarshal(raw, &p))
		require.Len(t, p.Events, wantLen)
		for _, ev := range p.Events {
			require.JSONEq(t, string(want.EntryJSON(got)), string(ev), "entry %d", got)
			got++
		}
		require.Equal(t, want.CursorAfter(got), p.Cursor)
		cursor = p.Cursor
	}
	require.Equal(t, 25, got)

	// Wait for at least one stats line, then stop.
	require.Eventually(t, func() bool { return strings.Contains(s.stderr.String(), `"yandex journal"`) }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, s.stop(t))
	logs := s.stderr.String()
	require.Contains(t, logs, `"simulator stopped"`)
	require.NotContains(t, logs+s.stdout.String(), token, "the token must never be logged")
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		require.True(t, json.Valid([]byte(line)), "not a JSON log line: %s", line)
	}
}

// TestRunPacesTheJournal: by default, as in the demo, every journal answer
// asks for 100 ms before the next request, and one sooner is refused.
func TestRunPacesTheJournal(t *testing.T) {
	t.Parallel()
	s := start(t, "-fault-429", "0", "-fault-5xx", "0", "-fault-malformed", "0", "-replay-rate", "0")
	resp, raw := post(t, s.base, "", "", "10")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", raw)
	answered := time.Now()
	require.Equal(t, "100", resp.Header.Get(sim.HeaderPollingDelay))
	resp, raw = post(t, s.base, "", "", "10")
	if time.Since(answered) < 100*time.Millisecond {
		require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "%s", raw)
		require.Equal(t, "100", resp.Header.Get(sim.HeaderPollingDelay))
	}
	require.NoError(t, s.stop(t))
	require.Contains(t, s.stderr.String(), `"polling_delay":0.1`)
}

// TestRunAnswers checks the routes and that the fault flags reach the
// simulator: a rate of 1 makes every request fail that way.
func TestRunAnswers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		args       []string
		method     string
		path       string
		token      string
		wantStatus func(int) bool
		wantHeader map[string]string
	}{
		{
			name: "page", args: []string{"-fault-429", "0", "-fault-5xx", "0", "-fault-malformed", "0"},
			method: http.MethodPost, path: sim.YandexJournalPath, wantStatus: is(http.StatusOK),
		},
		{
			name: "every request rate limited", args: []string{"-fault-429", "1", "-fault-5xx", "0", "-fault-malformed", "0", "-retry-after", "7"},
			method: http.MethodPost, path: sim.YandexJournalPath, wantStatus: is(http.StatusTooManyRequests),
			wantHeader: map[string]string{"Retry-After": "7"},
		},
		{
			name: "every request a server error", args: []string{"-fault-429", "0", "-fault-5xx", "1", "-fault-malformed", "0"},
			method: http.MethodPost, path: sim.YandexJournalPath,
			wantStatus: func(c int) bool { return c >= 500 && c <= 599 },
		},
		{
			name: "token required", args: []string{"-yandex-token", "right", "-fault-429", "0", "-fault-5xx", "0", "-fault-malformed", "0"},
			method: http.MethodPost, path: sim.YandexJournalPath, token: "wrong", wantStatus: is(http.StatusUnauthorized),
		},
		{
			name: "journal wants POST", args: []string{"-fault-429", "0", "-fault-5xx", "0", "-fault-malformed", "0"},
			method: http.MethodGet, path: sim.YandexJournalPath, wantStatus: is(http.StatusMethodNotAllowed),
		},
		{
			name: "healthz", method: http.MethodGet, path: "/healthz", wantStatus: is(http.StatusOK),
		},
		{
			name: "unknown path", method: http.MethodPost, path: "/b2b/cargo/integration/v2/claims/info", wantStatus: is(http.StatusNotFound),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := start(t, append([]string{"-stats-interval", "0", "-backlog", "3", "-rate", "0"}, tc.args...)...)
			req, err := http.NewRequest(tc.method, s.base+tc.path, strings.NewReader(`{}`))
			require.NoError(t, err)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, resp.Body)
			require.NoError(t, resp.Body.Close())
			require.True(t, tc.wantStatus(resp.StatusCode), "status %d", resp.StatusCode)
			for k, v := range tc.wantHeader {
				require.Equal(t, v, resp.Header.Get(k), k)
			}
			require.NoError(t, s.stop(t))
		})
	}
}

func is(want int) func(int) bool { return func(got int) bool { return got == want } }

// TestRunRejectsBadUsage checks that mistakes stop the command before it
// serves anything, with the exit status main would use.
func TestRunRejectsBadUsage(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"help", []string{"-h"}, 0, ""},
		{"unknown flag", []string{"-no-such-flag"}, 2, "no-such-flag"},
		{"positional argument", []string{"serve"}, 2, "unexpected arguments"},
		{"fault rates above 1", []string{"-fault-429", "0.6", "-fault-5xx", "0.6"}, 2, "add up"},
		{"negative backlog", []string{"-backlog", "-1"}, 2, "Backlog"},
		{"bad rate", []string{"-rate", "many"}, 2, "rate"},
		{"bad log level", []string{"-log-level", "loud"}, 2, "SIM_LOG_LEVEL"},
		{"bad log format", []string{"-log-format", "xml"}, 2, "SIM_LOG_FORMAT"},
		{"unusable address", []string{"-addr", "127.0.0.1:99999"}, 1, "listen"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, &stdout, &stderr)
			if tc.wantCode == 0 {
				require.ErrorIs(t, err, flag.ErrHelp)
			} else {
				require.ErrorContains(t, err, tc.wantErr)
			}
			var exitOut bytes.Buffer
			require.Equal(t, tc.wantCode, cli.ExitCode("ingestd-sim", err, &exitOut))
			require.Empty(t, stdout.String(), "nothing is served, so no address is printed")
		})
	}
	require.Equal(t, 0, cli.ExitCode("ingestd-sim", nil, io.Discard))
	require.Equal(t, 1, cli.ExitCode("ingestd-sim", errors.New("boom"), io.Discard))
}

// envName is the variable ff reads for a flag under envPrefix.
func envName(flagName string) string {
	return envPrefix + "_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// TestEnvironmentVariables pins the documented variable names (docker-compose
// and docs/operations.md use them) and checks that every SIM_* variable the
// compose file sets is one the command reads: ff silently ignores unknown
// variables, so a typo there would otherwise go unnoticed.
func TestEnvironmentVariables(t *testing.T) {
	t.Parallel()
	o := defaultOptions()
	known := map[string]bool{}
	newFlagSet(&o, io.Discard).VisitAll(func(f *flag.Flag) { known[envName(f.Name)] = true })
	for _, name := range []string{"SIM_ADDR", "SIM_YANDEX_TOKEN", "SIM_SEED", "SIM_BACKLOG", "SIM_RATE",
		"SIM_FAULT_429", "SIM_FAULT_5XX", "SIM_FAULT_SLOW", "SIM_FAULT_MALFORMED", "SIM_LOG_FORMAT"} {
		require.True(t, known[name], "%s is documented but no flag reads it", name)
	}

	raw, err := os.ReadFile("../../docker-compose.yml")
	require.NoError(t, err)
	var compose struct {
		Services map[string]struct {
			Environment map[string]string `json:"environment"`
		} `json:"services"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &compose))
	sim, ok := compose.Services["sim"]
	require.True(t, ok, "docker-compose.yml has no sim service")
	var used []string
	for k := range sim.Environment {
		used = append(used, k)
	}
	sort.Strings(used)
	require.NotEmpty(t, used)
	for _, k := range used {
		require.True(t, known[k], "docker-compose.yml sets %s, which ingestd-sim does not read", k)
	}
}

// TestRunServesBTSBesideTheJournal starts the BTS simulator next to the
// journal on the same port, with orders numbered from a fixed id so that a
// script can track them, and drives it as ingestd's client would.
func TestRunServesBTSBesideTheJournal(t *testing.T) {
	t.Parallel()
	s := start(t, "-bts-orders", "3", "-bts-first-order-id", "7000000", "-bts-password", "pw")

	resp, err := http.Post(s.base+"/auth/login", "application/json", strings.NewReader(`{"login":"ingestd","password":"pw"}`))
	require.NoError(t, err)
	var login struct {
		Data struct {
			AccessToken string `json:"access_token"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&login))
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NotEmpty(t, login.Data.AccessToken)

	for id, want := range map[string]int{"7000000": http.StatusOK, "7000002": http.StatusOK, "7000003": http.StatusNotFound} {
		req, err := http.NewRequest(http.MethodGet, s.base+"/v1/order/track?orderId="+id, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+login.Data.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, want, resp.StatusCode, "order %s", id)
	}
	// The journal is still served on the same port.
	r, _ := post(t, s.base, "", "", "10")
	require.Equal(t, http.StatusOK, r.StatusCode)
	require.NoError(t, s.stop(t))
}
