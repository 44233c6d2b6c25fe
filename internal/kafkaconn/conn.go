package kafkaconn

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
)

// ClientID is the client.id ingestd sends to the brokers (it shows in their
// request logs and quotas).
const ClientID = "ingestd"

// Settings are a checked Config with its files loaded: what every Kafka
// connection is made with.
type Settings struct {
	tls       *tls.Config
	sasl      sasl.Mechanism
	principal string
	warnings  []string
}

// Principal is who the brokers see ingestd as (see Config.Principal).
func (s *Settings) Principal() string { return s.principal }

// Warnings are settings that work but are probably not meant (SASL in the
// clear); the daemon logs them once at start.
func (s *Settings) Warnings() []string { return s.warnings }

// DialFunc opens a raw connection to a broker.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Transport returns a kafka-go transport with s's TLS and SASL. wrap, when
// not nil, is given every raw TCP connection before TLS is layered on it, so
// that what it sees (and may refuse to write) is exactly what goes on the
// wire. Each call returns a new transport with its own connections and
// metadata cache.
func (s *Settings) Transport(dialTimeout time.Duration, wrap func(net.Conn) net.Conn) *kafka.Transport {
	d := &net.Dialer{Timeout: dialTimeout}
	t := &kafka.Transport{
		ClientID:    ClientID,
		DialTimeout: dialTimeout,
		TLS:         s.tls,
		SASL:        s.sasl,
	}
	if wrap != nil {
		t.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return wrap(conn), nil
		}
	}
	return t
}

// Dialer returns a kafka-go dialer (for connections to one partition's
// leader) with s's TLS and SASL.
func (s *Settings) Dialer(timeout time.Duration) *kafka.Dialer {
	return &kafka.Dialer{ClientID: ClientID, Timeout: timeout, TLS: s.tls, SASLMechanism: s.sasl}
}
