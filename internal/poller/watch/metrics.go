package watch

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ingestd/ingestd/internal/bts"
)

// metrics are the BTS watch-list poller's own metrics, labelled by source.
// The poller also feeds the shared per-source metrics (upstream requests and
// errors, halted, backoff, events ingested, unknown statuses).
type metrics struct {
	polls        *prometheus.CounterVec
	skips        *prometheus.CounterVec
	unknown      *prometheus.CounterVec
	notFound     *prometheus.CounterVec
	claimLag     *prometheus.HistogramVec
	commitSecs   *prometheus.HistogramVec
	orders       *prometheus.GaugeVec
	dictionary   *prometheus.CounterVec
	dictUpdated  *prometheus.GaugeVec
	commitFailed *prometheus.CounterVec
	flowing      *prometheus.GaugeVec
}

// newMetrics registers the BTS metrics on reg, or returns the ones
// already registered there, so that several BTS sources (accounts) share
// one set.
func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		polls: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingestd_bts_polls_total",
			Help: "BTS order polls by outcome: changed, unchanged, not_found, stale (lost the compare-and-set to a newer observation), or the failure class.",
		}, []string{"source", "outcome"})),
		skips: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingestd_bts_status_skips_total",
			Help: "BTS status changes published as observed although the new status is not among the previous one's next_possible_statuses (steps skipped upstream or between polls).",
		}, []string{"source", "from", "to"})),
		unknown: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingestd_bts_unknown_status_total",
			Help: "BTS status changes published with canonical status unknown, by raw code.",
		}, []string{"source", "code"})),
		notFound: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingestd_bts_orders_not_found_total",
			Help: "Tracked BTS orders that BTS answered 404 for and that left the active set.",
		}, []string{"source"})),
		claimLag: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ingestd_bts_claim_lag_seconds",
			Help:    "How late due BTS orders were claimed; growing lag means INGESTD_BTS_RATE or INGESTD_BTS_CONCURRENCY is too low for the watch-list.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
		}, []string{"source"})),
		commitSecs: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ingestd_bts_commit_seconds",
			Help:    "Duration of the PostgreSQL transaction that records a batch of BTS observations.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"source"})),
		orders: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ingestd_bts_orders",
			Help: "BTS watch-list orders by state (active, terminal, not_found), counted periodically.",
		}, []string{"source", "state"})),
		dictionary: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingestd_bts_dictionary_refresh_total",
			Help: "BTS status dictionary fetches by result (ok, or the failure class).",
		}, []string{"source", "result"})),
		dictUpdated: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ingestd_bts_dictionary_updated_timestamp_seconds",
			Help: "Unix time of the last successful BTS status dictionary fetch.",
		}, []string{"source"})),
		flowing: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ingestd_bts_webhooks_flowing",
			Help: "1 while the source's webhooks flow (one arrived within INGESTD_BTS_WEBHOOK_QUIET) and its schedule is stretched by INGESTD_BTS_WEBHOOK_STRETCH.",
		}, []string{"source"})),
		commitFailed: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ingestd_bts_commit_failures_total",
			Help: "Batches of BTS observations that could not be recorded; their orders are polled again when their claims end.",
		}, []string{"source"})),
	}
}

// register registers c on reg, or returns the equal collector already
// registered.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}

// registerAuth exports the client's counts of logins and token refreshes
// for source: they show token trouble before it becomes a halt.
func (m *metrics) registerAuth(reg prometheus.Registerer, source string, stats func() bts.AuthStats) []prometheus.Collector {
	var out []prometheus.Collector
	for kind, get := range map[string]func(bts.AuthStats) int64{
		"login":           func(s bts.AuthStats) int64 { return s.Logins },
		"refresh":         func(s bts.AuthStats) int64 { return s.Refreshes },
		"refresh_failure": func(s bts.AuthStats) int64 { return s.RefreshFailures },
	} {
		out = append(out, register(reg, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "ingestd_bts_auth_total",
			Help:        "BTS logins, token refreshes and refreshes that failed and fell back to a login.",
			ConstLabels: prometheus.Labels{"source": source, "kind": kind},
		}, func() float64 { return float64(get(stats())) })))
	}
	return out
}
