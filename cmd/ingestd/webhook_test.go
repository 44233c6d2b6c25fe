package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/cli"
	"github.com/ingestd/ingestd/internal/sim"
)

// Webhook tokens of the tests' accounts: secrets, like secretPassword,
// that no output may show.
const (
	hookToken      = "hook-token-" + secretPassword
	otherHookToken = "other-hook-token-" + secretPassword
)

// hookURL is where the tests register the webhook.
const hookURL = "https://ingestd.example.com/v1/bts/webhook"

// btsSim serves simulated BTS accounts, one per login, at one address, each
// with the password secretPassword, and returns the address.
func btsSim(t *testing.T, logins ...string) string {
	t.Helper()
	accounts := make([]*sim.BTS, 0, len(logins))
	for i, login := range logins {
		b, err := sim.NewBTS(sim.BTSConfig{Seed: int64(40 + i), Login: login, Password: secretPassword})
		require.NoError(t, err)
		accounts = append(accounts, b)
	}
	h, err := sim.NewBTSAccounts(accounts...)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// settingsAccount is the command line of the INGESTD_BTS_* settings'
// account with login at base, and the webhook token when it is not empty.
func settingsAccount(base, login, token string) []string {
	args := []string{"--bts-base-url", base, "--bts-login", login, "--bts-password", secretPassword}
	if token != "" {
		args = append(args, "--bts-webhook-token", token)
	}
	return args
}

// webhookRun runs `ingestd bts webhook ARGS...` as main would and returns
// stdout, stderr and the exit status. No output may hold a secret.
func webhookRun(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), append([]string{"bts", "webhook"}, args...), &stdout, &stderr)
	code := cli.ExitCode("ingestd", err, &stderr)
	for _, s := range []string{secretPassword, hookToken, otherHookToken} {
		require.NotContains(t, stdout.String()+stderr.String(), s, "ingestd bts webhook %v", args)
	}
	return stdout.String(), stderr.String(), code
}

// webhookJSON is the --json output of both commands.
type webhookJSON struct {
	Source      string `json:"source"`
	Configured  bool   `json:"configured"`
	URL         string `json:"webhook_url"`
	Environment string `json:"environment"`
	HasToken    bool   `json:"has_token"`
	APIKey      string `json:"api_key"`
}

// webhookShow runs show --json with args and decodes it.
func webhookShow(t *testing.T, args ...string) webhookJSON {
	t.Helper()
	out, errOut, code := webhookRun(t, append([]string{"show", "--json"}, args...)...)
	require.Zero(t, code, errOut)
	var v webhookJSON
	require.NoError(t, json.Unmarshal([]byte(out), &v), out)
	return v
}

func TestBTSWebhookRegisterThenShow(t *testing.T) {
	t.Parallel()
	base := btsSim(t, "shop")
	account := settingsAccount(base, "shop", hookToken)

	out, errOut, code := webhookRun(t, append([]string{"show"}, account...)...)
	require.Zero(t, code, errOut)
	require.Equal(t, "bts/default: BTS holds no webhook setting (set one with `ingestd bts webhook register --url URL`)\n", out)
	require.Equal(t, webhookJSON{Source: "bts/default", APIKey: "none"}, webhookShow(t, account...))

	out, errOut, code = webhookRun(t, append([]string{"register", "--url", hookURL}, account...)...)
	require.Zero(t, code, errOut)
	require.Empty(t, errOut)
	require.Equal(t, "webhook of bts/default set at BTS:\n"+
		"source       bts/default\n"+
		"webhook_url  "+hookURL+"\n"+
		"environment  production\n"+
		"has_token    true\n"+
		"itx-apiKey   set (matches this account's webhook token)\n", out)

	out, errOut, code = webhookRun(t, append([]string{"show"}, account...)...)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "webhook_url  "+hookURL+"\n")
	require.Contains(t, out, "itx-apiKey   set (matches this account's webhook token)\n")
	want := webhookJSON{Source: "bts/default", Configured: true, URL: hookURL, Environment: "production", HasToken: true, APIKey: "matches"}
	require.Equal(t, want, webhookShow(t, account...))

	// register --json prints what show --json does; a plain http URL is
	// set with a warning.
	out, errOut, code = webhookRun(t, append([]string{"register", "--json", "--environment", "test", "--url", "http://10.1.2.3:8080/v1/bts/webhook"}, account...)...)
	require.Zero(t, code, errOut)
	require.Contains(t, errOut, "warning: --url is plain http")
	var registered webhookJSON
	require.NoError(t, json.Unmarshal([]byte(out), &registered), out)
	want = webhookJSON{Source: "bts/default", Configured: true, URL: "http://10.1.2.3:8080/v1/bts/webhook", Environment: "test", HasToken: true, APIKey: "matches"}
	require.Equal(t, want, registered)
	require.Equal(t, want, webhookShow(t, account...))

	// The key BTS holds is compared with the account's token, never shown.
	want.APIKey = "differs"
	require.Equal(t, want, webhookShow(t, settingsAccount(base, "shop", otherHookToken)...))
	out, errOut, code = webhookRun(t, append([]string{"show"}, settingsAccount(base, "shop", otherHookToken)...)...)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "itx-apiKey   set (does NOT match this account's webhook token")
	want.APIKey = "unchecked"
	require.Equal(t, want, webhookShow(t, settingsAccount(base, "shop", "")...))
}

