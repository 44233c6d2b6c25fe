package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/model"
	promlabels "github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
)

// The dashboard, and the ConfigMap the example overlay ships it in.
const (
	dashboardPath      = "grafana/ingestd.json"
	dashboardConfigMap = "ingestd-dashboard"
	dashboardKey       = "ingestd.json"
	dashboardUID       = "ingestd"
	// grafanaDashboardLabel is the label the Grafana sidecar (k8s-sidecar)
	// selects dashboard ConfigMaps by, with its default value.
	grafanaDashboardLabel = "grafana_dashboard"
	// grafanaFolderAnnotation is the annotation the sidecar is usually
	// told to read the folder from (its folderAnnotation setting).
	grafanaFolderAnnotation = "grafana_folder"
	// datasourceRef is how every panel and query names its data source:
	// through the dashboard's datasource variable, so that the dashboard
	// works in any Grafana, whatever the UID of its Prometheus.
	datasourceRef     = "${datasource}"
	serviceMonitorDoc = "base/servicemonitor.yaml"
	daemonSource      = "../internal/daemon/daemon.go"
)

// runtimeMetrics are the Go runtime and process metrics the dashboard may
// use besides exportedMetrics. The daemon registers client_golang's Go and
// process collectors with their default options;
// TestDashboardRuntimeMetricsAreRegistered checks both that it still does
// and that these collectors export every name listed here.
var runtimeMetrics = map[string]metricInfo{
	"go_goroutines":                 {gauge, nil},
	"go_memstats_heap_inuse_bytes":  {gauge, nil},
	"process_cpu_seconds_total":     {counter, nil},
	"process_max_fds":               {gauge, nil},
	"process_open_fds":              {gauge, nil},
	"process_resident_memory_bytes": {gauge, nil},
	"process_start_time_seconds":    {gauge, nil},
}

// requiredSelectors are what the dashboard must show, from issue 14: each
// entry is a metric some panel must select, with a label matcher it must
// carry when one is given (the 429s are a value of the outcome label).
var requiredSelectors = []struct{ metric, matcher string }{
	// Sources.
	{"ingestd_events_ingested_total", ""},
	{"ingestd_cursor_age_seconds", ""},
	{"ingestd_source_halted", ""},
	{"ingestd_polling_paused", ""},
	{"ingestd_upstream_errors_total", ""},
	{"ingestd_upstream_requests_total", `outcome="rate_limited"`},
	// Freshness.
	{"ingestd_e2e_lag_seconds", ""},
	// Outbox and publisher.
	{"ingestd_outbox_backlog", ""},
	{"ingestd_outbox_oldest_unpublished_age_seconds", ""},
	{"ingestd_events_published_total", ""},
	{"ingestd_publish_write_seconds", ""},
	{"ingestd_publish_errors_total", ""},
	{"ingestd_publish_reconciled_partitions_total", ""},
	{"ingestd_kafka_access_errors_total", ""},
	// Leases and instances.
	{"ingestd_lease_holder", ""},
	{"ingestd_lease_takeovers_total", ""},
	{"ingestd_sources_held", ""},
	{"ingestd_instances_live", ""},
	{"ingestd_config_reload_failures_total", ""},
	// BTS watch-list and webhooks.
	{"ingestd_bts_orders", ""},
	{"ingestd_bts_claim_lag_seconds", ""},
	{"ingestd_bts_webhook_calls_total", ""},
	{"ingestd_bts_webhook_orders_total", ""},
	{"ingestd_bts_webhooks_flowing", ""},
	// Upstream pacing.
	{"ingestd_upstream_polling_delay_seconds", ""},
	{"ingestd_upstream_too_early_total", ""},
	// Process.
	{"process_cpu_seconds_total", ""},
	{"process_resident_memory_bytes", ""},
	{"go_goroutines", ""},
}

// alarmMetrics are the 0-or-1 (or should-stay-0) metrics whose panels must
// turn a colour other than green as soon as the value reaches 1, so that a
// halted source, a paused poller or a too-early 429 stands out.
var alarmMetrics = []string{"ingestd_source_halted", "ingestd_polling_paused", "ingestd_upstream_too_early_total"}

