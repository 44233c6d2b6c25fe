// Package docs_test holds the claims of README.md and docs/ to the code:
// what a test can check about a document, it checks here (the alerts,
// metrics and manifests are checked in deploy/, the event contract in
// internal/event, the configuration table in cmd/ingestd).
package docs_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/lease"
)

// root is the repository, seen from this package.
const root = ".."

// documents returns README.md and every Markdown file under docs/, by path.
func documents(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	require.NoError(t, err)
	paths = append(paths, filepath.Join(root, "README.md"))
	out := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		out[filepath.Base(p)] = string(b)
	}
	require.Contains(t, out, "guarantees.md")
	return out
}

// testsIn returns the names of the test functions declared in dir.
func testsIn(t *testing.T, dir string) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, dir, "*_test.go"))
	require.NoError(t, err)
	names := map[string]bool{}
	for _, f := range files {
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.SkipObjectResolution)
		require.NoError(t, err)
		for _, d := range af.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && strings.HasPrefix(fd.Name.Name, "Test") {
				names[fd.Name.Name] = true
			}
		}
	}
	return names
}

// TestGuaranteesCiteTestsThatExist: every "proven by" cell of
// docs/guarantees.md names a package and tests (`internal/cursor`
// `TestCommitPageRejectsStaleCursor`, `TestX`); each test must exist in
// that package, or the promise is proven by nothing.
func TestGuaranteesCiteTestsThatExist(t *testing.T) {
	t.Parallel()
	doc := documents(t)["guarantees.md"]
	cite := regexp.MustCompile("`((?:internal|cmd|tools|deploy)/[a-z0-9/_-]+)`((?:[^`|]|`Test[A-Za-z0-9_]+`)*)")
	testName := regexp.MustCompile("`(Test[A-Za-z0-9_]+)`")
	checked := 0
	for _, m := range cite.FindAllStringSubmatch(doc, -1) {
		pkg := m[1]
		have := testsIn(t, pkg)
		for _, tm := range testName.FindAllStringSubmatch(m[2], -1) {
			require.True(t, have[tm[1]], "docs/guarantees.md cites %s in %s, which has no such test", tm[1], pkg)
			checked++
		}
	}
	require.Greater(t, checked, 15, "the guarantees cite their tests")
}

// TestDocumentedPathsExist: every repository path a document names
// (internal/..., cmd/..., deploy/..., a file or a folder) exists.
func TestDocumentedPathsExist(t *testing.T) {
	t.Parallel()
	path := regexp.MustCompile(`(?:^|[\s(` + "`" + `\[])((?:internal|cmd|tools|deploy|schemas|migrations|docs)/[A-Za-z0-9_./-]*[A-Za-z0-9_/-])`)
	for name, doc := range documents(t) {
		for _, m := range path.FindAllStringSubmatch(doc, -1) {
			p := strings.TrimSuffix(m[1], "/")
			if strings.HasPrefix(p, "deploy/ingestd") {
				// kubectl's deploy/<name>: a Deployment, not a path.
				continue
			}
			_, err := os.Stat(filepath.Join(root, p))
			require.NoError(t, err, "%s names %s", name, p)
		}
	}
}

// TestDocumentedLeasesExist: a lease a document names is one ingestd
// takes: the publisher's, or a journal source's. (BTS sources have none.)
func TestDocumentedLeasesExist(t *testing.T) {
	t.Parallel()
	leaseName := regexp.MustCompile("`(source:[^`]*|publisher)`")
	found := 0
	for name, doc := range documents(t) {
		for _, m := range leaseName.FindAllStringSubmatch(doc, -1) {
			found++
			ok := m[1] == lease.Publisher || strings.HasPrefix(m[1], lease.Source("yandex/"))
			require.True(t, ok, "%s names the lease %q, which ingestd never takes", name, m[1])
		}
	}
	require.Positive(t, found)
}

