package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
)

// TestAmbiguous pins which failed writes may still have landed: anything but
// the broker's own error code, and a write of several partitions if any of
// them is ambiguous, however the errors are wrapped.
func TestAmbiguous(t *testing.T) {
	t.Parallel()
	brokerSaidNo := fmt.Errorf("partition 1: %w", fmt.Errorf("%w: %s", kafka.NotLeaderForPartition, "moved"))
	timedOut := fmt.Errorf("partition 2: %w", context.DeadlineExceeded)
	dropped := fmt.Errorf("partition 3: kafka.(*Client).Produce: %w", io.ErrUnexpectedEOF)
	wrap := func(err error) error { return fmt.Errorf("write 10 events to kafka: %w", err) }
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"broker error code", wrap(brokerSaidNo), false},
		{"timeout", wrap(timedOut), true},
		{"dropped connection", wrap(dropped), true},
		{"lease lapsed at the socket", wrap(errLeaseLapsed), true},
		{"all partitions refused by the broker", wrap(errors.Join(brokerSaidNo, brokerSaidNo)), false},
		{"one refused, one timed out", wrap(errors.Join(brokerSaidNo, timedOut)), true},
		{"one timed out, one refused", wrap(errors.Join(timedOut, brokerSaidNo)), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, ambiguous(tc.err))
		})
	}
}
