// Package kafkaconn is how ingestd connects to Kafka brokers: TLS (with an
// optional client certificate) and SASL settings, the kafka-go transports and
// dialers built from them, and the translation of kafka-go's access failures
// (authentication, authorization, certificate checks) into errors that name
// the topic and the principal. Every Kafka connection of ingestd, from the
// producer to `ingestd check-config`, is made through it, so that no path
// silently connects without the site's TLS or credentials.
package kafkaconn

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/ingestd/ingestd/internal/secret"
)

// SASL mechanisms ingestd speaks.
const (
	MechanismPlain       = "PLAIN"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
)

// Config says how to reach the brokers. The zero value is plaintext without
// authentication, as a local development Kafka accepts.
type Config struct {
	// TLS uses TLS to the brokers (INGESTD_KAFKA_TLS, default false). It is
	// implied by any of the TLS files below. Server certificates are always
	// verified: there is deliberately no setting to skip it.
	TLS bool
	// CAFile is a PEM bundle of the CAs trusted for the brokers
	// (INGESTD_KAFKA_TLS_CA_FILE); unset means the system roots. When set,
	// only these CAs are trusted, as Kafka's own truststore works.
	CAFile string
	// CertFile and KeyFile are the client certificate and key for mutual
	// TLS (INGESTD_KAFKA_TLS_CERT_FILE, INGESTD_KAFKA_TLS_KEY_FILE): both or
	// neither.
	CertFile string
	KeyFile  string
	// SASLMechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
	// (INGESTD_KAFKA_SASL_MECHANISM); empty means no SASL.
	SASLMechanism string
	// SASLUsername and SASLPassword are the SASL credentials
	// (INGESTD_KAFKA_SASL_USERNAME, INGESTD_KAFKA_SASL_PASSWORD).
	SASLUsername string
	SASLPassword secret.String
}

// UsesTLS reports whether connections use TLS: when asked to, or when any
// TLS file is given.
func (c Config) UsesTLS() bool {
	return c.TLS || c.CAFile != "" || c.CertFile != "" || c.KeyFile != ""
}

// Principal is who the brokers see ingestd as, in Kafka's ACL notation, for
// error messages: the SASL user, else the client certificate's subject, else
// Kafka's anonymous user. It never includes a secret.
func (c Config) Principal() string {
	switch {
	case c.SASLMechanism != "":
		return "User:" + c.SASLUsername
	case c.CertFile != "":
		if cert, err := loadCert(c.CertFile, c.KeyFile); err == nil && cert.Leaf != nil {
			return "User:" + cert.Leaf.Subject.String()
		}
		return "User:<the client certificate's subject>"
	}
	return "User:ANONYMOUS"
}

// Validate reports every problem, naming the environment variable. It reads
// the certificate files, so that a missing or malformed file is a
// configuration error at start rather than a failed handshake later.
func (c Config) Validate() error {
	_, err := c.Load()
	return err
}