// knownUnits are the Grafana units the dashboard uses; a typo in a unit is
// silently shown as a plain number. Grafana's custom units (count:, suffix:)
// are accepted as well.
var knownUnits = []string{"s", "short", "none", "reqps", "ops", "Bps", "bytes", "percentunit"}

// grafanaDashboard is the part of Grafana's dashboard model the tests read.
type grafanaDashboard struct {
	UID           string         `json:"uid"`
	Title         string         `json:"title"`
	SchemaVersion int            `json:"schemaVersion"`
	Panels        []grafanaPanel `json:"panels"`
	Links         []grafanaLink  `json:"links"`
	Templating    struct {
		List []grafanaVariable `json:"list"`
	} `json:"templating"`
}

type grafanaDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type grafanaLink struct {
	Title string `json:"title"`
	URL   string `json:"url"`
}

type grafanaThresholds struct {
	Steps []struct {
		Color string   `json:"color"`
		Value *float64 `json:"value"`
	} `json:"steps"`
}

type grafanaPanel struct {
	ID          int                `json:"id"`
	Type        string             `json:"type"`
	Title       string             `json:"title"`
	Description string             `json:"description"`
	Datasource  *grafanaDatasource `json:"datasource"`
	Interval    string             `json:"interval"`
	GridPos     struct {
		X int `json:"x"`
		Y int `json:"y"`
		W int `json:"w"`
		H int `json:"h"`
	} `json:"gridPos"`
	FieldConfig struct {
		Defaults struct {
			Unit       string             `json:"unit"`
			Thresholds *grafanaThresholds `json:"thresholds"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
		RefID      string             `json:"refId"`
		Expr       string             `json:"expr"`
		Datasource *grafanaDatasource `json:"datasource"`
	} `json:"targets"`
	Links []grafanaLink `json:"links"`
	// Panels are a row's own panels when the row is collapsed; an
	// expanded row's panels follow it in the dashboard's list.
	Panels []grafanaPanel `json:"panels"`
}

type grafanaVariable struct {
	Name       string             `json:"name"`
	Type       string             `json:"type"`
	Multi      bool               `json:"multi"`
	IncludeAll bool               `json:"includeAll"`
	Datasource *grafanaDatasource `json:"datasource"`
	// Query is the data source type for a datasource variable, and for a
	// query variable either the query itself (older Grafana) or an object
	// holding it (Grafana 10 and later).
	Query json.RawMessage `json:"query"`
}

// queryText returns a query variable's query, in either of Grafana's forms.
func (v grafanaVariable) queryText() (string, error) {
	var s string
	if err := json.Unmarshal(v.Query, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(v.Query, &obj); err != nil {
		return "", fmt.Errorf("variable %s: query is neither a string nor an object: %w", v.Name, err)
	}
	return obj.Query, nil
}

// loadDashboard reads the dashboard, returning its bytes as well: the
// overlay must ship exactly these.
func loadDashboard(t *testing.T) ([]byte, *grafanaDashboard) {
	t.Helper()
	raw, err := os.ReadFile(dashboardPath)
	require.NoError(t, err)
	var d grafanaDashboard
	require.NoError(t, json.Unmarshal(raw, &d), dashboardPath)
	return raw, &d
}

// dashboardPanels returns every panel, rows included, with the panels of
// collapsed rows, which Grafana keeps inside their row.
func dashboardPanels(panels []grafanaPanel) []grafanaPanel {
	var out []grafanaPanel
	for _, p := range panels {
		out = append(out, p)
		out = append(out, dashboardPanels(p.Panels)...)
	}
	return out
}

// builtinVariables are Grafana's own variables the expressions may use,
// with a value of the right kind: a duration, or a number for the _ms and
// _s forms.
var builtinVariables = map[string]string{
	"__rate_interval": "5m", "__interval": "5m", "__range": "5m",
	"__rate_interval_ms": "300000", "__interval_ms": "300000", "__range_ms": "300000", "__range_s": "300",
}

// regexFormats are the formats of a multi-value variable that expand to a
// valid regular expression (none given is Grafana's regex escaping for
// Prometheus).
var regexFormats = []string{"", "regex", "pipe"}

// variableRef matches Grafana's three syntaxes for a variable: ${name} or
// ${name:format}, [[name]] or [[name:format]], and $name.
var variableRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+))?\}|\[\[([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+))?\]\]|\$([A-Za-z_][A-Za-z0-9_]*)`)

// variableMark stands in for a dashboard variable's value: a valid regular
// expression, recognizable in the parsed expression.
func variableMark(name string) string { return "__var_" + name + "__" }

const variableMarkPrefix = "__var_"

// expandVariables replaces every variable in expr by a value PromQL
// accepts, the way Grafana would before sending the query. Dashboard
// variables (vars) become marks that checkDashboardExpr then finds in
// label matchers; a variable the dashboard does not define is an error,
// since Grafana would send its name verbatim.
func expandVariables(expr string, vars map[string]bool) (string, error) {
	var errs []error
	out := variableRef.ReplaceAllStringFunc(expr, func(ref string) string {
		m := variableRef.FindStringSubmatch(ref)
		name, format := m[1]+m[3]+m[5], m[2]+m[4]
		if v, ok := builtinVariables[name]; ok {
			return v
		}
		if !vars[name] {
			errs = append(errs, fmt.Errorf("%s: the dashboard defines no variable %q", ref, name))
			return ref
		}
		if !slices.Contains(regexFormats, format) {
			errs = append(errs, fmt.Errorf("%s: format %q does not expand to a regular expression", ref, format))
		}
		return variableMark(name)
	})
	if strings.Contains(out, "$") {
		errs = append(errs, fmt.Errorf("%q: a $ that is no variable", expr))
	}
	return out, errors.Join(errs...)
}

// dashboardSeriesLabels returns the labels of the series selected under
// node: selectorLabels' answer, plus those of the runtime metrics.
func dashboardSeriesLabels(node parser.Node) map[string]bool {
	out := selectorLabels(node)
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			for _, l := range runtimeMetrics[vs.Name].labels {
				out[l] = true
			}
		}
		return nil
	})
	return out
}

