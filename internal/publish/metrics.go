package publish

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ingestd/ingestd/internal/kafkaconn"
)

type metrics struct {
	published     *prometheus.CounterVec
	writeErrors   prometheus.Counter
	writeSeconds  prometheus.Histogram
	backlog       prometheus.Gauge
	oldestAge     prometheus.Gauge
	pruned        prometheus.Counter
	reconciled    prometheus.Counter
	outboxReads   prometheus.Counter
	lag           prometheus.Histogram
	lastPublished prometheus.Gauge
	accessErrors  *prometheus.CounterVec
	retriedWrites prometheus.Counter
	unknownWrites prometheus.Counter
	readbacks     prometheus.Counter
	bytesSent     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingestd_events_published_total",
			Help: "Events acknowledged by Kafka, per source.",
		}, []string{"source"}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ingestd_publish_errors_total",
			Help: "Kafka writes that failed in whole or in part.",
		}),
		writeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ingestd_publish_write_seconds",
			Help:    "Duration of one Kafka write of a batch of outbox rows.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ingestd_outbox_backlog",
			Help: "Outbox rows committed but not yet acknowledged by Kafka.",
		}),
		oldestAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ingestd_outbox_oldest_unpublished_age_seconds",
			Help: "Age of the oldest unpublished outbox row (0 when none).",
		}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ingestd_outbox_pruned_total",
			Help: "Published outbox rows deleted after the retention period.",
		}),
		reconciled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ingestd_publish_reconciled_partitions_total",
			Help: "Partitions whose watermark was raised from Kafka's read-back (records acknowledged before a crash or an ambiguous write).",
		}),
		outboxReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ingestd_publish_outbox_read_rows_total",
			Help: "Outbox rows the publisher read back from PostgreSQL because its in-memory queue did not hold them (start-up, recovery, a full queue, or rows committed by another instance).",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ingestd_e2e_lag_seconds",
			Help:    "Publish time minus the upstream time of the change (occurred_at), per event.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 16),
		}),
		lastPublished: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ingestd_publish_last_success_timestamp_seconds",
			Help: "Unix time of the last batch acknowledged by Kafka.",
		}),
	}
	m.accessErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ingestd_kafka_access_errors_total",
		Help: "Kafka operations refused for who ingestd is: kind authentication (SASL), authorization (an ACL) or tls (the certificate checks).",
	}, []string{"kind"})
	for _, k := range kafkaconn.AccessKinds {
		m.accessErrors.WithLabelValues(k)
	}
	m.retriedWrites = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ingestd_publish_retried_writes_total",
		Help: "Produce requests certainly not written (the partition's leader moved, its broker went away) and sent again on fresh metadata, without a read-back.",
	})
	m.unknownWrites = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ingestd_publish_unknown_writes_total",
		Help: "Produce requests whose outcome was unknown (a timeout, a dropped connection): their partition was read back before anything more was written to it.",
	})
	m.readbacks = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ingestd_publish_readbacks_total",
		Help: "Partitions whose last record was read back from Kafka: every partition at each lease takeover, and one after each write of unknown outcome.",
	})
	m.bytesSent = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ingestd_kafka_bytes_sent_total",
		Help: "Bytes the producer wrote to Kafka connections (after compression and TLS).",
	})
	reg.MustRegister(m.published, m.writeErrors, m.writeSeconds, m.backlog, m.oldestAge, m.pruned, m.reconciled, m.outboxReads, m.lag, m.lastPublished,
		m.accessErrors, m.retriedWrites, m.unknownWrites, m.readbacks, m.bytesSent)
	return m
}
