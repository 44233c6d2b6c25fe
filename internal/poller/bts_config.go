package poller

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Environment variables of the BTS watch-list poller. They appear in
// Validate errors so that an operator can tell at once which one to fix.
const (
	EnvBTSPollIntervals     = "INGESTD_BTS_POLL_INTERVALS"
	EnvBTSRate              = "INGESTD_BTS_RATE"
	EnvBTSConcurrency       = "INGESTD_BTS_CONCURRENCY"
	EnvBTSClaimTimeout      = "INGESTD_BTS_CLAIM_TIMEOUT"
	EnvBTSDictionaryRefresh = "INGESTD_BTS_DICTIONARY_REFRESH"
	EnvBTSIdlePoll          = "INGESTD_BTS_IDLE_POLL"
)

// DefaultBTSPollIntervals is the default schedule: how long an order stays
// unpolled after it was seen at each status. It follows how long BTS orders
// dwell at each status (hours to days at the sender and in transit, minutes
// to hours out for delivery), so that most polls are not wasted, except out
// for delivery, where a 30s interval publishes the delivery within 40s of
// the upstream change at p95, against 58s for a fixed 1-minute schedule that
// makes 20 times more calls (BenchmarkBTSSchedule, 100,000 active orders). The price is the step
// into 1100, seen up to 10 minutes late (800=10m); lower 800's interval if
// "out for delivery" must be prompt. 900 and 1000, which BTS lists after
// 800 but never defines, are polled like 800.
const DefaultBTSPollIntervals = "100=1h,200=30m,300=30m,400=1h,500=30m,600=30m,700=1h,800=10m,900=10m,1000=10m,1100=30s,default=30m"

// Defaults of the BTS poller.
const (
	DefaultBTSRate              = 20.0
	DefaultBTSConcurrency       = 8
	DefaultBTSClaimTimeout      = 2 * time.Minute
	DefaultBTSDictionaryRefresh = time.Hour
	DefaultBTSIdlePoll          = time.Second
)

// Bounds of the BTS poller's configuration.
const (
	maxBTSRate        = 100_000
	maxBTSConcurrency = 1024
	maxBTSCode        = 1_000_000
)

// BTSIntervals is the adaptive schedule: the poll interval after an order
// was seen at each status code, and a default for every other code. It is
// a flag.Value, so it can be bound to INGESTD_BTS_POLL_INTERVALS directly.
type BTSIntervals struct {
	byCode map[int]time.Duration
	def    time.Duration
}

// ParseBTSIntervals parses comma-separated code=duration pairs plus
// default=duration, such as "100=2h,800=15m,1100=2m,default=30m". The
// default is required, so that a schedule is always complete and never
// silently mixed with built-in values. Whitespace around items is ignored.
func ParseBTSIntervals(s string) (BTSIntervals, error) {
	iv := BTSIntervals{byCode: map[int]time.Duration{}}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		key, val, ok := strings.Cut(item, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if !ok {
			return BTSIntervals{}, fmt.Errorf("%q is not code=duration", item)
		}
		d, err := time.ParseDuration(val)
		if err != nil {
			return BTSIntervals{}, fmt.Errorf("%q: %q is not a duration such as 30m or 45s", item, val)
		}
		if d <= 0 {
			return BTSIntervals{}, fmt.Errorf("%q: the interval must be positive", item)
		}
		if key == "default" {
			if iv.def != 0 {
				return BTSIntervals{}, errors.New("default is given twice")
			}
			iv.def = d
			continue
		}
		code, err := strconv.Atoi(key)
		if err != nil || code < 0 || code > maxBTSCode || strconv.Itoa(code) != key {
			return BTSIntervals{}, fmt.Errorf("%q: %q is not a BTS status code (a non-negative integer) or \"default\"", item, key)
		}
		if _, dup := iv.byCode[code]; dup {
			return BTSIntervals{}, fmt.Errorf("code %d is given twice", code)
		}
		iv.byCode[code] = d
	}
	if iv.def == 0 {
		return BTSIntervals{}, errors.New("missing default=DURATION for the codes not listed")
	}
	return iv, nil
}

