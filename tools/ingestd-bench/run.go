package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ingestd/ingestd/internal/child"
	"github.com/ingestd/ingestd/internal/cli"
)

// defaultDatabaseURL is the local server every test and the demo use.
const defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Fixed names of one benchmark run. Every run gets its own PostgreSQL schemas
// and its own in-process broker, so fixed names cannot collide.
const (
	benchToken = "bench-token"
	account    = "default"
	sourceID   = "yandex/" + account
	topicName  = "delivery.status-changes"
	rawTopic   = "bench.raw-produce"
)

// options are the command-line settings.
type options struct {
	sizes        []int
	pageLimit    int
	partitions   int
	claims       int
	seed         int64
	freshRate    float64
	freshDur     time.Duration
	freshBacklog int
	pollInterval time.Duration
	// pacedDelay, when positive, adds a catch-up of the first size whose
	// journal asks for that delay between requests (X-Polling-Delay-Ms).
	pacedDelay  time.Duration
	jsonOut     bool
	bin         string
	databaseURL string
	timeout     time.Duration
	// compression is INGESTD_KAFKA_COMPRESSION of every ingestd run; empty
	// leaves it unset, so the binary's default applies.
	compression string
	// compare lists the codecs of a compression comparison (empty: none),
	// each run rounds times (see compareOrder).
	compare []string
	rounds  int
	// accounts is the many-accounts scenario (accounts.go); its quiet
	// count 0 skips it.
	accounts accountsOptions
}

// accountsOptions size the many-accounts scenario.
type accountsOptions struct {
	// quiet is the number of quiet accounts, each appending rate entries a
	// second; 0 skips the scenario.
	quiet int
	rate  float64
	// backlog is the burst of entries the one big account receives.
	backlog int
	// instances lists the numbers of ingestd processes, one run each.
	instances []int
	// steady is how long the quiet accounts are measured before the burst;
	// idle is the length of each of the two idle windows (0 skips them).
	steady time.Duration
	idle   time.Duration
}

// codecs are INGESTD_KAFKA_COMPRESSION's values, in the order a comparison
// of "all" runs them.
var codecs = []string{"none", "lz4", "zstd", "snappy", "gzip"}