// dashboardSelector is one metric selector of a panel's expression.
type dashboardSelector struct {
	metric   string   // the metric's name, without a histogram's suffix
	matchers []string // its label matchers, as PromQL prints them
}

// checkDashboardExpr checks an expression whose variables are expanded the
// way checkExpr checks an alert's, and more: a runtime metric is accepted
// when runtimeMetrics lists it, a histogram must be selected through its
// _bucket, _sum or _count series, histogram_quantile must keep the le
// label, and a dashboard variable may only be a regular expression
// matcher's value (with several values selected, Grafana sends a|b). It
// returns the selectors, for the coverage checks.
func checkDashboardExpr(expr string) ([]dashboardSelector, error) {
	root, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var (
		sels  []dashboardSelector
		errs  []error
		marks int
	)
	parser.Inspect(root, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			sel := dashboardSelector{metric: n.Name}
			for _, lm := range n.LabelMatchers {
				if lm.Name == model.MetricNameLabel {
					continue
				}
				sel.matchers = append(sel.matchers, lm.String())
				if strings.Contains(lm.Value, variableMarkPrefix) {
					marks += strings.Count(lm.Value, variableMarkPrefix)
					if lm.Type != promlabels.MatchRegexp && lm.Type != promlabels.MatchNotRegexp {
						errs = append(errs, fmt.Errorf("%s: a variable can hold several values, so it needs =~ or !~", lm))
					}
				}
			}
			if rt, ok := runtimeMetrics[n.Name]; ok {
				for _, lm := range n.LabelMatchers {
					if lm.Name != model.MetricNameLabel && !slices.Contains(scrapeLabels, lm.Name) && !slices.Contains(rt.labels, lm.Name) {
						errs = append(errs, fmt.Errorf("%s has no label %q", n.Name, lm.Name))
					}
				}
			} else {
				// checkExpr on the selector alone checks its name, labels and
				// label values exactly as the alerts' are checked.
				if _, err := checkExpr(n.String()); err != nil {
					errs = append(errs, err)
				}
				if base, m, ok := selectorMetric(n.Name); ok {
					sel.metric = base
					if m.kind == histogram && n.Name == base {
						errs = append(errs, fmt.Errorf("%s is a histogram: it has no series of that name, select %[1]s_bucket, _sum or _count", n.Name))
					}
				}
			}
			sels = append(sels, sel)
		case *parser.AggregateExpr, *parser.BinaryExpr:
			errs = append(errs, groupingErrors(n, dashboardSeriesLabels)...)
		case *parser.Call:
			if n.Func.Name == "histogram_quantile" && len(n.Args) == 2 {
				if agg, ok := unwrapParens(n.Args[1]).(*parser.AggregateExpr); ok && !agg.Without && !slices.Contains(agg.Grouping, "le") {
					errs = append(errs, fmt.Errorf("histogram_quantile over %s by (%s): without le there are no buckets left", agg.Op, strings.Join(agg.Grouping, ", ")))
				}
			}
		}
		return nil
	})
	if total := strings.Count(expr, variableMarkPrefix); total != marks {
		errs = append(errs, fmt.Errorf("%d of the expression's variables are not label matcher values", total-marks))
	}
	return sels, errors.Join(errs...)
}

