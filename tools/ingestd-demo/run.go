package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/cli"
	"github.com/ingestd/ingestd/internal/daemon"
	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/pg"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
	"github.com/ingestd/ingestd/internal/storage"
	"github.com/ingestd/ingestd/internal/watchlist"
)

const (
	defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	demoToken          = "demo-token"
	demoPollingDelay   = 100 * time.Millisecond
	demoWebhookToken   = "demo-webhook-token-0123456789"
)

type options struct {
	kafkaPort  int
	simAddr    string
	httpAddr   string
	duration   time.Duration
	backlog    int
	rate       float64
	faults     bool
	sampleEach time.Duration
	schema     string
	btsOrders  int
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := flag.NewFlagSet("ingestd-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.kafkaPort, "kafka-port", 9092, "port of the in-process Kafka broker on 127.0.0.1")
	fs.StringVar(&o.simAddr, "sim-addr", "127.0.0.1:0", "address of the simulated Yandex API (both accounts' journals)")
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:8080", "ingestd's /healthz, /readyz and /metrics")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long (0: run until Ctrl-C)")
	fs.IntVar(&o.backlog, "backlog", 5000, "journal entries already waiting upstream at start")
	fs.Float64Var(&o.rate, "rate", 200, "new journal entries per second after the backlog")
	fs.BoolVar(&o.faults, "faults", true, "inject upstream faults (429, 5xx, malformed pages) now and then")
	fs.DurationVar(&o.sampleEach, "sample-every", 3*time.Second, "how often to print a sample event")
	fs.IntVar(&o.btsOrders, "bts-orders", 300, "BTS orders on the watch-list")
	fs.StringVar(&o.schema, "schema", "ingestd_demo", "PostgreSQL schema for the demo's tables (dropped and recreated at start)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &cli.UsageError{Err: err}
	}
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}

	// PostgreSQL: a fresh schema per demo run, so every run starts at the
	// beginning of the simulated journal.
	baseURL := os.Getenv("INGESTD_DATABASE_URL")
	if baseURL == "" {
		baseURL = defaultDatabaseURL
	}
	if !validSchema(o.schema) {
		return &cli.UsageError{Err: fmt.Errorf("-schema %q: use lower-case letters, digits and _", o.schema)}
	}
	dsn, err := prepareSchema(ctx, baseURL, o.schema)
	if err != nil {
		return err
	}
	dbCfg := pg.DefaultConfig()
	dbCfg.DatabaseURL = secret.New(dsn)
	if _, err := pg.Migrate(ctx, dbCfg); err != nil {
		return err
	}
	store, err := storage.Open(ctx, dbCfg)
	if err != nil {
		return err
	}
	defer store.Close()

	// Kafka: an in-process broker that any Kafka client can reach.
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(o.kafkaPort))
	if err != nil {
		return fmt.Errorf("start the in-process Kafka broker on 127.0.0.1:%d (is another Kafka using the port? try -kafka-port): %w", o.kafkaPort, err)
	}
	defer cluster.Close()
	broker := cluster.ListenAddrs()[0]

	// The simulated Yandex API: two merchants' accounts at one address, as
	// the real API serves them, each token reading its own journal.
	// Both ask for 100 ms between journal requests (X-Polling-Delay-Ms),
	// as the real API does, and refuse a request that comes sooner.
	sc := sim.YandexConfig{Seed: 2026, Token: demoToken + "-shop-a", Backlog: o.backlog, Rate: o.rate, ReplayRate: 0.05, UnknownStatusRate: 0.01, BackwardsTimeRate: 0.02, PollingDelay: demoPollingDelay}
	if o.faults {
		sc.Faults = sim.FaultRates{TooManyRequests: 0.02, RetryAfter: "1", ServerError: 0.02, Malformed: 0.01}
	}
	y, err := sim.NewYandex(sc)
	if err != nil {
		return err
	}
	y2, err := sim.NewYandex(sim.YandexConfig{Seed: 2027, Token: demoToken + "-shop-b", Backlog: o.backlog / 10, Rate: o.rate / 4, PollingDelay: demoPollingDelay})
	if err != nil {
		return err
	}
	accounts, err := sim.NewYandexAccounts(y, y2)
	if err != nil {
		return err
	}
	simCtx, stopSim := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSim()
	simAddr, waitSim, err := sim.ListenAndServe(simCtx, o.simAddr, accounts)
	if err != nil {
		return err
	}
	defer func() { stopSim(); _ = waitSim() }()

	// The simulated BTS Express: orders whose days-long lifecycles are
	// compressed into about a minute, all on the watch-list.
	const btsSpeed = 2500
	b, err := sim.NewBTS(sim.BTSConfig{Seed: 2026, Login: "demo", Password: demoToken, Orders: o.btsOrders, Speed: btsSpeed})
	if err != nil {
		return err
	}
	btsAddr, waitBTS, err := sim.ListenAndServe(simCtx, "127.0.0.1:0", b)
	if err != nil {
		return err
	}
	defer func() { stopSim(); _ = waitBTS() }()
	if _, err := store.Watchlist.Track(ctx, btsSource, b.Orders()); err != nil {
		return err
	}
	intervals, err := bts.ParseIntervals("100=2h,800=15m,1100=2m,default=30m")
	if err != nil {
		return err
	}

	// The three accounts come from a sources file, as a deployment with
	// many accounts runs them; their secrets from variables it names.
	dir, err := os.MkdirTemp("", "ingestd-demo-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	sourcesFile := filepath.Join(dir, "sources.yaml")
	doc := fmt.Sprintf(`sources:
  - provider: yandex
    account: shop-a
    token_env: DEMO_SHOP_A_TOKEN
    base_url: http://%s
  - provider: yandex
    account: shop-b
    token_env: DEMO_SHOP_B_TOKEN
    base_url: http://%s
  - provider: bts
    account: tashkent
    login_env: DEMO_BTS_LOGIN
    password_env: DEMO_BTS_PASSWORD
    webhook_token_env: DEMO_BTS_WEBHOOK_TOKEN
    base_url: http://%s
`, simAddr, simAddr, btsAddr)
	if err := os.WriteFile(sourcesFile, []byte(doc), 0o600); err != nil {
		return err
	}
	demoEnv := map[string]string{"DEMO_SHOP_A_TOKEN": demoToken + "-shop-a", "DEMO_SHOP_B_TOKEN": demoToken + "-shop-b", "DEMO_BTS_LOGIN": "demo", "DEMO_BTS_PASSWORD": demoToken, "DEMO_BTS_WEBHOOK_TOKEN": demoWebhookToken}

	cfg := daemon.DefaultConfig()
	cfg.Database = dbCfg
	cfg.SourcesFile = sourcesFile
	cfg.Getenv = func(k string) string { return demoEnv[k] }
	// The file's BTS source takes its schedule from these defaults.
	cfg.BTS.Schedule.Intervals = intervals.Scaled(btsSpeed)
	cfg.BTS.Schedule.IdlePoll = 200 * time.Millisecond
	cfg.Kafka.Brokers = []string{broker}
	cfg.Kafka.Partitions = 3
	cfg.HTTP.Addr = o.httpAddr
	cfg.Log = daemon.LogConfig{Level: "warn", Format: "console"}
	cfg.AdminToken = secret.New(demoToken)
	cfg.ShutdownTimeout = 10 * time.Second

	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(stderr), zapcore.WarnLevel))
	d, err := daemon.New(ctx, cfg, log)
	if err != nil {
		return err
	}

	// BTS calls ingestd on every status change once told where, as an
	// operator tells it with `ingestd bts webhook register`.
	webhookURL, err := registerWebhook(ctx, "http://"+btsAddr, d.HTTPAddr(), cfg.Webhook.Path)
	if err != nil {
		return err
	}
	apiBase := "http://" + loopback(d.HTTPAddr())

	fmt.Fprintf(stdout, `ingestd demo
  PostgreSQL   %s (schema %s, recreated for this run)
  Kafka        %s, topic %s (in-process broker; any Kafka client can read it:
               kcat -b %s -t %s -C -f '%%k %%h\n%%s\n\n')
  upstream     simulated Yandex API at http://%s, one journal per account's token,
               asking for %s between journal requests (X-Polling-Delay-Ms):
                 yandex/shop-a: %d waiting, +%.0f/s, faults: %s
                 yandex/shop-b: %d waiting, +%.0f/s
               simulated BTS Express at http://%s (bts/tashkent: %d orders on the watch-list, lifecycles sped up %dx),
               calling the webhook %s on every status change
  sources      %s
  ingestd      metrics (Prometheus): %s/metrics   probes: %s/readyz  %s/healthz
  admin API    (schemas/admin-api.yaml; token %q)
               curl -H 'Authorization: Bearer %s' %s/v1/sources
               curl -H 'Authorization: Bearer %s' '%s/v1/bts/orders?account=tashkent&state=active&limit=5'
               curl -H 'Authorization: Bearer %s' -d '{"order_ids":["4293644"]}' '%s/v1/bts/orders?account=tashkent'
               curl -X DELETE -H 'Authorization: Bearer %s' '%s/v1/bts/orders/4293644?account=tashkent'
Ctrl-C stops the demo.

`, cli.Redact(baseURL), o.schema, broker, cfg.Kafka.Topic, broker, cfg.Kafka.Topic, simAddr, demoPollingDelay, o.backlog, o.rate, onOff(o.faults),
		o.backlog/10, o.rate/4, btsAddr, o.btsOrders, btsSpeed, webhookURL, sourcesFile, apiBase, apiBase, apiBase,
		demoToken, demoToken, apiBase, demoToken, apiBase, demoToken, apiBase, demoToken, apiBase)

	var wg sync.WaitGroup
	daemonErr := make(chan error, 1)
	wg.Go(func() { daemonErr <- d.Run(ctx) })
	wg.Go(func() {
		if err := b.RunWebhooks(ctx); err != nil && ctx.Err() == nil {
			fmt.Fprintf(stderr, "simulated BTS webhooks stopped: %v\n", err)
		}
	})
	var received atomic.Int64
	wg.Go(func() { consume(ctx, broker, cfg.Kafka.Topic, o.sampleEach, &received, stdout) })
	wg.Go(func() { report(ctx, store, y, y2, &received, stdout) })
	wg.Wait()

	fmt.Fprintf(stdout, "\ndemo stopped: %d events read from Kafka, %d journal entries upstream\n", received.Load(), y.Available()+y2.Available())
	return <-daemonErr
}

