package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ingestd/ingestd/internal/child"
	"github.com/ingestd/ingestd/internal/cli"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/pg"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
	"github.com/ingestd/ingestd/internal/storage"
)

// defaultDatabaseURL is the local server every test and the demo use.
const defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Fixed names of one chaos run. Every run gets its own PostgreSQL schema and
// its own in-process broker, so fixed names cannot collide.
const (
	// defaultAccount is the single-account mode's account, ingestd's
	// default INGESTD_YANDEX_ACCOUNT.
	defaultAccount = "default"
	topicName      = "delivery.status-changes"
	partitions     = 4
)

// options are the command-line settings.
type options struct {
	events      int
	backlog     int
	claims      int
	kills       int
	seed        int64
	replayRate  float64
	unknownRate float64
	dualRate    float64
	leaseTTL    time.Duration
	pageLimit   int
	binary      string
	databaseURL string
	timeout     time.Duration
	jsonOut     bool
	// cluster selects cluster mode (see cluster.go); moveEvery and
	// removeEvery are its mean intervals between leader shuffles and
	// between broker removals.
	cluster     bool
	moveEvery   time.Duration
	removeEvery time.Duration
	// accounts selects the many-accounts mode (see many.go) when positive:
	// that many simulated Yandex accounts at one address, run by replicas
	// ingestd instances at once from a sources file. pauses is the number
	// of its kills that first pause the victim past its leases.
	accounts int
	replicas int
	pauses   int
}

// many reports whether the run is in the many-accounts mode.
func (o options) many() bool { return o.accounts > 0 }

// parseOptions reads args. A bad flag is a usage error.
func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("ingestd-chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.events, "events", 50000, "journal entries the simulator serves (all available at start)")
	fs.IntVar(&o.backlog, "backlog", -1, "journal entries available at start (-1: a tenth of -events); the rest is appended while the rounds run, paced so that it ends about when the kills do, so that kills land while ingestd works. -backlog equal to -events serves the whole journal at once")
	fs.IntVar(&o.claims, "claims", 5000, "claims in flight in the simulated journal")
	fs.IntVar(&o.kills, "kills", 25, "minimum number of SIGKILLs to deliver before the final instance runs (with -accounts: of random replicas, the failpoints' self-kills coming on top)")
	fs.Int64Var(&o.seed, "seed", 0, "seed of the simulated journal and of the harness's choices (0: pick one from the clock; the seed used is printed)")
	fs.Float64Var(&o.replayRate, "replay-rate", 0.05, "fraction of journal pages that re-serve entries already served")
	fs.Float64Var(&o.unknownRate, "unknown-rate", 0.01, "fraction of status changes with an undocumented status")
	fs.Float64Var(&o.dualRate, "dual-rate", 0.3, "fraction of rounds that run two instances at once (some of them pause one past its lease)")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", 2*time.Second, "INGESTD_LEASE_TTL of every instance: how long a killed holder blocks its successor")
	fs.IntVar(&o.pageLimit, "page-limit", 200, "INGESTD_YANDEX_PAGE_LIMIT (1..1000)")
	fs.StringVar(&o.binary, "binary", "", "prebuilt ingestd binary (default: go build ./cmd/ingestd of this module into a temporary directory)")
	fs.StringVar(&o.databaseURL, "database-url", envOr("INGESTD_TEST_DATABASE_URL", defaultDatabaseURL), "PostgreSQL server; the run creates its own schema there and drops it at the end")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "bound on the whole run, after ingestd is built")
	fs.BoolVar(&o.jsonOut, "json", false, "print the summary as JSON on stdout (round lines go to stderr then)")
	fs.BoolVar(&o.cluster, "cluster", false, "cluster mode: three brokers reached over TLS with SASL/SCRAM-SHA-512 (the harness makes the CA and passes its file to the children), partition leaders moving every -move-every, and a broker removed every -remove-every (during a produce request to it when one comes within 2s; its connections dropped) and added back on the same node id and port 0.5-3s later")
	fs.DurationVar(&o.moveEvery, "move-every", 300*time.Millisecond, "with -cluster: mean interval between elections of every partition's leader (each interval jittered by ±50%)")
	fs.DurationVar(&o.removeEvery, "remove-every", 8*time.Second, "with -cluster: mean interval between a removed broker's return and the next removal (jittered by ±50%; the first removal comes after a quarter of it)")
	fs.IntVar(&o.accounts, "accounts", 0, "many-accounts mode when positive: this many simulated Yandex accounts served at one address (each journal with its own seed and token), -events and -claims split among them; one account is described by the INGESTD_YANDEX_* settings, the others by a sources file. -replicas instances run at once and a random one is SIGKILLed and restarted at a time (0: the single-account mode)")
	fs.IntVar(&o.replicas, "replicas", 3, "with -accounts: ingestd instances running at once, sharing the sources by their leases")
	fs.IntVar(&o.pauses, "pauses", 1, "with -accounts: kills that first SIGSTOP the victim until the other replicas took every lease it held over, then SIGCONT it and wait for its step-down (each can take half a minute: a replica frozen in the middle of its sources' commits holds up every commit of the deployment); -dual-rate does not apply, since the replicas always run at once")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, &cli.UsageError{Err: err}
	}
	if fs.NArg() > 0 {
		return o, &cli.UsageError{Err: fmt.Errorf("unexpected arguments: %q", fs.Args())}
	}
	if err := o.validate(); err != nil {
		return o, &cli.UsageError{Err: err}
	}
	if o.backlog < 0 {
		o.backlog = o.events / 10
	}
	if o.seed == 0 {
		o.seed = time.Now().UnixNano()
	}
	return o, nil
}

