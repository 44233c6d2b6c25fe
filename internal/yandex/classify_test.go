package yandex

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

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
			got := excerpt([]byte(tc.in))
			require.Equal(t, tc.want, got)
			require.True(t, utf8.ValidString(got))
			require.LessOrEqual(t, len(got), maxMessageBytes)
		})
	}
}

func TestProviderError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		body     string
		wantCode string
		wantMsg  string
	}{
		{"documented shape", `{"code":"too_many_requests","message":"Слишком много запросов"}`, "too_many_requests", "Слишком много запросов"},
		{"message only", `{"message":"no code"}`, "", "no code"},
		{"numeric code", `{"code":42,"message":"x"}`, "42", "x"},
		{"null code", `{"code":null,"message":"x"}`, "", "x"},
		{"long message is cut", `{"code":"c","message":"` + strings.Repeat("m", 500) + `"}`, "c", strings.Repeat("m", 200)},
		{"JSON of another shape", `{"error":"nope"}`, "", `{"error":"nope"}`},
		{"plain text", "upstream connect error\n", "", "upstream connect error"},
		{"empty", "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, msg := providerError([]byte(tc.body))
			require.Equal(t, tc.wantCode, code)
			require.Equal(t, tc.wantMsg, msg)
		})
	}
}
