// Package bts is the client for the BTS Express (bts.uz) API: it logs in and
// keeps its bearer token fresh, reads the status dictionary and tracks one
// order at a time, classifies every failure into an upstream.Error class the
// poller acts on, and normalizes an observed order status into an
// event.Event. It knows nothing of PostgreSQL or Kafka.
//
// BTS has no journal and no "changed since" endpoint, so ingestd cannot read
// a stream of changes from it: the poller keeps a watch-list of orders and
// asks for each one's current status on a schedule (internal/poller/watch).
// Every INGESTD_BTS_* setting, the client's and the schedule's, is in
// this file.
package bts

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/upstream"
)

// Environment variable names. They appear in Validate errors so that an
// operator can tell at once which setting to fix.
const (
	EnvBaseURL          = "INGESTD_BTS_BASE_URL"
	EnvLogin            = "INGESTD_BTS_LOGIN"
	EnvPassword         = "INGESTD_BTS_PASSWORD"
	EnvAccount          = "INGESTD_BTS_ACCOUNT"
	EnvLanguage         = "INGESTD_BTS_LANGUAGE"
	EnvRequestTimeout   = "INGESTD_BTS_REQUEST_TIMEOUT"
	EnvMaxResponseBytes = "INGESTD_BTS_MAX_RESPONSE_BYTES"
	EnvTokenTTL         = "INGESTD_BTS_TOKEN_TTL"

	EnvPollIntervals     = "INGESTD_BTS_POLL_INTERVALS"
	EnvRate              = "INGESTD_BTS_RATE"
	EnvConcurrency       = "INGESTD_BTS_CONCURRENCY"
	EnvClaimTimeout      = "INGESTD_BTS_CLAIM_TIMEOUT"
	EnvDictionaryRefresh = "INGESTD_BTS_DICTIONARY_REFRESH"
	EnvIdlePoll          = "INGESTD_BTS_IDLE_POLL"

	EnvWebhookToken   = "INGESTD_BTS_WEBHOOK_TOKEN"
	EnvWebhookStretch = "INGESTD_BTS_WEBHOOK_STRETCH"
	EnvWebhookQuiet   = "INGESTD_BTS_WEBHOOK_QUIET"
)

// Defaults and bounds of the configuration.
const (
	// DefaultBaseURL is BTS's public test server. Each client gets its
	// production URL from BTS, which is why it is configuration.
	DefaultBaseURL          = "https://apitest.bts.uz:28345"
	DefaultAccount          = "default"
	DefaultLanguage         = "uz"
	DefaultRequestTimeout   = 30 * time.Second
	DefaultMaxResponseBytes = 32 << 20
	// DefaultTokenTTL is the assumed life of an access token that is not a
	// JWT carrying its own exp claim. BTS documents "about a day"; assuming
	// a little less keeps the proactive refresh ahead of the real expiry.
	DefaultTokenTTL = 23 * time.Hour
	// minTokenTTL keeps a mistyped TTL ("23" meaning hours, parsed as an
	// error, or "1s") from turning into a refresh storm.
	minTokenTTL = time.Minute

	DefaultRate              = 20.0
	DefaultConcurrency       = 8
	DefaultClaimTimeout      = 2 * time.Minute
	DefaultDictionaryRefresh = time.Hour
	DefaultIdlePoll          = time.Second

	// DefaultWebhookStretch multiplies the scheduled intervals of an
	// account's orders while its webhooks flow: each change then comes by
	// webhook within seconds, and the schedule is only the safety net.
	DefaultWebhookStretch = 4.0
	// DefaultWebhookQuiet is how long an account may go without a webhook
	// before its orders are back on the normal schedule.
	DefaultWebhookQuiet = 10 * time.Minute
	// MinWebhookTokenLen keeps a webhook token long enough that guessing it
	// is not an option: the endpoint faces the Internet.
	MinWebhookTokenLen = 16

	maxRate           = 100_000
	maxConcurrency    = 1024
	maxWebhookStretch = 100
)

