package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	promlabels "github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/sources"
	"github.com/ingestd/ingestd/internal/yandex"
)

// metricKind is a Prometheus metric type.
type metricKind string

const (
	counter   metricKind = "counter"
	gauge     metricKind = "gauge"
	histogram metricKind = "histogram"
)

type metricInfo struct {
	kind   metricKind
	labels []string
}

// exportedMetrics is every metric ingestd exports, with its type and labels.
// Alert expressions may only use these names and labels: Prometheus accepts
// a selector of a metric that does not exist, and the alert then silently
// never fires. docs/operations.md must document each of them.
var exportedMetrics = map[string]metricInfo{
	"ingestd_events_ingested_total":                 {counter, []string{"source"}},
	"ingestd_events_published_total":                {counter, []string{"source"}},
	"ingestd_events_duplicate_total":                {counter, []string{"source"}},
	"ingestd_pages_total":                           {counter, []string{"source"}},
	"ingestd_upstream_requests_total":               {counter, []string{"source", "outcome"}},
	"ingestd_upstream_errors_total":                 {counter, []string{"source", "class"}},
	"ingestd_upstream_backoff_seconds":              {gauge, []string{"source"}},
	"ingestd_upstream_polling_delay_seconds":        {gauge, []string{"source"}},
	"ingestd_bts_webhook_calls_total":               {counter, []string{"outcome"}},
	"ingestd_bts_webhook_orders_total":              {counter, []string{"source", "result"}},
	"ingestd_bts_webhooks_flowing":                  {gauge, []string{"source"}},
	"ingestd_upstream_too_early_total":              {counter, []string{"source"}},
	"ingestd_source_halted":                         {gauge, []string{"source"}},
	"ingestd_unknown_status_total":                  {counter, []string{"source", "provider_status"}},
	"ingestd_cursor_age_seconds":                    {gauge, []string{"source"}},
	"ingestd_outbox_backlog":                        {gauge, nil},
	"ingestd_outbox_oldest_unpublished_age_seconds": {gauge, nil},
	"ingestd_page_commit_seconds":                   {histogram, []string{"source"}},
	"ingestd_publish_write_seconds":                 {histogram, nil},
	"ingestd_publish_errors_total":                  {counter, nil},
	"ingestd_outbox_pruned_total":                   {counter, nil},
	// Leases, end-to-end lag, backpressure and read-back recovery.
	"ingestd_lease_holder":                           {gauge, []string{"lease"}},
	"ingestd_lease_epoch":                            {gauge, []string{"lease"}},
	"ingestd_lease_takeovers_total":                  {counter, []string{"lease"}},
	"ingestd_e2e_lag_seconds":                        {histogram, nil},
	"ingestd_polling_paused":                         {gauge, []string{"source"}},
	"ingestd_publish_last_success_timestamp_seconds": {gauge, nil},
	"ingestd_publish_reconciled_partitions_total":    {counter, nil},
	"ingestd_publish_outbox_read_rows_total":         {counter, nil},
	// Kafka access (TLS, SASL, ACLs), retried writes, read-backs and traffic.
	"ingestd_kafka_access_errors_total":    {counter, []string{"kind"}},
	"ingestd_publish_retried_writes_total": {counter, nil},
	"ingestd_publish_readbacks_total":      {counter, nil},
	"ingestd_publish_unknown_writes_total": {counter, nil},
	"ingestd_kafka_bytes_sent_total":       {counter, nil},
	"ingestd_config_reload_failures_total": {counter, nil},
	"ingestd_sources_held":                 {gauge, nil},
	"ingestd_instances_live":               {gauge, nil},
	// The BTS Express watch-list poller.
	"ingestd_bts_polls_total":                          {counter, []string{"source", "outcome"}},
	"ingestd_bts_status_skips_total":                   {counter, []string{"source", "from", "to"}},
	"ingestd_bts_unknown_status_total":                 {counter, []string{"source", "code"}},
	"ingestd_bts_orders_not_found_total":               {counter, []string{"source"}},
	"ingestd_bts_claim_lag_seconds":                    {histogram, []string{"source"}},
	"ingestd_bts_commit_seconds":                       {histogram, []string{"source"}},
	"ingestd_bts_orders":                               {gauge, []string{"source", "state"}},
	"ingestd_bts_dictionary_refresh_total":             {counter, []string{"source", "result"}},
	"ingestd_bts_dictionary_updated_timestamp_seconds": {gauge, []string{"source"}},
	"ingestd_bts_commit_failures_total":                {counter, []string{"source"}},
	"ingestd_bts_auth_total":                           {counter, []string{"source", "kind"}},
}

// scrapeLabels are attached by Prometheus and the Prometheus Operator to
// every scraped series, so expressions may group or match on them.
var scrapeLabels = []string{"job", "instance", "namespace", "pod", "container", "service", "endpoint"}

// upstreamOutcomes are the values of the outcome label
// (internal/upstream's classes plus ok).
var upstreamOutcomes = []string{"ok", "retry", "rate_limited", "bad_cursor", "auth", "not_found", "permanent"}

// validLabelValue reports whether an equality matcher on metric can ever
// match: a typo such as outcome="ratelimited" makes an alert that never
// fires.
func validLabelValue(metric, label, value string) bool {
	switch {
	case metric == "ingestd_upstream_requests_total" && label == "outcome",
		metric == "ingestd_upstream_errors_total" && label == "class":
		return slices.Contains(upstreamOutcomes, value) && (label == "outcome" || value != "ok")
	}
	switch label {
	case "source":
		return strings.HasPrefix(value, "yandex/") || strings.HasPrefix(value, "bts/")
	case "lease":
		// Only journal sources have a lease; BTS sources share their
		// watch-list without one.
		return value == lease.Publisher || strings.HasPrefix(value, lease.Source("yandex/"))
	}
	return true
}

// Settings the manifests hold in the Secret rather than the ConfigMap.
var secretSettings = []string{"INGESTD_DATABASE_URL", "INGESTD_YANDEX_TOKEN", "INGESTD_BTS_PASSWORD", "INGESTD_ADMIN_TOKEN", "INGESTD_KAFKA_SASL_PASSWORD"}

// forbiddenSettings must never be set by a deployment: INGESTD_FAILPOINTS
// makes the process kill itself, for the chaos tests.
var forbiddenSettings = []string{"INGESTD_FAILPOINTS"}