func (o options) validate() error {
	var errs []error
	if o.events < 1 {
		errs = append(errs, fmt.Errorf("-events must be positive, got %d", o.events))
	}
	if o.backlog < -1 || o.backlog > o.events {
		errs = append(errs, fmt.Errorf("-backlog must be between 0 and -events (%d), or -1, got %d", o.events, o.backlog))
	}
	if o.claims < 1 {
		errs = append(errs, fmt.Errorf("-claims must be positive, got %d", o.claims))
	}
	if o.kills < 0 {
		errs = append(errs, fmt.Errorf("-kills must not be negative, got %d", o.kills))
	}
	for name, v := range map[string]float64{"-replay-rate": o.replayRate, "-unknown-rate": o.unknownRate, "-dual-rate": o.dualRate} {
		if math.IsNaN(v) || v < 0 || v > 1 {
			errs = append(errs, fmt.Errorf("%s must be in [0, 1], got %v", name, v))
		}
	}
	if o.leaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("-lease-ttl must be at least 1s (ingestd's minimum), got %v", o.leaseTTL))
	}
	if o.pageLimit < 1 || o.pageLimit > sim.MaxLimit {
		errs = append(errs, fmt.Errorf("-page-limit must be between 1 and %d, got %d", sim.MaxLimit, o.pageLimit))
	}
	if o.timeout <= 0 {
		errs = append(errs, fmt.Errorf("-timeout must be positive, got %v", o.timeout))
	}
	if o.moveEvery < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("-move-every must be at least 10ms, got %v", o.moveEvery))
	}
	if o.removeEvery < o.moveEvery {
		errs = append(errs, fmt.Errorf("-remove-every must be at least -move-every (%v), got %v", o.moveEvery, o.removeEvery))
	}
	errs = append(errs, o.validateMany()...)
	return errors.Join(errs...)
}

// maxAccounts bounds -accounts: the account names have two digits (shop-00
// to shop-99).
const maxAccounts = 100

