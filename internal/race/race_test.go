package race_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// makeVar returns the value of a `NAME := value` line of the Makefile.
func makeVar(t *testing.T, makefile, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + `\s*:=\s*(.*)$`).FindStringSubmatch(makefile)
	require.NotNil(t, m, "the Makefile defines %s", name)
	return strings.TrimSpace(m[1])
}

// TestEveryTestSkippedUnderRaceRunsInMakeTest: `make test` runs with -race,
// under which the allocation tests skip (the detector adds allocations), so
// it has a second, non-race pass of ALLOC_TESTS in ALLOC_PKGS. Every test
// that skips under race.Enabled must be in that pass, or CI never runs it.
func TestEveryTestSkippedUnderRaceRunsInMakeTest(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	require.NoError(t, err)
	makefile := string(mk)
	run := regexp.MustCompile(makeVar(t, makefile, "ALLOC_TESTS"))
	pkgs := map[string]bool{}
	for _, p := range strings.Fields(makeVar(t, makefile, "ALLOC_PKGS")) {
		pkgs[filepath.Clean(p)] = true
	}
	recipe := regexp.MustCompile(`(?m)^test:\n((?:\t.*\n)+)`).FindStringSubmatch(makefile)
	require.NotNil(t, recipe, "the Makefile has a test target")
	require.Contains(t, recipe[1], "-race", "make test runs with the race detector")
	require.Regexp(t, `(?m)^\t\$\(GO\) test (?:[^\n]*\s)?-run '\$\(ALLOC_TESTS\)' \$\(ALLOC_PKGS\)$`, recipe[1],
		"make test has a non-race pass of ALLOC_TESTS in ALLOC_PKGS")
	require.NotRegexp(t, `(?m)^\t.*-race.*\$\(ALLOC_TESTS\)`, recipe[1], "that pass runs without -race")

	var skipped []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || !strings.HasPrefix(fn.Name.Name, "Test") || !skipsUnderRace(fn) {
				continue
			}
			rel, err := filepath.Rel(root, filepath.Dir(path))
			require.NoError(t, err)
			pkg := "./" + filepath.ToSlash(rel)
			skipped = append(skipped, pkg+" "+fn.Name.Name)
			require.True(t, run.MatchString(fn.Name.Name), "%s in %s skips under -race but ALLOC_TESTS does not select it", fn.Name.Name, pkg)
			require.True(t, pkgs[filepath.Clean(pkg)], "%s skips under -race but its package %s is not in ALLOC_PKGS", fn.Name.Name, pkg)
		}
		return nil
	})
	require.NoError(t, err)
	require.NotEmpty(t, skipped, "the walk found the allocation tests")
	t.Logf("run without -race by make test: %v", skipped)
}

// skipsUnderRace reports whether fn's body tests race.Enabled.
func skipsUnderRace(fn *ast.FuncDecl) bool {
	found := false
	ast.Inspect(fn, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == "Enabled" {
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == "race" {
				found = true
			}
		}
		return !found
	})
	return found
}