// pendingSettings are being added to ingestd (BTS Express, the admin API)
// and are not in README.md's configuration table yet. The example Secret
// already carries them; ingestd ignores variables it does not know.
var pendingSettings = []string{}

// The names and image every rendered kustomization must produce.
const (
	appName         = "ingestd"
	configMapName   = "ingestd-config"
	secretName      = "ingestd-secrets"
	placeholder     = "CHANGE-ME"
	nonRootUID      = int64(65532)
	runbookURL      = "https://github.com/ingestd/ingestd/blob/main/docs/operations.md"
	operationsDoc   = "../docs/operations.md"
	readmePath      = "../README.md"
	exampleFileTail = ".example.yaml"
)

// readmeSettings parses README.md's configuration table: variable name to
// documented default ("required" and "unset" included verbatim). The table
// is itself kept equal to ingestd's flags by cmd/ingestd's tests.
func readmeSettings(t *testing.T) map[string]string {
	t.Helper()
	readme, err := os.ReadFile(readmePath)
	require.NoError(t, err)
	row := regexp.MustCompile("(?m)^\\| `(INGESTD_[A-Z0-9_]+)` \\| .* \\| `?([^`|]*)`?[^|]* \\|$")
	out := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		out[m[1]] = strings.TrimSpace(m[2])
	}
	require.NotEmpty(t, out, "no configuration table found in README.md")
	require.Contains(t, out, "INGESTD_SHUTDOWN_TIMEOUT")
	return out
}

// knownSetting reports whether ingestd reads the variable.
func knownSetting(readme map[string]string, name string) bool {
	_, ok := readme[name]
	return ok || slices.Contains(pendingSettings, name)
}

// sameSetting compares two setting values, durations by their length so
// that "1m" equals "60s".
func sameSetting(a, b string) bool {
	if a == b {
		return true
	}
	da, errA := time.ParseDuration(a)
	db, errB := time.ParseDuration(b)
	return errA == nil && errB == nil && da == db
}

// manifest is one YAML document of a file under deploy/.
type manifest struct {
	path  string // relative to deploy/, slash-separated
	index int    // position of the document in its file
	raw   []byte
	meta  metav1.TypeMeta
}

func (m manifest) String() string { return fmt.Sprintf("%s#%d", m.path, m.index) }

// splitYAML splits a multi-document YAML stream, dropping documents that
// hold nothing but comments.
func splitYAML(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, err
		}
		if string(bytes.TrimSpace(j)) != "null" {
			docs = append(docs, doc)
		}
	}
}

// readManifests reads every YAML document under deploy/.
func readManifests(t *testing.T) []manifest {
	t.Helper()
	var out []manifest
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ext := filepath.Ext(p); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		if filepath.Base(p) == sourcesFileName {
			// An ingestd sources file, not a manifest:
			// TestExampleSourcesFile checks it.
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		docs, err := splitYAML(data)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for i, doc := range docs {
			m := manifest{path: filepath.ToSlash(p), index: i, raw: doc}
			if err := yaml.Unmarshal(doc, &m.meta); err != nil {
				return fmt.Errorf("%s: %w", m, err)
			}
			out = append(out, m)
		}
		return nil
	})
	require.NoError(t, err)
	require.NotEmpty(t, out)
	return out
}

// newObject returns the Go type that a document of this apiVersion and kind
// must decode into. A kind nobody listed here is an error, so every document
// under deploy/ is checked against a real schema.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1/Secret":
		return &corev1.Secret{}, nil
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "v1/Service":
		return &corev1.Service{}, nil
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, nil
	case "batch/v1/Job":
		return &batchv1.Job{}, nil
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "monitoring.coreos.com/v1/PrometheusRule":
		return &monitoringv1.PrometheusRule{}, nil
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, nil
	case kustypes.KustomizationVersion + "/" + kustypes.KustomizationKind:
		return &kustypes.Kustomization{}, nil
	}
	return nil, fmt.Errorf("unexpected apiVersion %q kind %q: add its Go type to newObject", apiVersion, kind)
}

// decodeStrict decodes one YAML document into its typed object the way the
// API server's strict field validation does (kubectl apply
// --validate=strict): field names are case-sensitive, and unknown or
// duplicate fields and wrong value types are errors. encoding/json alone
// would not do: it matches field names case-insensitively, so it would
// accept "backOffLimit" for "backoffLimit".
func decodeStrict(raw []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(raw, &tm); err != nil {
		return nil, err
	}
	obj, err := newObject(tm.APIVersion, tm.Kind)
	if err != nil {
		return nil, err
	}
	j, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
	}
	strictErrs, err := sigsjson.UnmarshalStrict(j, obj)
	if err = errors.Join(append(strictErrs, err)...); err != nil {
		return nil, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
	}
	return obj, nil
}

// sourcesFileName is the name of a site's sources file, which a
// configMapGenerator turns into a ConfigMap.
const sourcesFileName = "sources.yaml"

// TestExampleSourcesFile reads the example overlay's sources file as
// ingestd does, its secret files stood in by files in a temporary
// directory: every source, field and setting must be valid, and the
// ConfigMap must mount it where INGESTD_SOURCES_FILE points.
func TestExampleSourcesFile(t *testing.T) {
	t.Parallel()
	const secretsDir = "/etc/ingestd/source-secrets/"
	doc, err := os.ReadFile(filepath.Join("overlays", "example", sourcesFileName))
	require.NoError(t, err)
	dir := t.TempDir()
	for _, line := range strings.Split(string(doc), "\n") {
		if _, path, ok := strings.Cut(line, secretsDir); ok {
			require.NoError(t, os.WriteFile(filepath.Join(dir, strings.TrimSpace(path)), []byte("stand-in\n"), 0o600))
		}
	}
	local := strings.ReplaceAll(string(doc), secretsDir, dir+"/")
	srcs, err := sources.Parse([]byte(local), sources.Defaults{Yandex: yandex.DefaultConfig(), BTS: bts.DefaultConfig()}, func(string) string { return "" })
	require.NoError(t, err)
	require.NotEmpty(t, srcs)

	r := build(t, "overlays/example")
	require.Equal(t, "/etc/ingestd/sources/"+sourcesFileName, r.configMaps[configMapName].Data["INGESTD_SOURCES_FILE"])
	require.Contains(t, r.configMaps["ingestd-sources"].Data, sourcesFileName)
	mounts := map[string]string{}
	for _, m := range r.deployments[appName].Spec.Template.Spec.Containers[0].VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	require.Equal(t, "/etc/ingestd/sources", mounts["sources"])
	require.Equal(t, strings.TrimSuffix(secretsDir, "/"), mounts["source-secrets"])
}