// validateMany checks the many-accounts mode's settings.
func (o options) validateMany() []error {
	var errs []error
	if o.accounts < 0 || o.accounts > maxAccounts {
		errs = append(errs, fmt.Errorf("-accounts must be between 0 and %d, got %d", maxAccounts, o.accounts))
	}
	if !o.many() {
		return errs
	}
	if o.pauses < 0 || o.pauses > o.kills {
		errs = append(errs, fmt.Errorf("-pauses must be between 0 and -kills (%d), got %d", o.kills, o.pauses))
	}
	if o.cluster {
		// Each mode attacks one thing; their combination is not a tested
		// claim of the harness, so it is refused rather than half-run.
		errs = append(errs, errors.New("-accounts and -cluster are separate modes; run them one after the other"))
	}
	if o.replicas < 2 || o.replicas > 10 {
		errs = append(errs, fmt.Errorf("-replicas must be between 2 and 10, got %d", o.replicas))
	}
	if o.events < o.accounts {
		errs = append(errs, fmt.Errorf("-events (%d) must be at least -accounts (%d): every account serves at least one entry", o.events, o.accounts))
	}
	if o.claims < o.accounts {
		errs = append(errs, fmt.Errorf("-claims (%d) must be at least -accounts (%d): every account has claims of its own", o.claims, o.accounts))
	}
	return errs
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// run is the whole harness: set up PostgreSQL, Kafka and the simulator, kill
// ingestd over and over, drain with a final instance, check the topic, and
// print the summary. It returns an error when the check finds any loss,
// duplicate or order violation, or fewer kills than asked for.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	// The build comes before the clock starts: it takes as long as the
	// build cache and the machine's load make it, which says nothing about
	// ingestd, and the rounds' share of -timeout must not pay for it.
	bin, removeBin, err := ensureBinary(ctx, o.binary)
	if err != nil {
		return err
	}
	defer removeBin()

	started := time.Now()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	env, err := setUp(ctx, o)
	// close tolerates a partial environment, so it is deferred before the
	// error check.
	defer env.close(stderr)
	if err != nil {
		return err
	}

	progress := stdout
	if o.jsonOut {
		progress = stderr
	}
	h := newHarness(o, bin, env, progress)
	// Deferred after env.close, so it runs first: no child may still hold
	// PostgreSQL connections or talk to the broker while those are torn down.
	defer h.fleet.killAll()

	sum, err := h.run(ctx, started)
	if err != nil {
		return err
	}
	if o.jsonOut {
		if err := sum.writeJSON(stdout); err != nil {
			return err
		}
	} else {
		sum.writeText(stdout)
	}
	if len(sum.Failures) > 0 {
		return fmt.Errorf("chaos check failed: %s", strings.Join(sum.Failures, "; "))
	}
	return nil
}

// ensureBinary returns the ingestd binary to run, building the module's
// cmd/ingestd into a temporary directory unless path names one. The returned
// function removes what was built.
func ensureBinary(ctx context.Context, path string) (string, func(), error) {
	if path == "" {
		return child.Build(ctx, child.IngestdPackage)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", nil, fmt.Errorf("-binary %s: %w", path, err)
	}
	if _, err := os.Stat(abs); err != nil {
		return "", nil, fmt.Errorf("-binary: %w", err)
	}
	return abs, func() {}, nil
}

// environment is what the children run against: a PostgreSQL schema of
// their own, an in-process broker and the simulated journal.
type environment struct {
	baseURL string
	schema  string
	dsn     string
	pool    *pgxpool.Pool
	store   *storage.Stores

	kafka *kfake.Cluster
	// kafkaAddrs are the brokers' host:port, node i at index i; the
	// children and the checker are given all of them.
	kafkaAddrs []string
	// kafkaOpts are what the checker's client needs to reach the brokers
	// (TLS and SASL in cluster mode).
	kafkaOpts []kgo.Opt
	// kafkaEnv are the children's settings to reach the brokers.
	kafkaEnv []string
	// certDir holds the cluster mode's CA and certificates.
	certDir  string
	churn    *churner
	produces *produceLog

	// accounts are the simulated Yandex accounts: one in the
	// single-account mode, -accounts in the many-accounts mode, where
	// multi routes each request by its token and sourcesDir holds the
	// sources file and its token files.
	accounts   []*simAccount
	multi      *sim.YandexAccounts
	sourcesDir string
	// sourcesEnv are the children's settings that name the sources file
	// and the token variables it refers to.
	sourcesEnv []string
	simURL     string
	stopSim    context.CancelFunc
	waitSim    func() error
	simAlive   bool
}

// simAccount is one simulated Yandex account: its journal and token, and its
// name in ingestd's source ids and events.
type simAccount struct {
	name     string
	sourceID string
	token    string
	y        *sim.Yandex
	// events and claims are this account's share of -events and -claims.
	events int
	claims int
	// cursorPos maps every cursor of the journal to the number of entries
	// before it, so that a stored cursor can be read as a position;
	// wantCursor is the cursor after the last entry.
	cursorPos  map[string]int
	wantCursor string
}