// unwrapParens returns the expression inside any parentheses.
func unwrapParens(e parser.Expr) parser.Expr {
	for {
		p, ok := e.(*parser.ParenExpr)
		if !ok {
			return e
		}
		e = p.Expr
	}
}

// labelValuesQuery is the variable query the dashboard uses:
// label_values(selector, label).
var labelValuesQuery = regexp.MustCompile(`^label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)$`)

// TestDashboardExprCheckCatchesMistakes proves that the checks of the
// dashboard's expressions reject what they are meant to.
func TestDashboardExprCheckCatchesMistakes(t *testing.T) {
	t.Parallel()
	vars := map[string]bool{"source": true, "namespace": true}
	cases := []struct{ expr, wantErr string }{
		{`sum by (source) (rate(ingestd_events_ingested_total{source=~"$source"}[$__rate_interval]))`, ""},
		{`max by (source) (ingestd_source_halted{source=~"${source:regex}", namespace=~"[[namespace]]"})`, ""},
		{`histogram_quantile(0.99, sum by (source, le) (rate(ingestd_bts_claim_lag_seconds_bucket[$__rate_interval])))`, ""},
		{`rate(process_cpu_seconds_total[5m]) and on (job, instance) ingestd_instances_live`, ""},
		{`sum by (pod) (go_goroutines)`, ""},
		{`max by (source) (ingestd_source_halted{source="$source"})`, "needs =~ or !~"},
		{`max by (source) (ingestd_source_halted{source=~"${source:csv}"})`, "does not expand to a regular expression"},
		{`max by (source) (ingestd_source_halted{source=~"$sources"})`, `no variable "sources"`},
		{`label_replace(ingestd_outbox_backlog, "copy", "$source", "", "")`, "not label matcher values"},
		{`ingestd_source_haltd`, "not one ingestd exports"},
		{`go_goroutine`, "not one ingestd exports"},
		{`go_goroutines{version="go1.26"}`, `no label "version"`},
		{`sum(rate(ingestd_upstream_requests_total{outcome="ratelimited"}[5m]))`, "can never match"},
		{`sum by (lease) (ingestd_sources_held)`, `no series below has label "lease"`},
		{`ingestd_outbox_backlog and on (source) ingestd_polling_paused`, `a side has no label "source"`},
		{`histogram_quantile(0.5, sum by (source) (rate(ingestd_page_commit_seconds_bucket[5m])))`, "without le"},
		{`rate(ingestd_e2e_lag_seconds[5m])`, "is a histogram"},
		{`sum(rate(ingestd_pages_total[5m]`, "unclosed"},
	}
	for _, tc := range cases {
		t.Run(tc.expr, func(t *testing.T) {
			t.Parallel()
			expanded, err := expandVariables(tc.expr, vars)
			if err == nil {
				_, err = checkDashboardExpr(expanded)
			}
			if tc.wantErr == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tc.wantErr)
			}
		})
	}
}

