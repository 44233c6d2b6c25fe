package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/child"
	"github.com/ingestd/ingestd/internal/cli"
	"github.com/ingestd/ingestd/internal/sim"
)

// TestChaosSmall runs the whole harness on a small journal: the real ingestd
// binary, SIGKILLed at every failpoint, at random, and after a pause past
// its lease, with two instances at once in some rounds; then the checker
// must find every entry exactly once, in per-shipment order.
func TestChaosSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs ingestd many times")
	}
	// The binary is built before the run's deadline starts: how long a
	// build takes depends on the build cache and the machine's load, not
	// on the harness.
	bin, remove, err := child.Build(t.Context(), child.IngestdPackage)
	require.NoError(t, err)
	t.Cleanup(remove)

	ctx, cancel := context.WithTimeout(context.Background(), 115*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err = run(ctx, []string{
		"-binary", bin,
		"-events", "3000", "-claims", "300", "-kills", "6",
		// Small pages make enough commits and publish batches for every
		// failpoint to fire while the journal is still being served.
		"-page-limit", "20",
		"-seed", "4",
		"-timeout", "110s",
		"-json",
	}, &stdout, &stderr)
	// stderr has the round lines: the story of the run.
	t.Logf("round log:\n%s", stderr.String())
	require.NoError(t, err, "summary:\n%s", stdout.String())

	var s summary
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &s), stdout.String())
	require.True(t, s.Pass, stdout.String())
	require.Equal(t, 3000, s.EventsExpected)
	require.Equal(t, 3000, s.Received, "records")
	require.Equal(t, 3000, s.Distinct)
	require.Zero(t, s.Lost)
	require.Zero(t, s.Duplicated)
	require.Zero(t, s.OrderViolations)
	require.Zero(t, s.KeysSplit)
	require.Zero(t, s.SeqRegressions)
	require.Zero(t, s.StaleEpochWrites)
	require.True(t, s.CursorAtEnd)
	require.Zero(t, s.CursorForks)
	require.Empty(t, s.UnexpectedExits)

	require.GreaterOrEqual(t, s.SIGKILLs.Total, 6)
	for _, fp := range failpoints() {
		require.Positive(t, s.SIGKILLs.Failpoints[fp], "failpoint %s fired", fp)
	}
	require.Positive(t, s.PauseRounds, "a pause round")
	require.Positive(t, s.SIGKILLs.Paused, "the resumed instance was killed")
	require.Equal(t, s.Takeovers, s.FencedStepDowns, "every paused-and-resumed instance stepped down")
	require.GreaterOrEqual(t, s.DualRounds, 2, "the pause round and a plain dual round")
	require.Equal(t, s.SIGKILLs.Total, s.SIGKILLs.Random+s.SIGKILLs.Paused+
		s.SIGKILLs.Failpoints["poller.after-commit"]+s.SIGKILLs.Failpoints["publish.before-write"]+s.SIGKILLs.Failpoints["publish.after-ack"])
}

// TestChaosSmallCluster runs the cluster mode on a small journal: three
// brokers over TLS with SASL/SCRAM-SHA-512, partition leaders moving every
// 100ms on average and a broker removed (its connections dropped) and added
// back, while ingestd is SIGKILLed at every failpoint and at random. The
// checker must still find every entry exactly once, in per-shipment order,
// and the brokers must have refused writes sent to a former leader: ingestd
// met moved leaders and sent those writes again.
func TestChaosSmallCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs ingestd many times")
	}
	bin, remove, err := child.Build(t.Context(), child.IngestdPackage)
	require.NoError(t, err)
	t.Cleanup(remove)

	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err = run(ctx, []string{
		"-binary", bin,
		"-cluster", "-move-every", "100ms", "-remove-every", "4s",
		"-events", "2000", "-claims", "200", "-kills", "4",
		"-page-limit", "20",
		// The pause and dual rounds are TestChaosSmall's; this run is about
		// the brokers.
		"-dual-rate", "0",
		"-seed", "5",
		"-timeout", "75s",
		"-json",
	}, &stdout, &stderr)
	t.Logf("round log:\n%s", stderr.String())
	require.NoError(t, err, "summary:\n%s", stdout.String())

	var s summary
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &s), stdout.String())
	require.True(t, s.Pass, stdout.String())
	require.Equal(t, "cluster", s.Mode)
	require.Equal(t, 2000, s.Received, "records, each (partition, offset) once")
	require.Equal(t, 2000, s.Distinct)
	require.Zero(t, s.Lost)
	require.Zero(t, s.Duplicated)
	require.Zero(t, s.OrderViolations)
	require.Zero(t, s.SeqRegressions)
	require.Zero(t, s.StaleEpochWrites)
	require.Empty(t, s.UnexpectedExits)
	require.GreaterOrEqual(t, s.SIGKILLs.Total, 4)
	for _, fp := range failpoints() {
		require.Positive(t, s.SIGKILLs.Failpoints[fp], "failpoint %s fired", fp)
	}

	c := s.Cluster
	require.NotNil(t, c, stdout.String())
	require.Equal(t, clusterBrokers, c.Brokers)
	require.Equal(t, "SCRAM-SHA-512", c.SASLMechanism)
	require.Positive(t, c.Shuffles)
	require.Positive(t, c.LeaderChanges)
	require.Positive(t, c.Removals)
	require.Equal(t, c.Removals, c.Returns, "every removed broker came back")
	require.Positive(t, c.RefusedBatches, "ingestd wrote to a former leader at least once (and then to the new one)")
}