// posOf reads a stored cursor as a journal position.
func (a *simAccount) posOf(c string) string {
	if c == "" {
		return "the start"
	}
	if n, ok := a.cursorPos[c]; ok {
		return strconv.Itoa(n)
	}
	return "an unknown cursor"
}

// share is the i-th of n near-equal parts of total, the first total%n parts
// one larger, so that the parts add up to total.
func share(total, n, i int) int {
	s := total / n
	if i < total%n {
		s++
	}
	return s
}

// accountName is the i-th account's name: the single-account mode keeps
// ingestd's default, the many-accounts mode numbers its shops.
func accountName(o options, i int) string {
	if !o.many() {
		return defaultAccount
	}
	return fmt.Sprintf("shop-%02d", i)
}

// setUp creates everything the children need. On error the partial
// environment is returned too, for close.
func setUp(ctx context.Context, o options) (*environment, error) {
	env := &environment{baseURL: o.databaseURL}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return env, fmt.Errorf("random schema name: %w", err)
	}
	schema := "chaos_" + hex.EncodeToString(b[:])

	conn, err := pgx.Connect(ctx, o.databaseURL)
	if err != nil {
		return env, fmt.Errorf("connect to PostgreSQL at %s (start it, or pass -database-url): %w", cli.Redact(o.databaseURL), err)
	}
	_, err = conn.Exec(ctx, "CREATE SCHEMA "+schema)
	_ = conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return env, fmt.Errorf("create schema %s: %w", schema, err)
	}
	env.schema = schema
	if env.dsn, err = withSearchPath(o.databaseURL, schema); err != nil {
		return env, err
	}
	dbCfg := pg.DefaultConfig()
	dbCfg.DatabaseURL = secret.New(env.dsn)
	if _, err := pg.Migrate(ctx, dbCfg); err != nil {
		return env, fmt.Errorf("migrate schema %s: %w", schema, err)
	}
	if env.store, err = storage.Open(ctx, dbCfg); err != nil {
		return env, fmt.Errorf("open the store: %w", err)
	}
	if env.pool, err = pgxpool.New(ctx, env.dsn); err != nil {
		return env, fmt.Errorf("connect to PostgreSQL: %w", err)
	}

	// Topics are not auto-created, as on a production cluster: ingestd
	// creates its topic at start.
	if err := env.startKafka(o); err != nil {
		return env, err
	}

	if err := env.startSim(ctx, o); err != nil {
		return env, err
	}
	if o.many() {
		if err := env.writeSourcesFile(o); err != nil {
			return env, err
		}
	}
	return env, nil
}

// startSim creates the simulated accounts, each journal with its own seed
// and token and the same fault mix, and serves them at one address: in the
// many-accounts mode routed by token, as the real API tells its corporate
// clients apart.
func (env *environment) startSim(ctx context.Context, o options) error {
	n := max(o.accounts, 1)
	var handler http.Handler
	for i := range n {
		var tok [12]byte
		if _, err := rand.Read(tok[:]); err != nil {
			return fmt.Errorf("random token: %w", err)
		}
		a := &simAccount{
			name:   accountName(o, i),
			token:  "chaos-" + hex.EncodeToString(tok[:]),
			events: share(o.events, n, i),
			claims: share(o.claims, n, i),
		}
		a.sourceID = event.ProviderYandex + "/" + a.name
		var err error
		a.y, err = sim.NewYandex(sim.YandexConfig{
			// Consecutive seeds give unrelated journals: the simulator
			// hashes its seed. Account 0 keeps the run's seed, so that the
			// single-account mode serves the journal it always did.
			Seed:              o.seed + int64(i),
			Token:             a.token,
			Backlog:           share(o.backlog, n, i),
			Rate:              initialRate(o) * float64(a.events) / float64(o.events),
			MaxEntries:        a.events,
			Claims:            a.claims,
			ReplayRate:        o.replayRate,
			UnknownStatusRate: o.unknownRate,
			BackwardsTimeRate: 0.01,
			Faults: sim.FaultRates{
				TooManyRequests: 0.01,
				ServerError:     0.01,
				RetryAfter:      "1",
			},
		})
		if err != nil {
			return fmt.Errorf("simulator of account %s: %w", a.name, err)
		}
		env.accounts = append(env.accounts, a)
		handler = a.y
	}
	if o.many() {
		ys := make([]*sim.Yandex, 0, n)
		for _, a := range env.accounts {
			ys = append(ys, a.y)
		}
		var err error
		if env.multi, err = sim.NewYandexAccounts(ys...); err != nil {
			return fmt.Errorf("simulator: %w", err)
		}
		handler = env.multi
	}
	// The simulator outlives ctx's cancellation only as long as close takes;
	// its own context lets close stop it at the right moment.
	simCtx, stopSim := context.WithCancel(context.WithoutCancel(ctx))
	addr, wait, err := sim.ListenAndServe(simCtx, "127.0.0.1:0", handler)
	if err != nil {
		stopSim()
		return fmt.Errorf("serve the simulator: %w", err)
	}
	env.stopSim, env.waitSim, env.simAlive = stopSim, wait, true
	env.simURL = "http://" + addr
	return nil
}