// parseOptions reads args. A bad flag is a usage error (exit status 2).
func parseOptions(args []string, stderr io.Writer) (options, error) {
	o := options{}
	fs := flag.NewFlagSet("ingestd-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	events := fs.String("events", "1000000", "journal backlog drained by the catch-up run (k and M suffixes allowed)")
	sizes := fs.String("sizes", "", "comma-separated backlog sizes, one catch-up run each (overrides --events), e.g. 100k,1M")
	fs.IntVar(&o.pageLimit, "page-limit", 1000, "INGESTD_YANDEX_PAGE_LIMIT of the catch-up runs, and the rows per transaction of the raw PostgreSQL run (1..1000)")
	fs.IntVar(&o.partitions, "partitions", 6, "partitions of the topic (ingestd's default)")
	fs.IntVar(&o.claims, "claims", 1000, "claims in flight in the simulated journal; fixed so that journals of different sizes share their prefix")
	fs.Int64Var(&o.seed, "seed", 2026, "simulator seed")
	fs.Float64Var(&o.freshRate, "fresh-rate", 200, "upstream events per second in the freshness run")
	fs.DurationVar(&o.pacedDelay, "paced-delay", 100*time.Millisecond, "X-Polling-Delay-Ms of one more catch-up of the first size, beside today's unpaced one (0 skips it)")
	fs.DurationVar(&o.freshDur, "fresh-duration", 30*time.Second, "length of the steady part of the freshness run (0 skips it)")
	fs.IntVar(&o.freshBacklog, "fresh-backlog", 100, "entries waiting upstream when the freshness run starts; drained before the steady part and not counted")
	fs.DurationVar(&o.pollInterval, "poll-interval", 2*time.Second, "INGESTD_YANDEX_POLL_INTERVAL (ingestd's default); it matters for the freshness run, whose target is this + 100ms")
	fs.BoolVar(&o.jsonOut, "json", false, "print JSON instead of the table")
	fs.StringVar(&o.bin, "ingestd-bin", "", "ingestd binary to measure (default: build ./cmd/ingestd of this module into a temporary directory)")
	// The default is resolved after parsing rather than shown by -h: a DSN
	// from the environment may hold a password.
	fs.StringVar(&o.databaseURL, "database-url", "", "PostgreSQL server; each run creates and drops its own schemas (default: $INGESTD_DATABASE_URL, else the local server at 127.0.0.1:5432, user postgres)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "bound on each catch-up run")
	fs.StringVar(&o.compression, "compression", "", "INGESTD_KAFKA_COMPRESSION of every ingestd run: "+strings.Join(codecs, ", ")+" (default: unset, the binary's own default)")
	compare := fs.String("compare-compression", "", "compare codecs: comma-separated codecs, or all ("+strings.Join(codecs, ",")+"); runs the catch-up once per codec and round, interleaved, and skips the freshness run")
	fs.IntVar(&o.rounds, "rounds", 2, "rounds of --compare-compression; every other round runs the codecs in reverse order")
	fs.IntVar(&o.accounts.quiet, "accounts", 200, "quiet Yandex accounts of the many-accounts scenario, run beside one account with a backlog (0 skips the scenario)")
	fs.Float64Var(&o.accounts.rate, "accounts-rate", 1, "entries a second each quiet account appends")
	accBacklog := fs.String("accounts-backlog", "200k", "backlog of the many-accounts scenario's big account (k and M suffixes allowed); also the size of its single-account baseline")
	accInstances := fs.String("accounts-instances", "1,3", "comma-separated numbers of ingestd instances, one many-accounts run each")
	fs.DurationVar(&o.accounts.steady, "accounts-steady", 10*time.Second, "how long the quiet accounts' freshness is measured before the big account's backlog arrives")
	fs.DurationVar(&o.accounts.idle, "accounts-idle", 15*time.Second, "length of each idle window (cursors unchanged, then cursors changing on every empty page) of the many-accounts scenario (0 skips them)")
	var err error
	if err = fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, &cli.UsageError{Err: err}
	}
	if o.databaseURL == "" {
		o.databaseURL = envOr("INGESTD_DATABASE_URL", defaultDatabaseURL)
	}
	if fs.NArg() > 0 {
		return o, &cli.UsageError{Err: fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	list := *events
	if *sizes != "" {
		list = *sizes
	}
	for _, s := range strings.Split(list, ",") {
		n, err := parseCount(s)
		if err != nil || n <= 0 {
			return o, &cli.UsageError{Err: fmt.Errorf("backlog size %q: want a positive count such as 100000, 100k or 1M", s)}
		}
		o.sizes = append(o.sizes, n)
	}
	var errs []error
	if n, err := parseCount(*accBacklog); err != nil || n <= 0 {
		errs = append(errs, fmt.Errorf("--accounts-backlog: want a positive count such as 200000 or 200k, got %q", *accBacklog))
	} else {
		o.accounts.backlog = n
	}
	if o.accounts.instances, err = parseInstances(*accInstances); err != nil {
		errs = append(errs, fmt.Errorf("--accounts-instances: %w", err))
	}
	if o.accounts.quiet < 0 || o.accounts.quiet > maxQuietAccounts {
		errs = append(errs, fmt.Errorf("--accounts: must be between 0 and %d, got %d", maxQuietAccounts, o.accounts.quiet))
	}
	if !(o.accounts.rate > 0 && o.accounts.rate <= 1000) {
		errs = append(errs, fmt.Errorf("--accounts-rate: must be in (0, 1000], got %v", o.accounts.rate))
	}
	if o.accounts.steady < 0 || o.accounts.idle < 0 {
		errs = append(errs, fmt.Errorf("--accounts-steady and --accounts-idle must not be negative, got %v and %v", o.accounts.steady, o.accounts.idle))
	}
	if o.compression != "" && !slices.Contains(codecs, o.compression) {
		errs = append(errs, fmt.Errorf("--compression: %q is not one of %s", o.compression, strings.Join(codecs, ", ")))
	}
	if *compare != "" {
		if o.compare, err = parseCodecs(*compare); err != nil {
			errs = append(errs, fmt.Errorf("--compare-compression: %w", err))
		}
		if o.compression != "" {
			errs = append(errs, errors.New("--compression and --compare-compression exclude each other"))
		}
		if len(o.sizes) != 1 {
			errs = append(errs, fmt.Errorf("--compare-compression takes one backlog size, got %d", len(o.sizes)))
		}
		if o.rounds < 1 || o.rounds > 100 {
			errs = append(errs, fmt.Errorf("--rounds: must be between 1 and 100, got %d", o.rounds))
		}
	}
	if o.pageLimit < 1 || o.pageLimit > 1000 {
		errs = append(errs, fmt.Errorf("--page-limit: must be between 1 and 1000, got %d", o.pageLimit))
	}
	if o.partitions < 1 || o.partitions > 1000 {
		errs = append(errs, fmt.Errorf("--partitions: must be between 1 and 1000, got %d", o.partitions))
	}
	if o.claims < 1 {
		errs = append(errs, fmt.Errorf("--claims: must be positive, got %d", o.claims))
	}
	if o.freshDur < 0 {
		errs = append(errs, fmt.Errorf("--fresh-duration: must not be negative, got %v", o.freshDur))
	}
	if o.freshDur > 0 && !(o.freshRate > 0 && o.freshRate <= 100_000) {
		errs = append(errs, fmt.Errorf("--fresh-rate: must be in (0, 100000], got %v", o.freshRate))
	}
	if o.freshBacklog < 0 {
		errs = append(errs, fmt.Errorf("--fresh-backlog: must not be negative, got %d", o.freshBacklog))
	}
	if o.pacedDelay < 0 {
		errs = append(errs, fmt.Errorf("--paced-delay: must not be negative, got %v", o.pacedDelay))
	}
	if o.pollInterval <= 0 {
		errs = append(errs, fmt.Errorf("--poll-interval: must be positive, got %v", o.pollInterval))
	}
	if o.timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout: must be positive, got %v", o.timeout))
	}
	if err := errors.Join(errs...); err != nil {
		return o, &cli.UsageError{Err: err}
	}
	return o, nil
}

// parseCount parses a count with an optional k (thousand) or M (million)
// suffix and underscores as digit separators.
func parseCount(s string) (int, error) {
	orig := s
	s = strings.ReplaceAll(strings.TrimSpace(s), "_", "")
	mult := 1
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult, s = 1_000, s[:len(s)-1]
	case strings.HasSuffix(s, "M"), strings.HasSuffix(s, "m"):
		mult, s = 1_000_000, s[:len(s)-1]
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, err
	}
	if n > 50_000_000/mult {
		return 0, fmt.Errorf("%s is more than the 50M this harness supports", orig)
	}
	return n * mult, nil
}

// parseInstances reads --accounts-instances: distinct counts of ingestd
// processes, in the order given.
func parseInstances(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		switch {
		case err != nil || n < 1 || n > maxInstances:
			return nil, fmt.Errorf("%q is not a number of instances between 1 and %d", f, maxInstances)
		case slices.Contains(out, n):
			return nil, fmt.Errorf("%d is listed twice", n)
		}
		out = append(out, n)
	}
	return out, nil
}

