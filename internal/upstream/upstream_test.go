package upstream

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
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
	big := strings.Repeat("0123456789", 10_000) // 100,000 bytes, many reads
	for _, tc := range []struct {
		name        string
		body        string
		limit, size int64
		tooLarge    bool
	}{
		{name: "exact limit", body: "12345", limit: 5},
		{name: "one past the limit", body: "123456", limit: 5, tooLarge: true},
		{name: "empty", body: "", limit: 5},
		{name: "size known", body: big, limit: 1 << 20, size: int64(len(big))},
		{name: "size unknown", body: big, limit: 1 << 20, size: -1},
		{name: "size understated", body: big, limit: 1 << 20, size: 10},
		{name: "size overstated", body: "12345", limit: 1 << 20, size: 1000},
		{name: "size past the limit", body: big, limit: 50_000, size: int64(len(big)), tooLarge: true},
		{name: "large body, limit exactly", body: big, limit: int64(len(big)), size: -1},
		{name: "large body, one past the limit", body: big, limit: int64(len(big)) - 1, size: -1, tooLarge: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// iotest.HalfReader returns short reads, as a socket does.
			b, err := ReadBody(iotest.HalfReader(strings.NewReader(tc.body)), tc.limit, tc.size)
			if tc.tooLarge {
				require.ErrorIs(t, err, ErrBodyTooLarge)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.body, string(b))
		})
	}
	_, err := ReadBody(iotest.ErrReader(io.ErrUnexpectedEOF), 5, 0)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF, "read errors are returned")
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

func TestValidHeaderValue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"empty", "", true},
		{"plain", "ru", true},
		{"space and tab", "Bearer a\tb", true},
		{"UTF-8", "узбек", true},
		{"newline", "ru\nX-Injected: 1", false},
		{"carriage return", "ru\r", false},
		{"NUL", "a\x00", false},
		{"DEL", "a\x7f", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, ValidHeaderValue(tc.in))
		})
	}
}
