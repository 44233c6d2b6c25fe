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
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ingestd/ingestd/internal/child"
	"github.com/ingestd/ingestd/internal/cli"
	"github.com/ingestd/ingestd/internal/event"
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
		{"-accounts", "-1"},
		{"-accounts", "101"},
		{"-accounts", "4", "-cluster"},
		{"-accounts", "4", "-replicas", "1"},
		{"-accounts", "10", "-events", "5"},
		{"-accounts", "10", "-claims", "5"},
		{"-accounts", "4", "-pauses", "-1"},
		{"-accounts", "4", "-kills", "3", "-pauses", "4"},
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
	require.Zero(t, o.accounts, "the single-account mode by default")
	require.Equal(t, 3, o.replicas)
	require.NotZero(t, o.seed, "a seed is picked and printed")
}

// TestCompareFindsEveryKindOfProblem feeds the checker a fabricated topic
// with one lost event, one duplicate, two events of a shipment swapped and a
// stale publisher's write, so that a clean summary is known to mean
// something.
func TestCompareFindsEveryKindOfProblem(t *testing.T) {
	t.Parallel()
	const n = 200
	j, err := expectedJournal(testAccounts(t, 3, n, defaultAccount))
	require.NoError(t, err)

	clean := func() []record { return cleanTopic(j) }
	s := &summary{shown: map[string]int{}}
	compare(clean(), j, s)
	require.Equal(t, summary{
		Received: n, Distinct: n, shown: s.shown,
		Accounts: []accountResult{{Account: defaultAccount, SourceID: "yandex/" + defaultAccount, EventsExpected: n, Received: n, Distinct: n}},
	}, *s, "a clean topic is clean")

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

// testAccounts makes simulated accounts as setUp does, each journal of n
// entries available at once, the i-th seeded with seed+i.
func testAccounts(t *testing.T, seed int64, n int, names ...string) []*simAccount {
	t.Helper()
	var out []*simAccount
	for i, name := range names {
		y, err := sim.NewYandex(sim.YandexConfig{Seed: seed + int64(i), Backlog: n, Claims: 20})
		require.NoError(t, err)
		out = append(out, &simAccount{name: name, sourceID: "yandex/" + name, y: y, events: n})
	}
	return out
}

// cleanTopic is the topic a correct run leaves of journal j, all in one
// partition: every entry once, in journal order, named by its account.
func cleanTopic(j *journal) []record {
	recs := make([]record, len(j.ids))
	for i := range recs {
		account := j.accounts[j.acct[i]]
		recs[i] = record{
			partition: 0, offset: int64(i), key: "yandex:" + j.claim[i], ceID: j.ids[i], id: j.ids[i],
			source: event.SourceURI(event.ProviderYandex, account), account: account,
			orderID: j.claim[i], revision: j.rev[i], seq: int64(i + 1), epoch: 1,
		}
	}
	return recs
}

// TestCompareAttributesEveryAccount feeds the checker a fabricated topic of
// four accounts with one event of shop-01 lost, one of shop-02 duplicated,
// two of one shop-03 shipment swapped and one record of shop-00 naming
// another account: each problem must be counted against its own account,
// and the run must fail naming them.
func TestCompareAttributesEveryAccount(t *testing.T) {
	t.Parallel()
	const n = 100
	names := []string{"shop-00", "shop-01", "shop-02", "shop-03"}
	j, err := expectedJournal(testAccounts(t, 10, n, names...))
	require.NoError(t, err)
	require.Len(t, j.ids, 4*n)

	s := &summary{shown: map[string]int{}}
	compare(cleanTopic(j), j, s)
	require.Zero(t, s.Lost+s.Duplicated+s.OrderViolations+s.BadRecords, "a clean topic is clean: %v", s.Evidence)
	for i, a := range s.Accounts {
		require.Equal(t, accountResult{Account: names[i], SourceID: "yandex/" + names[i], EventsExpected: n, Received: n, Distinct: n}, a)
	}

	// Two entries of one shop-03 claim, to swap.
	first, second := -1, -1
	for i := j.base[3] + 1; i < len(j.ids) && second < 0; i++ {
		for k := j.base[3]; k < i; k++ {
			if j.claim[k] == j.claim[i] {
				first, second = k, i
				break
			}
		}
	}
	require.GreaterOrEqual(t, second, 0)
	recs := cleanTopic(j)
	recs[first], recs[second] = recs[second], recs[first]
	wrong := &recs[j.base[0]+7]
	wrong.account, wrong.source = "shop-01", event.SourceURI(event.ProviderYandex, "shop-01")
	dup := recs[j.base[2]+40]
	lost := recs[j.base[1]+30].id
	recs = append(append(recs[:j.base[1]+30:j.base[1]+30], recs[j.base[1]+31:]...), dup)
	for i := range recs {
		recs[i].offset, recs[i].seq = int64(i), int64(i+1)
	}

	s = &summary{shown: map[string]int{}}
	a := compare(recs, j, s)
	require.Equal(t, 1, s.Lost)
	require.Equal(t, []int{j.byID[lost]}, a.lost)
	require.Equal(t, 1, s.Duplicated)
	require.Equal(t, 1, s.OrderViolations)
	require.Equal(t, 2, s.BadRecords, "the payload account and ce_source of the misnamed record")
	want := map[string]accountResult{
		"shop-00": {EventsExpected: n, Received: n, Distinct: n},
		"shop-01": {EventsExpected: n, Received: n - 1, Distinct: n - 1, Lost: 1},
		"shop-02": {EventsExpected: n, Received: n + 1, Distinct: n, Duplicated: 1},
		"shop-03": {EventsExpected: n, Received: n, Distinct: n, OrderViolations: 1},
	}
	for _, got := range s.Accounts {
		w := want[got.Account]
		w.Account, w.SourceID = got.Account, got.SourceID
		require.Equal(t, w, got, got.Account)
	}

	// Every cursor at its end, so that only the topic's problems are named.
	for i := range s.Accounts {
		s.Accounts[i].CursorAtEnd = true
	}
	s.CursorAtEnd = true
	h := &harness{o: options{accounts: 4, replicas: 3}}
	h.judge(s)
	require.False(t, s.Pass)
	require.Contains(t, s.Failures, "accounts with problems: shop-01: 1 lost; shop-02: 1 duplicated; shop-03: 1 order violations")
}

// TestChaosManyAccountsSmall runs the many-accounts mode on a small scale:
// four accounts at one simulator address (one from the INGESTD_YANDEX_*
// settings, three from a sources file) on three replicas, random replicas
// SIGKILLed and started again, failpoints armed on the restarts, a pause past
// the leases. Every account's journal must reach Kafka once, in order, its
// cursor one chain to its end. Then defects are planted in the real topic
// and database (the first record of a partition deleted, a copy of another
// account's record written, a forked cursor step of a third account
// recorded), and the checker, run again, must fail and name each account.
func TestChaosManyAccountsSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs ingestd many times")
	}
	bin, remove, err := child.Build(t.Context(), child.IngestdPackage)
	require.NoError(t, err)
	t.Cleanup(remove)

	o, err := parseOptions([]string{
		"-binary", bin,
		"-accounts", "4", "-replicas", "3",
		"-events", "2000", "-claims", "200", "-kills", "5",
		"-page-limit", "20",
		"-seed", "6",
		"-timeout", "70s",
	}, io.Discard)
	require.NoError(t, err)

	// run's steps, so that the environment outlives the run for the
	// planted defects. The deadline leaves the second check its time.
	ctx, cancel := context.WithTimeout(context.Background(), 85*time.Second)
	defer cancel()
	started := time.Now()
	env, err := setUp(ctx, o)
	t.Cleanup(func() {
		var teardown bytes.Buffer
		env.close(&teardown)
		if teardown.Len() > 0 {
			t.Log(teardown.String())
		}
	})
	require.NoError(t, err)
	var rounds bytes.Buffer
	h := newHarness(o, bin, env, &rounds)
	// Cleanups run last-in first-out: no instance outlives the environment.
	t.Cleanup(h.fleet.killAll)
	runCtx, runCancel := context.WithTimeout(ctx, o.timeout)
	defer runCancel()
	s, err := h.run(runCtx, started)
	t.Logf("round log:\n%s", rounds.String())
	require.NoError(t, err)
	var text bytes.Buffer
	s.writeText(&text)
	require.True(t, s.Pass, text.String())
	require.Contains(t, text.String(), "RESULT: PASS (many accounts: 4 accounts on 3 replicas, seed 6: ")

	require.Equal(t, "many accounts", s.Mode)
	require.Equal(t, 2000, s.Received, "records")
	require.Equal(t, 2000, s.Distinct)
	require.Zero(t, s.Lost)
	require.Zero(t, s.Duplicated)
	require.Zero(t, s.OrderViolations)
	require.Zero(t, s.SeqRegressions)
	require.Zero(t, s.StaleEpochWrites)
	require.Zero(t, s.BadRecords)
	require.Zero(t, s.UnknownTokenRequests)
	require.Empty(t, s.UnknownSources)
	require.Empty(t, s.UnexpectedExits)
	require.Len(t, s.Accounts, 4)
	for _, a := range s.Accounts {
		require.Equal(t, 500, a.EventsExpected, a.Account)
		require.Equal(t, 500, a.Received, a.Account)
		require.Equal(t, 500, a.Distinct, a.Account)
		require.Empty(t, a.problems(), a.Account)
		require.Positive(t, a.CursorCommits, a.Account)
		require.NotEmpty(t, a.HeldBy, "%s is held once drained", a.Account)
	}

	require.GreaterOrEqual(t, s.SIGKILLs.Random+s.SIGKILLs.Paused, 5, "SIGKILLs of random replicas")
	for _, fp := range failpoints() {
		require.Positive(t, s.SIGKILLs.Failpoints[fp], "failpoint %s fired", fp)
	}
	require.Positive(t, s.PauseRounds)
	require.Equal(t, s.Takeovers, s.FencedStepDowns, "every paused-and-resumed replica stepped down")

	m := s.Many
	require.NotNil(t, m)
	require.Equal(t, 4, m.Accounts)
	require.Equal(t, 3, m.FromSourcesFile)
	require.Len(t, m.Replicas, 3)
	held, publishers, kills, starts := 0, 0, 0, 0
	for _, r := range m.Replicas {
		held += r.SourcesHeldAtEnd
		kills += r.Kills
		starts += r.Starts
		if r.PublisherAtEnd {
			publishers++
		}
	}
	require.Equal(t, 4, held, "every source held once drained")
	require.Equal(t, 1, publishers)
	require.True(t, m.SpreadSettled)
	require.Positive(t, m.SourceLeaseAcquisitions, "sources moved between replicas")
	require.Equal(t, s.SIGKILLs.Total, kills, "every SIGKILL ended an instance of a replica")
	require.Equal(t, s.InstanceStarts, starts)

	// The defects. The record lost is the first of partition 0; the copy is
	// of a record of another account; the fork is in a third account's
	// history.
	recs := readTopic(t, ctx, env, o.events)
	var gone, copied *kgo.Record
	for _, r := range recs {
		if r.Partition == 0 && r.Offset == 0 {
			gone = r
		}
	}
	require.NotNil(t, gone)
	goneAccount := decode(gone).account
	for _, r := range recs {
		if decode(r).account != goneAccount {
			copied = r
			break
		}
	}
	require.NotNil(t, copied)
	copiedAccount := decode(copied).account
	var forked *simAccount
	for _, a := range env.accounts {
		if a.name != goneAccount && a.name != copiedAccount {
			forked = a
			break
		}
	}
	plantDefects(t, ctx, env, gone, copied, forked)

	s, err = h.check(ctx)
	require.NoError(t, err)
	h.judge(s)
	text.Reset()
	s.writeText(&text)
	t.Logf("summary after the planted defects:\n%s", text.String())
	require.False(t, s.Pass, text.String())
	require.Equal(t, 1, s.Lost, text.String())
	require.Equal(t, 1, s.Duplicated, text.String())
	require.Equal(t, 1, s.CursorForks, text.String())
	for _, a := range s.Accounts {
		var want string
		switch a.Account {
		case goneAccount:
			want = "1 lost"
		case copiedAccount:
			want = "1 duplicated"
		case forked.name:
			want = "cursor history forked 1 times"
		}
		require.Equal(t, want, a.problems(), a.Account)
	}
	require.Contains(t, text.String(), "RESULT: FAIL (many accounts: 4 accounts on 3 replicas, seed 6: ")
	for _, p := range []string{goneAccount + ": 1 lost", copiedAccount + ": 1 duplicated", forked.name + ": cursor history forked 1 times"} {
		require.Contains(t, text.String(), p)
	}
}