// parseCodecs reads the codec list of --compare-compression: codecs
// separated by commas, each at most once, or "all".
func parseCodecs(s string) ([]string, error) {
	if strings.TrimSpace(s) == "all" {
		return slices.Clone(codecs), nil
	}
	var out []string
	for _, c := range strings.Split(s, ",") {
		c = strings.TrimSpace(c)
		switch {
		case !slices.Contains(codecs, c):
			return nil, fmt.Errorf("%q is not one of %s (or all)", c, strings.Join(codecs, ", "))
		case slices.Contains(out, c):
			return nil, fmt.Errorf("%s is listed twice", c)
		}
		out = append(out, c)
	}
	return out, nil
}

// compareOrder is the order of a comparison's catch-ups: the codecs in the
// given order in even rounds and reversed in odd ones (A B C, C B A, ...).
// Over every two rounds each codec's mean position is the same, so a
// machine that drifts steadily faster or slower favours none of them.
func compareOrder(list []string, rounds int) []string {
	var out []string
	for r := range rounds {
		round := slices.Clone(list)
		if r%2 == 1 {
			slices.Reverse(round)
		}
		out = append(out, round...)
	}
	return out
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// bench is what every measurement needs: the options, the binary under test
// and where progress goes.
type bench struct {
	o        options
	bin      string
	progress io.Writer
}

// logf reports progress on stderr, keeping stdout for the result.
func (b *bench) logf(format string, args ...any) {
	_, _ = fmt.Fprintf(b.progress, "ingestd-bench: "+format+"\n", args...)
}

// run executes the benchmark described by args and prints the result on
// stdout. A missed target is not an error (the table says MISS); a failed
// correctness check (events lost or duplicated) is, after the table has
// been printed.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	b := &bench{o: o, bin: o.bin, progress: stderr}
	if b.bin == "" {
		b.logf("building %s", child.IngestdPackage)
		bin, remove, err := child.Build(ctx, child.IngestdPackage, buildFlags()...)
		if err != nil {
			return err
		}
		defer remove()
		b.bin = bin
	}

	rep := &report{Config: configOf(o)}
	rep.Machine = machineInfo(ctx, o.databaseURL)
	if len(o.compare) > 0 {
		n := o.sizes[0]
		order := compareOrder(o.compare, o.rounds)
		for i, codec := range order {
			b.logf("compression %s (run %d of %d): draining a backlog of %d events (page limit %d)", codec, i+1, len(order), n, o.pageLimit)
			r, err := b.catchUp(ctx, n, codec, 0)
			if err != nil {
				return fmt.Errorf("catch-up of %d events with %s: %w", n, codec, err)
			}
			b.logf("compression %s: %.0f events/s, ingestd %.2f µs/event, %s bytes sent to Kafka per event",
				codec, r.EventsPerSec, r.IngestdCPUUsPerEvent, optFmt(r.KafkaBytesSentPerEvent, 1))
			rep.CatchUp = append(rep.CatchUp, r)
		}
		rep.Compression = summarize(rep.CatchUp, o.compare)
	} else {
		for _, n := range o.sizes {
			b.logf("catch-up: draining a backlog of %d events (page limit %d)", n, o.pageLimit)
			r, err := b.catchUp(ctx, n, o.compression, 0)
			if err != nil {
				return fmt.Errorf("catch-up of %d events: %w", n, err)
			}
			b.logf("catch-up: %d events in %.2fs = %.0f events/s; raw kafka-go %.0f/s, raw PostgreSQL %.0f rows/s",
				n, r.Seconds, r.EventsPerSec, r.RawKafkaPerSec, r.RawPGPerSec)
			rep.CatchUp = append(rep.CatchUp, r)
		}
		if o.pacedDelay > 0 {
			n := o.sizes[0]
			b.logf("paced catch-up: draining a backlog of %d events from a journal asking for %v between requests", n, o.pacedDelay)
			r, err := b.catchUp(ctx, n, o.compression, o.pacedDelay)
			if err != nil {
				return fmt.Errorf("paced catch-up of %d events: %w", n, err)
			}
			b.logf("paced catch-up: %d events in %.2fs = %.0f events/s, %d requests refused as too early", n, r.Seconds, r.EventsPerSec, r.TooEarly)
			rep.CatchUp = append(rep.CatchUp, r)
		}
	}
	if o.freshDur > 0 && len(o.compare) == 0 {
		b.logf("freshness: %.0f events/s for %v, poll interval %v", o.freshRate, o.freshDur, o.pollInterval)
		f, err := b.freshness(ctx)
		if err != nil {
			return fmt.Errorf("freshness run: %w", err)
		}
		rep.Freshness = f
	}
	if o.accounts.quiet > 0 && len(o.compare) == 0 {
		a, err := b.manyAccounts(ctx)
		if err != nil {
			return fmt.Errorf("many-accounts scenario: %w", err)
		}
		rep.Accounts = a
	}
	rep.Machine.LoadAvgEnd = loadAvg()
	rep.evaluate()

	if o.jsonOut {
		err = rep.writeJSON(stdout)
	} else {
		err = rep.writeTable(stdout)
	}
	if err != nil {
		return fmt.Errorf("print the result: %w", err)
	}
	return rep.checkErr()
}
