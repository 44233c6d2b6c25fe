package bts

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultPollIntervals is the default schedule: how long an order stays
// unpolled after it was seen at each status. It follows how long BTS orders
// dwell at each status (hours to days at the sender and in transit, minutes
// to hours out for delivery), so that most polls are not wasted, except out
// for delivery, where a 30s interval publishes the delivery within 40s of
// the upstream change at p95, against 58s for a fixed 1-minute schedule that
// makes 20 times more calls (BenchmarkBTSSchedule, 100,000 active orders). The price is the step
// into 1100, seen up to 10 minutes late (800=10m); lower 800's interval if
// "out for delivery" must be prompt. 900 and 1000, which BTS lists after
// 800 but never defines, are polled like 800.
const DefaultPollIntervals = "100=1h,200=30m,300=30m,400=1h,500=30m,600=30m,700=1h,800=10m,900=10m,1000=10m,1100=30s,default=30m"

// maxCode bounds a status code in a schedule.
const maxCode = 1_000_000

// Intervals is the adaptive schedule: the poll interval after an order
// was seen at each status code, and a default for every other code. It is
// a flag.Value, so it can be bound to INGESTD_BTS_POLL_INTERVALS directly.
type Intervals struct {
	byCode map[int]time.Duration
	def    time.Duration
}

// ParseIntervals parses comma-separated code=duration pairs plus
// default=duration, such as "100=2h,800=15m,1100=2m,default=30m". The
// default is required, so that a schedule is always complete and never
// silently mixed with built-in values. Whitespace around items is ignored.
func ParseIntervals(s string) (Intervals, error) {
	iv := Intervals{byCode: map[int]time.Duration{}}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		key, val, ok := strings.Cut(item, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if !ok {
			return Intervals{}, fmt.Errorf("%q is not code=duration", item)
		}
		d, err := time.ParseDuration(val)
		if err != nil {
			return Intervals{}, fmt.Errorf("%q: %q is not a duration such as 30m or 45s", item, val)
		}
		if d <= 0 {
			return Intervals{}, fmt.Errorf("%q: the interval must be positive", item)
		}
		if key == "default" {
			if iv.def != 0 {
				return Intervals{}, errors.New("default is given twice")
			}
			iv.def = d
			continue
		}
		code, err := strconv.Atoi(key)
		if err != nil || code < 0 || code > maxCode || strconv.Itoa(code) != key {
			return Intervals{}, fmt.Errorf("%q: %q is not a BTS status code (a non-negative integer) or \"default\"", item, key)
		}
		if _, dup := iv.byCode[code]; dup {
			return Intervals{}, fmt.Errorf("code %d is given twice", code)
		}
		iv.byCode[code] = d
	}
	if iv.def == 0 {
		return Intervals{}, errors.New("missing default=DURATION for the codes not listed")
	}
	return iv, nil
}

// DefaultIntervals returns DefaultPollIntervals parsed.
func DefaultIntervals() Intervals {
	iv, err := ParseIntervals(DefaultPollIntervals)
	if err != nil {
		panic("bts: DefaultPollIntervals does not parse: " + err.Error())
	}
	return iv
}

// For returns the interval after an order was seen at code.
func (iv Intervals) For(code int) time.Duration {
	if d, ok := iv.byCode[code]; ok {
		return d
	}
	return iv.def
}

// IsZero reports whether iv was never set.
func (iv Intervals) IsZero() bool { return iv.def == 0 }

// Scaled returns the schedule with every interval divided by factor, for
// simulations whose time runs factor times faster than real time. Intervals
// never drop below a millisecond.
func (iv Intervals) Scaled(factor float64) Intervals {
	scale := func(d time.Duration) time.Duration {
		return max(time.Duration(math.Round(float64(d)/factor)), time.Millisecond)
	}
	out := Intervals{byCode: make(map[int]time.Duration, len(iv.byCode)), def: scale(iv.def)}
	for c, d := range iv.byCode {
		out.byCode[c] = scale(d)
	}
	return out
}

// String renders the schedule in the form ParseIntervals reads, codes in
// ascending order.
func (iv Intervals) String() string {
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
func (iv *Intervals) Set(s string) error {
	parsed, err := ParseIntervals(s)
	if err != nil {
		return err
	}
	*iv = parsed
	return nil
}
