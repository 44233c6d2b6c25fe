// Package upstream holds what every courier API client shares: the outcome
// classes a poller acts on, the client core that sends requests and
// classifies their failures (Client), Retry-After parsing and bounded
// response reading.
//
// Each provider's client (internal/yandex, internal/bts) configures a Client
// rather than repeating it: its base URL, bounds and fixed headers, a parser
// for its error bodies and a hook for the statuses it treats specially. What
// happens on the wire is mapped to an *Error with a Class in one place,
// Client.Do, and a 2xx body the provider cannot use is Retry through
// Malformed; pollers act on the Class and never look at HTTP status codes
// themselves.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Class says what a poller must do after a failed upstream call.
type Class int

const (
	// Retry: a transient failure (5xx, timeout, connection error, malformed
	// body). Back off and try the same request again, forever; never advance.
	Retry Class = iota + 1
	// RateLimited: 429. Wait RetryAfter when the server sent it, else back off.
	RateLimited
	// BadCursor: the upstream rejected the stored cursor. Halt the source
	// loudly and keep the cursor as it is for an operator to repair.
	BadCursor
	// Auth: the credentials were rejected (401/403). Halt the source.
	Auth
	// NotFound: the requested object does not exist upstream (404).
	NotFound
	// Permanent: any other client error that retrying cannot fix. Halt.
	Permanent
)

// String returns the class name used in logs and metric labels.
func (c Class) String() string {
	switch c {
	case Retry:
		return "retry"
	case RateLimited:
		return "rate_limited"
	case BadCursor:
		return "bad_cursor"
	case Auth:
		return "auth"
	case NotFound:
		return "not_found"
	case Permanent:
		return "permanent"
	default:
		return "class(" + strconv.Itoa(int(c)) + ")"
	}
}

// Halts reports whether a source must stop polling after an error of this
// class: retrying cannot succeed without an operator.
func (c Class) Halts() bool {
	return c == BadCursor || c == Auth || c == Permanent
}

// Error is a classified upstream failure.
type Error struct {
	Class Class
	// Op names the call, for example "fetch journal page".
	Op string
	// StatusCode is the HTTP status, or 0 when no response arrived.
	StatusCode int
	// Code and Message are the provider's error code and text, when it sent them.
	Code    string
	Message string
	// RetryAfter is the server's requested wait (429/503), 0 when absent.
	RetryAfter time.Duration
	// Header is the header of the error response, nil when none arrived.
	Header http.Header
	// Err is the underlying transport or decoding error, if any.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	b.WriteString(": ")
	b.WriteString(e.Class.String())
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.StatusCode)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// ClassOf returns the class of err. Errors that were not classified by a
// client (which would be a bug) are treated as Retry, so that nothing is ever
// skipped because of an unexpected error type.
func ClassOf(err error) Class {
	var ue *Error
	if errors.As(err, &ue) {
		return ue.Class
	}
	return Retry
}

// RetryAfterOf returns the server-requested wait carried by err, or 0.
func RetryAfterOf(err error) time.Duration {
	var ue *Error
	if errors.As(err, &ue) {
		return ue.RetryAfter
	}
	return 0
}

// ParseRetryAfter parses a Retry-After header value, which RFC 9110 allows to
// be either delay-seconds or an HTTP-date. It returns 0 when the value is
// absent, malformed or in the past, so callers fall back to their own backoff.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		// Cap absurd values so an overflow cannot turn into a negative wait.
		const maxSecs = int64(24 * time.Hour / time.Second)
		return time.Duration(min(secs, maxSecs)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// TransportError classifies a call of op that failed before a complete
// response was read (status is set when the failure came while reading a
// response body): Retry, with a message for an oversized body or the
// per-request timeout. The caller's own cancellation is the exception: when
// ctx is done the result wraps ctx.Err(), so that errors.Is(err,
// context.Canceled) tells a poller to exit quietly instead of counting a
// failure.
func TransportError(ctx context.Context, op string, status int, err error, timeout time.Duration) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w", op, ctxErr)
	}
	ue := &Error{Class: Retry, Op: op, StatusCode: status, Err: err}
	switch {
	case errors.Is(err, ErrBodyTooLarge):
		ue.Message = "response body too large"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// The caller's ctx is live, so this is the per-request timeout (or
		// the http.Client's own). It must not look like the caller's
		// cancellation, or a poller testing errors.Is would stop instead of
		// retrying; so the context error is kept as text, not in the chain.
		ue.Message = fmt.Sprintf("request timed out (request timeout %s)", timeout)
		ue.Err = errors.New(err.Error())
	}
	return ue
}

