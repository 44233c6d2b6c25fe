// Package promtest reads metrics back from a Prometheus registry in tests:
// the sum of a metric's series, as the assertions of several packages need
// it.
package promtest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// Sum returns the sum of the values of the series of the counter or gauge
// name in g whose labels include every pair of want (nil matches every
// series), and how many series matched.
func Sum(t testing.TB, g prometheus.Gatherer, name string, want map[string]string) (sum float64, series int) {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			match := true
			for k, v := range want {
				if labels[k] != v {
					match = false
				}
			}
			if !match {
				continue
			}
			series++
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum, series
}
