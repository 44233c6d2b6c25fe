package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ingestd/ingestd/internal/cli"
	"github.com/ingestd/ingestd/schemas"
)

// Defaults match `make demo`: its in-process broker, its topic and the local
// PostgreSQL server.
const (
	defaultBrokers     = "127.0.0.1:9092"
	defaultTopic       = "delivery.status-changes"
	defaultGroup       = "ingestd-example-consumer"
	defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
)

// maxPollRecords bounds one batch, so that a batch is processed well within
// the group's rebalance timeout while rebalances are blocked.
const maxPollRecords = 500

// recordTimeout bounds the PostgreSQL work of one record, which also goes
// on for that long after a shutdown begins.
const recordTimeout = 10 * time.Second

// migrate creates the consumer's tables. It is idempotent, so it runs at
// every start.
//
// processed_events is the deduplication table: its primary key on ce_id is
// what makes a redelivered record a no-op. shipment_status is the effect,
// the latest known state of each shipment. rejected_records is the
// dead-letter table: a payload that fails validation fails it again on
// every redelivery, so it is parked there for a person and its offset is
// committed rather than blocking the partition.
const migrate = `
CREATE TABLE IF NOT EXISTS processed_events (
	ce_id        text        PRIMARY KEY,
	topic        text        NOT NULL,
	partition    integer     NOT NULL,
	"offset"     bigint      NOT NULL,
	key          text        NOT NULL,
	processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS shipment_status (
	key         text        PRIMARY KEY,
	status      text,
	revision    bigint      NOT NULL,
	ce_id       text        NOT NULL,
	occurred_at timestamptz NOT NULL,
	updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS rejected_records (
	topic       text        NOT NULL,
	partition   integer     NOT NULL,
	"offset"    bigint      NOT NULL,
	key         bytea,
	value       bytea,
	reason      text        NOT NULL,
	rejected_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (topic, partition, "offset")
);`

// insertProcessed claims ce_id for this transaction. A second transaction
// inserting the same ce_id (a redelivery, or another group member after a
// rebalance) waits for the first to finish and then inserts nothing, so
// the effect below runs at most once per event.
const insertProcessed = `
INSERT INTO processed_events (ce_id, topic, partition, "offset", key)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (ce_id) DO NOTHING`

// upsertStatus moves a shipment to the event's state only when the event's
// revision is newer than the stored one. Events of one key arrive in order
// within their partition, but an operator's replay or a rewind can deliver
// an older one again under a new ce_id, and the revision keeps it from
// overwriting newer state. An event without a status (a price change)
// keeps the stored status. It returns a row only when it changed one.
const upsertStatus = `
INSERT INTO shipment_status AS s (key, status, revision, ce_id, occurred_at, updated_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (key) DO UPDATE
SET status      = COALESCE(EXCLUDED.status, s.status),
    revision    = EXCLUDED.revision,
    ce_id       = EXCLUDED.ce_id,
    occurred_at = EXCLUDED.occurred_at,
    updated_at  = EXCLUDED.updated_at
WHERE s.revision < EXCLUDED.revision
RETURNING revision`

// insertRejected parks a record that failed validation.
const insertRejected = `
INSERT INTO rejected_records (topic, partition, "offset", key, value, reason)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (topic, partition, "offset") DO NOTHING`

// config is the command line.
type config struct {
	brokers     []string
	topic       string
	group       string
	databaseURL string
	schema      string
}

// hooks let the tests stop the consumer at exact points. The zero value
// does nothing.
type hooks struct {
	// beforeOffsetCommit is called after a batch's transactions committed
	// and before its offsets are committed, with the number of events
	// applied in the batch and in the whole run. An error stops the
	// consumer there without committing the offsets, as a crash would, so
	// that the next run receives the batch again.
	beforeOffsetCommit func(batchApplied, totalApplied int) error
}

// run is the command: it parses args and consumes until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runWith(ctx, args, os.Getenv, stdout, stderr, hooks{})
}