// tokenEnvName is the variable a sources-file entry names for the i-th
// account's token.
func tokenEnvName(i int) string { return fmt.Sprintf("CHAOS_YANDEX_TOKEN_%02d", i) }

// writeSourcesFile writes the sources file of the many-accounts mode: every
// account but the first, which the INGESTD_YANDEX_* settings describe (as in
// the example deployment, so that the harness runs the merge of the two).
// Its entries alternate between the two ways a token is given (a variable, a
// file with a trailing newline as kubectl writes it) and between settings
// stated in the file and settings left to the INGESTD_YANDEX_* defaults,
// with the same values either way.
func (env *environment) writeSourcesFile(o options) error {
	dir, err := os.MkdirTemp("", "ingestd-chaos-sources-")
	if err != nil {
		return fmt.Errorf("a directory for the sources file: %w", err)
	}
	env.sourcesDir = dir
	var b strings.Builder
	b.WriteString("# Written by ingestd-chaos: the accounts beyond the one INGESTD_YANDEX_* describes.\nsources:\n")
	for i := 1; i < len(env.accounts); i++ {
		a := env.accounts[i]
		fmt.Fprintf(&b, "  - provider: yandex\n    account: %s\n", a.name)
		if i%2 == 1 {
			fmt.Fprintf(&b, "    token_env: %s\n", tokenEnvName(i))
			env.sourcesEnv = append(env.sourcesEnv, tokenEnvName(i)+"="+a.token)
			continue
		}
		tokenFile := filepath.Join(dir, "token-"+a.name)
		if err := os.WriteFile(tokenFile, []byte(a.token+"\n"), 0o600); err != nil {
			return fmt.Errorf("write the token file of %s: %w", a.name, err)
		}
		fmt.Fprintf(&b, "    token_file: %s\n    base_url: %s\n    page_limit: %d\n    poll_interval: %s\n",
			tokenFile, env.simURL, o.pageLimit, pollInterval)
	}
	path := filepath.Join(dir, "sources.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write the sources file: %w", err)
	}
	env.sourcesEnv = append(env.sourcesEnv, "INGESTD_SOURCES_FILE="+path)
	return nil
}

