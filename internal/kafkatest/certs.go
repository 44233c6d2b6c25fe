package kafkatest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CertOptions configures NewCerts and WriteCerts. The zero value is ready to
// use.
type CertOptions struct {
	// ServerHosts are the server certificate's subject alternative names.
	// Entries that parse as IP addresses become IP SANs, the rest DNS
	// SANs. The default is 127.0.0.1 and localhost, which covers kfake's
	// listeners.
	ServerHosts []string
	// ClientCN is the client certificate's common name; the default is
	// "ingestd".
	ClientCN string
}

// Certs is a test PKI: a self-signed CA and a server and a client
// certificate signed by it. The files are PEM and live in the directory
// given to WriteCerts (the test's temporary directory for NewCerts).
type Certs struct {
	// CAFile is the CA certificate.
	CAFile string
	// ClientCertFile and ClientKeyFile are the client certificate and its
	// PKCS #8 private key.
	ClientCertFile string
	ClientKeyFile  string
	// CAPool holds the CA certificate.
	CAPool *x509.CertPool

	server tls.Certificate
	client tls.Certificate
}

// NewCerts makes a fresh CA, a server certificate (for TLS server auth) and a
// client certificate (for TLS client auth) signed by it, valid from an hour
// ago until a day from now, and writes them as PEM files into t.TempDir().
// It is WriteCerts for a test: any error fails the test.
func NewCerts(t testing.TB, o CertOptions) *Certs {
	t.Helper()
	c, err := WriteCerts(t.TempDir(), o)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return c
}

// WriteCerts makes a fresh CA, a server certificate (for TLS server auth) and
// a client certificate (for TLS client auth) signed by it, valid from an hour
// ago until a day from now, and writes them as PEM files into dir, which must
// exist: ca.pem, server.pem, server-key.pem, client.pem and client-key.pem
// (the keys readable by their owner only). It is for programs, such as test
// harnesses, that make certificates outside a test; tests use NewCerts.
func WriteCerts(dir string, o CertOptions) (*Certs, error) {
	if len(o.ServerHosts) == 0 {
		o.ServerHosts = []string{"127.0.0.1", "localhost"}
	}
	if o.ClientCN == "" {
		o.ClientCN = "ingestd"
	}
	now := time.Now()

	caKey, err := newKey()
	if err != nil {
		return nil, err
	}
	caSerial, err := newSerial()
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          caSerial,
		Subject:               pkix.Name{CommonName: "kafkatest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: create CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: parse CA certificate: %w", err)
	}

	serverSerial, err := newSerial()
	if err != nil {
		return nil, err
	}
	serverTmpl := &x509.Certificate{
		SerialNumber: serverSerial,
		Subject:      pkix.Name{CommonName: o.ServerHosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range o.ServerHosts {
		if ip := net.ParseIP(h); ip != nil {
			serverTmpl.IPAddresses = append(serverTmpl.IPAddresses, ip)
		} else {
			serverTmpl.DNSNames = append(serverTmpl.DNSNames, h)
		}
	}
	clientSerial, err := newSerial()
	if err != nil {
		return nil, err
	}
	clientTmpl := &x509.Certificate{
		SerialNumber: clientSerial,
		Subject:      pkix.Name{CommonName: o.ClientCN},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}

	c := &Certs{
		CAFile:         filepath.Join(dir, "ca.pem"),
		ClientCertFile: filepath.Join(dir, "client.pem"),
		ClientKeyFile:  filepath.Join(dir, "client-key.pem"),
		CAPool:         x509.NewCertPool(),
	}
	c.CAPool.AddCert(caCert)
	if err := writePEM(c.CAFile, "CERTIFICATE", caDER, 0o644); err != nil {
		return nil, err
	}
	if c.server, err = issue(serverTmpl, caCert, caKey, filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")); err != nil {
		return nil, err
	}
	if c.client, err = issue(clientTmpl, caCert, caKey, c.ClientCertFile, c.ClientKeyFile); err != nil {
		return nil, err
	}
	return c, nil
}

// ServerTLS returns a listener configuration for kfake.TLS that presents the
// server certificate. With requireClientCert, a client must present a
// certificate signed by the CA (mutual TLS). Each call returns a new config.
func (c *Certs) ServerTLS(requireClientCert bool) *tls.Config {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{c.server},
	}
	if requireClientCert {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = c.CAPool
	}
	return cfg
}

// ClientTLS returns a client configuration that trusts the CA and presents
// the client certificate, for TLSOpt. Each call returns a new config.
func (c *Certs) ClientTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      c.CAPool,
		Certificates: []tls.Certificate{c.client},
	}
}

// issue signs tmpl with the CA, writes the certificate and a new key to
// certFile and keyFile, and returns them as a TLS certificate.
func issue(tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey, certFile, keyFile string) (tls.Certificate, error) {
	key, err := newKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("kafkatest: create certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("kafkatest: marshal key: %w", err)
	}
	if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	if err := writePEM(keyFile, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	// Loading the pair back from the files checks that what was written is
	// what a client configured with the file paths will load.
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("kafkatest: load key pair %s: %w", certFile, err)
	}
	return pair, nil
}

func newKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: generate key: %w", err)
	}
	return key, nil
}

// newSerial returns a random 128-bit serial number, as RFC 5280 asks serial
// numbers to be unique per CA.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("kafkatest: serial number: %w", err)
	}
	return n, nil
}

// writePEM writes der as one PEM block of type typ to path with perm. An
// existing file keeps its permissions under os.WriteFile, so it is removed
// first: a private key must not stay readable by others.
func writePEM(path, typ string, der []byte, perm os.FileMode) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("kafkatest: write %s: %w", path, err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), perm); err != nil {
		return fmt.Errorf("kafkatest: write %s: %w", path, err)
	}
	return nil
}