func TestManifestsDecodeStrictly(t *testing.T) {
	t.Parallel()
	kinds := map[string]bool{}
	for _, m := range readManifests(t) {
		kinds[m.meta.Kind] = true
		t.Run(m.String(), func(t *testing.T) {
			t.Parallel()
			_, err := decodeStrict(m.raw)
			require.NoError(t, err)
		})
	}
	for _, k := range []string{"Kustomization", "Deployment", "ConfigMap", "Secret", "ServiceAccount",
		"PodDisruptionBudget", "Service", "Job", "PrometheusRule", "ServiceMonitor"} {
		require.True(t, kinds[k], "no %s under deploy/", k)
	}
}

// TestStrictDecodingCatchesMistakes proves the decoder above is strict:
// each case breaks a real manifest the way a typo would, and decoding must
// fail.
func TestStrictDecodingCatchesMistakes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		file, old, new, wantErr string
	}{
		{"base/deployment.yaml", "terminationGracePeriodSeconds:", "terminationGracePeriodSecond:", "unknown field"},
		{"base/deployment.yaml", "readinessProbe:", "readynessProbe:", "unknown field"},
		{"base/deployment.yaml", "replicas: 2", "replicas: two", "cannot unmarshal"},
		{"base/deployment.yaml", "  replicas: 2\n", "  replicas: 2\n  replicas: 3\n", "already set"},
		{"base/job-migrate.yaml", "backoffLimit:", "backOffLimit:", "unknown field"},
		{"base/prometheusrule.yaml", "annotations:", "anotations:", "unknown field"},
		{"base/servicemonitor.yaml", "endpoints:", "endpoint:", "unknown field"},
		{"base/kustomization.yaml", "resources:", "resource:", "unknown field"},
		{"base/service.yaml", "kind: Service", "kind: Servise", "unexpected apiVersion"},
		{"base/secret.example.yaml", "stringData:", "stringdata:", "unknown field"},
		{"base/deployment.yaml", "runAsNonRoot: true", "runasNonRoot: true", "unknown field"},
		{"base/poddisruptionbudget.yaml", "apiVersion: policy/v1", "apiVersion: policy/v1beta1", "unexpected apiVersion"},
	}
	for _, tc := range cases {
		t.Run(tc.file+" "+tc.new, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(tc.file)
			require.NoError(t, err)
			require.Contains(t, string(data), tc.old, "the mutation no longer applies; update the case")
			_, err = decodeStrict([]byte(strings.Replace(string(data), tc.old, tc.new, 1)))
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

// kustomizationRefs lists the files and directories a kustomization refers
// to, relative to its directory.
func kustomizationRefs(k *kustypes.Kustomization) (resources, files []string) {
	resources = append(resources, k.Resources...)
	resources = append(resources, k.Components...)
	files = append(files, k.Crds...)
	for _, p := range k.Patches {
		if p.Path != "" {
			files = append(files, p.Path)
		}
	}
	for _, g := range k.ConfigMapGenerator {
		files = append(files, g.FileSources...)
		files = append(files, g.EnvSources...)
	}
	for _, g := range k.SecretGenerator {
		files = append(files, g.FileSources...)
		files = append(files, g.EnvSources...)
	}
	return resources, files
}

// TestKustomizationReferences checks that every file a kustomization names
// exists, that every manifest is used by some kustomization (a forgotten
// file is never applied), and that the example Secret is used by none (it
// would overwrite the real Secret with placeholders).
func TestKustomizationReferences(t *testing.T) {
	t.Parallel()
	all := readManifests(t)
	used := map[string]bool{}
	for _, m := range all {
		if m.meta.Kind != kustypes.KustomizationKind {
			continue
		}
		used[m.path] = true
		obj, err := decodeStrict(m.raw)
		require.NoError(t, err)
		k := obj.(*kustypes.Kustomization)
		dir := path.Dir(m.path)
		resources, files := kustomizationRefs(k)
		// A kustomization that only generates (the Grafana dashboard's) is
		// as useful as one listing resources; one doing neither is a mistake.
		require.True(t, len(resources) > 0 || len(k.ConfigMapGenerator) > 0 || len(k.SecretGenerator) > 0,
			"%s lists no resources and generates nothing", m.path)
		for _, r := range resources {
			require.False(t, strings.Contains(r, "://"), "%s: remote resource %s makes builds unreproducible", m.path, r)
			p := path.Join(dir, r)
			st, err := os.Stat(p)
			require.NoError(t, err, "%s: resource %s", m.path, r)
			if st.IsDir() {
				_, err := os.Stat(path.Join(p, "kustomization.yaml"))
				require.NoError(t, err, "%s: resource %s is a directory without kustomization.yaml", m.path, r)
			} else {
				used[p] = true
			}
		}
		for _, f := range files {
			p := path.Join(dir, f)
			_, err := os.Stat(p)
			require.NoError(t, err, "%s: file %s", m.path, f)
			used[p] = true
		}
	}
	for _, m := range all {
		if strings.HasSuffix(m.path, exampleFileTail) {
			require.False(t, used[m.path], "%s is an example and must not be applied by any kustomization", m.path)
			continue
		}
		require.True(t, used[m.path], "%s is not referenced by any kustomization, so it is never applied", m.path)
	}
}

// rendered is the typed output of one kustomize build.
type rendered struct {
	deployments map[string]*appsv1.Deployment
	jobs        map[string]*batchv1.Job
	configMaps  map[string]*corev1.ConfigMap
	services    map[string]*corev1.Service
	pdbs        map[string]*policyv1.PodDisruptionBudget
	rules       map[string]*monitoringv1.PrometheusRule
	monitors    map[string]*monitoringv1.ServiceMonitor
	objects     []metav1.Object
	kindNames   []string // "Kind/name", sorted
	labelsOf    map[string]labels.Set
}

// kustomizeMu serializes kustomize runs: kyaml loads its OpenAPI schema
// into package globals on first use without a lock, which the race
// detector reports when two tests render at once (a strategic-merge patch
// triggers the load).
var kustomizeMu sync.Mutex

// build runs kustomize (its Go API, as `kubectl apply -k` does) on dir and
// decodes every resulting object strictly.
func build(t *testing.T, dir string) *rendered {
	t.Helper()
	kustomizeMu.Lock()
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	kustomizeMu.Unlock()
	require.NoError(t, err)
	r := &rendered{
		deployments: map[string]*appsv1.Deployment{}, jobs: map[string]*batchv1.Job{},
		configMaps: map[string]*corev1.ConfigMap{}, services: map[string]*corev1.Service{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, rules: map[string]*monitoringv1.PrometheusRule{},
		monitors: map[string]*monitoringv1.ServiceMonitor{}, labelsOf: map[string]labels.Set{},
	}
	for _, res := range resMap.Resources() {
		raw, err := res.AsYAML()
		require.NoError(t, err)
		obj, err := decodeStrict(raw)
		require.NoError(t, err, "rendered %s", raw)
		mo, ok := obj.(metav1.Object)
		require.True(t, ok, "%T has no object metadata", obj)
		r.objects = append(r.objects, mo)
		name := mo.GetName()
		switch o := obj.(type) {
		case *appsv1.Deployment:
			r.deployments[name] = o
		case *batchv1.Job:
			r.jobs[name] = o
		case *corev1.ConfigMap:
			r.configMaps[name] = o
		case *corev1.Service:
			r.services[name] = o
		case *policyv1.PodDisruptionBudget:
			r.pdbs[name] = o
		case *monitoringv1.PrometheusRule:
			r.rules[name] = o
		case *monitoringv1.ServiceMonitor:
			r.monitors[name] = o
		}
		r.kindNames = append(r.kindNames, res.GetKind()+"/"+name)
		r.labelsOf[res.GetKind()+"/"+name] = mo.GetLabels()
	}
	sort.Strings(r.kindNames)
	return r
}

// TestRenderedManifests builds the base and the example overlay and checks
// what would reach the cluster.
func TestRenderedManifests(t *testing.T) {
	t.Parallel()
	readme := readmeSettings(t)
	cases := []struct {
		dir, namespace, image string
		brokersPlaceholder    bool
		memoryLimit           string
		// sources is the ConfigMap of a sources file, when the site has one.
		sources []string
		// dashboard is the ConfigMap of the Grafana dashboard, when the
		// site ships it (deploy/grafana).
		dashboard []string
	}{
		{dir: "base", namespace: "", image: "ingestd", brokersPlaceholder: true, memoryLimit: "256Mi"},
		{dir: "overlays/example", namespace: "logistics", image: "registry.example.com/logistics/ingestd:1.0.0", memoryLimit: "512Mi",
			sources: []string{"ConfigMap/ingestd-sources"}, dashboard: []string{"ConfigMap/ingestd-dashboard"}},
	}
	for _, tc := range cases {
		t.Run(tc.dir, func(t *testing.T) {
			t.Parallel()
			r := build(t, tc.dir)
			// Exactly these objects: in particular no Secret, which is
			// created out of band.
			want := append([]string{
				"ConfigMap/ingestd-config", "Deployment/ingestd", "Job/ingestd-migrate",
				"PodDisruptionBudget/ingestd", "PrometheusRule/ingestd", "Service/ingestd-metrics",
				"ServiceAccount/ingestd", "ServiceMonitor/ingestd",
			}, tc.sources...)
			want = append(want, tc.dashboard...)
			sort.Strings(want)
			require.Equal(t, want, r.kindNames)
			for _, o := range r.objects {
				require.Equal(t, tc.namespace, o.GetNamespace(), "namespace of %s", o.GetName())
				require.Equal(t, appName, o.GetLabels()["app.kubernetes.io/name"], "labels of %s", o.GetName())
				require.Equal(t, appName, o.GetLabels()["app.kubernetes.io/part-of"], "labels of %s", o.GetName())
			}

			// docs/operations.md applies these first, then waits for the
			// migration, then applies the rest.
			first, err := labels.Parse("app.kubernetes.io/component in (config,migration)")
			require.NoError(t, err)
			var firstPhase []string
			for _, kn := range r.kindNames {
				if first.Matches(r.labelsOf[kn]) {
					firstPhase = append(firstPhase, kn)
				}
			}
			wantFirst := append([]string{"ConfigMap/ingestd-config", "Job/ingestd-migrate", "ServiceAccount/ingestd"}, tc.sources...)
			sort.Strings(wantFirst)
			require.Equal(t, wantFirst, firstPhase)

			cm := r.configMaps[configMapName]
			require.NotNil(t, cm)
			checkConfigMap(t, readme, cm.Data, tc.brokersPlaceholder)

			dep := r.deployments[appName]
			require.NotNil(t, dep)
			checkDeployment(t, readme, dep, cm.Data, tc.image)
			require.Equal(t, tc.memoryLimit, dep.Spec.Template.Spec.Containers[0].Resources.Limits.Memory().String())

			job := r.jobs["ingestd-migrate"]
			require.NotNil(t, job)
			checkJob(t, job, tc.image)

			checkSelectors(t, r, dep, job)
			_, ok := r.rules[appName]
			require.True(t, ok)
		})
	}
}

// checkConfigMap checks that every key is a setting ingestd reads, with the
// README's documented default (the brokers excepted, which every site must
// set), and that every documented setting is set somewhere.
func checkConfigMap(t *testing.T, readme, data map[string]string, brokersPlaceholder bool) {
	t.Helper()
	for k, v := range data {
		_, ok := readme[k]
		require.True(t, ok, "ConfigMap key %s is not a setting in README.md", k)
		require.NotContains(t, secretSettings, k, "%s is a secret; it belongs in the Secret", k)
		require.NotContains(t, forbiddenSettings, k, "%s must never be set in a deployment", k)
		if k == "INGESTD_KAFKA_BROKERS" {
			require.Equal(t, brokersPlaceholder, strings.Contains(v, placeholder), "INGESTD_KAFKA_BROKERS = %q", v)
			for _, b := range strings.Split(v, ",") {
				_, port, err := net.SplitHostPort(b)
				require.NoError(t, err, "broker %q", b)
				require.NotEmpty(t, port)
			}
		}
	}
	require.Contains(t, data, "INGESTD_KAFKA_BROKERS")
	if !brokersPlaceholder {
		return
	}
	// The base documents every default.
	for k, def := range readme {
		v, inCM := data[k]
		switch {
		case k == "INGESTD_KAFKA_BROKERS":
		case inCM:
			require.True(t, sameSetting(def, v), "%s is %q in the ConfigMap but %q in README.md", k, v, def)
		case slices.Contains(secretSettings, k), strings.HasPrefix(def, "unset"), k == "INGESTD_LOG_FORMAT":
			// In the Secret, optional, or pinned in the pod spec.
		default:
			t.Errorf("README.md documents %s (default %q) but the ConfigMap does not set it", k, def)
		}
	}
}

// effectiveEnv is a container's environment as the kubelet builds it from
// the ConfigMap and explicit env entries (which win).
func effectiveEnv(c corev1.Container, cm map[string]string) map[string]string {
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == configMapName {
			for k, v := range cm {
				env[ef.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	return env
}

// checkPodSpec checks what every ingestd pod needs: its identity, the
// hardened security context, its configuration and resources.
func checkPodSpec(t *testing.T, what string, spec corev1.PodSpec, image string) {
	t.Helper()
	require.Equal(t, appName, spec.ServiceAccountName, "%s serviceAccountName", what)
	require.Equal(t, new(false), spec.AutomountServiceAccountToken, "%s automountServiceAccountToken", what)
	require.Equal(t, new(false), spec.EnableServiceLinks, "%s enableServiceLinks: service variables would collide with INGESTD_*", what)

	psc := spec.SecurityContext
	require.NotNil(t, psc, "%s pod securityContext", what)
	require.Equal(t, new(true), psc.RunAsNonRoot, "%s pod runAsNonRoot", what)
	require.Equal(t, new(nonRootUID), psc.RunAsUser, "%s pod runAsUser", what)
	require.NotNil(t, psc.SeccompProfile, "%s pod seccompProfile", what)
	require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, psc.SeccompProfile.Type, "%s pod seccompProfile", what)

	containers := append(slices.Clone(spec.InitContainers), spec.Containers...)
	require.NotEmpty(t, containers)
	for _, c := range containers {
		what := what + " container " + c.Name
		require.Equal(t, image, c.Image, "%s image", what)
		sc := c.SecurityContext
		require.NotNil(t, sc, "%s securityContext", what)
		require.Equal(t, new(true), sc.RunAsNonRoot, "%s runAsNonRoot", what)
		require.Equal(t, new(nonRootUID), sc.RunAsUser, "%s runAsUser", what)
		require.Equal(t, new(true), sc.ReadOnlyRootFilesystem, "%s readOnlyRootFilesystem", what)
		require.Equal(t, new(false), sc.AllowPrivilegeEscalation, "%s allowPrivilegeEscalation", what)
		require.True(t, sc.Privileged == nil || !*sc.Privileged, "%s privileged", what)
		require.NotNil(t, sc.Capabilities, "%s capabilities", what)
		require.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop, "%s capabilities.drop", what)
		require.Empty(t, sc.Capabilities.Add, "%s capabilities.add", what)
		require.NotNil(t, sc.SeccompProfile, "%s seccompProfile", what)
		require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type, "%s seccompProfile", what)

		var refs []string
		for _, ef := range c.EnvFrom {
			switch {
			case ef.ConfigMapRef != nil:
				refs = append(refs, "configmap/"+ef.ConfigMapRef.Name)
				require.Nil(t, ef.ConfigMapRef.Optional, "%s: a missing ConfigMap must stop the pod", what)
			case ef.SecretRef != nil:
				refs = append(refs, "secret/"+ef.SecretRef.Name)
				require.Nil(t, ef.SecretRef.Optional, "%s: a missing Secret must stop the pod", what)
			}
			require.Empty(t, ef.Prefix, "%s envFrom prefix", what)
		}
		require.Equal(t, []string{"configmap/" + configMapName, "secret/" + secretName}, refs, "%s envFrom", what)
		logFormat := ""
		for _, e := range c.Env {
			require.Nil(t, e.ValueFrom, "%s env %s: settings come from the ConfigMap and Secret", what, e.Name)
			require.NotContains(t, forbiddenSettings, e.Name, "%s must never be set in a deployment", e.Name)
			if e.Name == "INGESTD_LOG_FORMAT" {
				logFormat = e.Value
			}
		}
		require.Equal(t, "json", logFormat, "%s INGESTD_LOG_FORMAT", what)

		require.False(t, c.Resources.Requests.Cpu().IsZero(), "%s cpu request", what)
		require.False(t, c.Resources.Requests.Memory().IsZero(), "%s memory request", what)
		require.False(t, c.Resources.Limits.Memory().IsZero(), "%s memory limit", what)
		require.LessOrEqual(t, c.Resources.Requests.Memory().Cmp(*c.Resources.Limits.Memory()), 0, "%s memory request above limit", what)
	}
}

// parseGoMemLimit parses GOMEMLIMIT's syntax (bytes with an optional B,
// KiB, MiB, GiB or TiB suffix).
func parseGoMemLimit(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

func checkDeployment(t *testing.T, readme map[string]string, dep *appsv1.Deployment, cm map[string]string, image string) {
	t.Helper()
	spec := dep.Spec
	checkPodSpec(t, "Deployment", spec.Template.Spec, image)

	require.Equal(t, new(int32(2)), spec.Replicas, "one active pod and one hot standby")
	require.Equal(t, appsv1.RollingUpdateDeploymentStrategyType, spec.Strategy.Type)
	require.NotNil(t, spec.Strategy.RollingUpdate)
	require.Equal(t, "0", spec.Strategy.RollingUpdate.MaxUnavailable.String(), "maxUnavailable")
	require.Equal(t, "1", spec.Strategy.RollingUpdate.MaxSurge.String(), "maxSurge")
	sel, err := metav1.LabelSelectorAsSelector(spec.Selector)
	require.NoError(t, err)
	require.True(t, sel.Matches(labels.Set(spec.Template.Labels)), "the selector must match the pod template")

	pod := spec.Template.Spec
	require.Len(t, pod.Containers, 1)
	c := pod.Containers[0]
	require.Contains(t, [][]string{nil, {"run"}}, c.Args, "the daemon runs with `ingestd run`")
	require.Empty(t, c.Command, "the image's entrypoint is ingestd")

	// The HTTP port is the one ingestd listens on.
	env := effectiveEnv(c, cm)
	require.Len(t, c.Ports, 1)
	require.Equal(t, "http", c.Ports[0].Name)
	httpAddr, ok := env["INGESTD_HTTP_ADDR"]
	if !ok {
		httpAddr = readme["INGESTD_HTTP_ADDR"]
	}
	_, port, err := net.SplitHostPort(httpAddr)
	require.NoError(t, err, "INGESTD_HTTP_ADDR %q", httpAddr)
	require.Equal(t, port, strconv.Itoa(int(c.Ports[0].ContainerPort)), "container port vs INGESTD_HTTP_ADDR")

	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		require.NotNil(t, p.probe, "%s probe", p.name)
		require.NotNil(t, p.probe.HTTPGet, "%s probe must be an HTTP GET", p.name)
		require.Equal(t, p.path, p.probe.HTTPGet.Path, "%s probe path", p.name)
		require.Equal(t, "http", p.probe.HTTPGet.Port.String(), "%s probe port", p.name)
	}

	// Graceful shutdown: the preStop pause, then SIGTERM and at most the
	// shutdown timeout, all within the grace period.
	require.NotNil(t, c.Lifecycle, "lifecycle")
	require.NotNil(t, c.Lifecycle.PreStop, "preStop")
	require.NotNil(t, c.Lifecycle.PreStop.Sleep, "preStop must be a sleep action: distroless has no shell for exec")
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	require.Positive(t, preStop)
	shutdownSetting, ok := env["INGESTD_SHUTDOWN_TIMEOUT"]
	if !ok {
		shutdownSetting = readme["INGESTD_SHUTDOWN_TIMEOUT"]
	}
	shutdown, err := time.ParseDuration(shutdownSetting)
	require.NoError(t, err, "INGESTD_SHUTDOWN_TIMEOUT")
	require.NotNil(t, pod.TerminationGracePeriodSeconds)
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	require.Greater(t, grace, preStop+shutdown,
		"terminationGracePeriodSeconds (%s) must exceed the preStop pause (%s) plus INGESTD_SHUTDOWN_TIMEOUT (%s)", grace, preStop, shutdown)

	// A publisher that stops with a Kafka write in doubt lets its lease
	// expire instead of releasing it, so the lease must outlive the write
	// (docs/guarantees.md); ingestd refuses to start otherwise.
	setting := func(name string) time.Duration {
		v, ok := env[name]
		if !ok {
			v = readme[name]
		}
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "%s %q", name, v)
		return d
	}
	require.Greater(t, setting("INGESTD_LEASE_TTL"), setting("INGESTD_KAFKA_WRITE_TIMEOUT"),
		"INGESTD_LEASE_TTL must exceed INGESTD_KAFKA_WRITE_TIMEOUT")

	// GOMEMLIMIT, when set, must leave room below the memory limit.
	if v, ok := env["GOMEMLIMIT"]; ok {
		soft, err := parseGoMemLimit(v)
		require.NoError(t, err, "GOMEMLIMIT %q", v)
		require.Less(t, soft, c.Resources.Limits.Memory().Value(), "GOMEMLIMIT must stay below the memory limit")
	}

	// The standby must not share a node with the active pod.
	spread := false
	for _, tsc := range pod.TopologySpreadConstraints {
		if tsc.TopologyKey == corev1.LabelHostname && tsc.WhenUnsatisfiable == corev1.DoNotSchedule {
			sel, err := metav1.LabelSelectorAsSelector(tsc.LabelSelector)
			require.NoError(t, err)
			require.True(t, sel.Matches(labels.Set(spec.Template.Labels)), "topology spread selector must match the pods")
			spread = true
		}
	}
	if a := pod.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			spread = spread || term.TopologyKey == corev1.LabelHostname
		}
	}
	require.True(t, spread, "the two replicas must be spread across nodes")
}

