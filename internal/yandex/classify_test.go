package yandex

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

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
