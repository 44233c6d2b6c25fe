package kafkatest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CertOptions configures NewCerts. The zero value is ready to use.
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
// certificate signed by it. The files are PEM and live in the test's
// temporary directory.
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
func NewCerts(t testing.TB, o CertOptions) *Certs {
	t.Helper()
	if len(o.ServerHosts) == 0 {
		o.ServerHosts = []string{"127.0.0.1", "localhost"}
	}
	if o.ClientCN == "" {
		o.ClientCN = "ingestd"
	}
	dir := t.TempDir()
	now := time.Now()

	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          newSerial(t),
		Subject:               pkix.Name{CommonName: "kafkatest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("kafkatest: create CA certificate: %v", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatalf("kafkatest: parse CA certificate: %v", err)
	}

	serverTmpl := &x509.Certificate{
		SerialNumber: newSerial(t),
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
	clientTmpl := &x509.Certificate{
		SerialNumber: newSerial(t),
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
	writePEM(t, c.CAFile, "CERTIFICATE", caDER, 0o644)
	c.server = issue(t, serverTmpl, caCert, caKey, filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"))
	c.client = issue(t, clientTmpl, caCert, caKey, c.ClientCertFile, c.ClientKeyFile)
	return c
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
func issue(t testing.TB, tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey, certFile, keyFile string) tls.Certificate {
	t.Helper()
	key := newKey(t)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatalf("kafkatest: create certificate %s: %v", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("kafkatest: marshal key: %v", err)
	}
	writePEM(t, certFile, "CERTIFICATE", der, 0o644)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER, 0o600)
	// Loading the pair back from the files checks that what was written is
	// what a client configured with the file paths will load.
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("kafkatest: load key pair %s: %v", certFile, err)
	}
	return pair
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("kafkatest: generate key: %v", err)
	}
	return key
}

// newSerial returns a random 128-bit serial number, as RFC 5280 asks serial
// numbers to be unique per CA.
func newSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatalf("kafkatest: serial number: %v", err)
	}
	return n
}

func writePEM(t testing.TB, path, typ string, der []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), perm); err != nil {
		t.Fatalf("kafkatest: write %s: %v", path, err)
	}
}
