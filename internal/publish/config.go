// Package publish relays the PostgreSQL outbox to Kafka: it checks (or
// creates) the topic at start, chooses each event's partition from its key at
// commit time, writes rows in outbox order with acks from all in-sync
// replicas, and records per-partition watermarks only after Kafka
// acknowledged them.
package publish

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ingestd/ingestd/internal/failpoint"
	"github.com/ingestd/ingestd/internal/kafkaconn"
	"github.com/ingestd/ingestd/internal/retry"
)

// Config configures the Kafka side of ingestd.
type Config struct {
	// Brokers are the bootstrap brokers (INGESTD_KAFKA_BROKERS, required).
	Brokers []string
	// Conn is how every connection to the brokers is made: TLS and SASL
	// (INGESTD_KAFKA_TLS*, INGESTD_KAFKA_SASL_*).
	Conn kafkaconn.Config
	// Compression is the codec of produced record batches
	// (INGESTD_KAFKA_COMPRESSION: none, gzip, snappy, lz4 or zstd; default
	// snappy, chosen by measurement: see docs/performance.md).
	Compression string
	// Topic receives every event (INGESTD_KAFKA_TOPIC, default
	// "delivery.status-changes").
	Topic string
	// CreateTopic creates the topic at start when it is missing
	// (INGESTD_KAFKA_CREATE_TOPIC, default true). When false, a missing topic
	// is a start-up error.
	CreateTopic bool
	// Partitions and ReplicationFactor are used only when creating the topic
	// (INGESTD_KAFKA_PARTITIONS, default 6; INGESTD_KAFKA_REPLICATION_FACTOR,
	// default -1 meaning the broker's default.replication.factor).
	Partitions        int
	ReplicationFactor int
	// BatchSize is the most rows written per Kafka request round
	// (INGESTD_KAFKA_BATCH_SIZE, default 1000).
	BatchSize int
	// BatchBytes is the most bytes of records sent to one partition in one
	// produce request (INGESTD_KAFKA_BATCH_BYTES, default 1000000); a
	// partition's share of a batch that is larger goes in several requests,
	// one after another. It must stay below the topic's max.message.bytes
	// (Kafka's default: 1048588), or the broker refuses the requests.
	BatchBytes int
	// WriteTimeout bounds one write to Kafka (INGESTD_KAFKA_WRITE_TIMEOUT,
	// default 10s).
	WriteTimeout time.Duration
	// Retention is how long published rows stay in the outbox
	// (INGESTD_OUTBOX_RETENTION, default 168h). It is also the window in
	// which a replayed upstream page is recognized as already ingested.
	Retention time.Duration
	// PruneInterval is how often published rows past retention are deleted
	// (INGESTD_OUTBOX_PRUNE_INTERVAL, default 1m).
	PruneInterval time.Duration
	// IdlePoll is how often the outbox is checked when no commit woke the
	// publisher (INGESTD_OUTBOX_IDLE_POLL, default 1s). Commits in this
	// process wake it at once; this only catches rows written by others.
	IdlePoll time.Duration
	// Backoff bounds the waits after a failed write or read-back (the
	// shared INGESTD_BACKOFF_INITIAL and INGESTD_BACKOFF_MAX).
	Backoff retry.Config
	// Failpoints crash the process at armed points (chaos tests only; set
	// from INGESTD_FAILPOINTS by the daemon).
	Failpoints *failpoint.Set
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// setDefaults fills the fields whose zero value means "the default".
func (c *Config) setDefaults() {
	if c.Backoff == (retry.Config{}) {
		c.Backoff = retry.DefaultConfig()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// DefaultConfig returns the defaults; Brokers has none.
func DefaultConfig() Config {
	return Config{
		Topic:             "delivery.status-changes",
		CreateTopic:       true,
		Partitions:        6,
		ReplicationFactor: -1,
		Compression:       "snappy",
		BatchSize:         1000,
		BatchBytes:        1_000_000,
		WriteTimeout:      10 * time.Second,
		Retention:         168 * time.Hour,
		PruneInterval:     time.Minute,
		IdlePoll:          time.Second,
		Backoff:           retry.DefaultConfig(),
	}
}

// Validate reports every problem, naming the environment variable.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("INGESTD_KAFKA_BROKERS: required (comma-separated host:port list)"))
	}
	for _, b := range c.Brokers {
		if host, port, ok := strings.Cut(b, ":"); !ok || host == "" || port == "" {
			errs = append(errs, fmt.Errorf("INGESTD_KAFKA_BROKERS: %q is not host:port", b))
		}
	}
	if !validTopic(c.Topic) {
		errs = append(errs, fmt.Errorf("INGESTD_KAFKA_TOPIC: %q is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])", c.Topic))
	}
	if c.Partitions < 1 || c.Partitions > 10000 {
		errs = append(errs, fmt.Errorf("INGESTD_KAFKA_PARTITIONS: must be between 1 and 10000, got %d", c.Partitions))
	}
	if c.ReplicationFactor == 0 || c.ReplicationFactor < -1 {
		errs = append(errs, fmt.Errorf("INGESTD_KAFKA_REPLICATION_FACTOR: must be -1 (broker default) or positive, got %d", c.ReplicationFactor))
	}
	if c.BatchSize < 1 || c.BatchSize > 100000 {
		errs = append(errs, fmt.Errorf("INGESTD_KAFKA_BATCH_SIZE: must be between 1 and 100000, got %d", c.BatchSize))
	}
	if c.BatchBytes < 1024 || c.BatchBytes > 100<<20 {
		errs = append(errs, fmt.Errorf("INGESTD_KAFKA_BATCH_BYTES: must be between 1024 and 104857600, got %d", c.BatchBytes))
	}
	for _, d := range []struct {
		env string
		v   time.Duration
	}{
		{"INGESTD_KAFKA_WRITE_TIMEOUT", c.WriteTimeout},
		{"INGESTD_OUTBOX_PRUNE_INTERVAL", c.PruneInterval},
		{"INGESTD_OUTBOX_IDLE_POLL", c.IdlePoll},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive, got %s", d.env, d.v))
		}
	}
	if c.Retention < 0 {
		errs = append(errs, fmt.Errorf("INGESTD_OUTBOX_RETENTION: must not be negative, got %s", c.Retention))
	}
	if _, ok := codecs[c.Compression]; !ok {
		errs = append(errs, fmt.Errorf("INGESTD_KAFKA_COMPRESSION: %q is not one of none, gzip, snappy, lz4, zstd", c.Compression))
	}
	errs = append(errs, c.Conn.Validate(), c.Backoff.Validate())
	return errors.Join(errs...)
}

// codecs maps INGESTD_KAFKA_COMPRESSION's values to kafka-go's codecs.
var codecs = map[string]kafka.Compression{
	"none":   0,
	"gzip":   kafka.Gzip,
	"snappy": kafka.Snappy,
	"lz4":    kafka.Lz4,
	"zstd":   kafka.Zstd,
}

func validTopic(t string) bool {
	if t == "" || len(t) > 249 || t == "." || t == ".." {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