// TestDashboardPanelsIncludeCollapsedRows proves that the walk over the
// panels finds those a collapsed row holds, which are otherwise easy to
// miss: Grafana keeps them inside the row, not in the dashboard's list.
func TestDashboardPanelsIncludeCollapsedRows(t *testing.T) {
	t.Parallel()
	var d grafanaDashboard
	require.NoError(t, json.Unmarshal([]byte(`{"panels": [
		{"id": 1, "type": "row", "collapsed": false, "panels": []},
		{"id": 2, "type": "timeseries"},
		{"id": 3, "type": "row", "collapsed": true, "panels": [{"id": 4, "type": "stat"}, {"id": 5, "type": "timeseries"}]}
	]}`), &d))
	var ids []int
	for _, p := range dashboardPanels(d.Panels) {
		ids = append(ids, p.ID)
	}
	require.Equal(t, []int{1, 2, 3, 4, 5}, ids)
}

// TestDashboard checks deploy/grafana/ingestd.json: every query parses and
// selects only metrics and labels ingestd (or its Go runtime) exports, every
// panel says what it shows and in which unit, the areas are all
// covered, and the file is formatted the way Grafana exports it.
func TestDashboard(t *testing.T) {
	t.Parallel()
	raw, d := loadDashboard(t)
	require.Equal(t, dashboardUID, d.UID, "a fixed uid keeps links to the dashboard working across imports")
	require.NotEmpty(t, d.Title)
	require.GreaterOrEqual(t, d.SchemaVersion, 39)

	// The file is indented as Grafana exports it, so that diffs stay
	// readable and a re-export changes only what changed.
	var indented bytes.Buffer
	require.NoError(t, json.Indent(&indented, bytes.TrimSpace(raw), "", "  "))
	indented.WriteByte('\n')
	if line := firstDifferentLine(indented.Bytes(), raw); line > 0 {
		t.Fatalf("%s:%d: the file must be indented with two spaces, one element a line, and end with a newline", dashboardPath, line)
	}

	// Variables: the data source, and query variables over ingestd's own
	// metrics.
	vars := map[string]bool{}
	byName := map[string]grafanaVariable{}
	for _, v := range d.Templating.List {
		require.False(t, vars[v.Name], "variable %s is defined twice", v.Name)
		vars[v.Name] = true
		byName[v.Name] = v
	}
	ds, ok := byName["datasource"]
	require.True(t, ok, "the dashboard needs a datasource variable")
	require.Equal(t, "datasource", ds.Type)
	require.JSONEq(t, `"prometheus"`, string(ds.Query))
	src, ok := byName["source"]
	require.True(t, ok, "the dashboard needs a source variable")
	require.True(t, src.Multi && src.IncludeAll, "the source variable must allow several sources and All")
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		t.Run("variable "+v.Name, func(t *testing.T) {
			require.NotNil(t, v.Datasource)
			require.Equal(t, datasourceRef, v.Datasource.UID)
			q, err := v.queryText()
			require.NoError(t, err)
			m := labelValuesQuery.FindStringSubmatch(q)
			require.NotNil(t, m, "query %q: label_values(selector, label) expected", q)
			expanded, err := expandVariables(m[1], vars)
			require.NoError(t, err)
			sels, err := checkDashboardExpr(expanded)
			require.NoError(t, err, "query %q", q)
			require.Len(t, sels, 1)
			info, ok := exportedMetrics[sels[0].metric]
			require.True(t, ok, "query %q", q)
			require.True(t, slices.Contains(info.labels, m[2]) || slices.Contains(scrapeLabels, m[2]), "%s has no label %s", sels[0].metric, m[2])
		})
	}

	scrapeInterval := serviceMonitorInterval(t)
	anchors := docAnchors(t, operationsDoc)
	checkLinks := func(t *testing.T, links []grafanaLink) {
		t.Helper()
		for _, l := range links {
			require.NotEmpty(t, l.Title)
			if base, anchor, ok := strings.Cut(l.URL, "#"); ok && base == runbookURL {
				require.True(t, anchors[anchor], "link %q: docs/operations.md has no heading for #%s", l.Title, anchor)
			}
		}
	}
	checkLinks(t, d.Links)

	ids := map[int]string{}
	panels := dashboardPanels(d.Panels)
	for _, p := range panels {
		require.NotContains(t, ids, p.ID, "panels %q and %q share the id %d", ids[p.ID], p.Title, p.ID)
		ids[p.ID] = p.Title
		require.NotEmpty(t, p.Title, "panel %d has no title", p.ID)
		require.Positive(t, p.GridPos.W, "panel %q width", p.Title)
		require.Positive(t, p.GridPos.H, "panel %q height", p.Title)
		require.LessOrEqual(t, p.GridPos.X+p.GridPos.W, 24, "panel %q is wider than the dashboard", p.Title)
		if p.Type == "row" {
			require.Empty(t, p.Targets, "row %q", p.Title)
			continue
		}
		t.Run(p.Title, func(t *testing.T) {
			require.NotEmpty(t, strings.TrimSpace(p.Description), "every panel says what it shows and what to do about it")
			unit := p.FieldConfig.Defaults.Unit
			require.True(t, slices.Contains(knownUnits, unit) || strings.HasPrefix(unit, "count:") || strings.HasPrefix(unit, "suffix:"),
				"unit %q is not one of %v (or count:, suffix:)", unit, knownUnits)
			require.NotNil(t, p.Datasource)
			require.Equal(t, datasourceRef, p.Datasource.UID)
			// Grafana's $__rate_interval is four scrape intervals at least
			// only when it knows the interval: the panel's minimum interval
			// tells it, whatever the data source's setting says.
			require.Equal(t, scrapeInterval, p.Interval, "the panel's minimum interval must be the ServiceMonitor's scrape interval")
			checkLinks(t, p.Links)
			require.NotEmpty(t, p.Targets)
			var metrics []string
			for _, tg := range p.Targets {
				require.NotNil(t, tg.Datasource, "query %s", tg.RefID)
				require.Equal(t, datasourceRef, tg.Datasource.UID, "query %s", tg.RefID)
				expanded, err := expandVariables(tg.Expr, vars)
				require.NoError(t, err, "query %s: %s", tg.RefID, tg.Expr)
				sels, err := checkDashboardExpr(expanded)
				require.NoError(t, err, "query %s:\n%s", tg.RefID, tg.Expr)
				for _, s := range sels {
					metrics = append(metrics, s.metric)
				}
			}
			for _, m := range alarmMetrics {
				if slices.Contains(metrics, m) {
					requireAlarmThreshold(t, p)
				}
			}
		})
	}

	// The coverage is counted apart from the checks above, so that a
	// panel failing them is not also reported as missing.
	used := map[string][][]string{} // metric -> the matchers of each of its selectors
	queries := 0
	for _, p := range panels {
		for _, tg := range p.Targets {
			expanded, _ := expandVariables(tg.Expr, vars)
			sels, _ := checkDashboardExpr(expanded)
			for _, s := range sels {
				used[s.metric] = append(used[s.metric], s.matchers)
			}
			queries++
		}
	}
	require.Greater(t, queries, 40)
	for _, r := range requiredSelectors {
		found := false
		for _, matchers := range used[r.metric] {
			found = found || r.matcher == "" || slices.Contains(matchers, r.matcher)
		}
		what := r.metric
		if r.matcher != "" {
			what += " with " + r.matcher
		}
		require.True(t, found, "no panel selects %s, which the dashboard must show (issue 14)", what)
	}
	var unused []string
	for name := range exportedMetrics {
		if _, ok := used[name]; !ok {
			unused = append(unused, name)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		// Not an error: the dashboard shows what an operator watches, not
		// every metric; this is a hint when a new metric may deserve a panel.
		t.Logf("metrics no panel shows: %s", strings.Join(unused, ", "))
	}
}

