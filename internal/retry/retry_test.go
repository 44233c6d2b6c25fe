package retry_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/retry"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  retry.Config
		want []string
	}{
		{"defaults", retry.DefaultConfig(), nil},
		{"zero initial", retry.Config{Max: time.Second}, []string{"INGESTD_BACKOFF_INITIAL: must be positive"}},
		{"max below initial", retry.Config{Initial: time.Second, Max: time.Millisecond}, []string{"INGESTD_BACKOFF_MAX: must be at least INGESTD_BACKOFF_INITIAL (1s), got 1ms"}},
		{"both", retry.Config{Initial: -time.Second, Max: -2 * time.Second}, []string{"INGESTD_BACKOFF_INITIAL", "INGESTD_BACKOFF_MAX"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

// TestBackoffGrowsWithinBoundsAndResets checks the jittered waits: each is
// within ±50% of its interval, intervals double up to the maximum, and
// Reset starts over.
func TestBackoffGrowsWithinBoundsAndResets(t *testing.T) {
	t.Parallel()
	b := retry.Config{Initial: 100 * time.Millisecond, Max: time.Second}.New()
	interval := 100 * time.Millisecond
	for range 10 {
		d := b.Next()
		require.GreaterOrEqual(t, d, interval/2)
		require.LessOrEqual(t, d, interval*3/2)
		interval = min(2*interval, time.Second)
	}
	b.Reset()
	require.LessOrEqual(t, b.Next(), 150*time.Millisecond)
}

func TestSleep(t *testing.T) {
	t.Parallel()
	closed := make(chan struct{})
	close(closed)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		d    time.Duration
		wake []<-chan struct{}
		live bool
	}{
		{"elapses", context.Background(), time.Millisecond, nil, true},
		{"woken early", context.Background(), time.Hour, []<-chan struct{}{closed}, true},
		{"woken by the second channel", context.Background(), time.Hour, []<-chan struct{}{nil, closed}, true},
		{"cancelled", cancelled, time.Hour, nil, false},
		{"cancelled and woken", cancelled, time.Hour, []<-chan struct{}{closed}, false},
		{"no wait", context.Background(), 0, nil, true},
		{"no wait, cancelled", cancelled, 0, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			done := make(chan bool, 1)
			go func() { done <- retry.Sleep(tc.ctx, tc.d, tc.wake...) }()
			select {
			case live := <-done:
				require.Equal(t, tc.live, live)
			case <-time.After(10 * time.Second):
				t.Fatal("Sleep did not return")
			}
		})
	}
}