// DefaultBTSIntervals returns DefaultBTSPollIntervals parsed.
func DefaultBTSIntervals() BTSIntervals {
	iv, err := ParseBTSIntervals(DefaultBTSPollIntervals)
	if err != nil {
		panic("poller: DefaultBTSPollIntervals does not parse: " + err.Error())
	}
	return iv
}

// For returns the interval after an order was seen at code.
func (iv BTSIntervals) For(code int) time.Duration {
	if d, ok := iv.byCode[code]; ok {
		return d
	}
	return iv.def
}

// IsZero reports whether iv was never set.
func (iv BTSIntervals) IsZero() bool { return iv.def == 0 }

// Scaled returns the schedule with every interval divided by factor, for
// simulations whose time runs factor times faster than real time. Intervals
// never drop below a millisecond.
func (iv BTSIntervals) Scaled(factor float64) BTSIntervals {
	scale := func(d time.Duration) time.Duration {
		return max(time.Duration(math.Round(float64(d)/factor)), time.Millisecond)
	}
	out := BTSIntervals{byCode: make(map[int]time.Duration, len(iv.byCode)), def: scale(iv.def)}
	for c, d := range iv.byCode {
		out.byCode[c] = scale(d)
	}
	return out
}

// String renders the schedule in the form ParseBTSIntervals reads, codes in
// ascending order.
func (iv BTSIntervals) String() string {
	if iv.IsZero() {
		return ""
	}
	codes := make([]int, 0, len(iv.byCode))
	for c := range iv.byCode {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	var b strings.Builder
	for _, c := range codes {
		fmt.Fprintf(&b, "%d=%s,", c, compactDuration(iv.byCode[c]))
	}
	fmt.Fprintf(&b, "default=%s", compactDuration(iv.def))
	return b.String()
}

// compactDuration renders d like time.Duration.String without its zero
// tails ("1h" rather than "1h0m0s"), so that the default schedule prints as
// it is written.
func compactDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// Set implements flag.Value.
func (iv *BTSIntervals) Set(s string) error {
	parsed, err := ParseBTSIntervals(s)
	if err != nil {
		return err
	}
	*iv = parsed
	return nil
}

// BTSConfig configures the BTS watch-list poller.
type BTSConfig struct {
	// SourceID keys the watch-list in PostgreSQL ("bts/<account>").
	SourceID string
	// Account names the BTS account in events.
	Account string
	// Intervals is the adaptive schedule (INGESTD_BTS_POLL_INTERVALS),
	// default DefaultBTSPollIntervals. Each poll is jittered by ±10%.
	Intervals BTSIntervals
	// Rate is the global request budget in requests per second
	// (INGESTD_BTS_RATE), default 20. It must cover the schedule: with the
	// default intervals an active order costs about 3 requests per hour
	// (120 to 160 over its life, BenchmarkBTSSchedule), so 20 req/s serves
	// about 25,000 active orders and 100,000 need about 80 req/s. A rate too low shows
	// as a growing ingestd_bts_claim_lag_seconds.
	Rate float64
	// Concurrency bounds requests in flight (INGESTD_BTS_CONCURRENCY),
	// default 8.
	Concurrency int
	// ClaimTimeout is how long a claimed order is reserved for this poller
	// (INGESTD_BTS_CLAIM_TIMEOUT), default 2m. Orders of a poller that dies
	// are polled again after it. It must exceed BackoffMax, since a claimed
	// order may wait out a backoff before its request.
	ClaimTimeout time.Duration
	// DictionaryRefresh is how often the status dictionary is fetched again
	// (INGESTD_BTS_DICTIONARY_REFRESH), default 1h.
	DictionaryRefresh time.Duration
	// IdlePoll bounds the wait when nothing is due
	// (INGESTD_BTS_IDLE_POLL), default 1s: orders added by another process
	// are picked up within it.
	IdlePoll time.Duration
	// BackoffInitial and BackoffMax bound the jittered exponential backoff
	// after a failure (shared INGESTD_BACKOFF_INITIAL, INGESTD_BACKOFF_MAX).
	BackoffInitial, BackoffMax time.Duration
	// CommitTimeout bounds recording observations already fetched when
	// shutdown began: they are recorded rather than dropped.
	CommitTimeout time.Duration
	// MaxBacklog pauses polling while more than this many outbox rows wait
	// for Kafka (the shared INGESTD_OUTBOX_MAX_BACKLOG), like the journal
	// poller: due orders stay due, so a Kafka outage delays their changes
	// instead of growing the outbox without bound. Orders already claimed
	// are still polled and recorded. 0 disables the bound.
	MaxBacklog int64
}

// DefaultBTSConfig returns the defaults for account's source.
func DefaultBTSConfig(sourceID, account string) BTSConfig {
	return BTSConfig{
		SourceID:          sourceID,
		Account:           account,
		Intervals:         DefaultBTSIntervals(),
		Rate:              DefaultBTSRate,
		Concurrency:       DefaultBTSConcurrency,
		ClaimTimeout:      DefaultBTSClaimTimeout,
		DictionaryRefresh: DefaultBTSDictionaryRefresh,
		IdlePoll:          DefaultBTSIdlePoll,
		BackoffInitial:    500 * time.Millisecond,
		BackoffMax:        30 * time.Second,
		CommitTimeout:     10 * time.Second,
	}
}

// Validate reports every problem at once, each naming its environment
// variable.
func (c BTSConfig) Validate() error {
	var errs []error
	add := func(env, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{env}, args...)...))
	}
	if c.SourceID == "" || c.Account == "" {
		add("INGESTD_BTS_ACCOUNT", "must be set")
	}
	if c.Intervals.IsZero() {
		add(EnvBTSPollIntervals, "must be set, e.g. %s", DefaultBTSPollIntervals)
	}
	if math.IsNaN(c.Rate) || c.Rate <= 0 || c.Rate > maxBTSRate {
		add(EnvBTSRate, "must be between 0 and %d requests per second, got %v", maxBTSRate, c.Rate)
	}
	if c.Concurrency < 1 || c.Concurrency > maxBTSConcurrency {
		add(EnvBTSConcurrency, "must be between 1 and %d, got %d", maxBTSConcurrency, c.Concurrency)
	}
	if c.ClaimTimeout <= c.BackoffMax {
		add(EnvBTSClaimTimeout, "must be longer than INGESTD_BACKOFF_MAX (%s), got %s", c.BackoffMax, c.ClaimTimeout)
	}
	if c.DictionaryRefresh <= 0 {
		add(EnvBTSDictionaryRefresh, "must be positive, got %s", c.DictionaryRefresh)
	}
	if c.IdlePoll <= 0 {
		add(EnvBTSIdlePoll, "must be positive, got %s", c.IdlePoll)
	}
	if c.BackoffInitial <= 0 || c.BackoffMax < c.BackoffInitial {
		add("INGESTD_BACKOFF_INITIAL", "must be positive and at most INGESTD_BACKOFF_MAX, got %s and %s", c.BackoffInitial, c.BackoffMax)
	}
	if c.CommitTimeout <= 0 {
		add("INGESTD_SHUTDOWN_TIMEOUT", "must be positive (the BTS commit timeout is derived from it), got %s", c.CommitTimeout)
	}
	if c.MaxBacklog < 0 {
		add("INGESTD_OUTBOX_MAX_BACKLOG", "must be 0 (no bound) or positive, got %d", c.MaxBacklog)
	}
	return errors.Join(errs...)
}