// Load checks c and returns the settings connections are made with.
func (c Config) Load() (*Settings, error) {
	var errs []error
	s := &Settings{principal: c.Principal()}
	if c.UsesTLS() {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.CAFile != "" {
			pool, err := loadCAs(c.CAFile)
			if err != nil {
				errs = append(errs, fmt.Errorf("INGESTD_KAFKA_TLS_CA_FILE: %w", err))
			}
			tc.RootCAs = pool
		}
		switch {
		case c.CertFile != "" && c.KeyFile == "":
			errs = append(errs, errors.New("INGESTD_KAFKA_TLS_KEY_FILE: required with INGESTD_KAFKA_TLS_CERT_FILE (mutual TLS needs both the certificate and its key)"))
		case c.CertFile == "" && c.KeyFile != "":
			errs = append(errs, errors.New("INGESTD_KAFKA_TLS_CERT_FILE: required with INGESTD_KAFKA_TLS_KEY_FILE (mutual TLS needs both the certificate and its key)"))
		case c.CertFile != "":
			cert, err := loadCert(c.CertFile, c.KeyFile)
			if err != nil {
				errs = append(errs, err)
			} else {
				tc.Certificates = []tls.Certificate{cert}
			}
		}
		s.tls = tc
	}
	switch c.SASLMechanism {
	case "":
		if c.SASLUsername != "" || c.SASLPassword.IsSet() {
			errs = append(errs, errors.New("INGESTD_KAFKA_SASL_MECHANISM: required with INGESTD_KAFKA_SASL_USERNAME and INGESTD_KAFKA_SASL_PASSWORD (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"))
		}
	case MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512:
		if c.SASLUsername == "" {
			errs = append(errs, fmt.Errorf("INGESTD_KAFKA_SASL_USERNAME: required with INGESTD_KAFKA_SASL_MECHANISM=%s", c.SASLMechanism))
		}
		if !c.SASLPassword.IsSet() {
			errs = append(errs, fmt.Errorf("INGESTD_KAFKA_SASL_PASSWORD: required with INGESTD_KAFKA_SASL_MECHANISM=%s", c.SASLMechanism))
		}
		if c.SASLUsername != "" && c.SASLPassword.IsSet() {
			m, err := mechanism(c.SASLMechanism, c.SASLUsername, c.SASLPassword)
			if err != nil {
				errs = append(errs, err)
			}
			s.sasl = m
		}
		if !c.UsesTLS() {
			s.warnings = append(s.warnings, fmt.Sprintf("SASL %s without TLS sends the credentials' exchange in the clear; set INGESTD_KAFKA_TLS=true unless the network is trusted", c.SASLMechanism))
		}
	default:
		errs = append(errs, fmt.Errorf("INGESTD_KAFKA_SASL_MECHANISM: %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", c.SASLMechanism))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

func mechanism(name, user string, pass secret.String) (sasl.Mechanism, error) {
	switch name {
	case MechanismPlain:
		return plain.Mechanism{Username: user, Password: pass.Reveal()}, nil
	case MechanismSCRAMSHA256, MechanismSCRAMSHA512:
		algo := scram.SHA256
		if name == MechanismSCRAMSHA512 {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, user, pass.Reveal())
		if err != nil {
			// The SCRAM library rejects credentials it cannot normalize
			// (SASLprep); its message never holds the password.
			return nil, fmt.Errorf("INGESTD_KAFKA_SASL_USERNAME, INGESTD_KAFKA_SASL_PASSWORD: not usable with %s: %w", name, err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("INGESTD_KAFKA_SASL_MECHANISM: %q is not supported", name)
}

// loadCAs reads a PEM bundle of CA certificates.
func loadCAs(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", path, n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// loadCert reads a client certificate and its key, naming the variable of
// the file at fault.
func loadCert(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("INGESTD_KAFKA_TLS_CERT_FILE: read client certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("INGESTD_KAFKA_TLS_KEY_FILE: read client key: %w", err)
	}
	if !strings.Contains(string(certPEM), "-----BEGIN CERTIFICATE-----") {
		return tls.Certificate{}, fmt.Errorf("INGESTD_KAFKA_TLS_CERT_FILE: %s holds no PEM certificate", certFile)
	}
	if block, _ := pem.Decode(keyPEM); block == nil || !strings.Contains(block.Type, "PRIVATE KEY") {
		return tls.Certificate{}, fmt.Errorf("INGESTD_KAFKA_TLS_KEY_FILE: %s holds no PEM private key", keyFile)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// crypto/tls's messages name neither file nor key material.
		return tls.Certificate{}, fmt.Errorf("INGESTD_KAFKA_TLS_CERT_FILE, INGESTD_KAFKA_TLS_KEY_FILE: %s and %s do not make a certificate and its key: %w", certFile, keyFile, err)
	}
	return cert, nil
}