func checkJob(t *testing.T, job *batchv1.Job, image string) {
	t.Helper()
	spec := job.Spec
	checkPodSpec(t, "Job", spec.Template.Spec, image)
	require.Equal(t, []string{"migrate"}, spec.Template.Spec.Containers[0].Args)
	require.Contains(t, []corev1.RestartPolicy{corev1.RestartPolicyNever, corev1.RestartPolicyOnFailure}, spec.Template.Spec.RestartPolicy)
	require.NotNil(t, spec.BackoffLimit, "backoffLimit")
	require.NotNil(t, spec.TTLSecondsAfterFinished, "ttlSecondsAfterFinished")
	require.NotNil(t, spec.ActiveDeadlineSeconds, "activeDeadlineSeconds")
}

// checkSelectors checks that the Service, the PodDisruptionBudget and the
// ServiceMonitor select the daemon's pods, and only those.
func checkSelectors(t *testing.T, r *rendered, dep *appsv1.Deployment, job *batchv1.Job) {
	t.Helper()
	daemonPods := labels.Set(dep.Spec.Template.Labels)
	migrationPods := labels.Set(job.Spec.Template.Labels)

	svc := r.services["ingestd-metrics"]
	require.NotNil(t, svc)
	svcSel := labels.SelectorFromSet(svc.Spec.Selector)
	require.True(t, svcSel.Matches(daemonPods), "Service must select the daemon pods")
	require.False(t, svcSel.Matches(migrationPods), "Service must not select the migration pod")
	require.Len(t, svc.Spec.Ports, 1)
	require.Equal(t, "http", svc.Spec.Ports[0].Name)
	require.Equal(t, int32(8080), svc.Spec.Ports[0].Port)
	require.Equal(t, "http", svc.Spec.Ports[0].TargetPort.String())

	pdb := r.pdbs[appName]
	require.NotNil(t, pdb)
	require.Equal(t, "1", pdb.Spec.MinAvailable.String())
	pdbSel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	require.NoError(t, err)
	require.True(t, pdbSel.Matches(daemonPods), "PodDisruptionBudget must select the daemon pods")
	require.False(t, pdbSel.Matches(migrationPods), "PodDisruptionBudget must not select the migration pod")

	sm := r.monitors[appName]
	require.NotNil(t, sm)
	smSel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	require.NoError(t, err)
	require.True(t, smSel.Matches(labels.Set(svc.Labels)), "ServiceMonitor must select the metrics Service")
	require.Len(t, sm.Spec.Endpoints, 1)
	require.Equal(t, "http", sm.Spec.Endpoints[0].Port)
	require.Equal(t, "/metrics", sm.Spec.Endpoints[0].Path)
}

