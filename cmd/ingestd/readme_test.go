package main

import (
	"flag"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

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
			want := f.DefValue
			// Durations print in Go's long form (168h0m0s, 1m0s).
			want = strings.TrimSuffix(strings.TrimSuffix(want, "0s"), "0m")
			got := strings.TrimSuffix(strings.TrimSuffix(def, "0s"), "0m")
			require.Equal(t, want, got, "default of %s", env)
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
