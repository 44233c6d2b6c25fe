package publish

import (
	"errors"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ingestd/ingestd/internal/lease"
)

// errLeaseLapsed is what a fenced connection returns instead of writing.
var errLeaseLapsed = errors.New("publisher lease may have lapsed: refusing to write to Kafka")

// fencedConn refuses to write once the publisher lease can no longer be
// proven held. Kafka cannot check ingestd's epoch, so the last point where
// ingestd can stop a stale write is the socket: a check before building a
// batch leaves milliseconds of encoding and batching in which a process
// frozen (SIGSTOP, a VM pause, a long stall) and then thawed past its lease
// would still send after its successor took over. Checking in Write shrinks
// that window to the few instructions between the check and the system call.
// It sits under TLS (see kafkaconn.Settings.Transport), so that the check
// covers every record the TLS layer sends, and the handshakes too.
type fencedConn struct {
	net.Conn
	held *lease.Held
	// sent counts the bytes written (nil: not counted).
	sent prometheus.Counter
}

func (c *fencedConn) Write(b []byte) (int, error) {
	if !c.held.Valid() {
		// Close it so that nothing buffered by a wrapper above (TLS) is
		// flushed later on this connection.
		_ = c.Conn.Close()
		return 0, errLeaseLapsed
	}
	n, err := c.Conn.Write(b)
	if c.sent != nil {
		c.sent.Add(float64(n))
	}
	return n, err
}
