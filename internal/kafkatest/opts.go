package kafkatest

import (
	"crypto/tls"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// SASLOpt returns a franz-go option that authenticates as user with pass over
// mechanism, which is "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512" (the ones
// kfake.Superuser and kfake.User accept). It panics on any other mechanism,
// because that is a mistake in the test, not a condition to handle.
func SASLOpt(mechanism, user, pass string) kgo.Opt {
	var m sasl.Mechanism
	switch mechanism {
	case "PLAIN":
		m = plain.Auth{User: user, Pass: pass}.AsMechanism()
	case "SCRAM-SHA-256":
		m = scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		m = scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
	default:
		panic(fmt.Sprintf("kafkatest: unknown SASL mechanism %q (want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", mechanism))
	}
	return kgo.SASL(m)
}

// TLSOpt returns a franz-go option that dials brokers over TLS with cfg, for
// example Certs.ClientTLS(). franz-go clones cfg on every dial and sets its
// ServerName from the broker's host when cfg leaves it empty.
func TLSOpt(cfg *tls.Config) kgo.Opt {
	return kgo.DialTLSConfig(cfg)
}

// FailSASL makes the cluster answer SASL authentication with
// SASL_AUTHENTICATION_FAILED for as long as fail returns true, as Kafka
// answers a wrong password before it closes the connection. kfake itself
// closes the connection without an answer, which a client cannot tell from
// a network failure; this plays the broker's credential check for tests of
// what a client does with the answer.
func (c *Cluster) FailSASL(fail func() bool) {
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !fail() {
			return nil, nil, false
		}
		resp := req.(*kmsg.SASLAuthenticateRequest).ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = 58 // SASL_AUTHENTICATION_FAILED
		msg := "Authentication failed: Invalid username or password"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
}
