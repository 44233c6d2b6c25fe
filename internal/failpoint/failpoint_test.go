package failpoint_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/failpoint"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		spec    string
		wantErr string
	}{
		{"", ""},
		{"publish.after-ack=3", ""},
		{"publish.after-ack=3, poller.after-commit=1", ""},
		{"nope=1", "not name=N"},
		{"publish.after-ack", "not name=N"},
		{"publish.after-ack=0", "positive"},
		{"publish.after-ack=x", "positive"},
	}
	for _, tc := range tests {
		_, err := failpoint.Parse(tc.spec)
		if tc.wantErr == "" {
			require.NoError(t, err, tc.spec)
		} else {
			require.ErrorContains(t, err, tc.wantErr, tc.spec)
		}
	}
}

func TestFiresOnTheNthHitOnly(t *testing.T) {
	t.Parallel()
	s, err := failpoint.Parse("publish.after-ack=3")
	require.NoError(t, err)
	var fired []string
	s.WithAction(func(name string) { fired = append(fired, name) })
	for range 5 {
		s.Hit(failpoint.AfterAck)
		s.Hit(failpoint.AfterCommit) // not armed
	}
	require.Equal(t, []string{failpoint.AfterAck}, fired)

	var none *failpoint.Set
	none.Hit(failpoint.AfterAck) // a nil set is inert
}