// TestConfigMapMatchesREADME checks the base ConfigMap against the README's
// configuration table directly (TestRenderedManifests checks it after
// kustomize too): a renamed setting or a changed default must be changed in
// both places.
func TestConfigMapMatchesREADME(t *testing.T) {
	t.Parallel()
	readme := readmeSettings(t)
	data, err := os.ReadFile("base/configmap.yaml")
	require.NoError(t, err)
	obj, err := decodeStrict(data)
	require.NoError(t, err)
	checkConfigMap(t, readme, obj.(*corev1.ConfigMap).Data, true)
}

// TestSecretExampleHoldsOnlyPlaceholders makes sure no real credential is
// ever committed in the example Secret.
func TestSecretExampleHoldsOnlyPlaceholders(t *testing.T) {
	t.Parallel()
	readme := readmeSettings(t)
	var secrets []*corev1.Secret
	for _, m := range readManifests(t) {
		if m.meta.Kind != "Secret" {
			continue
		}
		require.True(t, strings.HasSuffix(m.path, exampleFileTail), "%s: Secrets under deploy/ must be examples (*%s)", m.path, exampleFileTail)
		obj, err := decodeStrict(m.raw)
		require.NoError(t, err)
		secrets = append(secrets, obj.(*corev1.Secret))
	}
	require.Len(t, secrets, 1)
	s := secrets[0]
	require.Equal(t, secretName, s.Name)
	require.Empty(t, s.Data, "use stringData, so that placeholders are visible and not base64 blobs")
	var keys []string
	for k, v := range s.StringData {
		keys = append(keys, k)
		require.True(t, knownSetting(readme, k), "%s is not a setting ingestd reads", k)
		require.Contains(t, v, placeholder, "%s must be an obvious placeholder", k)
		// A DSN's password must be the placeholder too.
		if strings.Contains(v, "://") {
			u, err := url.Parse(v)
			require.NoError(t, err, "%s", k)
			pw, ok := u.User.Password()
			require.True(t, ok, "%s: show where the password goes", k)
			require.Equal(t, placeholder, pw, "%s password", k)
		}
	}
	sort.Strings(keys)
	want := slices.Clone(secretSettings)
	sort.Strings(want)
	require.Equal(t, want, keys)
	for _, p := range pendingSettings {
		if _, ok := readme[p]; ok {
			t.Logf("%s is now in README.md; drop it from pendingSettings", p)
		}
	}
}

