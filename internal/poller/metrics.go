package poller

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are shared by every poller of a process (one registration per
// registry), labelled by source.
type Metrics struct {
	ingested   *prometheus.CounterVec
	duplicates *prometheus.CounterVec
	pages      *prometheus.CounterVec
	requests   *prometheus.CounterVec
	errors     *prometheus.CounterVec
	unknown    *prometheus.CounterVec
	halted     *prometheus.GaugeVec
	backoff    *prometheus.GaugeVec
	commitSecs *prometheus.HistogramVec
	paused     *prometheus.GaugeVec
	delay      *prometheus.GaugeVec
	tooEarly   *prometheus.CounterVec
	reg        prometheus.Registerer
}

// NewMetrics registers the poller metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reg: reg,
		ingested: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingestd_events_ingested_total",
			Help: "Events committed to the outbox, per source (replayed duplicates excluded).",
		}, []string{"source"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingestd_events_duplicate_total",
			Help: "Upstream entries skipped because their event was already in the outbox (replayed pages).",
		}, []string{"source"}),
		pages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingestd_pages_total",
			Help: "Upstream pages committed, per source.",
		}, []string{"source"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingestd_upstream_requests_total",
			Help: "Upstream requests by source and outcome (ok, retry, rate_limited, bad_cursor, auth, not_found, permanent).",
		}, []string{"source", "outcome"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingestd_upstream_errors_total",
			Help: "Failed upstream requests and unusable pages by source and class.",
		}, []string{"source", "class"}),
		unknown: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingestd_unknown_status_total",
			Help: "Events published with canonical status unknown, by source and raw provider status.",
		}, []string{"source", "provider_status"}),
		halted: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ingestd_source_halted",
			Help: "1 while a source is halted on an error that needs an operator (bad cursor, rejected credentials).",
		}, []string{"source"}),
		backoff: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ingestd_upstream_backoff_seconds",
			Help: "Current wait before the next upstream request after a failure (0 when healthy).",
		}, []string{"source"}),
		commitSecs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ingestd_page_commit_seconds",
			Help:    "Duration of the PostgreSQL transaction that commits one page.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"source"}),
		paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ingestd_polling_paused",
			Help: "1 while a source's polling waits for the outbox backlog to drain below its bound.",
		}, []string{"source"}),
	}
	m.delay = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ingestd_upstream_polling_delay_seconds",
		Help: "The wait the source's last upstream answer asked for before the next request (Yandex X-Polling-Delay-Ms; 0 when none).",
	}, []string{"source"})
	m.tooEarly = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ingestd_upstream_too_early_total",
		Help: "429 answers to requests sent sooner than the previous answer asked (X-Polling-Delay-Ms); should stay 0.",
	}, []string{"source"})
	reg.MustRegister(m.delay, m.tooEarly)
	reg.MustRegister(m.paused, m.ingested, m.duplicates, m.pages, m.requests, m.errors, m.unknown, m.halted, m.backoff, m.commitSecs)
	return m
}

// Registerer is where the metrics are registered, for a loop's own.
func (m *Metrics) Registerer() prometheus.Registerer { return m.reg }

// maxLabelLen bounds label values taken from upstream data, so a provider
// sending garbage statuses cannot blow up the metric's memory per series.
const maxLabelLen = 64

func boundedLabel(s string) string {
	if len(s) > maxLabelLen {
		return s[:maxLabelLen]
	}
	if s == "" {
		return "(none)"
	}
	return s
}
