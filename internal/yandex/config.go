// Package yandex is the client for the Yandex Delivery claims journal: it
// fetches one page of the journal after an opaque cursor, classifies every
// failure into an upstream.Error class the poller acts on, and normalizes
// journal entries into event.Event values. It knows nothing of PostgreSQL or
// Kafka.
package yandex

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/upstream"
)

// Environment variable names. They appear in Validate errors so that an
// operator can tell at once which setting to fix.
const (
	EnvToken            = "INGESTD_YANDEX_TOKEN"
	EnvBaseURL          = "INGESTD_YANDEX_BASE_URL"
	EnvAccount          = "INGESTD_YANDEX_ACCOUNT"
	EnvPageLimit        = "INGESTD_YANDEX_PAGE_LIMIT"
	EnvPollInterval     = "INGESTD_YANDEX_POLL_INTERVAL"
	EnvRequestTimeout   = "INGESTD_YANDEX_REQUEST_TIMEOUT"
	EnvAcceptLanguage   = "INGESTD_YANDEX_ACCEPT_LANGUAGE"
	EnvMaxResponseBytes = "INGESTD_YANDEX_MAX_RESPONSE_BYTES"
)

// Defaults and bounds of the configuration.
const (
	DefaultBaseURL          = "https://b2b.taxi.yandex.net"
	DefaultAccount          = "default"
	DefaultPageLimit        = 1000
	DefaultPollInterval     = 2 * time.Second
	DefaultRequestTimeout   = 30 * time.Second
	DefaultAcceptLanguage   = "ru"
	DefaultMaxResponseBytes = 32 << 20

	// MaxPageLimit is the largest limit the journal accepts.
	MaxPageLimit = 1000
)

// Config for the Yandex source. Env var names appear in Validate errors.
type Config struct {
	// Token is the OAuth token sent as a bearer token (INGESTD_YANDEX_TOKEN);
	// the source runs when it is set.
	Token secret.String
	// BaseURL is the API root (INGESTD_YANDEX_BASE_URL), default
	// "https://b2b.taxi.yandex.net". A path prefix is allowed, for proxies.
	BaseURL string
	// Account names the Yandex account (INGESTD_YANDEX_ACCOUNT), default
	// "default"; it must match [a-z0-9][a-z0-9._-]{0,62}.
	Account string
	// PageLimit is the journal page size (INGESTD_YANDEX_PAGE_LIMIT), 1..1000,
	// default 1000.
	PageLimit int
	// PollInterval is the wait after an empty page
	// (INGESTD_YANDEX_POLL_INTERVAL), default 2s, > 0.
	PollInterval time.Duration
	// RequestTimeout bounds each request including reading its body
	// (INGESTD_YANDEX_REQUEST_TIMEOUT), default 30s, > 0.
	RequestTimeout time.Duration
	// AcceptLanguage is the Accept-Language header
	// (INGESTD_YANDEX_ACCEPT_LANGUAGE), default "ru".
	AcceptLanguage string
	// MaxResponseBytes bounds a response body
	// (INGESTD_YANDEX_MAX_RESPONSE_BYTES), default 32 MiB, > 0.
	MaxResponseBytes int64
}

// DefaultConfig returns the configuration with every default filled in and
// no token, so the source is disabled until a token is set.
func DefaultConfig() Config {
	return Config{
		BaseURL:          DefaultBaseURL,
		Account:          DefaultAccount,
		PageLimit:        DefaultPageLimit,
		PollInterval:     DefaultPollInterval,
		RequestTimeout:   DefaultRequestTimeout,
		AcceptLanguage:   DefaultAcceptLanguage,
		MaxResponseBytes: DefaultMaxResponseBytes,
	}
}

// Enabled reports whether the Yandex source should run: it runs exactly when
// a token is configured.
func (c Config) Enabled() bool { return c.Token.IsSet() }

// SourceID is the key of this source's cursor in PostgreSQL. It includes the
// account so that several Yandex accounts keep separate cursors.
func (c Config) SourceID() string { return "yandex/" + c.Account }

// Validate checks the configuration of an enabled source and returns every
// problem found, joined, each naming its environment variable. A disabled
// source is not validated, so unused defaults never block start-up. The
// token's value never appears in an error.
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	var errs []error
	add := func(env, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{env}, args...)...))
	}

	// A token that cannot be sent as a header value would make every request
	// fail in the transport, which the poller would retry forever.
	if !upstream.ValidHeaderValue(c.Token.Reveal()) || strings.ContainsAny(c.Token.Reveal(), " \t") {
		add(EnvToken, "must not contain whitespace or control characters")
	}
	if err := upstream.ValidateBaseURL(c.BaseURL); err != nil {
		add(EnvBaseURL, "%v", err)
	}
	if !upstream.ValidAccount(c.Account) {
		add(EnvAccount, "must match [a-z0-9][a-z0-9._-]{0,62}, got %q", c.Account)
	}
	if c.PageLimit < 1 || c.PageLimit > MaxPageLimit {
		add(EnvPageLimit, "must be between 1 and %d, got %d", MaxPageLimit, c.PageLimit)
	}
	if c.PollInterval <= 0 {
		add(EnvPollInterval, "must be positive, got %s", c.PollInterval)
	}
	if c.RequestTimeout <= 0 {
		add(EnvRequestTimeout, "must be positive, got %s", c.RequestTimeout)
	}
	if c.AcceptLanguage == "" || !upstream.ValidHeaderValue(c.AcceptLanguage) {
		add(EnvAcceptLanguage, "must be a non-empty header value without control characters, got %q", c.AcceptLanguage)
	}
	if c.MaxResponseBytes <= 0 {
		add(EnvMaxResponseBytes, "must be positive, got %d", c.MaxResponseBytes)
	}
	return errors.Join(errs...)
}