// registerWebhook tells the simulated BTS to call the daemon's webhook
// endpoint, with the BTS client `ingestd bts webhook register` uses, and
// returns the URL.
func registerWebhook(ctx context.Context, btsURL, httpAddr, path string) (string, error) {
	bc := bts.DefaultConfig()
	bc.BaseURL, bc.Login, bc.Password, bc.Account = btsURL, "demo", secret.New(demoToken), "tashkent"
	client, err := bts.NewClient(bc, &http.Client{})
	if err != nil {
		return "", err
	}
	target := "http://" + loopback(httpAddr) + path
	if _, err := client.SetWebhook(ctx, bts.Webhook{URL: target, Environment: bts.WebhookTest, HasToken: true, APIKey: secret.New(demoWebhookToken)}); err != nil {
		return "", fmt.Errorf("register the demo's BTS webhook: %w", err)
	}
	return target, nil
}

// loopback is addr with a wildcard host replaced by 127.0.0.1, for URLs.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || (host != "" && host != "0.0.0.0" && host != "::") {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// prepareSchema checks PostgreSQL answers and recreates the demo schema,
// returning a DSN that uses it.
func prepareSchema(ctx context.Context, baseURL, schema string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, baseURL)
	if err != nil {
		return "", fmt.Errorf(`no PostgreSQL answered at %s: %w

The demo needs a PostgreSQL server. Either:
  - start the local one:  pg_ctlcluster 15 main start   (Debian/Ubuntu: apt-get install postgresql)
  - or run one in Docker: docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16
  - or point the demo at yours: INGESTD_DATABASE_URL=postgres://user:pass@host:5432/db make demo`, cli.Redact(baseURL), err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(cctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
		return "", fmt.Errorf("reset demo schema: %w", err)
	}
	if _, err := conn.Exec(cctx, "CREATE SCHEMA "+schema); err != nil {
		return "", fmt.Errorf("create demo schema: %w", err)
	}
	u, err := url.Parse(baseURL)
	if err != nil || u.Scheme == "" {
		// A key=value DSN: append the search path as one more keyword.
		return baseURL + " search_path=" + schema, nil
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// consume reads the topic like any downstream subscriber would (with
// franz-go, independent of the kafka-go producer inside ingestd), counting
// events and printing a sample now and then.
func consume(ctx context.Context, broker, topic string, every time.Duration, received *atomic.Int64, w io.Writer) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		fmt.Fprintf(w, "consumer: %v\n", err)
		return
	}
	defer cl.Close()
	// One sample per provider now and then, so both sources show.
	lastSample := map[string]time.Time{}
	for ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		fetches.EachRecord(func(r *kgo.Record) {
			received.Add(1)
			provider, _, _ := strings.Cut(string(r.Key), ":")
			if time.Since(lastSample[provider]) < every {
				return
			}
			lastSample[provider] = time.Now()
			printSample(w, r)
		})
	}
}