// docAnchors returns the GitHub anchors of the markdown headings in path.
func docAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	anchors := map[string]bool{}
	inFence := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		anchors[githubAnchor(title)] = true
	}
	return anchors
}

// githubAnchor is GitHub's heading slug: lower case, punctuation dropped
// (except - and _), spaces turned into hyphens.
func githubAnchor(title string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(title) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// selectorMetric resolves a selector name to an exported metric, accepting
// the _bucket, _sum and _count series of histograms.
func selectorMetric(name string) (string, metricInfo, bool) {
	if m, ok := exportedMetrics[name]; ok {
		return name, m, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if m, ok := exportedMetrics[base]; ok && m.kind == histogram {
				return base, m, true
			}
		}
	}
	return "", metricInfo{}, false
}

// selectorLabels returns the labels the series selected under node carry.
func selectorLabels(node parser.Node) map[string]bool {
	out := map[string]bool{}
	for _, l := range scrapeLabels {
		out[l] = true
	}
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			if name, m, ok := selectorMetric(vs.Name); ok {
				for _, l := range m.labels {
					out[l] = true
				}
				if exportedMetrics[name].kind == histogram && vs.Name == name+"_bucket" {
					out["le"] = true
				}
			}
		}
		return nil
	})
	return out
}

// checkExpr parses a PromQL expression and checks every metric, label
// matcher, grouping and vector matching label against exportedMetrics. It
// returns the labels of all selected series.
func checkExpr(expr string) (map[string]bool, error) {
	root, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var errs []error
	parser.Inspect(root, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			name, m, ok := selectorMetric(n.Name)
			if !ok {
				errs = append(errs, fmt.Errorf("metric %q is not one ingestd exports", n.Name))
				return nil
			}
			own := selectorLabels(n)
			for _, lm := range n.LabelMatchers {
				if lm.Name == model.MetricNameLabel {
					continue
				}
				if !own[lm.Name] {
					errs = append(errs, fmt.Errorf("%s has no label %q (labels: %v)", n.Name, lm.Name, m.labels))
				}
				if lm.Type == promlabels.MatchEqual && !validLabelValue(name, lm.Name, lm.Value) {
					errs = append(errs, fmt.Errorf("%s{%s=%q} can never match", n.Name, lm.Name, lm.Value))
				}
			}
		case *parser.AggregateExpr, *parser.BinaryExpr:
			errs = append(errs, groupingErrors(n, selectorLabels)...)
		}
		return nil
	})
	return selectorLabels(root), errors.Join(errs...)
}

