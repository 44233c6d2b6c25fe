package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ingestd/ingestd/internal/child"
	"github.com/ingestd/ingestd/internal/sim"
)

// Bounds of the many-accounts options: far beyond the 200 accounts
// and 3 instances, low enough that a typo cannot start a thousand
// processes.
const (
	maxQuietAccounts = 2000
	maxInstances     = 10
)

const (
	// bigAccount is the account that receives the backlog.
	bigAccount = "backlog"
	// quietBacklog is what each quiet account holds when ingestd starts: a
	// few entries, as after a short pause.
	quietBacklog = 5
	// quietClaims keeps each quiet journal's generator small; with the
	// default of 1000 claims in flight, 200 journals would hold 200,000
	// claim slots in the harness for a handful of entries each.
	quietClaims = 50
	// burstRate makes the big account's whole backlog appear at once (in
	// a fifth of a millisecond for 200,000 entries). To ingestd that is a
	// backlog like any other, but it arrives when the harness chooses:
	// after the sources have spread over the instances and the quiet
	// accounts are in their steady state.
	burstRate = 1e9
	// accountsPoolMax is INGESTD_DATABASE_MAX_CONNS of every instance:
	// ingestd's default, set explicitly so that the bound the table checks
	// is the one in force.
	accountsPoolMax = 8
	// spreadLimit bounds the wait for the sources to spread evenly: a
	// source given up by one instance is left to the others for two lease
	// TTLs (30 s by default), and a loaded machine is slower.
	spreadLimit = 2 * time.Minute
	// spreadStable is how long an even spread must hold before it counts as
	// settled: an instance gives surplus sources up at its heartbeat, a
	// third of the lease TTL apart, and a source being handed over is
	// briefly held by no one.
	spreadStable = 3 * time.Second
	// scrapeEvery spaces the harness's reads of ingestd's /metrics while it
	// waits for the spread, so that the reads cost ingestd little.
	scrapeEvery = 250 * time.Millisecond
	// settleLimit bounds the wait for the last quiet entries to reach the
	// consumer once the journals stopped growing, beyond two poll
	// intervals.
	settleLimit = 30 * time.Second
)

