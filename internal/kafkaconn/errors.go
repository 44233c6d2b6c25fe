package kafkaconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

// Kinds of access failure, the values of the kind label of
// ingestd_kafka_access_errors_total.
const (
	// KindAuthentication: the SASL handshake failed (a wrong or rotated
	// password, an unknown user, a mechanism the broker does not enable).
	KindAuthentication = "authentication"
	// KindAuthorization: an ACL denied the operation.
	KindAuthorization = "authorization"
	// KindTLS: the TLS handshake failed: the broker's certificate is not
	// signed by a trusted CA or is for another host, the broker refused
	// ingestd's client certificate, or it does not speak TLS at all.
	KindTLS = "tls"
)

// AccessKinds lists every kind, for metrics that start every label at 0.
var AccessKinds = []string{KindAuthentication, KindAuthorization, KindTLS}

// AccessError is a Kafka operation refused for who ingestd is rather than
// for what it sent. Retrying does not help until the operator fixes the
// credentials, the ACLs or the certificates; ingestd retries with backoff
// anyway, so that the fix takes effect without a restart.
type AccessError struct {
	// Kind is KindAuthentication, KindAuthorization or KindTLS.
	Kind string
	// Op is the Kafka operation in ACL terms (DESCRIBE, WRITE, READ,
	// CREATE) or "connect".
	Op string
	// Topic is the topic the operation was on.
	Topic string
	// Principal is who ingestd was (never a secret).
	Principal string
	// Err is kafka-go's or crypto/tls's error.
	Err error
}

func (e *AccessError) Error() string {
	switch e.Kind {
	case KindAuthentication:
		return fmt.Sprintf("kafka refused SASL authentication of %s (check INGESTD_KAFKA_SASL_USERNAME, INGESTD_KAFKA_SASL_PASSWORD and INGESTD_KAFKA_SASL_MECHANISM): %v", e.Principal, e.Err)
	case KindAuthorization:
		return fmt.Sprintf("kafka denied %s on topic %q to %s: grant the ACL (ingestd needs DESCRIBE, WRITE and READ on the topic, and CREATE to create it): %v", e.Op, e.Topic, e.Principal, e.Err)
	default:
		return fmt.Sprintf("TLS handshake with the kafka brokers failed (check INGESTD_KAFKA_TLS_CA_FILE, the broker addresses in INGESTD_KAFKA_BROKERS, and INGESTD_KAFKA_TLS_CERT_FILE for mutual TLS): %v", e.Err)
	}
}

func (e *AccessError) Unwrap() error { return e.Err }

// Translate returns err as an *AccessError when it is an access failure of
// op on topic, and err unchanged otherwise. It is the one place that knows
// how kafka-go and crypto/tls report access failures.
func (s *Settings) Translate(err error, op, topic string) error {
	if err == nil {
		return nil
	}
	var ae *AccessError
	if errors.As(err, &ae) {
		return err
	}
	kind := accessKind(err)
	if kind == "" {
		return err
	}
	if kind != KindAuthorization {
		op = "connect"
	}
	return &AccessError{Kind: kind, Op: op, Topic: topic, Principal: s.principal, Err: err}
}

func accessKind(err error) string {
	var (
		kerr        kafka.Error
		unknownCA   x509.UnknownAuthorityError
		hostname    x509.HostnameError
		invalid     x509.CertificateInvalidError
		verify      *tls.CertificateVerificationError
		alert       tls.AlertError
		recordHdr   tls.RecordHeaderError
		systemRoots x509.SystemRootsError
	)
	switch {
	case errors.As(err, &kerr):
		switch kerr {
		case kafka.SASLAuthenticationFailed, kafka.UnsupportedSASLMechanism, kafka.IllegalSASLState:
			return KindAuthentication
		case kafka.TopicAuthorizationFailed, kafka.ClusterAuthorizationFailed, kafka.GroupAuthorizationFailed,
			kafka.TransactionalIDAuthorizationFailed, kafka.DelegationTokenAuthorizationFailed:
			return KindAuthorization
		}
	case errors.As(err, &verify), errors.As(err, &unknownCA), errors.As(err, &hostname),
		errors.As(err, &invalid), errors.As(err, &alert), errors.As(err, &recordHdr), errors.As(err, &systemRoots):
		return KindTLS
	}
	return ""
}

// Outcome is what a failed produce request certainly did, or did not, do.
type Outcome int

const (
	// Unknown: the broker may have appended the records (a timeout, a
	// dropped connection, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS_AFTER_APPEND).
	// Only what Kafka holds can tell.
	Unknown Outcome = iota
	// Moved: not written, because the partition's leader moved or its
	// broker went away (NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, a
	// refused connection, no known leader). Send again to the leader that
	// fresh metadata names.
	Moved
	// Refused: not written; the broker answered with an error that a resend
	// does not cure at once (an ACL, a record too large, a quota).
	Refused
)

func (o Outcome) String() string {
	switch o {
	case Moved:
		return "moved"
	case Refused:
		return "refused"
	}
	return "unknown"
}

// ProduceOutcome classifies the error of one produce request. It is the one
// place that decides whether a failed write may have landed.
func ProduceOutcome(err error) Outcome {
	var kerr kafka.Error
	if errors.As(err, &kerr) {
		switch kerr {
		case kafka.NotLeaderForPartition, kafka.LeaderNotAvailable, kafka.UnknownTopicOrPartition,
			kafka.FencedLeaderEpoch, kafka.UnknownLeaderEpoch, kafka.BrokerNotAvailable,
			kafka.ReplicaNotAvailable, kafka.NotEnoughReplicas:
			// The broker checks these before it appends anything.
			return Moved
		case kafka.RequestTimedOut, kafka.NotEnoughReplicasAfterAppend, kafka.NetworkException,
			kafka.KafkaStorageError, kafka.Unknown:
			// The leader may have appended the batch and failed only while
			// replicating it or answering.
			return Unknown
		}
		return Refused
	}
	if errors.Is(err, protocol.ErrNoLeader) || errors.Is(err, protocol.ErrNoPartition) || errors.Is(err, protocol.ErrNoTopic) {
		// kafka-go found no leader in its metadata and sent nothing.
		return Moved
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		// The connection was never made, so nothing was sent on it.
		return Moved
	}
	if accessKind(err) != "" {
		// A handshake failure: the connection never carried a request.
		return Refused
	}
	return Unknown
}
