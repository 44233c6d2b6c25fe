package sources_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/sources"
	"github.com/ingestd/ingestd/internal/yandex"
)

const tokenValue = "y0_secret-token-never-printed"

// fixture writes secret files into a temp dir and returns its path and
// the environment the file may name.
func fixture(t *testing.T) (dir string, getenv func(string) string) {
	t.Helper()
	dir = t.TempDir()
	for name, v := range map[string]string{
		"yandex-shop-a":  tokenValue + "\n", // as an editor leaves it
		"bts-password":   "bts-pass-never-printed",
		"empty":          "",
		"bts-login-file": "tashkent-login\n",
	} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600))
	}
	env := map[string]string{"SHOP_B_TOKEN": "y0_shop-b-token", "BTS_LOGIN": "tash"}
	return dir, func(k string) string { return env[k] }
}

func defaults() sources.Defaults {
	return sources.Defaults{Yandex: yandex.DefaultConfig(), BTS: bts.DefaultConfig()}
}

func TestParseAppliesDefaultsAndReadsSecrets(t *testing.T) {
	t.Parallel()
	dir, getenv := fixture(t)
	doc := `
sources:
  - provider: yandex
    account: shop-a
    token_file: ` + filepath.Join(dir, "yandex-shop-a") + `
    page_limit: 500
    poll_interval: 5s
  - provider: yandex
    account: shop-b
    token_env: SHOP_B_TOKEN
    base_url: https://proxy.example/yandex
    accept_language: en
  - provider: bts
    account: tashkent
    login_env: BTS_LOGIN
    password_file: ` + filepath.Join(dir, "bts-password") + `
    rate: 5
    concurrency: 2
    poll_intervals: "100=1h,default=30m"
    token_ttl: 2h
`
	d := defaults()
	srcs, err := sources.Parse([]byte(doc), d, getenv)
	require.NoError(t, err)
	require.Len(t, srcs, 3)

	a := srcs[0]
	require.Equal(t, "yandex/shop-a", a.ID())
	require.Equal(t, tokenValue, a.Yandex.Token.Reveal(), "the trailing newline is trimmed")
	require.Equal(t, 500, a.Yandex.PageLimit)
	require.Equal(t, 5*time.Second, a.Yandex.PollInterval)
	require.Equal(t, d.Yandex.BaseURL, a.Yandex.BaseURL, "unset fields take the INGESTD_YANDEX_* default")
	require.Equal(t, sources.Secret{File: filepath.Join(dir, "yandex-shop-a")}, a.Token)

	b := srcs[1]
	require.Equal(t, "y0_shop-b-token", b.Yandex.Token.Reveal())
	require.Equal(t, "https://proxy.example/yandex", b.Yandex.BaseURL)
	require.Equal(t, "en", b.Yandex.AcceptLanguage)
	require.Equal(t, d.Yandex.PageLimit, b.Yandex.PageLimit)

	c := srcs[2]
	require.Equal(t, "bts/tashkent", c.ID())
	require.Equal(t, "tash", c.BTS.Login)
	require.Equal(t, "bts-pass-never-printed", c.BTS.Password.Reveal())
	require.Equal(t, 5.0, c.BTS.Schedule.Rate)
	require.Equal(t, 2, c.BTS.Schedule.Concurrency)
	require.Equal(t, 2*time.Hour, c.BTS.TokenTTL)
	require.Equal(t, "100=1h,default=30m", c.BTS.Schedule.Intervals.String())
	require.Equal(t, d.BTS.Language, c.BTS.Language)
}