// runWith is run with the environment and the test hooks passed in.
func runWith(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, h hooks) error {
	cfg, err := parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	sch, err := schemas.CompileDeliveryEventV1()
	if err != nil {
		return err
	}
	pool, err := openDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	cl, err := kgo.NewClient(
		kgo.SeedBrokers(cfg.brokers...),
		kgo.ConsumerGroup(cfg.group),
		kgo.ConsumeTopics(cfg.topic),
		// A new group starts at the beginning of the topic, so that no
		// event published before the consumer's first start is missed.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Offsets are committed by hand, only after the events they cover
		// are committed in PostgreSQL; an automatic commit could run ahead
		// of that and lose events in a crash.
		kgo.DisableAutoCommit(),
		// A rebalance waits until the polled batch is processed and its
		// offsets committed, so the member never commits offsets of
		// partitions that were already handed to another member.
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchMaxWait(250*time.Millisecond),
		// Warnings only: group joins and partition moves are routine.
		kgo.WithLogger(kgo.BasicLogger(stderr, kgo.LogLevelWarn, nil)),
	)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer func() {
		// Leaving the group needs the rebalance the last poll blocked.
		// Nothing is committed here: what was not committed after its
		// batch is received again by the next member, and deduplicated.
		cl.AllowRebalance()
		cl.Close()
	}()

	c := &consumer{cfg: cfg, sch: sch, pool: pool, out: stdout, errOut: stderr}
	fmt.Fprintf(stderr, "consuming %s as group %s from %s\n", cfg.topic, cfg.group, strings.Join(cfg.brokers, ","))
	for {
		fetches := cl.PollRecords(ctx, maxPollRecords)
		if ctx.Err() != nil {
			return nil
		}
		if errs := fetches.Errors(); len(errs) > 0 {
			// Fetch errors are retried by the client; they are reported
			// so that an unreachable broker is visible.
			for _, fe := range errs {
				fmt.Fprintf(stderr, "fetch %s/%d: %v\n", fe.Topic, fe.Partition, fe.Err)
			}
		}
		applied := 0
		var procErr error
		stopped := false
		fetches.EachRecord(func(r *kgo.Record) {
			if procErr != nil || stopped {
				return
			}
			// A shutdown is taken between records, never inside one.
			if ctx.Err() != nil {
				stopped = true
				return
			}
			var ok bool
			ok, procErr = c.handle(ctx, r)
			if ok {
				applied++
			}
		})
		if procErr != nil || stopped {
			// The batch's offsets stay uncommitted: the records already
			// applied are skipped as duplicates when they come again.
			return procErr
		}
		c.applied += applied
		if h.beforeOffsetCommit != nil {
			if err := h.beforeOffsetCommit(applied, c.applied); err != nil {
				return err
			}
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("commit offsets: %w", err)
		}
		cl.AllowRebalance()
	}
}

// parse reads the flags, each defaulting to its environment variable and
// then to the demo's setting.
func parse(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	env := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	var cfg config
	var brokers string
	fs := flag.NewFlagSet("consumer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&brokers, "brokers", env("CONSUMER_BROKERS", defaultBrokers), "comma-separated Kafka bootstrap brokers (CONSUMER_BROKERS)")
	fs.StringVar(&cfg.topic, "topic", env("CONSUMER_TOPIC", defaultTopic), "topic of ingestd's delivery events (CONSUMER_TOPIC)")
	fs.StringVar(&cfg.group, "group", env("CONSUMER_GROUP", defaultGroup), "Kafka consumer group (CONSUMER_GROUP)")
	fs.StringVar(&cfg.databaseURL, "database-url", env("CONSUMER_DATABASE_URL", defaultDatabaseURL), "PostgreSQL DSN (CONSUMER_DATABASE_URL)")
	fs.StringVar(&cfg.schema, "schema", env("CONSUMER_SCHEMA", ""), "PostgreSQL schema for the consumer's tables, created when missing (CONSUMER_SCHEMA; empty: the DSN's search_path)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, &cli.UsageError{Err: err}
	}
	if fs.NArg() > 0 {
		return cfg, &cli.UsageError{Err: fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	for _, b := range strings.Split(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			cfg.brokers = append(cfg.brokers, b)
		}
	}
	if len(cfg.brokers) == 0 {
		return cfg, &cli.UsageError{Err: errors.New("--brokers: at least one broker is required")}
	}
	if cfg.topic == "" || cfg.group == "" {
		return cfg, &cli.UsageError{Err: errors.New("--topic and --group must not be empty")}
	}
	return cfg, nil
}

// openDB connects to PostgreSQL, creates the schema when one is named and
// missing, and creates the tables in it.
func openDB(ctx context.Context, cfg config) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.databaseURL)
	if err != nil {
		return nil, &cli.UsageError{Err: fmt.Errorf("--database-url: %w", err)}
	}
	// The consumer handles one record at a time; a second connection is
	// for the schema set-up only.
	pcfg.MaxConns = 2
	if cfg.schema != "" {
		// Every connection of the pool uses the schema, so the SQL below
		// stays unqualified.
		pcfg.ConnConfig.RuntimeParams["search_path"] = cfg.schema
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL %s: %w", cli.Redact(cfg.databaseURL), err)
	}
	if cfg.schema != "" {
		if _, err := pool.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{cfg.schema}.Sanitize()); err != nil {
			pool.Close()
			return nil, fmt.Errorf("create schema %s: %w", cfg.schema, err)
		}
	}
	if _, err := pool.Exec(ctx, migrate); err != nil {
		pool.Close()
		return nil, fmt.Errorf("create tables: %w", err)
	}
	return pool, nil
}