// TestCheckExprCatchesMistakes proves checkExpr rejects what it is meant to.
func TestCheckExprCatchesMistakes(t *testing.T) {
	t.Parallel()
	cases := []struct{ expr, wantErr string }{
		{`ingestd_source_halted == 1`, ""},
		{`histogram_quantile(0.99, sum by (le) (rate(ingestd_e2e_lag_seconds_bucket[5m])))`, ""},
		{`ingestd_source_haltd == 1`, "not one ingestd exports"},
		{`ingestd_outbox_backlog_count`, "not one ingestd exports"},
		{`sum(rate(ingestd_upstream_requests_total{result="ok"}[5m]))`, `no label "result"`},
		{`sum(rate(ingestd_upstream_requests_total{outcome="ratelimited"}[5m]))`, "can never match"},
		{`max by (lease) (ingestd_source_halted)`, `no series below has label "lease"`},
		{`ingestd_cursor_age_seconds and on (lease) ingestd_lease_holder`, `a side has no label "lease"`},
		{`sum by (source) (rate(ingestd_pages_total[5m]`, "unclosed"},
	}
	for _, tc := range cases {
		t.Run(tc.expr, func(t *testing.T) {
			t.Parallel()
			_, err := checkExpr(tc.expr)
			if tc.wantErr == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tc.wantErr)
			}
		})
	}
}

// alertTemplateFuncs stands in for the functions Prometheus offers to alert
// templates, so that annotations can be parsed and executed here.
var alertTemplateFuncs = template.FuncMap{
	"humanize":           func(v float64) string { return fmt.Sprint(v) },
	"humanizeDuration":   func(v float64) string { return fmt.Sprint(v) },
	"humanizePercentage": func(v float64) string { return fmt.Sprint(v) },
	"humanizeTimestamp":  func(v float64) string { return fmt.Sprint(v) },
}

