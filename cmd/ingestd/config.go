package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/peterbourgon/ff/v3"

	"github.com/ingestd/ingestd/internal/cli"
	"github.com/ingestd/ingestd/internal/daemon"
	"github.com/ingestd/ingestd/internal/secret"
)

// envPrefix maps every flag to an environment variable: --kafka-brokers is
// INGESTD_KAFKA_BROKERS. A flag given on the command line wins over the
// environment.
const envPrefix = "INGESTD"

// listFlag is a comma-separated list.
type listFlag struct{ v *[]string }

func (f listFlag) String() string {
	if f.v == nil {
		return ""
	}
	return strings.Join(*f.v, ",")
}

func (f listFlag) Set(s string) error {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	*f.v = out
	return nil
}

// bindDaemonFlags registers one flag per configuration field, with the
// documented default, on fs.
func bindDaemonFlags(fs *flag.FlagSet, c *daemon.Config) {
	fs.Var(secret.Flag{S: &c.Database.DatabaseURL}, "database-url", "PostgreSQL DSN (required)")
	fs.IntVar(&c.Database.MaxConns, "database-max-conns", c.Database.MaxConns, "PostgreSQL pool size")

	fs.Var(listFlag{&c.Kafka.Brokers}, "kafka-brokers", "comma-separated Kafka bootstrap brokers (required)")
	fs.BoolVar(&c.Kafka.Conn.TLS, "kafka-tls", c.Kafka.Conn.TLS, "use TLS to the brokers (implied by any --kafka-tls-* file)")
	fs.StringVar(&c.Kafka.Conn.CAFile, "kafka-tls-ca-file", c.Kafka.Conn.CAFile, "PEM bundle of CAs trusted for the brokers (system roots when unset)")
	fs.StringVar(&c.Kafka.Conn.CertFile, "kafka-tls-cert-file", c.Kafka.Conn.CertFile, "client certificate (PEM) for mutual TLS, with --kafka-tls-key-file")
	fs.StringVar(&c.Kafka.Conn.KeyFile, "kafka-tls-key-file", c.Kafka.Conn.KeyFile, "client key (PEM) for mutual TLS, with --kafka-tls-cert-file")
	fs.StringVar(&c.Kafka.Conn.SASLMechanism, "kafka-sasl-mechanism", c.Kafka.Conn.SASLMechanism, "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (unset: no SASL)")
	fs.StringVar(&c.Kafka.Conn.SASLUsername, "kafka-sasl-username", c.Kafka.Conn.SASLUsername, "SASL user name")
	fs.Var(secret.Flag{S: &c.Kafka.Conn.SASLPassword}, "kafka-sasl-password", "SASL password")
	fs.StringVar(&c.Kafka.Compression, "kafka-compression", c.Kafka.Compression, "codec of produced record batches: none, gzip, snappy, lz4 or zstd")
	fs.StringVar(&c.Kafka.Topic, "kafka-topic", c.Kafka.Topic, "topic for events")
	fs.BoolVar(&c.Kafka.CreateTopic, "kafka-create-topic", c.Kafka.CreateTopic, "create the topic at start when missing")
	fs.IntVar(&c.Kafka.Partitions, "kafka-partitions", c.Kafka.Partitions, "partitions when creating the topic")
	fs.IntVar(&c.Kafka.ReplicationFactor, "kafka-replication-factor", c.Kafka.ReplicationFactor, "replication factor when creating the topic (-1: broker default)")
	fs.IntVar(&c.Kafka.BatchSize, "kafka-batch-size", c.Kafka.BatchSize, "most events per Kafka write")
	fs.IntVar(&c.Kafka.BatchBytes, "kafka-batch-bytes", c.Kafka.BatchBytes, "most bytes of records per produce request to one partition (below the topic's max.message.bytes)")
	fs.DurationVar(&c.Kafka.WriteTimeout, "kafka-write-timeout", c.Kafka.WriteTimeout, "timeout of one Kafka write")
	fs.DurationVar(&c.Kafka.Retention, "outbox-retention", c.Kafka.Retention, "how long published events stay in the outbox (also the replay-dedupe window)")
	fs.DurationVar(&c.Kafka.PruneInterval, "outbox-prune-interval", c.Kafka.PruneInterval, "how often old published events are deleted")
	fs.DurationVar(&c.Kafka.IdlePoll, "outbox-idle-poll", c.Kafka.IdlePoll, "outbox check interval when no commit woke the publisher")

	fs.Var(secret.Flag{S: &c.Yandex.Token}, "yandex-token", "Yandex Delivery OAuth token; the Yandex source runs when set")
	fs.StringVar(&c.Yandex.BaseURL, "yandex-base-url", c.Yandex.BaseURL, "Yandex Delivery API base URL")
	fs.StringVar(&c.Yandex.Account, "yandex-account", c.Yandex.Account, "name of this account in source ids and events")
	fs.IntVar(&c.Yandex.PageLimit, "yandex-page-limit", c.Yandex.PageLimit, "journal page size, 1..1000")
	fs.DurationVar(&c.Yandex.PollInterval, "yandex-poll-interval", c.Yandex.PollInterval, "wait after an empty journal page")
	fs.DurationVar(&c.Yandex.RequestTimeout, "yandex-request-timeout", c.Yandex.RequestTimeout, "timeout of one journal request")
	fs.StringVar(&c.Yandex.AcceptLanguage, "yandex-accept-language", c.Yandex.AcceptLanguage, "Accept-Language sent to Yandex")
	fs.Int64Var(&c.Yandex.MaxResponseBytes, "yandex-max-response-bytes", c.Yandex.MaxResponseBytes, "largest accepted journal response")

	fs.StringVar(&c.SourcesFile, "sources-file", c.SourcesFile, "YAML file listing more sources (Yandex accounts, BTS logins); see docs/operations.md")
	fs.StringVar(&c.BTS.BaseURL, "bts-base-url", c.BTS.BaseURL, "BTS Express API base URL (given to each client by BTS)")
	fs.StringVar(&c.BTS.Login, "bts-login", c.BTS.Login, "BTS login; the BTS source runs when login and password are set")
	fs.Var(secret.Flag{S: &c.BTS.Password}, "bts-password", "BTS password")
	fs.StringVar(&c.BTS.Account, "bts-account", c.BTS.Account, "name of this BTS account in source ids and events")
	fs.StringVar(&c.BTS.Language, "bts-language", c.BTS.Language, "language header sent to BTS")
	fs.DurationVar(&c.BTS.RequestTimeout, "bts-request-timeout", c.BTS.RequestTimeout, "timeout of one BTS request")
	fs.Int64Var(&c.BTS.MaxResponseBytes, "bts-max-response-bytes", c.BTS.MaxResponseBytes, "largest accepted BTS response")
	fs.DurationVar(&c.BTS.TokenTTL, "bts-token-ttl", c.BTS.TokenTTL, "assumed access-token life when the token carries no expiry")
	fs.Var(&c.BTS.Schedule.Intervals, "bts-poll-intervals", "poll interval per BTS status code: code=duration pairs and default=duration")
	fs.Float64Var(&c.BTS.Schedule.Rate, "bts-rate", c.BTS.Schedule.Rate, "BTS requests per second, at most")
	fs.IntVar(&c.BTS.Schedule.Concurrency, "bts-concurrency", c.BTS.Schedule.Concurrency, "BTS requests in flight, at most")
	fs.DurationVar(&c.BTS.Schedule.ClaimTimeout, "bts-claim-timeout", c.BTS.Schedule.ClaimTimeout, "how long a claimed order is reserved for its poller")
	fs.DurationVar(&c.BTS.Schedule.DictionaryRefresh, "bts-dictionary-refresh", c.BTS.Schedule.DictionaryRefresh, "how often the BTS status dictionary is re-read")
	fs.DurationVar(&c.BTS.Schedule.IdlePoll, "bts-idle-poll", c.BTS.Schedule.IdlePoll, "watch-list check interval when no order is due")
	fs.Var(secret.Flag{S: &c.BTS.WebhookToken}, "bts-webhook-token", "token BTS sends with this account's webhooks (at least 16 characters); unset: no webhooks")
	fs.Float64Var(&c.BTS.Schedule.WebhookStretch, "bts-webhook-stretch", c.BTS.Schedule.WebhookStretch, "factor on the poll intervals while the account's webhooks flow (1: none)")
	fs.DurationVar(&c.BTS.Schedule.WebhookQuiet, "bts-webhook-quiet", c.BTS.Schedule.WebhookQuiet, "time without a webhook after which the normal schedule is back")
	fs.StringVar(&c.Webhook.Path, "bts-webhook-path", c.Webhook.Path, "path of the BTS webhook endpoint on the HTTP server")
	fs.BoolVar(&c.Webhook.Autotrack, "bts-webhook-autotrack", c.Webhook.Autotrack, "add an order a webhook names to the watch-list when it is not on it")
	fs.Float64Var(&c.Webhook.Rate, "bts-webhook-rate", c.Webhook.Rate, "webhook calls per second one instance accepts before answering 429")
	fs.Var(secret.Flag{S: &c.AdminToken}, "admin-token", "bearer token of the admin API (/v1/bts/orders); unset: the API refuses every request (403)")
	fs.StringVar(&c.HTTP.Addr, "http-addr", c.HTTP.Addr, "address of /healthz, /readyz and /metrics (off: no server)")
	fs.StringVar(&c.Log.Level, "log-level", c.Log.Level, "log level: debug, info, warn, error")
	fs.StringVar(&c.Log.Format, "log-format", c.Log.Format, "log format: json or console")
	fs.StringVar(&c.Upstream.CABundle, "ca-bundle", c.Upstream.CABundle, "PEM file of extra CAs trusted for upstream APIs")
	fs.DurationVar(&c.Backoff.Initial, "backoff-initial", c.Backoff.Initial, "first wait after a failure")
	fs.DurationVar(&c.Backoff.Max, "backoff-max", c.Backoff.Max, "longest wait between retries")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "bound on graceful shutdown")
	fs.DurationVar(&c.Lease.TTL, "lease-ttl", c.Lease.TTL, "single-writer lease lifetime: the longest a dead instance blocks its standby")
	fs.StringVar(&c.Lease.Holder, "instance-id", "", "this instance's name in the lease table (default hostname/pid/random)")
	fs.StringVar(&c.Failpoints, "failpoints", "", "testing only: crash points for the chaos harness, e.g. publish.after-ack=3")
	fs.Int64Var(&c.MaxBacklog, "outbox-max-backlog", c.MaxBacklog, "pause polling while more outbox rows than this wait for Kafka (0: no bound)")
}

// parseDaemonConfig reads the daemon's configuration from args and the
// environment, as `ingestd run` and `ingestd check-config` both need it.
// extra registers a command's own flags.
func parseDaemonConfig(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (daemon.Config, *flag.FlagSet, error) {
	cfg := daemon.DefaultConfig()
	generatedID := cfg.Lease.Holder
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	bindDaemonFlags(fs, &cfg)
	if extra != nil {
		extra(fs)
	}
	if err := parseFlags(fs, args, stderr); err != nil {
		return daemon.Config{}, nil, err
	}
	// The flag's default is empty so that its documentation does not show
	// one process's generated name.
	if cfg.Lease.Holder == "" {
		cfg.Lease.Holder = generatedID
	}
	return cfg, fs, nil
}

// parseFlags parses args and the environment into fs. Parse errors name the
// environment variable (ff's message does) and are usage errors.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	err := ff.Parse(fs, args, ff.WithEnvVarPrefix(envPrefix))
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	if fs.NArg() > 0 {
		// The values are not echoed: a misplaced argument may be a DSN or
		// a token.
		return &cli.UsageError{Err: fmt.Errorf("unexpected arguments (%d): flags go before arguments, and this command takes none", fs.NArg())}
	}
	return nil
}