// firstDifferentLine returns the number of the first line where a and b
// differ, or 0 when they are equal.
func firstDifferentLine(a, b []byte) int {
	la, lb := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	for i := range max(len(la), len(lb)) {
		if i >= len(la) || i >= len(lb) || !bytes.Equal(la[i], lb[i]) {
			return i + 1
		}
	}
	return 0
}

// requireAlarmThreshold checks that a panel turns a colour other than
// green at a value above 0 and at most 1.
func requireAlarmThreshold(t *testing.T, p grafanaPanel) {
	t.Helper()
	th := p.FieldConfig.Defaults.Thresholds
	require.NotNil(t, th, "panel %q needs thresholds", p.Title)
	for _, s := range th.Steps {
		if s.Value != nil && *s.Value > 0 && *s.Value <= 1 && s.Color != "green" {
			return
		}
	}
	t.Fatalf("panel %q must change colour from green at 1 at the latest", p.Title)
}

// serviceMonitorInterval is how often Prometheus scrapes ingestd.
func serviceMonitorInterval(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(serviceMonitorDoc)
	require.NoError(t, err)
	obj, err := decodeStrict(data)
	require.NoError(t, err)
	sm := obj.(*monitoringv1.ServiceMonitor)
	require.Len(t, sm.Spec.Endpoints, 1)
	require.NotEmpty(t, sm.Spec.Endpoints[0].Interval)
	return string(sm.Spec.Endpoints[0].Interval)
}