// alertTemplateDefs are the variables Prometheus defines before expanding an
// alert's labels and annotations.
const alertTemplateDefs = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"

var templateLabelRef = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)

func TestAlerts(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("base/prometheusrule.yaml")
	require.NoError(t, err)
	obj, err := decodeStrict(data)
	require.NoError(t, err)
	rule := obj.(*monitoringv1.PrometheusRule)
	anchors := docAnchors(t, operationsDoc)

	want := []string{"Ingestd429Storm", "IngestdCursorStuck", "IngestdKafkaAccessDenied", "IngestdNoLeader", "IngestdOutboxBacklogGrowing",
		"IngestdSourceHalted", "IngestdUnknownStatuses"}
	var got []string
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert, "group %s: only alerts are expected (recording rules need their own checks)", g.Name)
			got = append(got, r.Alert)
			t.Run(r.Alert, func(t *testing.T) {
				t.Parallel()
				series, err := checkExpr(r.Expr.String())
				require.NoError(t, err, "expr:\n%s", r.Expr.String())

				if r.For != nil {
					_, err := model.ParseDuration(string(*r.For))
					require.NoError(t, err, "for")
				}
				require.Contains(t, []string{"critical", "warning", "info"}, r.Labels["severity"], "severity label")
				for _, a := range []string{"summary", "description", "runbook_url"} {
					require.NotEmpty(t, strings.TrimSpace(r.Annotations[a]), "annotation %s", a)
				}
				for k := range r.Annotations {
					require.Contains(t, []string{"summary", "description", "runbook_url"}, k, "unexpected annotation")
				}

				// The runbook link points at this alert's section of
				// docs/operations.md, which must exist.
				u := r.Annotations["runbook_url"]
				base, anchor, ok := strings.Cut(u, "#")
				require.True(t, ok, "runbook_url %s has no anchor", u)
				require.Equal(t, runbookURL, base)
				require.Equal(t, strings.ToLower(r.Alert), anchor, "runbook_url anchor")
				require.True(t, anchors[anchor], "docs/operations.md has no heading for #%s", anchor)

				// Annotations are Go templates: they must parse, run, and
				// only name labels the expression's series carry.
				for k, text := range r.Annotations {
					tmpl, err := template.New(k).Funcs(alertTemplateFuncs).Option("missingkey=zero").Parse(alertTemplateDefs + text)
					require.NoError(t, err, "annotation %s", k)
					var out strings.Builder
					require.NoError(t, tmpl.Execute(&out, struct {
						Labels, ExternalLabels map[string]string
						ExternalURL            string
						Value                  float64
					}{Labels: map[string]string{}, Value: 1}), "annotation %s", k)
					for _, m := range templateLabelRef.FindAllStringSubmatch(text, -1) {
						require.True(t, series[m[1]], "annotation %s uses $labels.%s, which the expression's series do not have", k, m[1])
					}
				}
			})
		}
	}
	sort.Strings(got)
	require.Equal(t, want, got)
}

// TestOperationsDocListsEveryMetric keeps the metrics reference in
// docs/operations.md in step with exportedMetrics.
func TestOperationsDocListsEveryMetric(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(operationsDoc)
	require.NoError(t, err)
	rows := map[string]string{}
	row := regexp.MustCompile("(?m)^\\| `(ingestd_[a-z0-9_]+)` \\|(.*)$")
	for _, m := range row.FindAllStringSubmatch(string(data), -1) {
		rows[m[1]] = m[2]
	}
	for name, m := range exportedMetrics {
		r, ok := rows[name]
		require.True(t, ok, "docs/operations.md's metrics table has no row for %s", name)
		require.Contains(t, r, string(m.kind), "row of %s must give its type", name)
		for _, l := range m.labels {
			require.Contains(t, r, "`"+l+"`", "row of %s must name its label %s", name, l)
		}
	}
	for name := range rows {
		_, ok := exportedMetrics[name]
		require.True(t, ok, "docs/operations.md documents %s, which is not in exportedMetrics", name)
	}
}

// metricName finds the metric names registered in Go source: every
// collector in ingestd is declared with a literal Name field.
var metricName = regexp.MustCompile(`Name:\s+"(ingestd_[a-z0-9_]+)"`)

// TestExportedMetricsMatchTheCode keeps exportedMetrics (and with it the
// alerts and the documentation) in step with the metrics the code
// registers: a metric renamed in the code would otherwise leave an alert
// that silently never fires, and a new metric would go undocumented.
func TestExportedMetricsMatchTheCode(t *testing.T) {
	t.Parallel()
	inCode := map[string]string{}
	for _, root := range []string{"../internal", "../cmd"} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, m := range metricName.FindAllStringSubmatch(string(data), -1) {
				inCode[m[1]] = p
			}
			return nil
		})
		require.NoError(t, err)
	}
	require.NotEmpty(t, inCode)
	for name, file := range inCode {
		_, ok := exportedMetrics[name]
		require.True(t, ok, "%s (registered in %s) is missing from exportedMetrics and docs/operations.md", name, file)
	}
	for name := range exportedMetrics {
		_, ok := inCode[name]
		require.True(t, ok, "%s is in exportedMetrics but no code registers it", name)
	}
}

// groupingErrors checks that the labels an aggregation groups by, or a
// binary operation matches on, are labels of the series below it, as
// labelsOf finds them: Prometheus accepts any label there, and a wrong one
// silently yields nothing. The alert and dashboard checks share it.
func groupingErrors(n parser.Node, labelsOf func(parser.Node) map[string]bool) []error {
	var errs []error
	switch n := n.(type) {
	case *parser.AggregateExpr:
		if !n.Without {
			have := labelsOf(n.Expr)
			for _, g := range n.Grouping {
				if !have[g] {
					errs = append(errs, fmt.Errorf("%s by (%s): no series below has label %q", n.Op, strings.Join(n.Grouping, ", "), g))
				}
			}
		}
	case *parser.BinaryExpr:
		if vm := n.VectorMatching; vm != nil && vm.On {
			for _, side := range []parser.Node{n.LHS, n.RHS} {
				have := labelsOf(side)
				for _, l := range vm.MatchingLabels {
					if !have[l] {
						errs = append(errs, fmt.Errorf("on (%s): a side has no label %q", strings.Join(vm.MatchingLabels, ", "), l))
					}
				}
			}
		}
	}
	return errs
}