// startKafka starts the in-process broker, or in cluster mode three behind
// TLS and SASL with their churner (started by the harness), and sets what
// the children and the checker need to reach them.
func (env *environment) startKafka(o options) error {
	opts := []kfake.Opt{kfake.NumBrokers(1)}
	var tracker *connTracker
	if o.cluster {
		dir, err := os.MkdirTemp("", "ingestd-chaos-certs-")
		if err != nil {
			return fmt.Errorf("a directory for the certificates: %w", err)
		}
		env.certDir = dir
		certs, err := kafkatest.WriteCerts(dir, kafkatest.CertOptions{})
		if err != nil {
			return err
		}
		var pw [18]byte
		if _, err := rand.Read(pw[:]); err != nil {
			return fmt.Errorf("random SASL password: %w", err)
		}
		pass := hex.EncodeToString(pw[:])
		tracker = &connTracker{}
		opts = []kfake.Opt{
			kfake.NumBrokers(clusterBrokers),
			kfake.TLS(certs.ServerTLS(false)),
			kfake.EnableSASL(),
			kfake.Superuser(saslMechanism, saslUser, pass),
			kfake.ListenFn(tracker.listen),
		}
		env.kafkaOpts = []kgo.Opt{kafkatest.TLSOpt(certs.ClientTLS()), kafkatest.SASLOpt(saslMechanism, saslUser, pass)}
		env.kafkaEnv = []string{
			"INGESTD_KAFKA_TLS=true",
			"INGESTD_KAFKA_TLS_CA_FILE=" + certs.CAFile,
			"INGESTD_KAFKA_SASL_MECHANISM=" + saslMechanism,
			"INGESTD_KAFKA_SASL_USERNAME=" + saslUser,
			"INGESTD_KAFKA_SASL_PASSWORD=" + pass,
		}
	}
	var err error
	if env.kafka, err = kfake.NewCluster(opts...); err != nil {
		return fmt.Errorf("start the in-process Kafka broker: %w", err)
	}
	env.kafkaAddrs = env.kafka.ListenAddrs()
	if len(env.kafkaAddrs) == 0 {
		return errors.New("the in-process Kafka broker has no listen address")
	}
	env.kafkaEnv = append(env.kafkaEnv, "INGESTD_KAFKA_BROKERS="+strings.Join(env.kafkaAddrs, ","))
	env.produces = newProduceLog(env.kafka)
	if o.cluster {
		if env.churn, err = newChurner(env.kafka, tracker, env.kafkaAddrs, o.moveEvery, o.removeEvery, o.seed); err != nil {
			return err
		}
		env.produces.onProduce = env.churn.onProduce
	}
	env.kafka.ControlKey(int16(kmsg.Produce), env.produces.observe)
	return nil
}

// assumedSecondsPerKill is the pace guess before the first round: a round
// takes about a lease TTL (a killed holder blocks its successor) plus the
// random delay before the kill.
const assumedSecondsPerKill = 3.0

// initialRate is the append rate until the first round measured the real
// pace (see harness.pace); zero when the whole journal is there at once.
func initialRate(o options) float64 {
	if o.backlog >= o.events {
		return 0
	}
	return float64(o.events-o.backlog) / (float64(max(o.kills, 1)) * assumedSecondsPerKill)
}

// close tears the environment down, the schema last. It is safe on a
// partial environment; problems are reported on w, since the run's own
// result matters more.
func (env *environment) close(w io.Writer) {
	if env.simAlive {
		env.stopSim()
		if err := env.waitSim(); err != nil {
			_, _ = fmt.Fprintln(w, "ingestd-chaos: stop the simulator:", err)
		}
	}
	// The churner calls into the cluster, which must still run.
	if env.churn != nil {
		env.churn.stop()
	}
	if env.kafka != nil {
		env.kafka.Close()
	}
	if env.certDir != "" {
		if err := os.RemoveAll(env.certDir); err != nil {
			_, _ = fmt.Fprintln(w, "ingestd-chaos: remove the certificates:", err)
		}
	}
	if env.sourcesDir != "" {
		if err := os.RemoveAll(env.sourcesDir); err != nil {
			_, _ = fmt.Fprintln(w, "ingestd-chaos: remove the sources file:", err)
		}
	}
	if env.pool != nil {
		env.pool.Close()
	}
	if env.store != nil {
		env.store.Close()
	}
	if env.schema == "" {
		return
	}
	// The run's context may be over (a timeout, Ctrl-C); dropping the
	// schema still deserves a bounded try.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, env.baseURL)
	if err != nil {
		_, _ = fmt.Fprintf(w, "ingestd-chaos: connect to drop schema %s: %v\n", env.schema, err)
		return
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, "DROP SCHEMA "+env.schema+" CASCADE"); err != nil {
		_, _ = fmt.Fprintf(w, "ingestd-chaos: drop schema %s: %v\n", env.schema, err)
	}
}

// withSearchPath returns dsn with its search_path set to schema, so that
// ingestd's unqualified table names (and goose's version table) live there.
func withSearchPath(dsn, schema string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", errors.New("-database-url must be a postgres:// URL")
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}