// ErrBodyTooLarge is returned by ReadBody when a response exceeds the limit.
var ErrBodyTooLarge = errors.New("response body exceeds the size limit")

// ReadBody reads at most limit bytes of r. A body larger than limit is an
// error rather than a silent truncation or an out-of-memory.
//
// size is the expected length (a response's ContentLength; 0 or -1 when
// unknown). With it the body is read into one buffer of the right size:
// io.ReadAll starts at 512 bytes and grows by a quarter at a time, which for
// a journal page of a megabyte or more allocates and copies several times
// the page. An unknown length doubles the buffer instead. A wrong size
// costs only a reallocation, never a wrong result.
func ReadBody(r io.Reader, limit, size int64) ([]byte, error) {
	// Room past size, so that the read that finds the end needs no growth.
	const slack = 512
	b := make([]byte, 0, min(max(size, 0), limit)+slack)
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, min(len(b), int(limit)+1-len(b)))
		}
		// Never read more than limit+1 bytes: one past the limit proves
		// the body too large.
		room := b[len(b):min(cap(b), int(limit)+1)]
		n, err := r.Read(room)
		b = b[:len(b)+n]
		if int64(len(b)) > limit {
			return nil, fmt.Errorf("%w (%d bytes)", ErrBodyTooLarge, limit)
		}
		switch {
		case errors.Is(err, io.EOF):
			return b, nil
		case err != nil:
			return nil, err
		}
	}
}

// MaxExcerpt bounds provider text quoted in errors and logs (and in halt
// reasons stored in PostgreSQL).
const MaxExcerpt = 200

// Excerpt makes provider text safe for a log line: at most MaxExcerpt,
// cut on a rune boundary, valid UTF-8, control characters (which could forge
// log lines) replaced by spaces, and surrounding space trimmed.
func Excerpt(b []byte) string {
	if len(b) > MaxExcerpt {
		b = b[:MaxExcerpt]
		// Only the last rune can have been cut in half; drop it.
		if i := lastRuneStart(b); !utf8.FullRune(b[i:]) {
			b = b[:i]
		}
	}
	s := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(b), "\uFFFD"))
	return strings.TrimSpace(s)
}

// lastRuneStart returns the index where the last (possibly partial) rune of
// b starts.
func lastRuneStart(b []byte) int {
	i := len(b) - 1
	for i > 0 && !utf8.RuneStart(b[i]) {
		i--
	}
	return max(i, 0)
}

// ValidateBaseURL accepts an absolute http(s) URL without query, fragment or
// user info. Errors never echo the raw value, because a mistyped URL may hold
// credentials in its user info.
func ValidateBaseURL(raw string) error {
	if raw == "" {
		return errors.New("must be set")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse errors quote the whole input; keep only the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("not a valid URL: %w", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("must be an absolute http or https URL, got scheme %q", u.Scheme)
	case u.Host == "":
		return errors.New("must include a host")
	case u.User != nil:
		return errors.New("must not contain user info; credentials are configured separately")
	case u.RawQuery != "" || u.ForceQuery:
		return fmt.Errorf("must not contain a query, got %q", u.Redacted())
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return fmt.Errorf("must not contain a fragment, got %q", u.Redacted())
	}
	return nil
}

// ValidHeaderValue reports whether s can be sent as an HTTP header value: no
// control characters other than horizontal tab (RFC 9110, field-value). A
// setting that fails it would make every request fail in the transport,
// which a poller would retry forever.
func ValidHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if ch := s[i]; (ch < ' ' && ch != '\t') || ch == 0x7f {
			return false
		}
	}
	return true
}

// maxAccountLen bounds an account name.
const maxAccountLen = 63

// ValidAccount reports whether s matches [a-z0-9][a-z0-9._-]{0,62}, the
// shape of an account name in source ids, CloudEvents sources and metric
// labels.
func ValidAccount(s string) bool {
	if len(s) == 0 || len(s) > maxAccountLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= '0' && ch <= '9':
		case i > 0 && (ch == '.' || ch == '_' || ch == '-'):
		default:
			return false
		}
	}
	return true
}