// consumer applies records.
type consumer struct {
	cfg     config
	sch     *jsonschema.Schema
	pool    *pgxpool.Pool
	out     io.Writer
	errOut  io.Writer
	applied int // events applied in this run
}

// payload is the part of the event the effect needs; the schema has
// already checked the whole of it.
type payload struct {
	EventID    string    `json:"event_id"`
	Status     *string   `json:"status"`
	Revision   int64     `json:"revision"`
	OccurredAt time.Time `json:"occurred_at"`
}

// handle processes one record in one transaction and reports whether its
// event was applied (rather than a duplicate or rejected). It prints one
// line for the record.
func (c *consumer) handle(ctx context.Context, r *kgo.Record) (bool, error) {
	// The work is not cancelled with ctx: a commit cut off by a shutdown
	// may have committed all the same, and the record's outcome would be
	// unknown. The record in hand is finished, within a bound.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	ceID := header(r, "ce_id")
	p, reason := c.validate(r, ceID)
	if reason != "" {
		if _, err := c.pool.Exec(ctx, insertRejected, r.Topic, r.Partition, r.Offset, r.Key, r.Value, reason); err != nil {
			return false, fmt.Errorf("dead-letter %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
		}
		fmt.Fprintf(c.errOut, "rejected %s/%d@%d: %s\n", r.Topic, r.Partition, r.Offset, reason)
		return false, nil
	}

	key := string(r.Key)
	var applied, newer bool
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, insertProcessed, ceID, r.Topic, r.Partition, r.Offset, key)
		if err != nil {
			return fmt.Errorf("record %s: %w", ceID, err)
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		applied = true
		var rev int64
		switch err := tx.QueryRow(ctx, upsertStatus, key, p.Status, p.Revision, ceID, p.OccurredAt).Scan(&rev); {
		case errors.Is(err, pgx.ErrNoRows):
			// An older revision than the stored one: recorded as
			// processed, with no effect on the shipment.
		case err != nil:
			return fmt.Errorf("apply %s: %w", ceID, err)
		default:
			newer = true
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	switch {
	case !applied:
		fmt.Fprintf(c.out, "duplicate %s\n", ceID)
	case !newer:
		fmt.Fprintf(c.out, "stale %s %s revision %d\n", ceID, key, p.Revision)
	default:
		fmt.Fprintf(c.out, "applied %s %s %s\n", ceID, key, statusText(p.Status))
	}
	return applied, nil
}

// validate checks the record against the contract (docs/events.md): the
// payload against the JSON Schema, and the ce_id header against the
// payload's event_id, since ce_id is the deduplication key. It returns the
// reason when the record is invalid.
func (c *consumer) validate(r *kgo.Record, ceID string) (payload, string) {
	var p payload
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(r.Value))
	if err != nil {
		return p, "payload is not JSON: " + err.Error()
	}
	if err := c.sch.Validate(inst); err != nil {
		return p, "payload does not match delivery-event.v1.json: " + oneLine(err.Error())
	}
	if err := json.Unmarshal(r.Value, &p); err != nil {
		return p, "payload: " + err.Error()
	}
	if ceID == "" || ceID != p.EventID {
		return p, fmt.Sprintf("ce_id header %q is not the payload's event_id %q", ceID, p.EventID)
	}
	return p, ""
}

// header returns the value of the record's header k, or "".
func header(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

func statusText(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}

// oneLine folds the schema validator's multi-line message into one log line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