// readTopic reads the whole topic, want records, with a client of its own.
func readTopic(t *testing.T, ctx context.Context, env *environment, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(env.kafkaAddrs...),
		kgo.ConsumeTopics(topicName),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	}, env.kafkaOpts...)...)
	require.NoError(t, err)
	defer cl.Close()
	var recs []*kgo.Record
	deadline := time.Now().Add(30 * time.Second)
	for len(recs) < want {
		require.True(t, time.Now().Before(deadline), "read %d of %d records", len(recs), want)
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := cl.PollFetches(pctx)
		cancel()
		fetches.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	return recs
}

// plantDefects deletes gone (the first record of its partition) from the
// topic, writes copied to it again, and records a cursor step of forked that
// starts from its first cursor although the history is at its end, as a
// second writer would.
func plantDefects(t *testing.T, ctx context.Context, env *environment, gone, copied *kgo.Record, forked *simAccount) {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(env.kafkaAddrs...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	}, env.kafkaOpts...)...)
	require.NoError(t, err)
	defer cl.Close()

	req := kmsg.NewPtrDeleteRecordsRequest()
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic = topicName
	rp := kmsg.NewDeleteRecordsRequestTopicPartition()
	rp.Partition, rp.Offset = gone.Partition, gone.Offset+1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	require.NoError(t, err)
	require.NoError(t, kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode))

	again := &kgo.Record{Topic: topicName, Partition: copied.Partition, Key: copied.Key, Value: copied.Value, Headers: copied.Headers}
	require.NoError(t, cl.ProduceSync(ctx, again).FirstErr())

	_, err = env.pool.Exec(ctx, `INSERT INTO cursor_history (source_id, cursor, prev_cursor, event_count) VALUES ($1, $2, $3, 1)`,
		forked.sourceID, forked.wantCursor, forked.y.CursorAfter(1))
	require.NoError(t, err)
}