// Config for the BTS source. Env var names appear in Validate errors.
type Config struct {
	// BaseURL is the API root (INGESTD_BTS_BASE_URL), default
	// "https://apitest.bts.uz:28345". A path prefix is allowed, for proxies.
	BaseURL string
	// Login is the API login (INGESTD_BTS_LOGIN).
	Login string
	// Password is the API password (INGESTD_BTS_PASSWORD). The source runs
	// when both Login and Password are set.
	Password secret.String
	// Account names the BTS account (INGESTD_BTS_ACCOUNT), default
	// "default"; it must match [a-z0-9][a-z0-9._-]{0,62}.
	Account string
	// Language is the "language" header, which selects the language of
	// status names (INGESTD_BTS_LANGUAGE), default "uz".
	Language string
	// RequestTimeout bounds each request including reading its body
	// (INGESTD_BTS_REQUEST_TIMEOUT), default 30s, > 0.
	RequestTimeout time.Duration
	// MaxResponseBytes bounds a response body
	// (INGESTD_BTS_MAX_RESPONSE_BYTES), default 32 MiB, > 0.
	MaxResponseBytes int64
	// TokenTTL is the assumed life of an access token whose expiry cannot be
	// read from the token itself (INGESTD_BTS_TOKEN_TTL), default 23h, at
	// least 1m. The token is refreshed at 80% of its life either way.
	TokenTTL time.Duration
	// WebhookToken is the token BTS sends with every webhook call of this
	// account (INGESTD_BTS_WEBHOOK_TOKEN), at least 16 characters; it tells
	// which account a call belongs to. Unset: the account takes no
	// webhooks.
	WebhookToken secret.String
	// Schedule is how the watch-list is polled.
	Schedule Schedule
}

// Schedule is how the BTS watch-list is polled: how often each order, and
// how many requests BTS gets.
type Schedule struct {
	// Intervals is the adaptive schedule (INGESTD_BTS_POLL_INTERVALS),
	// default DefaultPollIntervals. Each poll is jittered by ±10%.
	Intervals Intervals
	// Rate is the global request budget in requests per second
	// (INGESTD_BTS_RATE), default 20. It must cover the schedule: with the
	// default intervals an active order costs about 3 requests per hour
	// (120 to 160 over its life, BenchmarkBTSSchedule), so 20 req/s serves
	// about 25,000 active orders and 100,000 need about 80 req/s. A rate
	// too low shows as a growing ingestd_bts_claim_lag_seconds.
	Rate float64
	// Concurrency bounds requests in flight (INGESTD_BTS_CONCURRENCY),
	// default 8.
	Concurrency int
	// ClaimTimeout is how long a claimed order is reserved for the poller
	// that claimed it (INGESTD_BTS_CLAIM_TIMEOUT), default 2m. Orders of a
	// poller that dies are polled again after it. It must exceed
	// INGESTD_BACKOFF_MAX, since a claimed order may wait out a backoff
	// before its request.
	ClaimTimeout time.Duration
	// DictionaryRefresh is how often the status dictionary is fetched again
	// (INGESTD_BTS_DICTIONARY_REFRESH), default 1h.
	DictionaryRefresh time.Duration
	// IdlePoll bounds the wait when nothing is due
	// (INGESTD_BTS_IDLE_POLL), default 1s: orders added by another process
	// are picked up within it.
	IdlePoll time.Duration
	// WebhookStretch multiplies the scheduled intervals while the account's
	// webhooks flow (INGESTD_BTS_WEBHOOK_STRETCH), default 4, between 1
	// (no stretch) and 100.
	WebhookStretch float64
	// WebhookQuiet is how long after the account's last webhook its
	// schedule stays stretched (INGESTD_BTS_WEBHOOK_QUIET), default 10m:
	// a webhook that stops arriving never leaves orders polled less often
	// for longer than this.
	WebhookQuiet time.Duration
}

// DefaultSchedule returns the schedule's defaults.
func DefaultSchedule() Schedule {
	return Schedule{
		Intervals:         DefaultIntervals(),
		Rate:              DefaultRate,
		Concurrency:       DefaultConcurrency,
		ClaimTimeout:      DefaultClaimTimeout,
		DictionaryRefresh: DefaultDictionaryRefresh,
		IdlePoll:          DefaultIdlePoll,
		WebhookStretch:    DefaultWebhookStretch,
		WebhookQuiet:      DefaultWebhookQuiet,
	}
}

// Validate reports every problem of the schedule, each naming its
// environment variable.
func (s Schedule) Validate() error {
	var errs []error
	add := func(env, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{env}, args...)...))
	}
	if s.Intervals.IsZero() {
		add(EnvPollIntervals, "must be set, e.g. %s", DefaultPollIntervals)
	}
	if math.IsNaN(s.Rate) || s.Rate <= 0 || s.Rate > maxRate {
		add(EnvRate, "must be between 0 and %d requests per second, got %v", maxRate, s.Rate)
	}
	if s.Concurrency < 1 || s.Concurrency > maxConcurrency {
		add(EnvConcurrency, "must be between 1 and %d, got %d", maxConcurrency, s.Concurrency)
	}
	if s.ClaimTimeout <= 0 {
		add(EnvClaimTimeout, "must be positive, got %s", s.ClaimTimeout)
	}
	if s.DictionaryRefresh <= 0 {
		add(EnvDictionaryRefresh, "must be positive, got %s", s.DictionaryRefresh)
	}
	if s.IdlePoll <= 0 {
		add(EnvIdlePoll, "must be positive, got %s", s.IdlePoll)
	}
	if math.IsNaN(s.WebhookStretch) || s.WebhookStretch < 1 || s.WebhookStretch > maxWebhookStretch {
		add(EnvWebhookStretch, "must be between 1 (no stretch) and %d, got %v", maxWebhookStretch, s.WebhookStretch)
	}
	if s.WebhookQuiet <= 0 {
		add(EnvWebhookQuiet, "must be positive, got %s", s.WebhookQuiet)
	}
	return errors.Join(errs...)
}