func printSample(w io.Writer, r *kgo.Record) {
	ev, err := event.ParsePayload(r.Value)
	if err != nil {
		fmt.Fprintf(w, "  sample: undecodable payload: %v\n", err)
		return
	}
	headers := map[string]string{}
	for _, h := range r.Headers {
		headers[h.Key] = string(h.Value)
	}
	// The upstream entry verbatim (raw) is long; kcat shows it in full.
	ev.Raw = nil
	compact := ev.AppendJSON(nil)
	fmt.Fprintf(w, "  sample event  partition %d offset %d key %s  ce_type=%s ce_id=%s\n    %s\n",
		r.Partition, r.Offset, r.Key, headers["ce_type"], ev.ID, compact)
}

// report prints one status line a second.
func report(ctx context.Context, store *storage.Stores, shopA, shopB *sim.Yandex, received *atomic.Int64, w io.Writer) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	start := time.Now()
	var last int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		a, err1 := store.Cursors.Source(qctx, "yandex/shop-a")
		b, err4 := store.Cursors.Source(qctx, "yandex/shop-b")
		bl, err2 := store.Outbox.Backlog(qctx)
		bc, err3 := store.Watchlist.Count(qctx, btsSource)
		cancel()
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			if ctx.Err() == nil {
				fmt.Fprintf(w, "status: %v\n", err)
			}
			continue
		}
		now := received.Load()
		fmt.Fprintf(w, "[%4.0fs] kafka: %7d events (%5d/s) | yandex/shop-a: %7d of %7d | yandex/shop-b: %6d of %6d | bts/tashkent: %d active, %d terminal | outbox backlog: %d\n",
			time.Since(start).Seconds(), now, now-last, a.EventsTotal, shopA.Available(), b.EventsTotal, shopB.Available(),
			bc[watchlist.Active], bc[watchlist.Terminal], bl.Rows)
		last = now
	}
}

// btsSource is the demo's BTS account's watch-list.
const btsSource = "bts/tashkent"

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// validSchema keeps the schema name safe to splice into DDL.
func validSchema(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '_' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
