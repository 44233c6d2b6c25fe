package kafkaconn_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/kafkaconn"
	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/secret"
)

const password = "pa55-word-never-printed"

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	certs := kafkatest.NewCerts(t, kafkatest.CertOptions{})
	other := kafkatest.NewCerts(t, kafkatest.CertOptions{})
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "junk.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("junk"), 0o600))
	tests := []struct {
		name    string
		cfg     kafkaconn.Config
		wantErr []string // every one must be named; nil: valid
	}{
		{"plaintext", kafkaconn.Config{}, nil},
		{"tls with system roots", kafkaconn.Config{TLS: true}, nil},
		{"tls with a CA file", kafkaconn.Config{CAFile: certs.CAFile}, nil},
		{"mutual tls", kafkaconn.Config{CAFile: certs.CAFile, CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile}, nil},
		{"scram over tls", kafkaconn.Config{TLS: true, SASLMechanism: "SCRAM-SHA-512", SASLUsername: "u", SASLPassword: secret.New(password)}, nil},
		{"plain", kafkaconn.Config{SASLMechanism: "PLAIN", SASLUsername: "u", SASLPassword: secret.New(password)}, nil},
		{"missing CA file", kafkaconn.Config{CAFile: filepath.Join(dir, "absent")}, []string{"INGESTD_KAFKA_TLS_CA_FILE"}},
		{"CA file not PEM", kafkaconn.Config{CAFile: notPEM}, []string{"INGESTD_KAFKA_TLS_CA_FILE", "no PEM certificate"}},
		{"cert without key", kafkaconn.Config{CertFile: certs.ClientCertFile}, []string{"INGESTD_KAFKA_TLS_KEY_FILE"}},
		{"key without cert", kafkaconn.Config{KeyFile: certs.ClientKeyFile}, []string{"INGESTD_KAFKA_TLS_CERT_FILE"}},
		{"cert not PEM", kafkaconn.Config{CertFile: notPEM, KeyFile: certs.ClientKeyFile}, []string{"INGESTD_KAFKA_TLS_CERT_FILE"}},
		{"key not PEM", kafkaconn.Config{CertFile: certs.ClientCertFile, KeyFile: notPEM}, []string{"INGESTD_KAFKA_TLS_KEY_FILE"}},
		{"key of another certificate", kafkaconn.Config{CertFile: certs.ClientCertFile, KeyFile: other.ClientKeyFile}, []string{"INGESTD_KAFKA_TLS_KEY_FILE"}},
		{"unknown mechanism", kafkaconn.Config{SASLMechanism: "OAUTHBEARER", SASLUsername: "u", SASLPassword: secret.New(password)}, []string{"INGESTD_KAFKA_SASL_MECHANISM"}},
		{"lower-case mechanism", kafkaconn.Config{SASLMechanism: "scram-sha-512", SASLUsername: "u", SASLPassword: secret.New(password)}, []string{"INGESTD_KAFKA_SASL_MECHANISM"}},
		{"mechanism without credentials", kafkaconn.Config{SASLMechanism: "SCRAM-SHA-256"}, []string{"INGESTD_KAFKA_SASL_USERNAME", "INGESTD_KAFKA_SASL_PASSWORD"}},
		{"password without mechanism", kafkaconn.Config{SASLUsername: "u", SASLPassword: secret.New(password)}, []string{"INGESTD_KAFKA_SASL_MECHANISM"}},
		{"username without mechanism", kafkaconn.Config{SASLUsername: "u"}, []string{"INGESTD_KAFKA_SASL_MECHANISM"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if tc.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, w := range tc.wantErr {
				require.ErrorContains(t, err, w)
			}
			require.NotContains(t, err.Error(), password)
		})
	}
}

func TestSASLWithoutTLSWarns(t *testing.T) {
	t.Parallel()
	s, err := kafkaconn.Config{SASLMechanism: "PLAIN", SASLUsername: "u", SASLPassword: secret.New(password)}.Load()
	require.NoError(t, err)
	require.Len(t, s.Warnings(), 1)
	require.Contains(t, s.Warnings()[0], "INGESTD_KAFKA_TLS")
	s, err = kafkaconn.Config{TLS: true, SASLMechanism: "PLAIN", SASLUsername: "u", SASLPassword: secret.New(password)}.Load()
	require.NoError(t, err)
	require.Empty(t, s.Warnings())
}