// DefaultConfig returns the configuration with every default filled in and
// no credentials, so the source is disabled until they are set.
func DefaultConfig() Config {
	return Config{
		BaseURL:          DefaultBaseURL,
		Account:          DefaultAccount,
		Language:         DefaultLanguage,
		RequestTimeout:   DefaultRequestTimeout,
		MaxResponseBytes: DefaultMaxResponseBytes,
		TokenTTL:         DefaultTokenTTL,
		Schedule:         DefaultSchedule(),
	}
}

// Enabled reports whether the BTS source should run: it runs exactly when
// both a login and a password are configured.
func (c Config) Enabled() bool { return c.Login != "" && c.Password.IsSet() }

// SourceID is the key of this source in PostgreSQL (watch-list rows, halt
// records). It includes the account so that several BTS accounts keep
// separate watch-lists.
func (c Config) SourceID() string { return SourceID(c.Account) }

// SourceID returns the source id of a BTS account, "bts/<account>". Tools
// that only know the account (ingestd bts, the admin API) use it.
func SourceID(account string) string { return "bts/" + account }

// Validate checks the configuration and returns every problem found, joined,
// each naming its environment variable. A source with neither login nor
// password is disabled and not validated further, so unused defaults never
// block start-up; a source with only one of them is an error, because that
// is a half-finished configuration rather than a decision. The password's
// value never appears in an error.
func (c Config) Validate() error {
	var errs []error
	add := func(env, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{env}, args...)...))
	}
	switch {
	case c.Login == "" && !c.Password.IsSet():
		return nil
	case c.Login == "":
		add(EnvLogin, "must be set when %s is set", EnvPassword)
	case !c.Password.IsSet():
		add(EnvPassword, "must be set when %s is set", EnvLogin)
	}
	if c.Login != "" && !upstream.ValidHeaderValue(c.Login) {
		add(EnvLogin, "must not contain control characters")
	}
	if err := upstream.ValidateBaseURL(c.BaseURL); err != nil {
		add(EnvBaseURL, "%v", err)
	}
	if !upstream.ValidAccount(c.Account) {
		add(EnvAccount, "must match [a-z0-9][a-z0-9._-]{0,62}, got %q", c.Account)
	}
	if c.Language == "" || !upstream.ValidHeaderValue(c.Language) {
		add(EnvLanguage, "must be a non-empty header value without control characters, got %q", c.Language)
	}
	if c.RequestTimeout <= 0 {
		add(EnvRequestTimeout, "must be positive, got %s", c.RequestTimeout)
	}
	if c.MaxResponseBytes <= 0 {
		add(EnvMaxResponseBytes, "must be positive, got %d", c.MaxResponseBytes)
	}
	if c.TokenTTL < minTokenTTL {
		add(EnvTokenTTL, "must be at least %s, got %s", minTokenTTL, c.TokenTTL)
	}
	if c.WebhookToken.IsSet() {
		switch t := c.WebhookToken.Reveal(); {
		case len(t) < MinWebhookTokenLen:
			add(EnvWebhookToken, "must be at least %d characters, got %d", MinWebhookTokenLen, len(t))
		case !upstream.ValidHeaderValue(t):
			add(EnvWebhookToken, "must not contain control characters")
		}
	}
	errs = append(errs, c.Schedule.Validate())
	return errors.Join(errs...)
}

// MaxOrderIDLen is the longest order id ingestd accepts.
const MaxOrderIDLen = 64

// ValidOrderID reports whether s can be a BTS order id: 1 to 64 characters
// of [A-Za-z0-9_-]. BTS's documented order ids are integers (orderId
// 4293644); the rule is deliberately more permissive, so that a change of
// id format upstream does not lock orders out, yet bounded, so that an id
// is always safe in a URL query, a log line and a Kafka key. The watch-list
// table enforces the same rule with a CHECK constraint.
func ValidOrderID(s string) bool {
	if len(s) == 0 || len(s) > MaxOrderIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9', ch == '_', ch == '-':
		default:
			return false
		}
	}
	return true
}
