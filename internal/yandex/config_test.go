package yandex

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/secret"
)

const testToken = "y0_TEST-TOKEN-5f1c2a"

func validConfig() Config {
	c := DefaultConfig()
	c.Token = secret.New(testToken)
	return c
}

func TestDefaultConfig(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	require.False(t, c.Enabled())
	require.Equal(t, "https://b2b.taxi.yandex.net", c.BaseURL)
	require.Equal(t, "default", c.Account)
	require.Equal(t, 1000, c.PageLimit)
	require.Equal(t, 2*time.Second, c.PollInterval)
	require.Equal(t, 30*time.Second, c.RequestTimeout)
	require.Equal(t, "ru", c.AcceptLanguage)
	require.Equal(t, int64(32<<20), c.MaxResponseBytes)
	require.Equal(t, "yandex/default", c.SourceID())

	c.Token = secret.New("t")
	require.True(t, c.Enabled())
	require.NoError(t, c.Validate())
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*Config)
		// wantEnv is the variable the error must name; "" means valid.
		wantEnv string
		// wantText is further text the error must contain.
		wantText string
	}{
		{name: "defaults with token", mutate: func(*Config) {}},
		{name: "http base URL with path prefix", mutate: func(c *Config) { c.BaseURL = "http://proxy:8080/yandex/" }},
		{name: "account with dots and dashes", mutate: func(c *Config) { c.Account = "shop-1.msk_2" }},
		{name: "account of 63 characters", mutate: func(c *Config) { c.Account = "a" + strings.Repeat("b", 62) }},
		{name: "page limit 1", mutate: func(c *Config) { c.PageLimit = 1 }},

		{name: "token with newline", mutate: func(c *Config) { c.Token = secret.New(testToken + "\nX-Injected: 1") }, wantEnv: EnvToken},
		{name: "token with space", mutate: func(c *Config) { c.Token = secret.New("Bearer " + testToken) }, wantEnv: EnvToken},
		{name: "empty base URL", mutate: func(c *Config) { c.BaseURL = "" }, wantEnv: EnvBaseURL, wantText: "must be set"},
		{name: "relative base URL", mutate: func(c *Config) { c.BaseURL = "b2b.taxi.yandex.net" }, wantEnv: EnvBaseURL, wantText: "http or https"},
		{name: "ftp base URL", mutate: func(c *Config) { c.BaseURL = "ftp://b2b.taxi.yandex.net" }, wantEnv: EnvBaseURL, wantText: `"ftp"`},
		{name: "base URL without host", mutate: func(c *Config) { c.BaseURL = "https:///path" }, wantEnv: EnvBaseURL, wantText: "host"},
		{name: "base URL with query", mutate: func(c *Config) { c.BaseURL = "https://b2b.taxi.yandex.net?x=1" }, wantEnv: EnvBaseURL, wantText: "query"},
		{name: "base URL with empty query", mutate: func(c *Config) { c.BaseURL = "https://b2b.taxi.yandex.net/?" }, wantEnv: EnvBaseURL, wantText: "query"},
		{name: "base URL with fragment", mutate: func(c *Config) { c.BaseURL = "https://b2b.taxi.yandex.net/#x" }, wantEnv: EnvBaseURL, wantText: "fragment"},
		{name: "base URL with user info", mutate: func(c *Config) { c.BaseURL = "https://user:" + testToken + "@b2b.taxi.yandex.net" }, wantEnv: EnvBaseURL, wantText: "user info"},
		{name: "unparseable base URL", mutate: func(c *Config) { c.BaseURL = "https://user:" + testToken + "@b2b taxi" }, wantEnv: EnvBaseURL, wantText: "not a valid URL"},
		{name: "empty account", mutate: func(c *Config) { c.Account = "" }, wantEnv: EnvAccount},
		{name: "upper-case account", mutate: func(c *Config) { c.Account = "Shop" }, wantEnv: EnvAccount, wantText: `"Shop"`},
		{name: "account starting with a dash", mutate: func(c *Config) { c.Account = "-shop" }, wantEnv: EnvAccount},
		{name: "account with a slash", mutate: func(c *Config) { c.Account = "a/b" }, wantEnv: EnvAccount},
		{name: "account of 64 characters", mutate: func(c *Config) { c.Account = strings.Repeat("a", 64) }, wantEnv: EnvAccount},
		{name: "page limit 0", mutate: func(c *Config) { c.PageLimit = 0 }, wantEnv: EnvPageLimit, wantText: "must be between 1 and 1000, got 0"},
		{name: "page limit 1001", mutate: func(c *Config) { c.PageLimit = 1001 }, wantEnv: EnvPageLimit, wantText: "got 1001"},
		{name: "zero poll interval", mutate: func(c *Config) { c.PollInterval = 0 }, wantEnv: EnvPollInterval},
		{name: "negative request timeout", mutate: func(c *Config) { c.RequestTimeout = -time.Second }, wantEnv: EnvRequestTimeout},
		{name: "empty accept language", mutate: func(c *Config) { c.AcceptLanguage = "" }, wantEnv: EnvAcceptLanguage},
		{name: "accept language with CR", mutate: func(c *Config) { c.AcceptLanguage = "ru\r" }, wantEnv: EnvAcceptLanguage},
		{name: "zero max response bytes", mutate: func(c *Config) { c.MaxResponseBytes = 0 }, wantEnv: EnvMaxResponseBytes},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := validConfig()
			tc.mutate(&c)
			err := c.Validate()
			if tc.wantEnv == "" {
				require.NoError(t, err)
				_, err = NewClient(c, nil)
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.wantEnv+": ")
			require.Contains(t, err.Error(), tc.wantText)
			require.NotContains(t, err.Error(), testToken)

			_, err = NewClient(c, http.DefaultClient)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.wantEnv)
			require.NotContains(t, err.Error(), testToken)
		})
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	c := Config{Token: secret.New(testToken + " ")}
	err := c.Validate()
	require.Error(t, err)
	for _, env := range []string{
		EnvToken, EnvBaseURL, EnvAccount, EnvPageLimit, EnvPollInterval,
		EnvRequestTimeout, EnvAcceptLanguage, EnvMaxResponseBytes,
	} {
		require.Contains(t, err.Error(), env+": ")
	}
	require.NotContains(t, err.Error(), testToken)
}

func TestConfigDisabled(t *testing.T) {
	t.Parallel()
	// Every field is invalid, but without a token the source does not run
	// and its settings must not block start-up.
	c := Config{BaseURL: "::", Account: "UPPER", PageLimit: -1}
	require.False(t, c.Enabled())
	require.NoError(t, c.Validate())

	_, err := NewClient(c, nil)
	require.ErrorContains(t, err, EnvToken+" is not set")
}

func TestConfigSourceID(t *testing.T) {
	t.Parallel()
	c := validConfig()
	c.Account = "shop-2"
	require.Equal(t, "yandex/shop-2", c.SourceID())
}