func TestBTSWebhookRegisterNeedsAWebhookToken(t *testing.T) {
	t.Parallel()
	base := btsSim(t, "shop")
	dir := t.TempDir()
	file := writeBTSSources(t, dir, base, sourcesEntry{account: "tash", login: "shop"})
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"settings account", settingsAccount(base, "shop", ""), "bts/default has no webhook token, which BTS must send with every call: set INGESTD_BTS_WEBHOOK_TOKEN"},
		{"sources file account", []string{"--sources-file", file}, "bts/tash has no webhook token, which BTS must send with every call: give it webhook_token_file (or webhook_token_env) in INGESTD_SOURCES_FILE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := webhookRun(t, append([]string{"register", "--url", hookURL}, tc.args...)...)
			require.Equal(t, 2, code, errOut)
			require.Empty(t, out)
			require.Contains(t, errOut, tc.want)
		})
	}
	// Nothing was registered.
	require.Equal(t, webhookJSON{Source: "bts/default", APIKey: "none"}, webhookShow(t, settingsAccount(base, "shop", "")...))
}

// sourcesEntry is a BTS account of a sources file; its password is
// secretPassword, and its webhook token is token unless that is empty.
type sourcesEntry struct {
	account, login, token string
}

// writeBTSSources writes a sources file of BTS accounts at base into dir,
// each secret in a file of its own, and returns its path.
func writeBTSSources(t *testing.T, dir, base string, entries ...sourcesEntry) string {
	t.Helper()
	secretFile := func(name, value string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(value+"\n"), 0o600))
		return p
	}
	var b strings.Builder
	b.WriteString("sources:\n")
	for _, e := range entries {
		b.WriteString("  - provider: bts\n    account: " + e.account + "\n    base_url: " + base + "\n")
		b.WriteString("    login_file: " + secretFile(e.account+".login", e.login) + "\n")
		b.WriteString("    password_file: " + secretFile(e.account+".password", secretPassword) + "\n")
		if e.token != "" {
			b.WriteString("    webhook_token_file: " + secretFile(e.account+".webhook", e.token) + "\n")
		}
	}
	p := filepath.Join(dir, "sources.yaml")
	require.NoError(t, os.WriteFile(p, []byte(b.String()), 0o600))
	return p
}

// TestBTSWebhookPicksTheAccount: the settings' account and the sources
// file's are all reachable with --bts-account; without it, the only
// account, else the settings' one, else a usage error listing them.
func TestBTSWebhookPicksTheAccount(t *testing.T) {
	t.Parallel()
	base := btsSim(t, "shop", "tash-login", "sam-login")
	dir := t.TempDir()
	both := writeBTSSources(t, dir, base,
		sourcesEntry{account: "tash", login: "tash-login", token: otherHookToken},
		sourcesEntry{account: "samarkand", login: "sam-login", token: hookToken})
	withSettings := append([]string{"--sources-file", both}, settingsAccount(base, "shop", hookToken)...)

	// An account of the file, chosen beside the settings' account, which
	// keeps its own name (no clash of two bts/tash).
	out, errOut, code := webhookRun(t, append([]string{"register", "--url", hookURL, "--bts-account", "tash"}, withSettings...)...)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "webhook of bts/tash set at BTS")
	require.Contains(t, out, "matches this account's webhook token", "tash's own token, from its file")

	tash := webhookShow(t, append([]string{"--bts-account=tash"}, withSettings...)...)
	require.Equal(t, webhookJSON{Source: "bts/tash", Configured: true, URL: hookURL, Environment: "production", HasToken: true, APIKey: "matches"}, tash)
	require.False(t, webhookShow(t, append([]string{"--bts-account", "samarkand"}, withSettings...)...).Configured, "each account has its own setting")
	// Without --bts-account, several accounts: the settings' one.
	require.Equal(t, webhookJSON{Source: "bts/default", APIKey: "none"}, webhookShow(t, withSettings...))
	require.Equal(t, webhookJSON{Source: "bts/default", APIKey: "none"}, webhookShow(t, append([]string{"--bts-account", "default"}, withSettings...)...))

	// Several accounts, none of them the settings': choose one.
	_, errOut, code = webhookRun(t, "show", "--sources-file", both)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "2 BTS accounts are configured (tash, samarkand): choose one with --bts-account")
	_, errOut, code = webhookRun(t, append([]string{"show", "--bts-account", "bukhara"}, withSettings...)...)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `--bts-account "bukhara": no such BTS account is configured; the BTS accounts are: default, tash, samarkand`)

	// The only account needs no --bts-account.
	only := writeBTSSources(t, t.TempDir(), base, sourcesEntry{account: "samarkand", login: "sam-login", token: hookToken})
	out, errOut, code = webhookRun(t, "register", "--url", hookURL, "--sources-file", only)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "webhook of bts/samarkand set at BTS")
	require.Equal(t, "matches", webhookShow(t, "--sources-file", only).APIKey)
}

