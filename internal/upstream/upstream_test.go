package upstream

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		in   string
		want time.Duration
	}{
		{"empty", "", 0},
		{"seconds", "7", 7 * time.Second},
		{"seconds with spaces", " 3 ", 3 * time.Second},
		{"zero", "0", 0},
		{"negative", "-5", 0},
		{"huge is capped", "999999999999", 24 * time.Hour},
		{"http date", now.Add(90 * time.Second).Format(httpTimeFormat), 90 * time.Second},
		{"http date in the past", now.Add(-time.Minute).Format(httpTimeFormat), 0},
		{"garbage", "soon", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, ParseRetryAfter(tc.in, now))
		})
	}
}

const httpTimeFormat = "Mon, 02 Jan 2006 15:04:05 GMT"

func TestReadBody(t *testing.T) {
	t.Parallel()
	b, err := ReadBody(strings.NewReader("12345"), 5)
	require.NoError(t, err)
	require.Equal(t, "12345", string(b))

	_, err = ReadBody(strings.NewReader("123456"), 5)
	require.ErrorIs(t, err, ErrBodyTooLarge)
}

func TestClassOf(t *testing.T) {
	t.Parallel()
	e := &Error{Class: BadCursor, Op: "fetch journal page", StatusCode: 400, Code: "invalid_cursor"}
	wrapped := fmt.Errorf("poll: %w", e)
	require.Equal(t, BadCursor, ClassOf(wrapped))
	require.True(t, ClassOf(wrapped).Halts())
	require.Equal(t, Retry, ClassOf(errors.New("unclassified")))
	require.False(t, Retry.Halts())
	require.Equal(t, 2*time.Second, RetryAfterOf(&Error{Class: RateLimited, RetryAfter: 2 * time.Second}))
	require.Contains(t, e.Error(), "HTTP 400 invalid_cursor")
}

func TestExcerpt(t *testing.T) {
	t.Parallel()
	// "ошибка " is 13 bytes, so byte 200 falls in the middle of a rune.
	russian := strings.Repeat("ошибка ", 100)
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"short text is kept", "Bad Gateway", "Bad Gateway"},
		{"surrounding space is trimmed", "\n  oops \r\n", "oops"},
		{"control characters become spaces", "line1\nline2\x1b[31m\u0085", "line1 line2 [31m"},
		{"ASCII is cut at 200 bytes", strings.Repeat("a", 300), strings.Repeat("a", 200)},
		{"a rune cut in half is dropped", russian, russian[:199]},
		{"invalid UTF-8 is replaced", "a\xffb", "a\uFFFDb"},
		{"empty", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := Excerpt([]byte(tc.in))
			require.Equal(t, tc.want, got)
			require.True(t, utf8.ValidString(got))
			require.LessOrEqual(t, len(got), MaxExcerpt)
		})
	}
}
