package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/peterbourgon/ff/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ingestd/ingestd/internal/cli"
	"github.com/ingestd/ingestd/internal/sim"
)

// envPrefix maps every flag to an environment variable: --yandex-token is
// SIM_YANDEX_TOKEN, --fault-429 is SIM_FAULT_429. A flag given on the command
// line wins over the environment, as in ingestd itself.
const envPrefix = "SIM"

// options is everything the simulator server is configured with.
type options struct {
	addr          string
	logLevel      string
	logFormat     string
	statsInterval time.Duration
	yandex        sim.YandexConfig
	// bts is served when it has orders (--bts-orders > 0).
	bts sim.BTSConfig
}

// defaultOptions mirrors `make demo`: the same seed, backlog, rate and fault
// mix, so `docker compose up` shows the same flow.
func defaultOptions() options {
	return options{
		addr:          ":8081",
		logLevel:      "info",
		logFormat:     "json",
		statsInterval: 10 * time.Second,
		yandex: sim.YandexConfig{
			Seed:              2026,
			Backlog:           5000,
			Rate:              200,
			ReplayRate:        0.05,
			UnknownStatusRate: 0.01,
			BackwardsTimeRate: 0.02,
			PollingDelay:      100 * time.Millisecond,
			Faults: sim.FaultRates{
				TooManyRequests: 0.02,
				RetryAfter:      "1",
				ServerError:     0.02,
				Malformed:       0.01,
				SlowDelay:       time.Second,
			},
		},
		bts: sim.BTSConfig{Seed: 2026, Login: "ingestd", Speed: 2500},
	}
}

// newFlagSet binds every option to a flag whose default is the current value
// in o. Errors are returned, never printed and exited on, so that run stays
// testable.
func newFlagSet(o *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ingestd-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", o.addr, "listen address (host:port; port 0 picks a free one)")
	fs.StringVar(&o.logLevel, "log-level", o.logLevel, "log level: debug, info, warn, error")
	fs.StringVar(&o.logFormat, "log-format", o.logFormat, "log format: json or console")
	fs.DurationVar(&o.statsInterval, "stats-interval", o.statsInterval, "how often to log request and journal counters (0: never)")

	y := &o.yandex
	b := &o.bts
	fs.IntVar(&b.Orders, "bts-orders", b.Orders, "orders of the simulated BTS Express (0: no BTS simulator)")
	fs.Int64Var(&b.FirstOrderID, "bts-first-order-id", b.FirstOrderID, "id of the first BTS order; the others follow (0: derived from the seed)")
	fs.StringVar(&b.Login, "bts-login", b.Login, "login the BTS simulator accepts")
	fs.StringVar(&b.Password, "bts-password", b.Password, "password the BTS simulator accepts (required with --bts-orders)")
	fs.Float64Var(&b.Speed, "bts-speed", b.Speed, "how many times faster than real time BTS orders live their lifecycles")

	fs.StringVar(&y.Token, "yandex-token", y.Token, "Bearer token the Yandex journal requires (empty: any request is accepted)")
	fs.Int64Var(&y.Seed, "seed", y.Seed, "seed of the deterministic journal")
	fs.IntVar(&y.Backlog, "backlog", y.Backlog, "journal entries available at start")
	fs.Float64Var(&y.Rate, "rate", y.Rate, "journal entries appended per second after start")
	fs.IntVar(&y.MaxEntries, "max-entries", y.MaxEntries, "cap on the journal (0: the backlog when rate is 0, else unlimited)")
	fs.IntVar(&y.Claims, "claims", y.Claims, "claim lifecycles in flight at once (0: derived from the journal size)")
	fs.DurationVar(&y.PollingDelay, "polling-delay", y.PollingDelay, "X-Polling-Delay-Ms sent on every journal answer; a request sooner than that after the previous answer gets 429 (0: neither)")
	fs.IntVar(&y.MaxPageSize, "max-page-size", y.MaxPageSize, "cap on a page below the requested limit (0: the limit, up to 1000)")
	fs.Float64Var(&y.UnknownStatusRate, "unknown-status-rate", y.UnknownStatusRate, "fraction of status changes reporting a status outside the documented enum")
	fs.Float64Var(&y.ReplayRate, "replay-rate", y.ReplayRate, "fraction of pages that re-serve a few entries before the cursor")
	fs.Float64Var(&y.BackwardsTimeRate, "backwards-time-rate", y.BackwardsTimeRate, "fraction of entries whose updated_ts goes backwards")
	fs.Float64Var(&y.Faults.TooManyRequests, "fault-429", y.Faults.TooManyRequests, "fraction of requests answered 429")
	fs.StringVar(&y.Faults.RetryAfter, "retry-after", y.Faults.RetryAfter, "Retry-After header of random 429s (empty: none)")
	fs.Float64Var(&y.Faults.ServerError, "fault-5xx", y.Faults.ServerError, "fraction of requests answered 500, 502 or 503")
	fs.Float64Var(&y.Faults.Slow, "fault-slow", y.Faults.Slow, "fraction of requests answered after --slow-delay")
	fs.DurationVar(&y.Faults.SlowDelay, "slow-delay", y.Faults.SlowDelay, "delay of slow answers")
	fs.Float64Var(&y.Faults.Malformed, "fault-malformed", y.Faults.Malformed, "fraction of requests answered 200 with a malformed page")
	return fs
}