// TestBadFilesNameTheSourceAndTheField: every mistake is reported with the
// source's position, line and id and the field as written, all at once,
// and no secret value appears in any message.
func TestBadFilesNameTheSourceAndTheField(t *testing.T) {
	t.Parallel()
	dir, getenv := fixture(t)
	tok := filepath.Join(dir, "yandex-shop-a")
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"not YAML", "sources: [", []string{"not valid YAML"}},
		{"empty", "", []string{"empty"}},
		{"no list", "other: 1", []string{"field other not found"}},
		{"unknown field", "sources:\n  - provider: yandex\n    account: a\n    token-file: " + tok, []string{"line 4", "token-file"}},
		{"unknown provider", "sources:\n  - provider: dhl\n    account: a", []string{"sources[0] (line 2, dhl/a)", "provider", `"dhl"`}},
		{"missing provider", "sources:\n  - account: a", []string{"sources[0]", "provider: required"}},
		{"missing account", "sources:\n  - provider: yandex\n    token_file: " + tok, []string{"account: required"}},
		{"invalid account", "sources:\n  - provider: yandex\n    account: Shop A\n    token_file: " + tok, []string{"yandex/Shop A", "account: must match"}},
		{"long account", "sources:\n  - provider: yandex\n    account: " + strings.Repeat("a", 64) + "\n    token_file: " + tok, []string{"account: must match"}},
		{"duplicate id", "sources:\n  - provider: yandex\n    account: a\n    token_file: " + tok + "\n  - provider: yandex\n    account: a\n    token_env: SHOP_B_TOKEN", []string{"sources[1] (line 5, yandex/a)", "also sources[0]"}},
		{"missing secret file", "sources:\n  - provider: yandex\n    account: a\n    token_file: " + filepath.Join(dir, "absent"), []string{"token_file", "absent", "no such file"}},
		{"empty secret file", "sources:\n  - provider: yandex\n    account: a\n    token_file: " + filepath.Join(dir, "empty"), []string{"token_file", "empty"}},
		{"unset secret variable", "sources:\n  - provider: yandex\n    account: a\n    token_env: NOT_SET", []string{"token_file", "variable NOT_SET", "empty"}},
		{"no token", "sources:\n  - provider: yandex\n    account: a", []string{"token_file: required (or token_env)"}},
		{"file and env", "sources:\n  - provider: yandex\n    account: a\n    token_file: " + tok + "\n    token_env: SHOP_B_TOKEN", []string{"not both"}},
		{"bad page limit", "sources:\n  - provider: yandex\n    account: a\n    token_file: " + tok + "\n    page_limit: 5000", []string{"page_limit: must be between 1 and 1000"}},
		{"bad duration", "sources:\n  - provider: yandex\n    account: a\n    token_file: " + tok + "\n    poll_interval: soon", []string{"line 5", "soon"}},
		{"field of the other provider", "sources:\n  - provider: yandex\n    account: a\n    token_file: " + tok + "\n    rate: 3", []string{"rate: is a bts field"}},
		{"bts without password", "sources:\n  - provider: bts\n    account: t\n    login_env: BTS_LOGIN", []string{"password_file: required (or password_env)"}},
		{"bts bad intervals", "sources:\n  - provider: bts\n    account: t\n    login_file: " + filepath.Join(dir, "bts-login-file") + "\n    password_file: " + filepath.Join(dir, "bts-password") + "\n    poll_intervals: often", []string{"poll_intervals"}},
		{"every problem at once", "sources:\n  - provider: dhl\n    account: a\n  - provider: yandex\n    account: b", []string{"sources[0]", "sources[1]", "token_file: required"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := sources.Parse([]byte(tc.doc), defaults(), getenv)
			require.Error(t, err)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			for _, secretValue := range []string{tokenValue, "bts-pass-never-printed", "y0_shop-b-token"} {
				require.NotContains(t, err.Error(), secretValue)
			}
		})
	}
}

func TestReadNamesTheFile(t *testing.T) {
	t.Parallel()
	dir, getenv := fixture(t)
	_, err := sources.Read(filepath.Join(dir, "absent.yaml"), defaults(), getenv)
	require.ErrorContains(t, err, sources.EnvFile)
	require.ErrorContains(t, err, "absent.yaml")

	path := filepath.Join(dir, "sources.yaml")
	require.NoError(t, os.WriteFile(path, []byte("sources:\n  - provider: bts\n    account: x\n"), 0o600))
	_, err = sources.Read(path, defaults(), getenv)
	require.ErrorContains(t, err, path+": sources[0] (line 2, bts/x): login_file: required")
}