// latency is the delay from entries' appearance upstream to their receipt
// from Kafka, over one window.
type latency struct {
	Events int     `json:"events"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
}

func latencyOf(d []time.Duration) latency {
	if len(d) == 0 {
		return latency{}
	}
	slices.Sort(d)
	return latency{Events: len(d), P50Ms: ms(percentile(d, 0.50)), P99Ms: ms(percentile(d, 0.99)), MaxMs: ms(d[len(d)-1])}
}

// accountsResult is the many-accounts scenario: a single-account baseline
// and one run per number of instances.
type accountsResult struct {
	Quiet          int     `json:"quiet_accounts"`
	Rate           float64 `json:"quiet_rate_per_sec"`
	Backlog        int     `json:"backlog"`
	PollIntervalMs float64 `json:"poll_interval_ms"`
	PoolMaxConns   int     `json:"pool_max_conns_per_instance"`
	SteadySeconds  float64 `json:"steady_seconds"`
	IdleSeconds    float64 `json:"idle_seconds_per_window"`
	// OwnDatabase says whether every run had a PostgreSQL database of its
	// own; when not, its transaction counts include every other session's
	// in the shared database (an upper bound).
	OwnDatabase bool `json:"own_database"`
	// Baseline is the same backlog drained by one instance running the big
	// account alone, measured the same way.
	Baseline accountsRun   `json:"single_account"`
	Runs     []accountsRun `json:"runs"`
}

// accountsRun is one run of the scenario with a number of instances.
type accountsRun struct {
	Instances int `json:"instances"`
	Sources   int `json:"sources"`
	// SpreadSeconds runs from the start of the instances until the
	// sources were spread evenly (and stayed so for spreadStable); Held is
	// each instance's share then.
	SpreadSeconds float64 `json:"spread_seconds"`
	Held          []int   `json:"sources_held"`
	// BigInstance and PublisherInstance number (from 1) the instances that
	// held the big account's lease and the publisher's at the end of the
	// drain; 0 when not known.
	BigInstance       int `json:"backlog_instance,omitempty"`
	PublisherInstance int `json:"publisher_instance,omitempty"`

	// Freshness of the quiet accounts' entries that appeared in the steady
	// window before the burst, and while the big backlog drained.
	QuietSteady latency `json:"quiet_freshness_steady"`
	QuietDrain  latency `json:"quiet_freshness_during_drain"`

	// The big account's catch-up: from its first request after the backlog
	// appeared to the receipt of its last record from Kafka.
	BigSeconds      float64 `json:"backlog_seconds"`
	BigEventsPerSec float64 `json:"backlog_events_per_sec"`
	// BigRatio is BigEventsPerSec over the single-account baseline's.
	BigRatio float64 `json:"backlog_ratio_to_single_account,omitempty"`
	// The publisher during the catch-up (all instances added up; only the
	// lease holder publishes): events published per second of BigSeconds,
	// and the share of BigSeconds it spent in Kafka writes.
	PublishedPerSec   float64 `json:"published_per_sec_during_drain"`
	PublishWriteShare float64 `json:"publisher_kafka_write_share_during_drain"`

	// Per instance: peak RSS (VmHWM at the end of the run), the most
	// goroutines seen, the most PostgreSQL connections seen.
	PeakRSSMiB []float64 `json:"ingestd_peak_rss_mib"`
	Goroutines []int     `json:"ingestd_goroutines_peak"`
	PGConns    []int     `json:"postgres_connections_peak"`
	// PGConnsTotal is the most connections of all instances at one time.
	PGConnsTotal int `json:"postgres_connections_peak_total"`
	// PGConnsDraining is what those connections did while the backlog
	// drained, on average over the samples.
	PGConnsDraining connStates `json:"postgres_connections_while_draining"`
	// CPUSeconds is every instance's whole-life CPU, from its rusage.
	CPUSeconds float64 `json:"ingestd_cpu_seconds"`

	// Idle cost with every journal still: cursors unchanged, then a new
	// cursor on every empty page. Nil when not measured.
	Idle        *idleCost `json:"idle,omitempty"`
	IdleChanged *idleCost `json:"idle_cursor_changes,omitempty"`

	Missing    int   `json:"missing"`
	Duplicates int64 `json:"duplicates"`
	Unmatched  int64 `json:"unmatched"`
}

// maxOf is the largest of v, 0 for none.
func maxOf[T int | float64](v []T) T {
	if len(v) == 0 {
		return 0
	}
	return slices.Max(v)
}

// manyAccounts runs the many-accounts scenario: the single-account
// baseline, then the quiet accounts beside the big one with each number of
// instances asked for.
func (b *bench) manyAccounts(ctx context.Context) (*accountsResult, error) {
	ao := b.o.accounts
	res := &accountsResult{
		Quiet: ao.quiet, Rate: ao.rate, Backlog: ao.backlog, PollIntervalMs: ms(b.o.pollInterval),
		PoolMaxConns: accountsPoolMax, SteadySeconds: ao.steady.Seconds(), IdleSeconds: ao.idle.Seconds(), OwnDatabase: true,
	}
	b.logf("many accounts: single-account baseline, a backlog of %d events", ao.backlog)
	base, own, err := b.accountsRun(ctx, 1, 0)
	if err != nil {
		return nil, fmt.Errorf("single-account baseline: %w", err)
	}
	res.Baseline, res.OwnDatabase = *base, res.OwnDatabase && own
	b.logf("many accounts: single account drained %d events at %.0f events/s", ao.backlog, base.BigEventsPerSec)
	for _, n := range ao.instances {
		b.logf("many accounts: %d quiet accounts at %g entries/s and %d events of backlog, %d instance(s)", ao.quiet, ao.rate, ao.backlog, n)
		r, own, err := b.accountsRun(ctx, n, ao.quiet)
		if err != nil {
			return nil, fmt.Errorf("%d instance(s): %w", n, err)
		}
		if base.BigEventsPerSec > 0 {
			r.BigRatio = r.BigEventsPerSec / base.BigEventsPerSec
		}
		res.OwnDatabase = res.OwnDatabase && own
		b.logf("many accounts, %d instance(s): quiet p99 %.0f ms while the backlog drained, backlog %.0f events/s (%.2f of single), peak RSS %.1f MiB",
			n, r.QuietDrain.P99Ms, r.BigEventsPerSec, r.BigRatio, maxOf(r.PeakRSSMiB))
		res.Runs = append(res.Runs, *r)
	}
	return res, nil
}

// instance is one ingestd process of a run.
type instance struct {
	c    *child.Process
	http string // its /metrics address
	app  string // its connections' application_name
}

// accountsRun runs quiet accounts and the big account with n instances of
// ingestd, one simulator and one broker. It reports whether the run had a
// database of its own.
func (b *bench) accountsRun(ctx context.Context, n, quiet int) (r *accountsRun, own bool, err error) {
	o, ao := b.o, b.o.accounts
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	r = &accountsRun{Instances: n, Sources: quiet + 1}

	db, err := createBenchDB(ctx, o.databaseURL, "bench_accounts", b.logf)
	if err != nil {
		return nil, false, err
	}
	defer func() { err = errors.Join(err, db.drop()) }()
	if err := migrate(ctx, b.bin, db.dsn("ingestd-bench-migrate")); err != nil {
		return nil, false, err
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(o.partitions), topicName))
	if err != nil {
		return nil, false, fmt.Errorf("start the in-process broker: %w", err)
	}
	defer cluster.Close()
	broker := cluster.ListenAddrs()[0]

	// One simulator serves every account at one address, as Yandex does;
	// each account's token selects its journal.
	accts, err := newJournals(o.seed, o.claims, ao, quiet)
	if err != nil {
		return nil, false, err
	}
	big := accts[0]
	ys := make([]*sim.Yandex, len(accts))
	for i, a := range accts {
		ys[i] = a.y
	}
	mux, err := sim.NewYandexAccounts(ys...)
	if err != nil {
		return nil, false, fmt.Errorf("configure the simulator: %w", err)
	}
	h := newAccountsHandler(mux, big.token)
	simAddr, stopSim, err := serveSim(ctx, h)
	if err != nil {
		return nil, false, err
	}
	defer func() { err = errors.Join(err, stopSim()) }()

	cons := newAccountsConsumer(accts)
	// The big account's entries are indexed before anything runs: indexing
	// them on the fly would hold up the consumer, and so the receipt times,
	// in the middle of the drain.
	cons.extend(big, ao.backlog)
	for _, a := range accts[1:] {
		cons.extend(a, quietBacklog+64)
	}
	stopConsumer := cons.start(ctx, broker)
	defer stopConsumer()

	dir, err := os.MkdirTemp("", "ingestd-bench-accounts-")
	if err != nil {
		return nil, false, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	sourcesFile := filepath.Join(dir, "sources.yaml")
	if err := os.WriteFile(sourcesFile, sourcesYAML(accts, simAddr, o.pageLimit, o.pollInterval), 0o600); err != nil {
		return nil, false, fmt.Errorf("write the sources file: %w", err)
	}

	mon, err := pgx.Connect(ctx, withParams(o.databaseURL, map[string]string{"application_name": "ingestd-bench-monitor"}))
	if err != nil {
		return nil, false, fmt.Errorf("connect for monitoring: %w", err)
	}
	defer func() { _ = mon.Close(context.WithoutCancel(ctx)) }()
	datname, err := db.datname(ctx, mon)
	if err != nil {
		return nil, false, err
	}

	insts := make([]*instance, n)
	apps := make([]string, n)
	for i := range insts {
		addr, err := freeAddr()
		if err != nil {
			return nil, false, err
		}
		apps[i] = fmt.Sprintf("ingestd-bench-%s-%d", db.name, i+1)
		insts[i] = &instance{http: addr, app: apps[i]}
	}
	conns, err := startConnSampler(ctx, o.databaseURL, apps, accountsPoolMax)
	if err != nil {
		return nil, false, err
	}
	defer conns.stop()
	started := time.Now()
	for i, in := range insts {
		c, err := startIngestd(b.bin, b.accountsEnv(db.dsn(in.app), broker, in.http, sourcesFile, fmt.Sprintf("bench-%d", i+1), accts))
		if err != nil {
			return nil, false, err
		}
		defer c.Kill()
		in.c = c
	}
	procs := make([]*child.Process, n)
	for i, in := range insts {
		procs[i] = in.c
	}
	peakGoroutines := make([]int, n)
	sampleGoroutines := func() {
		for i, in := range insts {
			if v, err := scrapeMetrics(ctx, in.http); err == nil {
				peakGoroutines[i] = max(peakGoroutines[i], int(v["go_goroutines"]))
			}
		}
	}

	if r.Held, err = b.waitSpread(ctx, insts, r.Sources); err != nil {
		return nil, false, err
	}
	spreadAt := time.Now()
	r.SpreadSeconds = spreadAt.Sub(started).Seconds()
	b.logf("many accounts: %d sources spread over %d instance(s) in %.1fs: %v", r.Sources, n, r.SpreadSeconds, r.Held)
	sampleGoroutines()

	// Each quiet account has drained its first entries and is on its poll
	// cycle two poll intervals after its lease was taken; its entries count
	// from then on.
	steadyFrom := spreadAt
	if quiet > 0 {
		steadyFrom = spreadAt.Add(2 * o.pollInterval)
		if err := holdProcs(ctx, procs, time.Until(steadyFrom)+ao.steady); err != nil {
			return nil, false, err
		}
	}

	pub0 := scrapeAll(ctx, insts)
	conns.measure(true)
	burstAt := time.Now()
	h.arm()
	big.y.SetRate(burstRate)
	drainLimit := max(2*time.Minute, time.Duration(ao.backlog/1000)*time.Second)
	if err := waitProcs(ctx, procs, drainLimit, "the backlog to reach the consumer", func() (bool, error) {
		return big.got.Load() >= int64(ao.backlog), cons.failed()
	}); err != nil {
		return nil, false, fmt.Errorf("%w (%d of %d events received)", err, big.got.Load(), ao.backlog)
	}
	drainEnd := time.Unix(0, big.last.Load())
	bigStart, ok := h.firstBig()
	if !ok {
		return nil, false, errors.New("the backlog reached Kafka without a request of its account after the burst")
	}
	conns.measure(false)
	pub1 := scrapeAll(ctx, insts)
	r.BigSeconds = drainEnd.Sub(bigStart).Seconds()
	r.BigEventsPerSec = float64(ao.backlog) / r.BigSeconds
	// The publisher's figures are over the catch-up; between the burst and
	// the backlog account's next request only quiet events are published.
	r.PublishedPerSec = (sumOf(pub1, "ingestd_events_published_total") - sumOf(pub0, "ingestd_events_published_total")) / r.BigSeconds
	r.PublishWriteShare = (sumOf(pub1, "ingestd_publish_write_seconds_sum") - sumOf(pub0, "ingestd_publish_write_seconds_sum")) / r.BigSeconds
	r.BigInstance = holderOf(pub1, "source:yandex/"+bigAccount)
	r.PublisherInstance = holderOf(pub1, "publisher")
	sampleGoroutines()

	if quiet > 0 {
		// The quiet journals stop growing, so that every entry can be
		// accounted for and the idle windows see no new entries.
		for _, a := range accts[1:] {
			a.y.SetRate(0)
		}
		if err := waitProcs(ctx, procs, 2*o.pollInterval+settleLimit, "every quiet entry to reach the consumer", func() (bool, error) {
			return cons.complete(), cons.failed()
		}); err != nil {
			return nil, false, err
		}
	}

	if quiet > 0 && ao.idle > 0 {
		// One more poll interval and every poller has committed its last
		// page and polls empty pages only.
		if err := holdProcs(ctx, procs, o.pollInterval+time.Second); err != nil {
			return nil, false, err
		}
		w := idleProbe{mon: mon, datname: datname, own: db.own, insts: insts, accts: accts}
		if r.Idle, err = w.measure(ctx, procs, ao.idle); err != nil {
			return nil, false, err
		}
		// From here on every empty page carries a new cursor. A poll
		// interval later every poller has had one.
		h.bumpCursors()
		if err := holdProcs(ctx, procs, o.pollInterval+time.Second); err != nil {
			return nil, false, err
		}
		if r.IdleChanged, err = w.measure(ctx, procs, ao.idle); err != nil {
			return nil, false, err
		}
	}
	sampleGoroutines()
	r.Goroutines = peakGoroutines
	for _, in := range insts {
		peak, err := procPeakRSS(in.c.Pid())
		if err != nil {
			return nil, false, err
		}
		r.PeakRSSMiB = append(r.PeakRSSMiB, float64(peak)/(1<<20))
	}

	// Connections are counted up to here: pg_stat_activity still lists,
	// for a moment, the backends of connections a stopping pool has
	// closed, beside those it opens to release its leases.
	r.PGConns, r.PGConnsTotal, r.PGConnsDraining = conns.stop()
	if len(conns.overPool) > 0 {
		b.logf("many accounts: an instance had more PostgreSQL backends than its pool's %d; pg_stat_activity then:\n  %s", accountsPoolMax, strings.Join(conns.overPool, "\n  "))
	}

	// All instances stop at once: stopped one after another, the last
	// would take over every source of the others on the way.
	cpu := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, in := range insts {
		wg.Go(func() {
			ru, err := stop(ctx, in.c)
			if err == nil {
				cpu[i] = rusageCPU(ru)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, false, err
	}
	for _, c := range cpu {
		r.CPUSeconds += c.Seconds()
	}
	stopConsumer()
	if cons.err != nil {
		return nil, false, cons.err
	}
	if u := mux.Unknown(); u > 0 {
		return nil, false, fmt.Errorf("the simulator got %d requests with a token of no account", u)
	}

	// Freshness per window, and every entry accounted for.
	var steady, during []time.Duration
	for k, a := range accts {
		avail := a.y.Available()
		for i := range avail {
			if i >= len(a.recv) || a.recv[i].IsZero() {
				r.Missing++
				continue
			}
			if k == 0 {
				continue
			}
			at := a.y.AppearedAt(i)
			d := a.recv[i].Sub(at)
			// Entries of the moments between the burst and the backlog
			// account's next request, when nothing drains yet, count in
			// neither window.
			switch {
			case at.Before(steadyFrom):
			case at.Before(burstAt):
				steady = append(steady, d)
			case !at.Before(bigStart) && !at.After(drainEnd):
				during = append(during, d)
			}
		}
	}
	r.QuietSteady, r.QuietDrain = latencyOf(steady), latencyOf(during)
	r.Duplicates, r.Unmatched = cons.duplicates, cons.unmatched

	if r.Idle != nil {
		if err := b.walBreakdown(ctx, db, []*idleCost{r.Idle, r.IdleChanged}); err != nil {
			b.logf("no WAL breakdown by table (%v); the idle figures keep the whole server's WAL only", err)
		}
	}
	return r, db.own, nil
}

// newJournals creates the big account's journal, empty until the burst,
// and the quiet accounts', growing at the configured rate from the start.
func newJournals(seed int64, claims int, ao accountsOptions, quiet int) ([]*journalAccount, error) {
	big, err := sim.NewYandex(sim.YandexConfig{Seed: seed, Token: accountToken(bigAccount), MaxEntries: ao.backlog, Claims: claims})
	if err != nil {
		return nil, fmt.Errorf("configure the simulator: %w", err)
	}
	accts := []*journalAccount{newJournalAccount(bigAccount, big)}
	for i := range quiet {
		name := fmt.Sprintf("quiet-%03d", i+1)
		y, err := sim.NewYandex(sim.YandexConfig{Seed: seed + 1000 + int64(i), Token: accountToken(name), Backlog: quietBacklog, Rate: ao.rate, Claims: quietClaims})
		if err != nil {
			return nil, fmt.Errorf("configure the simulator: %w", err)
		}
		accts = append(accts, newJournalAccount(name, y))
	}
	return accts, nil
}

func accountToken(name string) string { return benchToken + "-" + name }

// tokenEnv names the variable that carries an account's token to ingestd.
func tokenEnv(name string) string {
	return "BENCH_TOKEN_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// sourcesYAML is the sources file listing every account, each with its
// token in a variable of its own, as a deployment lists them.
func sourcesYAML(accts []*journalAccount, simAddr string, pageLimit int, poll time.Duration) []byte {
	var s strings.Builder
	s.WriteString("sources:\n")
	for _, a := range accts {
		fmt.Fprintf(&s, "  - provider: yandex\n    account: %s\n    token_env: %s\n    base_url: http://%s\n    page_limit: %d\n    poll_interval: %s\n",
			a.name, tokenEnv(a.name), simAddr, pageLimit, poll)
	}
	return []byte(s.String())
}

// accountsEnv is the complete configuration of one instance of a
// many-accounts run: every source comes from the sources file.
func (b *bench) accountsEnv(dsn, broker, httpAddr, sourcesFile, id string, accts []*journalAccount) []string {
	env := []string{
		"INGESTD_DATABASE_URL=" + dsn,
		"INGESTD_DATABASE_MAX_CONNS=" + strconv.Itoa(accountsPoolMax),
		"INGESTD_KAFKA_BROKERS=" + broker,
		"INGESTD_KAFKA_TOPIC=" + topicName,
		"INGESTD_KAFKA_PARTITIONS=" + strconv.Itoa(b.o.partitions),
		"INGESTD_SOURCES_FILE=" + sourcesFile,
		"INGESTD_YANDEX_PAGE_LIMIT=" + strconv.Itoa(b.o.pageLimit),
		"INGESTD_YANDEX_POLL_INTERVAL=" + b.o.pollInterval.String(),
		"INGESTD_INSTANCE_ID=" + id,
		"INGESTD_HTTP_ADDR=" + httpAddr,
		"INGESTD_LOG_LEVEL=warn",
	}
	if b.o.compression != "" {
		env = append(env, "INGESTD_KAFKA_COMPRESSION="+b.o.compression)
	}
	for _, a := range accts {
		env = append(env, tokenEnv(a.name)+"="+accountToken(a.name))
	}
	return env
}

// waitSpread waits until the sources are spread evenly over the instances
// (all held, shares within one of each other, every instance seeing all the
// others live) and stay so for spreadStable. It returns each instance's
// share.
func (b *bench) waitSpread(ctx context.Context, insts []*instance, sources int) ([]int, error) {
	procs := make([]*child.Process, len(insts))
	for i, in := range insts {
		procs[i] = in.c
	}
	held := make([]int, len(insts))
	// A lone instance has no one to hand sources to: all held is settled.
	stable := spreadStable
	if len(insts) == 1 {
		stable = 0
	}
	var since, scraped, logged time.Time
	var lastErr error
	err := waitProcs(ctx, procs, spreadLimit, "the sources to spread over the instances", func() (bool, error) {
		if time.Since(scraped) < scrapeEvery {
			return false, nil
		}
		scraped = time.Now()
		even := true
		for i, in := range insts {
			v, err := scrapeMetrics(ctx, in.http)
			if err != nil {
				// ingestd serves /metrics a moment after it starts.
				lastErr, even = err, false
				break
			}
			held[i] = int(v["ingestd_sources_held"])
			even = even && int(v["ingestd_instances_live"]) == len(insts)
		}
		sum := 0
		for _, h := range held {
			sum += h
		}
		even = even && sum == sources && slices.Max(held)-slices.Min(held) <= 1
		// A spread can take a minute: say how it goes.
		if time.Since(logged) >= 10*time.Second {
			if !logged.IsZero() {
				b.logf("many accounts: spreading, sources held per instance %v of %d", held, sources)
			}
			logged = time.Now()
		}
		switch {
		case !even:
			since = time.Time{}
			return false, nil
		case since.IsZero():
			since = time.Now()
		}
		return time.Since(since) >= stable, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w (held %v; last scrape error: %v)", err, held, lastErr)
	}
	return slices.Clone(held), nil
}

// series are one instance's /metrics samples, by series.
type series = map[string]float64

// scrapeAll reads every instance's metrics by series; an instance that
// does not answer contributes nothing.
func scrapeAll(ctx context.Context, insts []*instance) []series {
	out := make([]series, len(insts))
	for i, in := range insts {
		out[i], _ = scrapeSeries(ctx, in.http)
	}
	return out
}

// sumOf adds a metric up over every instance and label set.
func sumOf(all []series, name string) float64 {
	var v float64
	for _, s := range all {
		for k, x := range s {
			if k == name || strings.HasPrefix(k, name+"{") {
				v += x
			}
		}
	}
	return v
}

// holderOf numbers (from 1) the instance holding a lease, 0 if none does.
func holderOf(all []series, lease string) int {
	for i, s := range all {
		if s[`ingestd_lease_holder{lease="`+lease+`"}`] == 1 {
			return i + 1
		}
	}
	return 0
}

// waitProcs polls cond until it holds, failing when cond reports an error,
// any instance exits, ctx ends or limit passes.
func waitProcs(ctx context.Context, procs []*child.Process, limit time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		for _, c := range procs {
			if !c.Running() {
				return exitErr(c)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, context.Cause(ctx))
		case <-deadline.C:
			return fmt.Errorf("waiting for %s: not done after %v", what, limit)
		case <-tick.C:
		}
	}
}

// holdProcs lets a measurement window of length d pass, failing if an
// instance exits meanwhile: the window is timed, it waits for no state.
func holdProcs(ctx context.Context, procs []*child.Process, d time.Duration) error {
	end := time.Now().Add(d)
	return waitProcs(ctx, procs, max(d, 0)+time.Minute, "a measurement window", func() (bool, error) {
		return !time.Now().Before(end), nil
	})
}