func TestPrincipal(t *testing.T) {
	t.Parallel()
	certs := kafkatest.NewCerts(t, kafkatest.CertOptions{ClientCN: "ingestd-prod"})
	tests := []struct {
		name string
		cfg  kafkaconn.Config
		want string
	}{
		{"anonymous", kafkaconn.Config{}, "User:ANONYMOUS"},
		{"sasl user", kafkaconn.Config{SASLMechanism: "PLAIN", SASLUsername: "svc", SASLPassword: secret.New(password)}, "User:svc"},
		{"certificate subject", kafkaconn.Config{CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile}, "User:CN=ingestd-prod"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, tc.cfg.Principal())
		})
	}
}

// TestProduceOutcome pins which failed produce requests may have landed:
// only those Kafka may have appended go through the read-back.
func TestProduceOutcome(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return fmt.Errorf("partition 3: %w", err) }
	withMessage := func(e kafka.Error) error { return fmt.Errorf("%w: %s", e, "broker says") }
	dialRefused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	tests := []struct {
		name string
		err  error
		want kafkaconn.Outcome
	}{
		{"not leader", wrap(withMessage(kafka.NotLeaderForPartition)), kafkaconn.Moved},
		{"leader not available", wrap(kafka.LeaderNotAvailable), kafkaconn.Moved},
		{"fenced leader epoch", wrap(kafka.FencedLeaderEpoch), kafkaconn.Moved},
		{"not enough replicas (checked before the append)", wrap(kafka.NotEnoughReplicas), kafkaconn.Moved},
		{"no leader in kafka-go's metadata", wrap(protocol.NewErrNoLeader("t", 3)), kafkaconn.Moved},
		{"connection refused at dial", wrap(dialRefused), kafkaconn.Moved},
		{"request timed out on the broker", wrap(kafka.RequestTimedOut), kafkaconn.Unknown},
		{"not enough replicas after append", wrap(kafka.NotEnoughReplicasAfterAppend), kafkaconn.Unknown},
		{"unknown server error", wrap(kafka.Unknown), kafkaconn.Unknown},
		{"client timeout", wrap(context.DeadlineExceeded), kafkaconn.Unknown},
		{"connection reset", wrap(reset), kafkaconn.Unknown},
		{"connection dropped", wrap(io.ErrUnexpectedEOF), kafkaconn.Unknown},
		{"topic authorization", wrap(kafka.TopicAuthorizationFailed), kafkaconn.Refused},
		{"record too large", wrap(kafka.MessageSizeTooLarge), kafkaconn.Refused},
		{"sasl failed", wrap(kafka.SASLAuthenticationFailed), kafkaconn.Refused},
		{"untrusted certificate", wrap(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), kafkaconn.Refused},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, kafkaconn.ProduceOutcome(tc.err), "%v", tc.err)
		})
	}
}

func TestTranslateNamesTopicAndPrincipalNeverThePassword(t *testing.T) {
	t.Parallel()
	s, err := kafkaconn.Config{TLS: true, SASLMechanism: "SCRAM-SHA-512", SASLUsername: "svc-ingestd", SASLPassword: secret.New(password)}.Load()
	require.NoError(t, err)
	tests := []struct {
		name     string
		err      error
		op       string
		wantKind string // "": not an access failure
		want     []string
	}{
		{"sasl", fmt.Errorf("dial: %w", kafka.SASLAuthenticationFailed), "DESCRIBE", kafkaconn.KindAuthentication, []string{"User:svc-ingestd", "INGESTD_KAFKA_SASL_PASSWORD"}},
		{"acl", fmt.Errorf("%w: denied", kafka.TopicAuthorizationFailed), "WRITE", kafkaconn.KindAuthorization, []string{"WRITE", `"events"`, "User:svc-ingestd"}},
		{"cluster acl", kafka.ClusterAuthorizationFailed, "CREATE", kafkaconn.KindAuthorization, []string{"CREATE", "User:svc-ingestd"}},
		{"unknown CA", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, "DESCRIBE", kafkaconn.KindTLS, []string{"INGESTD_KAFKA_TLS_CA_FILE"}},
		{"wrong host", x509.HostnameError{Certificate: &x509.Certificate{}, Host: "10.0.0.1"}, "DESCRIBE", kafkaconn.KindTLS, []string{"INGESTD_KAFKA_BROKERS"}},
		{"not an access failure", kafka.NotLeaderForPartition, "WRITE", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := s.Translate(tc.err, tc.op, "events")
			require.ErrorIs(t, got, tc.err)
			var ae *kafkaconn.AccessError
			if tc.wantKind == "" {
				require.False(t, errors.As(got, &ae))
				return
			}
			require.ErrorAs(t, got, &ae)
			require.Equal(t, tc.wantKind, ae.Kind)
			for _, w := range tc.want {
				require.Contains(t, got.Error(), w)
			}
			require.NotContains(t, got.Error(), password)
			require.NotContains(t, fmt.Sprintf("%+v %#v", got, ae), password)
		})
	}
}
