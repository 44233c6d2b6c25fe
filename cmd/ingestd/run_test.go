package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/child"
	"github.com/ingestd/ingestd/internal/cli"
	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/pgtest"
)

const secretPassword = "hunter2-very-secret"

// validEnv is a configuration that passes validation.
func validEnv() map[string]string {
	return map[string]string{
		"INGESTD_DATABASE_URL":  "postgres://ingestd:" + secretPassword + "@127.0.0.1:1/db",
		"INGESTD_KAFKA_BROKERS": "127.0.0.1:1",
		"INGESTD_YANDEX_TOKEN":  "y0_token-" + secretPassword,
	}
}

func TestBadConfigurationExitsTwoNamingTheVariable(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("this is not PEM\n"), 0o600))
	certs := kafkatest.NewCerts(t, kafkatest.CertOptions{})
	badSources := filepath.Join(dir, "sources.yaml")
	require.NoError(t, os.WriteFile(badSources, []byte("sources:\n  - provider: yandex\n    account: shop-a\n    token_env: SHOP_A_TOKEN\n    page_limit: 0\n  - provider: dhl\n    account: x\n"), 0o600))
	t.Setenv("SHOP_A_TOKEN", secretPassword)
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		wantMsg string
	}{
		{"missing database", map[string]string{"INGESTD_DATABASE_URL": ""}, nil, "INGESTD_DATABASE_URL"},
		{"missing brokers", map[string]string{"INGESTD_KAFKA_BROKERS": ""}, nil, "INGESTD_KAFKA_BROKERS"},
		{"no source", map[string]string{"INGESTD_YANDEX_TOKEN": ""}, nil, "INGESTD_YANDEX_TOKEN"},
		{"page limit too big", map[string]string{"INGESTD_YANDEX_PAGE_LIMIT": "1001"}, nil, "INGESTD_YANDEX_PAGE_LIMIT"},
		{"page limit not a number", map[string]string{"INGESTD_YANDEX_PAGE_LIMIT": "many"}, nil, "INGESTD_YANDEX_PAGE_LIMIT"},
		{"poll interval not a duration", map[string]string{"INGESTD_YANDEX_POLL_INTERVAL": "2"}, nil, "INGESTD_YANDEX_POLL_INTERVAL"},
		{"bad base url", map[string]string{"INGESTD_YANDEX_BASE_URL": "ftp://x"}, nil, "INGESTD_YANDEX_BASE_URL"},
		{"bad account", map[string]string{"INGESTD_YANDEX_ACCOUNT": "Not Valid"}, nil, "INGESTD_YANDEX_ACCOUNT"},
		{"bad topic", map[string]string{"INGESTD_KAFKA_TOPIC": "a/b"}, nil, "INGESTD_KAFKA_TOPIC"},
		{"bad log level", map[string]string{"INGESTD_LOG_LEVEL": "loud"}, nil, "INGESTD_LOG_LEVEL"},
		{"bad http addr", map[string]string{"INGESTD_HTTP_ADDR": "8080"}, nil, "INGESTD_HTTP_ADDR"},
		{"bad database url", map[string]string{"INGESTD_DATABASE_URL": "postgres://u:" + secretPassword + "@[::1"}, nil, "INGESTD_DATABASE_URL"},
		{"flag overrides env", nil, []string{"--yandex-page-limit=0"}, "INGESTD_YANDEX_PAGE_LIMIT"},
		{"kafka tls not a bool", map[string]string{"INGESTD_KAFKA_TLS": "sure"}, nil, "INGESTD_KAFKA_TLS"},
		{"kafka CA file missing", map[string]string{"INGESTD_KAFKA_TLS_CA_FILE": filepath.Join(dir, "absent.pem")}, nil, "INGESTD_KAFKA_TLS_CA_FILE"},
		{"kafka CA file not PEM", map[string]string{"INGESTD_KAFKA_TLS_CA_FILE": notPEM}, nil, "INGESTD_KAFKA_TLS_CA_FILE"},
		{"kafka CA file a key", map[string]string{"INGESTD_KAFKA_TLS_CA_FILE": certs.ClientKeyFile}, nil, "INGESTD_KAFKA_TLS_CA_FILE"},
		{"kafka cert without key", map[string]string{"INGESTD_KAFKA_TLS_CERT_FILE": certs.ClientCertFile}, nil, "INGESTD_KAFKA_TLS_KEY_FILE"},
		{"kafka key without cert", map[string]string{"INGESTD_KAFKA_TLS_KEY_FILE": certs.ClientKeyFile}, nil, "INGESTD_KAFKA_TLS_CERT_FILE"},
		{"kafka cert not PEM", map[string]string{"INGESTD_KAFKA_TLS_CERT_FILE": notPEM, "INGESTD_KAFKA_TLS_KEY_FILE": certs.ClientKeyFile}, nil, "INGESTD_KAFKA_TLS_CERT_FILE"},
		{"kafka key not PEM", map[string]string{"INGESTD_KAFKA_TLS_CERT_FILE": certs.ClientCertFile, "INGESTD_KAFKA_TLS_KEY_FILE": notPEM}, nil, "INGESTD_KAFKA_TLS_KEY_FILE"},
		{"kafka key unreadable (a directory)", map[string]string{"INGESTD_KAFKA_TLS_CERT_FILE": certs.ClientCertFile, "INGESTD_KAFKA_TLS_KEY_FILE": dir}, nil, "INGESTD_KAFKA_TLS_KEY_FILE"},
		{"kafka key of another cert", map[string]string{"INGESTD_KAFKA_TLS_CERT_FILE": certs.ClientCertFile, "INGESTD_KAFKA_TLS_KEY_FILE": kafkatest.NewCerts(t, kafkatest.CertOptions{}).ClientKeyFile}, nil, "INGESTD_KAFKA_TLS_KEY_FILE"},
		{"kafka sasl mechanism unknown", map[string]string{"INGESTD_KAFKA_SASL_MECHANISM": "GSSAPI"}, nil, "INGESTD_KAFKA_SASL_MECHANISM"},
		{"kafka sasl mechanism without username", map[string]string{"INGESTD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "INGESTD_KAFKA_SASL_PASSWORD": secretPassword}, nil, "INGESTD_KAFKA_SASL_USERNAME"},
		{"kafka sasl mechanism without password", map[string]string{"INGESTD_KAFKA_SASL_MECHANISM": "PLAIN", "INGESTD_KAFKA_SASL_USERNAME": "ingestd"}, nil, "INGESTD_KAFKA_SASL_PASSWORD"},
		{"kafka sasl credentials without mechanism", map[string]string{"INGESTD_KAFKA_SASL_USERNAME": "ingestd", "INGESTD_KAFKA_SASL_PASSWORD": secretPassword}, nil, "INGESTD_KAFKA_SASL_MECHANISM"},
		{"sources file missing", map[string]string{"INGESTD_SOURCES_FILE": filepath.Join(dir, "absent.yaml")}, nil, "INGESTD_SOURCES_FILE: " + filepath.Join(dir, "absent.yaml")},
		{"sources file: bad field", map[string]string{"INGESTD_SOURCES_FILE": badSources}, nil, "sources[0] (line 2, yandex/shop-a): page_limit"},
		{"sources file: unknown provider", map[string]string{"INGESTD_SOURCES_FILE": badSources}, nil, "sources[1] (line 6, dhl/x): provider"},
		{"kafka compression unknown", map[string]string{"INGESTD_KAFKA_COMPRESSION": "brotli"}, nil, "INGESTD_KAFKA_COMPRESSION"},
		{"stray argument", nil, []string{"run", "extra"}, "unexpected arguments"},
		{"stray arguments are not echoed", nil, []string{"migrate", "extra", "--database-url", "postgres://u:" + secretPassword + "@x/db"}, "unexpected arguments"},
		{"unknown command", nil, []string{"frobnicate"}, `unknown command "frobnicate"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := validEnv()
			for k, v := range tc.env {
				env[k] = v
			}
			for k, v := range env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, &stdout, &stderr)
			require.Error(t, err)
			require.Equal(t, 2, cli.ExitCode("ingestd", err, &stderr))
			out := stderr.String()
			require.Contains(t, out, tc.wantMsg)
			require.NotContains(t, out, secretPassword, "secrets never reach error output")
		})
	}
}

func TestMigrateCommand(t *testing.T) {
	t.Setenv("INGESTD_DATABASE_URL", pgtest.Schema(t))
	var stdout, stderr bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"migrate"}, &stdout, &stderr), stderr.String())
	require.Contains(t, stdout.String(), "applied")
	stdout.Reset()
	require.NoError(t, run(context.Background(), []string{"migrate"}, &stdout, &stderr))
	require.Contains(t, stdout.String(), "up to date")
}

func TestStartupFailureExitsOne(t *testing.T) {
	// A valid configuration whose database refuses connections.
	for k, v := range validEnv() {
		t.Setenv(k, v)
	}
	t.Setenv("INGESTD_HTTP_ADDR", "127.0.0.1:0")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), nil, &stdout, &stderr)
	require.Error(t, err)
	require.Equal(t, 1, cli.ExitCode("ingestd", err, &stderr))
	require.NotContains(t, stderr.String(), secretPassword)
}

// TestBinaryExitStatus runs the built binary, so the exit status is the
// process's own and not just cli.ExitCode's mapping.
func TestBinaryExitStatus(t *testing.T) {
	bin := buildBinary(t)

	c, err := child.Start(bin, child.Options{Env: []string{"INGESTD_KAFKA_BROKERS=127.0.0.1:1", "INGESTD_YANDEX_TOKEN=" + secretPassword}})
	require.NoError(t, err)
	err = c.Wait()
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "exits non-zero: %v", err)
	require.Equal(t, 2, exit.ExitCode())
	require.Contains(t, c.Log().String(), "INGESTD_DATABASE_URL")
	require.False(t, strings.Contains(c.Log().String(), secretPassword))

	c, err = child.Start(bin, child.Options{Args: []string{"version"}})
	require.NoError(t, err)
	require.NoError(t, c.Wait())
	require.NotEmpty(t, strings.TrimSpace(c.Log().String()))
}