func TestBTSWebhookUsageErrors(t *testing.T) {
	t.Parallel()
	// Nothing listens there: a usage error is found before any request.
	account := settingsAccount("http://127.0.0.1:1", "shop", hookToken)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", nil, "bts webhook: missing subcommand (register or show)"},
		{"unknown subcommand", []string{"delete"}, `bts webhook: unknown subcommand "delete"`},
		{"no url", append([]string{"register"}, account...), "--url is required"},
		{"relative url", append([]string{"register", "--url", "/v1/bts/webhook"}, account...), "not an absolute http or https URL"},
		{"other scheme", append([]string{"register", "--url", "ftp://ingestd.example.com/hook"}, account...), "not an absolute http or https URL"},
		{"password in the url", append([]string{"register", "--url", "https://ops:" + secretPassword + "@ingestd.example.com/hook"}, account...), "must not carry a user name or password"},
		{"unknown environment", append([]string{"register", "--url", hookURL, "--environment", "staging"}, account...), `environment must be "production" or "test", got "staging"`},
		{"stray argument", append([]string{"show", secretPassword}, account...), "unexpected arguments"},
		{"url flag to show", append([]string{"show", "--url", hookURL}, account...), "flag provided but not defined: -url"},
		{"no BTS account", []string{"show", "--yandex-token", secretPassword}, "no BTS account is configured: set INGESTD_BTS_LOGIN and INGESTD_BTS_PASSWORD, or list one in INGESTD_SOURCES_FILE"},
		{"invalid settings", append([]string{"show", "--bts-request-timeout", "0s"}, account...), "INGESTD_BTS_REQUEST_TIMEOUT: must be positive"},
		{"short webhook token", append([]string{"register", "--url", hookURL}, settingsAccount("http://127.0.0.1:1", "shop", "short")...), "INGESTD_BTS_WEBHOOK_TOKEN: must be at least 16 characters"},
		{"missing sources file", append([]string{"show", "--sources-file", "/nonexistent/sources.yaml"}, account...), "INGESTD_SOURCES_FILE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := webhookRun(t, tc.args...)
			require.Equal(t, 2, code, errOut)
			require.Contains(t, errOut, tc.want)
			require.Empty(t, out)
		})
	}
}

// TestBTSWebhookUpstreamFailureIsExitOne: BTS refusing the credentials, or
// not answering, is a failure (1), not a usage error.
func TestBTSWebhookUpstreamFailureIsExitOne(t *testing.T) {
	t.Parallel()
	base := btsSim(t, "shop")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"wrong login", append([]string{"register", "--url", hookURL}, settingsAccount(base, "nobody", hookToken)...), "bts/default: bts log in: auth: HTTP 401 Unauthorized: Incorrect login or password."},
		{"nothing listening", append([]string{"show"}, settingsAccount("http://127.0.0.1:1", "shop", hookToken)...), "bts/default: bts log in: retry"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := webhookRun(t, tc.args...)
			require.Equal(t, 1, code, errOut)
			require.Empty(t, out)
			require.Contains(t, errOut, tc.want)
		})
	}
}

func TestBTSWebhookHelp(t *testing.T) {
	t.Parallel()
	out, _, code := btsRun(t, "", "help")
	require.Zero(t, code)
	require.Contains(t, out, "ingestd bts webhook register --url URL [--environment production|test]")
	require.Contains(t, out, "ingestd bts webhook show")

	out, _, code = webhookRun(t, "help")
	require.Zero(t, code)
	require.Contains(t, out, "ingestd bts webhook show")

	_, errOut, code := webhookRun(t, "register", "-h")
	require.Zero(t, code)
	require.Contains(t, errOut, "ingestd bts webhook register --url URL")
	require.NotContains(t, errOut, "kafka-brokers", "the bts usage, not the daemon's")
}

// TestBTSWebhookAccountFromTheEnvironment: INGESTD_BTS_ACCOUNT names the
// settings' account here as it does for the daemon, and picks it when
// several accounts are configured; --bts-account picks another without
// renaming it.
func TestBTSWebhookAccountFromTheEnvironment(t *testing.T) {
	base := btsSim(t, "shop", "sam-login")
	file := writeBTSSources(t, t.TempDir(), base, sourcesEntry{account: "samarkand", login: "sam-login", token: otherHookToken})
	t.Setenv("INGESTD_BTS_ACCOUNT", "tashkent")
	t.Setenv("INGESTD_SOURCES_FILE", file)
	account := settingsAccount(base, "shop", hookToken)

	out, errOut, code := webhookRun(t, append([]string{"register", "--url", hookURL}, account...)...)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "webhook of bts/tashkent set at BTS")
	require.Equal(t, "matches", webhookShow(t, append([]string{"--bts-account", "tashkent"}, account...)...).APIKey)
	samarkand := webhookShow(t, append([]string{"--bts-account", "samarkand"}, account...)...)
	require.Equal(t, webhookJSON{Source: "bts/samarkand", APIKey: "none"}, samarkand)
}
