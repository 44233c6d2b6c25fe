package publish

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/segmentio/kafka-go"

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
type fencedConn struct {
	net.Conn
	held *lease.Held
}

func (c *fencedConn) Write(b []byte) (int, error) {
	if !c.held.Valid() {
		// Close it so that nothing buffered by a wrapper above is flushed
		// later on this connection.
		_ = c.Conn.Close()
		return 0, errLeaseLapsed
	}
	return c.Conn.Write(b)
}

// fencedTransport returns a transport whose connections write only while h
// is valid. Each lease term gets its own, so no connection outlives the term
// it was fenced for.
func fencedTransport(h *lease.Held) *kafka.Transport {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &kafka.Transport{
		ClientID:    "ingestd",
		DialTimeout: 5 * time.Second,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &fencedConn{Conn: conn, held: h}, nil
		},
	}
}
