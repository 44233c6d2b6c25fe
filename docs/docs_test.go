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