func TestParseOptionsRejectsNonsense(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-events", "0"},
		{"-kills", "-1"},
		{"-dual-rate", "1.5"},
		{"-lease-ttl", "500ms"},
		{"-page-limit", "1001"},
		{"-backlog", "60000"},
		{"-cluster", "-move-every", "1ms"},
		{"-cluster", "-remove-every", "100ms"},
		{"extra"},
	} {
		_, err := parseOptions(args, &bytes.Buffer{})
		var ue *cli.UsageError
		require.ErrorAs(t, err, &ue, "%v", args)
		require.Equal(t, 2, cli.ExitCode("ingestd-chaos", err, &bytes.Buffer{}))
	}
	o, err := parseOptions(nil, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 50000, o.events)
	require.Equal(t, 5000, o.backlog, "a tenth of the journal at start by default")
	require.Equal(t, 25, o.kills)
	require.False(t, o.cluster, "the single-broker mode by default")
	require.NotZero(t, o.seed, "a seed is picked and printed")
}

// TestCompareFindsEveryKindOfProblem feeds the checker a fabricated topic
// with one lost event, one duplicate, two events of a shipment swapped and a
// stale publisher's write, so that a clean summary is known to mean
// something.
func TestCompareFindsEveryKindOfProblem(t *testing.T) {
	t.Parallel()
	const n = 200
	y, err := sim.NewYandex(sim.YandexConfig{Seed: 3, Backlog: n, Claims: 20})
	require.NoError(t, err)
	j, err := expectedJournal(y, n)
	require.NoError(t, err)

	clean := func() []record {
		recs := make([]record, n)
		for i := range recs {
			recs[i] = record{
				partition: 0, offset: int64(i), key: "yandex:" + j.claim[i], ceID: j.ids[i], id: j.ids[i],
				orderID: j.claim[i], revision: j.rev[i], seq: int64(i + 1), epoch: 1,
			}
		}
		return recs
	}
	s := &summary{shown: map[string]int{}}
	compare(clean(), j, s)
	require.Equal(t, summary{Received: n, Distinct: n, shown: s.shown}, *s, "a clean topic is clean")

	// Two entries of one claim, to swap.
	first, second := -1, -1
	for i := 1; i < n && second < 0; i++ {
		for k := range i {
			if j.claim[k] == j.claim[i] {
				first, second = k, i
				break
			}
		}
	}
	require.GreaterOrEqual(t, second, 0)

	recs := clean()
	recs[first], recs[second] = recs[second], recs[first]
	recs[first].offset, recs[second].offset = int64(first), int64(second)
	recs[150].epoch, recs[151].epoch = 2, 1 // 151 written by epoch 1 after epoch 2
	for i := 152; i < n; i++ {
		recs[i].epoch = 2
	}
	dup := recs[100]
	dup.epoch = 2 // re-sent by the current publisher: a duplicate, not a stale write
	lost := recs[120].id
	recs = append(append(recs[:120:120], recs[121:]...), dup)
	for i := range recs {
		recs[i].offset = int64(i)
	}

	s = &summary{shown: map[string]int{}}
	a := compare(recs, j, s)
	require.Equal(t, n, s.Received)
	require.Equal(t, n-1, s.Distinct)
	require.Equal(t, 1, s.Lost)
	require.Equal(t, []int{j.byID[lost]}, a.lost)
	require.Equal(t, 1, s.Duplicated)
	require.Equal(t, 1, s.OrderViolations)
	require.Equal(t, 1, s.KeysOutOfOrder)
	require.Equal(t, 1, s.StaleEpochWrites)
	// The swap steps back once or twice (when the two are not adjacent), and
	// the duplicate at the end once.
	wantRegressions := 2
	if second > first+1 {
		wantRegressions = 3
	}
	require.Equal(t, wantRegressions, s.SeqRegressions)
	require.NotEmpty(t, s.Evidence)
}

// TestDocsStateTheDefaults: the Makefile, the README and docs/guarantees.md
// describe `make chaos` with the harness's defaults, the number of events
// and the least number of SIGKILLs, as the harness has them.
func TestDocsStateTheDefaults(t *testing.T) {
	t.Parallel()
	o, err := parseOptions(nil, io.Discard)
	require.NoError(t, err)
	events := humanize(o.events)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", name))
		require.NoError(t, err)
		return string(b)
	}
	tests := []struct {
		file, events, kills string
	}{
		{"Makefile", events + " events", fmt.Sprintf("at least %d SIGKILLs", o.kills)},
		{"README.md", events + "-event journal", fmt.Sprintf("SIGKILLed at least %d times", o.kills)},
		{"docs/guarantees.md", events + " events", ""},
	}
	for _, tc := range tests {
		doc := read(tc.file)
		require.Contains(t, doc, tc.events, "%s states the harness's events", tc.file)
		if tc.kills != "" {
			require.Contains(t, doc, tc.kills, "%s states the harness's kills", tc.file)
		}
	}
}

// humanize writes n with thousands separators, as the docs do (50,000).
func humanize(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
