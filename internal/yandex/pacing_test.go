package yandex

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/upstream"
)

func TestParsePollingDelay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		value []string // nil: no header
		want  PollingDelay
	}{
		{"absent", nil, PollingDelay{}},
		{"empty", []string{""}, PollingDelay{}},
		{"zero", []string{"0"}, PollingDelay{Raw: "0"}},
		{"milliseconds", []string{"100"}, PollingDelay{Wait: 100 * time.Millisecond, Raw: "100"}},
		{"spaces around", []string{" 250 "}, PollingDelay{Wait: 250 * time.Millisecond, Raw: "250"}},
		{"at the cap", []string{"600000"}, PollingDelay{Wait: MaxPollingDelay, Raw: "600000"}},
		{"above the cap", []string{"600001"}, PollingDelay{Wait: MaxPollingDelay, Raw: "600001", Capped: true}},
		{"beyond int64", []string{"99999999999999999999"}, PollingDelay{Wait: MaxPollingDelay, Raw: "99999999999999999999", Capped: true}},
		{"negative", []string{"-5"}, PollingDelay{Raw: "-5", Invalid: true}},
		{"very negative", []string{"-99999999999999999999"}, PollingDelay{Raw: "-99999999999999999999", Invalid: true}},
		{"fraction", []string{"1.5"}, PollingDelay{Raw: "1.5", Invalid: true}},
		{"a duration", []string{"100ms"}, PollingDelay{Raw: "100ms", Invalid: true}},
		{"first of several", []string{"300", "5"}, PollingDelay{Wait: 300 * time.Millisecond, Raw: "300"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			for _, v := range tt.value {
				h.Add(HeaderPollingDelay, v)
			}
			require.Equal(t, tt.want, ParsePollingDelay(h))
		})
	}
}

// TestJournalReadsThePollingDelay: the delay of a page's answer comes with
// the page, and that of a failed answer (429, malformed page) with the
// error; a transport failure carries none.
func TestJournalReadsThePollingDelay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		status  int
		body    string
		wantErr upstream.Class
	}{
		{"page", http.StatusOK, `{"cursor":"c1","events":[]}`, 0},
		{"too often", http.StatusTooManyRequests, `{"code":"too_many_requests","message":"Too often"}`, upstream.RateLimited},
		{"server error", http.StatusServiceUnavailable, `{}`, upstream.Retry},
		{"malformed page", http.StatusOK, `{"cursor":`, upstream.Retry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, _ := newTestClient(t, func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set(HeaderPollingDelay, "150")
				writeJSON(w, tt.status, tt.body)
			}, nil)
			page, err := c.Journal(context.Background(), "")
			want := PollingDelay{Wait: 150 * time.Millisecond, Raw: "150"}
			if tt.wantErr == 0 {
				require.NoError(t, err)
				require.Equal(t, want, page.Delay)
				return
			}
			require.Equal(t, tt.wantErr, upstream.ClassOf(err), "%v", err)
			require.Equal(t, want, PollingDelayOf(err))
		})
	}
	require.Equal(t, PollingDelay{}, PollingDelayOf(&upstream.Error{Class: upstream.Retry}), "no answer, no delay")
	require.Equal(t, PollingDelay{}, PollingDelayOf(context.Canceled))
}
