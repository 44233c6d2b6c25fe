package bts

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/secret"
)

const (
	testLogin    = "shop-login"
	testPassword = "pa55-W0RD-zq81x"
)

func validConfig() Config {
	c := DefaultConfig()
	c.Login = testLogin
	c.Password = secret.New(testPassword)
	return c
}

func TestDefaultConfig(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	require.False(t, c.Enabled())
	require.NoError(t, c.Validate(), "a disabled source is not validated")
	require.Equal(t, "https://apitest.bts.uz:28345", c.BaseURL)
	require.Equal(t, "default", c.Account)
	require.Equal(t, "uz", c.Language)
	require.Equal(t, 30*time.Second, c.RequestTimeout)
	require.Equal(t, int64(32<<20), c.MaxResponseBytes)
	require.Equal(t, 23*time.Hour, c.TokenTTL)
	require.Equal(t, "bts/default", c.SourceID())

	c = validConfig()
	require.True(t, c.Enabled())
	require.NoError(t, c.Validate())
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*Config)
		// wantEnv is the variable the error must name; "" means valid.
		wantEnv  string
		wantText string
	}{
		{name: "defaults with credentials", mutate: func(*Config) {}},
		{name: "http base URL with path prefix", mutate: func(c *Config) { c.BaseURL = "http://proxy:8080/bts/" }},
		{name: "account with dots and dashes", mutate: func(c *Config) { c.Account = "shop-1.tash_2" }},
		{name: "russian language header", mutate: func(c *Config) { c.Language = "ru" }},
		{name: "disabled with garbage elsewhere", mutate: func(c *Config) {
			c.Login, c.Password, c.BaseURL, c.TokenTTL = "", secret.String{}, "::", 0
		}},

		{name: "login without password", mutate: func(c *Config) { c.Password = secret.String{} }, wantEnv: EnvPassword, wantText: "must be set when " + EnvLogin},
		{name: "password without login", mutate: func(c *Config) { c.Login = "" }, wantEnv: EnvLogin, wantText: "must be set when " + EnvPassword},
		{name: "login with newline", mutate: func(c *Config) { c.Login = "a\nb" }, wantEnv: EnvLogin},
		{name: "empty base URL", mutate: func(c *Config) { c.BaseURL = "" }, wantEnv: EnvBaseURL, wantText: "must be set"},
		{name: "relative base URL", mutate: func(c *Config) { c.BaseURL = "apitest.bts.uz" }, wantEnv: EnvBaseURL, wantText: "http or https"},
		{name: "base URL with user info", mutate: func(c *Config) { c.BaseURL = "https://u:hunter2@bts.uz" }, wantEnv: EnvBaseURL, wantText: "user info"},
		{name: "base URL with query", mutate: func(c *Config) { c.BaseURL = "https://bts.uz/?x=1" }, wantEnv: EnvBaseURL, wantText: "query"},
		{name: "base URL with fragment", mutate: func(c *Config) { c.BaseURL = "https://bts.uz/#x" }, wantEnv: EnvBaseURL, wantText: "fragment"},
		{name: "upper-case account", mutate: func(c *Config) { c.Account = "Shop" }, wantEnv: EnvAccount},
		{name: "account too long", mutate: func(c *Config) { c.Account = strings.Repeat("a", 64) }, wantEnv: EnvAccount},
		{name: "empty language", mutate: func(c *Config) { c.Language = "" }, wantEnv: EnvLanguage},
		{name: "zero timeout", mutate: func(c *Config) { c.RequestTimeout = 0 }, wantEnv: EnvRequestTimeout},
		{name: "zero max response", mutate: func(c *Config) { c.MaxResponseBytes = 0 }, wantEnv: EnvMaxResponseBytes},
		{name: "token TTL too short", mutate: func(c *Config) { c.TokenTTL = time.Second }, wantEnv: EnvTokenTTL, wantText: "at least 1m0s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := validConfig()
			tc.mutate(&c)
			err := c.Validate()
			if tc.wantEnv == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.wantEnv+": ")
			require.Contains(t, err.Error(), tc.wantText)
			require.NotContains(t, err.Error(), testPassword)
			require.NotContains(t, err.Error(), "hunter2", "a URL's user info is never echoed")
			require.NotContains(t, fmt.Sprintf("%+v %#v", c, c), testPassword, "formatting the config never shows the password")
		})
	}
}

func TestValidateJoinsEveryProblem(t *testing.T) {
	t.Parallel()
	c := validConfig()
	c.Account = ""
	c.RequestTimeout = -1
	c.Language = ""
	err := c.Validate()
	require.Error(t, err)
	for _, env := range []string{EnvAccount, EnvRequestTimeout, EnvLanguage} {
		require.Contains(t, err.Error(), env)
	}
}

func TestValidOrderID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   string
		want bool
	}{
		{"4293644", true},
		{"11950975", true},
		{"A-b_9", true},
		{strings.Repeat("9", 64), true},
		{"", false},
		{strings.Repeat("9", 65), false},
		{"12 34", false},
		{"12/34", false},
		{"12?x=1", false},
		{"заказ", false},
		{"1\n2", false},
	}
	for _, tc := range tests {
		require.Equal(t, tc.want, ValidOrderID(tc.id), "%q", tc.id)
	}
}

func TestNewClientRejectsDisabledConfig(t *testing.T) {
	t.Parallel()
	_, err := NewClient(DefaultConfig(), nil)
	require.ErrorContains(t, err, EnvLogin)
	c := validConfig()
	c.TokenTTL = 0
	_, err = NewClient(c, nil)
	require.ErrorContains(t, err, EnvTokenTTL)
}
