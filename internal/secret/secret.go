// Package secret holds values that must never reach a log line, an error
// message or a metric label: tokens, passwords and DSNs with passwords.
package secret

import (
	"flag"
	"fmt"
	"log/slog"
)

// redacted is what every printing path shows instead of the value.
const redacted = "[REDACTED]"

// String is a secret string. Every formatting path (fmt verbs, JSON, slog,
// zap's Stringer and ObjectMarshaler detection) prints a placeholder; only
// Reveal returns the value, so a leak needs an explicit call that reviewers
// can grep for.
type String struct {
	value string
}

// New wraps v.
func New(v string) String { return String{value: v} }

// Reveal returns the secret value. Call it only where the value is sent to
// the system it authenticates against.
func (s String) Reveal() string { return s.value }

// IsSet reports whether the secret is non-empty.
func (s String) IsSet() bool { return s.value != "" }

// String implements fmt.Stringer.
func (s String) String() string {
	if s.value == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer so %#v does not print the value.
func (s String) GoString() string { return s.String() }

// Format implements fmt.Formatter so that every verb, including %x and %q,
// prints the placeholder.
func (s String) Format(f fmt.State, _ rune) { _, _ = fmt.Fprint(f, s.String()) }

// MarshalJSON keeps the value out of JSON output (for example --json dumps of
// a configuration).
func (s String) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// MarshalText keeps the value out of text encoders.
func (s String) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// LogValue keeps the value out of log/slog output.
func (s String) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Flag adapts a String to flag.Value so a secret can be set from a flag or an
// environment variable without ever being printed in usage output.
type Flag struct{ S *String }

var _ flag.Value = Flag{}

// String implements flag.Value; it never shows the value.
func (f Flag) String() string {
	if f.S == nil {
		return ""
	}
	return f.S.String()
}

// Set implements flag.Value.
func (f Flag) Set(v string) error {
	*f.S = New(v)
	return nil
}