// TestDashboardShippedByOverlay checks that the example overlay ships the
// dashboard as the Grafana sidecar expects it: one ConfigMap, labelled and
// annotated for the sidecar, holding deploy/grafana/ingestd.json byte for
// byte, and small enough for kubectl apply.
func TestDashboardShippedByOverlay(t *testing.T) {
	t.Parallel()
	raw, _ := loadDashboard(t)
	r := build(t, "overlays/example")
	cm := r.configMaps[dashboardConfigMap]
	require.NotNil(t, cm, "the example overlay renders no ConfigMap %s", dashboardConfigMap)
	require.Equal(t, "1", cm.Labels[grafanaDashboardLabel])
	require.Equal(t, appName, cm.Annotations[grafanaFolderAnnotation])
	require.Equal(t, []string{dashboardKey}, slices.Collect(maps.Keys(cm.Data)))
	require.Empty(t, cm.BinaryData)
	require.Equal(t, string(raw), cm.Data[dashboardKey], "the ConfigMap must hold %s unchanged", dashboardPath)

	// Client-side kubectl apply copies the whole object into the
	// last-applied-configuration annotation, and the API server refuses an
	// object whose annotations exceed their size limit.
	applied, err := json.Marshal(cm)
	require.NoError(t, err)
	size := len(corev1.LastAppliedConfigAnnotation) + len(applied)
	for k, v := range cm.Annotations {
		size += len(k) + len(v)
	}
	require.Less(t, size, apivalidation.TotalAnnotationSizeLimitB,
		"the dashboard is too large for kubectl apply's last-applied-configuration annotation; shrink it or document server-side apply")

	// No other ConfigMap of the site carries the sidecar's label: the
	// sidecar would try to load it as a dashboard.
	for name, other := range r.configMaps {
		if name != dashboardConfigMap {
			require.NotContains(t, other.Labels, grafanaDashboardLabel, "ConfigMap %s", name)
		}
	}
}

// collectorsRegistered finds the daemon's registration of client_golang's
// Go and process collectors with their default options, which export the
// metric names runtimeMetrics lists. Options (a namespace prefix, other Go
// runtime metrics) would change those names.
var collectorsRegistered = []*regexp.Regexp{
	regexp.MustCompile(`MustRegister\([^)]*collectors\.NewGoCollector\(\)`),
	regexp.MustCompile(`collectors\.NewProcessCollector\(collectors\.ProcessCollectorOpts\{\}\)`),
}

// TestDashboardRuntimeMetricsAreRegistered checks runtimeMetrics against
// what the daemon serves: the daemon's source must register the Go and
// process collectors as they are registered here, and these collectors
// must export every listed name with its type. Starting the daemon would
// need PostgreSQL and Kafka; its registration line is enough.
func TestDashboardRuntimeMetricsAreRegistered(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("the process collector exports all its metrics on Linux only, where ingestd's image runs")
	}
	src, err := os.ReadFile(daemonSource)
	require.NoError(t, err)
	for _, re := range collectorsRegistered {
		require.Regexp(t, re, string(src), "%s no longer registers the collector the dashboard's Process row relies on", daemonSource)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	families, err := reg.Gather()
	require.NoError(t, err)
	types := map[string]string{}
	for _, f := range families {
		types[f.GetName()] = strings.ToLower(f.GetType().String())
	}
	for name, m := range runtimeMetrics {
		require.Contains(t, types, name, "the Go and process collectors export no %s", name)
		require.Equal(t, string(m.kind), types[name], "type of %s", name)
		_, clash := exportedMetrics[name]
		require.False(t, clash, "%s is in both exportedMetrics and runtimeMetrics", name)
	}
}