// run serves the simulators until ctx ends. Logs go to stderr; stdout gets
// exactly one line, the address actually bound, so that scripts and tests
// started with port 0 can find the server.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := defaultOptions()
	fs := newFlagSet(&o, stderr)
	if err := ff.Parse(fs, args, ff.WithEnvVarPrefix(envPrefix)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &cli.UsageError{Err: err}
	}
	if fs.NArg() > 0 {
		return &cli.UsageError{Err: fmt.Errorf("unexpected arguments: %v", fs.Args())}
	}
	log, err := newLogger(o.logLevel, o.logFormat, stderr)
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	defer func() { _ = log.Sync() }()

	y, err := sim.NewYandex(o.yandex)
	if err != nil {
		// Every NewYandex error is a bad setting (a rate out of range, fault
		// rates adding up to more than 1), so it is a usage error.
		return &cli.UsageError{Err: err}
	}
	var b *sim.BTS
	if o.bts.Orders > 0 {
		o.bts.Seed = o.yandex.Seed
		if b, err = sim.NewBTS(o.bts); err != nil {
			return &cli.UsageError{Err: err}
		}
		log.Info("BTS simulator", zap.Int("orders", o.bts.Orders), zap.String("first_order", b.OrderID(0)), zap.Float64("speed", o.bts.Speed))
	}
	addr, wait, err := sim.ListenAndServe(ctx, o.addr, newMux(y, b))
	if err != nil {
		return err
	}
	// The token itself is never logged, only whether one is required.
	log.Info("simulator listening",
		zap.String("addr", addr),
		zap.String("yandex_journal", sim.YandexJournalPath),
		zap.Bool("yandex_token_required", o.yandex.Token != ""),
		zap.Int64("seed", o.yandex.Seed),
		zap.Int("backlog", o.yandex.Backlog),
		zap.Float64("rate", o.yandex.Rate),
		zap.Duration("polling_delay", o.yandex.PollingDelay),
		zap.Float64("fault_429", o.yandex.Faults.TooManyRequests),
		zap.Float64("fault_5xx", o.yandex.Faults.ServerError),
		zap.Float64("fault_slow", o.yandex.Faults.Slow),
		zap.Float64("fault_malformed", o.yandex.Faults.Malformed))
	if _, err := fmt.Fprintf(stdout, "ingestd-sim listening on http://%s\n", addr); err != nil {
		log.Warn("could not print the listen address", zap.Error(err))
	}

	logStats(ctx, log, o.statsInterval, y)
	err = wait()
	log.Info("simulator stopped",
		zap.Int64("requests", y.Requests()), zap.Int64("served", y.Served()), zap.Int("available", y.Available()))
	return err
}

// newMux routes each simulated API to its own paths, so that one process
// stands in for every upstream ingestd talks to.
func newMux(y *sim.Yandex, b *sim.BTS) *http.ServeMux {
	mux := http.NewServeMux()
	// The exact journal path, any method: the simulator itself answers 405
	// to anything but POST, like the real API.
	mux.Handle(sim.YandexJournalPath, y)
	if b != nil {
		// BTS's own paths: /auth/login, /auth/refresh, /v1/status/index,
		// /v1/order/track, /v1/order/detail.
		mux.Handle("/auth/", b)
		mux.Handle("/v1/", b)
	}
	// A liveness endpoint for orchestrators; it checks nothing but that the
	// process serves HTTP.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

// logStats logs the simulator's counters every interval until ctx ends, so
// that `docker compose up` shows the upstream side of the flow too.
func logStats(ctx context.Context, log *zap.Logger, every time.Duration, y *sim.Yandex) {
	if every <= 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			log.Info("yandex journal",
				zap.Int("available", y.Available()),
				zap.Int64("requests", y.Requests()),
				zap.Int64("served", y.Served()))
		}
	}
}

// newLogger builds the zap logger the way ingestd does: JSON for machines,
// console for humans.
func newLogger(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("SIM_LOG_LEVEL: %w", err)
	}
	var enc zapcore.Encoder
	switch format {
	case "json":
		enc = zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	case "console":
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("SIM_LOG_FORMAT: want json or console, got %q", format)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), lvl), zap.ErrorOutput(zapcore.AddSync(w))), nil
}