// TestPackageTableListsEveryPackage: the README's package table names every
// package of the product, the tools and the test helpers, so that a
// newcomer finds each folder there.
func TestPackageTableListsEveryPackage(t *testing.T) {
	t.Parallel()
	readme := documents(t)["README.md"]
	row := regexp.MustCompile("(?m)^\\| (`[^|]+`) \\|")
	listed := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(readme, -1) {
		for _, name := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(m[1], -1) {
			listed[strings.TrimSuffix(name[1], "/")] = true
		}
	}
	for _, top := range []string{"cmd", "tools", "internal"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() || d.Name() == "testdata" {
				if d != nil && d.IsDir() && d.Name() == "testdata" {
					return filepath.SkipDir
				}
				return err
			}
			gos, err := filepath.Glob(filepath.Join(path, "*.go"))
			if err != nil || len(gos) == 0 {
				return err
			}
			rel, err := filepath.Rel(root, path)
			require.NoError(t, err)
			require.True(t, listed[filepath.ToSlash(rel)], "README.md's package table does not list %s", rel)
			return nil
		})
		require.NoError(t, err)
	}
}

// TestLayersKeepToThemselves holds the architecture's rules on the import
// graph: the product never imports the simulator or the test helpers; a
// storage package never reaches Kafka or serves HTTP; an API client never
// reaches PostgreSQL or Kafka; a poller knows nothing of Kafka; the event
// schema is a leaf. Module packages and libraries are checked through every
// transitive import; net/http only as a direct import, since the metrics
// library brings it everywhere.
func TestLayersKeepToThemselves(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}\t{{join .Deps \" \"}}\t{{join .Imports \" \"}}", "../cmd/...", "../internal/...").Output()
	require.NoError(t, err)
	const mod = "github.com/ingestd/ingestd/"
	deps, imports := map[string][]string{}, map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		require.Len(t, f, 3, line)
		pkg := strings.TrimPrefix(f[0], mod)
		deps[pkg], imports[pkg] = strings.Fields(f[1]), strings.Fields(f[2])
	}
	storage := []string{"internal/pg", "internal/lease", "internal/outbox", "internal/cursor", "internal/watchlist", "internal/storage"}
	clients := []string{"internal/upstream", "internal/yandex", "internal/bts"}
	pollers := []string{"internal/poller", "internal/poller/journal", "internal/poller/watch"}
	rules := []struct {
		pkgs      []string
		forbidden []string
		direct    bool
		why       string
	}{
		{[]string{"cmd/ingestd"}, []string{mod + "internal/sim", mod + "internal/pgtest", mod + "internal/kafkatest", mod + "internal/child"}, false, "the product ships no test tool"},
		{storage, []string{"github.com/segmentio/kafka-go", mod + "internal/publish", mod + "internal/poller"}, false, "a storage package never calls Kafka"},
		{storage, []string{"net/http"}, true, "a storage package never speaks HTTP"},
		{clients, []string{"github.com/jackc/pgx/v5", "github.com/segmentio/kafka-go", mod + "internal/pg", mod + "internal/outbox", mod + "internal/cursor"}, false, "an API client never touches storage or Kafka"},
		{pollers, []string{"github.com/segmentio/kafka-go", mod + "internal/publish"}, false, "a poller knows nothing of Kafka"},
		{[]string{"internal/event"}, []string{mod}, false, "the event schema is a leaf"},
	}
	for _, r := range rules {
		for _, pkg := range r.pkgs {
			list, ok := deps[pkg]
			if r.direct {
				list, ok = imports[pkg]
			}
			require.True(t, ok, "package %s exists", pkg)
			for _, d := range list {
				for _, f := range r.forbidden {
					hit := d == f || strings.HasSuffix(f, "/") && strings.HasPrefix(d, f)
					require.False(t, hit, "%s imports %s: %s", pkg, d, r.why)
				}
			}
		}
	}
}
