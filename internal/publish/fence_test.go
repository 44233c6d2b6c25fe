package publish

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/lease"
)

func TestFencedConnRefusesToWriteOnceTheLeaseLapsed(t *testing.T) {
	t.Parallel()
	l := lease.Lease{Name: "publisher", Holder: "x", Epoch: 3}
	tests := []struct {
		name  string
		held  *lease.Held
		wants error
	}{
		{"live lease writes", lease.NewHeld(l, time.Now(), time.Minute), nil},
		{"lapsed lease refuses", lease.NewHeld(l, time.Now().Add(-time.Minute), 10*time.Second), errLeaseLapsed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := net.Pipe()
			defer func() { _ = b.Close() }()
			go func() {
				buf := make([]byte, 4)
				_, _ = b.Read(buf)
			}()
			c := &fencedConn{Conn: a, held: tc.held}
			n, err := c.Write([]byte("ping"))
			if tc.wants == nil {
				require.NoError(t, err)
				require.Equal(t, 4, n)
				return
			}
			require.ErrorIs(t, err, tc.wants)
			require.Zero(t, n)
			_, err = a.Write([]byte("x"))
			require.Error(t, err, "the connection is closed, so nothing buffered goes out later")
		})
	}
}
