package main

import (
	"flag"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/daemon"
)

// TestREADMEConfigurationTableMatchesFlags keeps the README's configuration
// table in step with the real flags: every variable documented exists, and
// every flag is documented, with the same default.
func TestREADMEConfigurationTableMatchesFlags(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	row := regexp.MustCompile("(?m)^\\| `(INGESTD_[A-Z_]+)` \\| .* \\| `?([^`|]*)`?[^|]* \\|$")
	documented := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		documented[m[1]] = strings.TrimSpace(m[2])
	}

	cfg := daemon.DefaultConfig()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	bindDaemonFlags(fs, &cfg)
	var fromFlags []string
	fs.VisitAll(func(f *flag.Flag) {
		env := envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		fromFlags = append(fromFlags, env)
		def, ok := documented[env]
		if !ok {
			return
		}
		switch {
		case strings.HasPrefix(def, "required"), strings.HasPrefix(def, "unset"):
			require.Empty(t, f.DefValue, "%s is documented as %s", env, def)
		default:
			require.True(t, sameDefault(def, f), "default of %s: the README says %q, the code %q", env, def, f.DefValue)
		}
	})
	var docNames []string
	for k := range documented {
		docNames = append(docNames, k)
	}
	sort.Strings(docNames)
	sort.Strings(fromFlags)
	require.Equal(t, fromFlags, docNames)
}

// sameDefault reports whether doc, a default as the README writes it, is
// the default of f. A duration is compared as a duration, since Go prints
// it in its long form (168h0m0s for 168h); anything else as text.
func sameDefault(doc string, f *flag.Flag) bool {
	if g, ok := f.Value.(flag.Getter); ok {
		if d, ok := g.Get().(time.Duration); ok {
			parsed, err := time.ParseDuration(doc)
			return err == nil && parsed == d
		}
	}
	return doc == f.DefValue
}

// TestSameDefault holds the README check to the exact default: 30s is not
// 30m, which stripping zero units from both sides took for the same.
func TestSameDefault(t *testing.T) {
	t.Parallel()
	tests := []struct {
		doc  string
		def  any
		want bool
	}{
		{"30s", 30 * time.Second, true},
		{"30s", 30 * time.Minute, false},
		{"168h", 168 * time.Hour, true},
		{"1m", time.Minute, true},
		{"1m", time.Hour, false},
		{"500ms", 500 * time.Millisecond, true},
		{"0s", time.Duration(0), true},
		{"2s", 20 * time.Second, false},
		{"soon", time.Second, false},
		{"8", 8, true},
		{"8", 80, false},
		{"true", true, true},
		{"delivery.status-changes", "delivery.status-changes", true},
	}
	for _, tc := range tests {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		switch v := tc.def.(type) {
		case time.Duration:
			fs.Duration("f", v, "")
		case int:
			fs.Int("f", v, "")
		case bool:
			fs.Bool("f", v, "")
		case string:
			fs.String("f", v, "")
		}
		require.Equal(t, tc.want, sameDefault(tc.doc, fs.Lookup("f")), "%q against %v", tc.doc, tc.def)
	}
}
