package kafkatest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNewCerts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		opts    CertOptions
		wantIPs []string
		wantDNS []string
		wantCN  string
	}{
		{
			name:    "defaults",
			wantIPs: []string{"127.0.0.1"},
			wantDNS: []string{"localhost"},
			wantCN:  "ingestd",
		},
		{
			name:    "custom hosts and client name",
			opts:    CertOptions{ServerHosts: []string{"kafka-0.kafka.svc", "10.1.2.3", "::1", "kafka-1.kafka.svc"}, ClientCN: "ingestd-canary"},
			wantIPs: []string{"10.1.2.3", "::1"},
			wantDNS: []string{"kafka-0.kafka.svc", "kafka-1.kafka.svc"},
			wantCN:  "ingestd-canary",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			certs := NewCerts(t, tc.opts)
			now := time.Now()

			// The CA file alone must be enough for a peer to trust both
			// certificates, as it is for a daemon configured with paths.
			caPEM, err := os.ReadFile(certs.CAFile)
			require.NoError(t, err)
			roots := x509.NewCertPool()
			require.True(t, roots.AppendCertsFromPEM(caPEM), "CA file holds a PEM certificate")
			block, _ := pem.Decode(caPEM)
			require.NotNil(t, block)
			ca, err := x509.ParseCertificate(block.Bytes)
			require.NoError(t, err)
			require.True(t, ca.IsCA)
			require.True(t, certs.CAPool.Equal(roots), "CAPool holds exactly the CA in CAFile")

			server := certs.ServerTLS(false).Certificates[0].Leaf
			require.NotNil(t, server)
			var ips []string
			for _, ip := range server.IPAddresses {
				ips = append(ips, ip.String())
			}
			require.ElementsMatch(t, tc.wantIPs, ips)
			require.ElementsMatch(t, tc.wantDNS, server.DNSNames)
			for _, h := range append(tc.wantIPs, tc.wantDNS...) {
				_, err := server.Verify(x509.VerifyOptions{DNSName: h, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
				require.NoError(t, err, "server certificate for %s", h)
			}
			_, err = server.Verify(x509.VerifyOptions{DNSName: "elsewhere.example", Roots: roots})
			require.Error(t, err, "server certificate is only for its SANs")

			client, err := tls.LoadX509KeyPair(certs.ClientCertFile, certs.ClientKeyFile)
			require.NoError(t, err)
			require.Equal(t, tc.wantCN, client.Leaf.Subject.CommonName)
			require.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, client.Leaf.ExtKeyUsage)
			_, err = client.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			require.NoError(t, err)
			require.Equal(t, client.Certificate, certs.ClientTLS().Certificates[0].Certificate, "ClientTLS presents the client certificate in the files")

			key, err := os.Stat(certs.ClientKeyFile)
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o600), key.Mode().Perm(), "the private key is readable by its owner only")

			for _, c := range []*x509.Certificate{ca, server, client.Leaf} {
				require.WithinDuration(t, now.Add(-time.Hour), c.NotBefore, time.Minute, c.Subject.CommonName)
				require.WithinDuration(t, now.Add(24*time.Hour), c.NotAfter, time.Minute, c.Subject.CommonName)
			}

			// Another call makes another CA, which must not vouch for this
			// call's certificates.
			other := NewCerts(t, tc.opts)
			_, err = client.Leaf.Verify(x509.VerifyOptions{Roots: other.CAPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			require.Error(t, err)
		})
	}
}

func TestCertsTLSConfigs(t *testing.T) {
	t.Parallel()
	certs := NewCerts(t, CertOptions{})
	tests := []struct {
		name     string
		cfg      *tls.Config
		wantAuth tls.ClientAuthType
		wantCAs  *x509.CertPool
		wantRoot *x509.CertPool
	}{
		{name: "server, any client", cfg: certs.ServerTLS(false), wantAuth: tls.NoClientCert},
		{name: "server, mutual TLS", cfg: certs.ServerTLS(true), wantAuth: tls.RequireAndVerifyClientCert, wantCAs: certs.CAPool},
		{name: "client", cfg: certs.ClientTLS(), wantAuth: tls.NoClientCert, wantRoot: certs.CAPool},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, uint16(tls.VersionTLS12), tc.cfg.MinVersion)
			require.Len(t, tc.cfg.Certificates, 1)
			require.Equal(t, tc.wantAuth, tc.cfg.ClientAuth)
			require.Same(t, tc.wantCAs, tc.cfg.ClientCAs)
			require.Same(t, tc.wantRoot, tc.cfg.RootCAs)
		})
	}
	require.NotSame(t, certs.ServerTLS(false), certs.ServerTLS(false), "each call returns a config the caller may change")
}

func TestWriteCerts(t *testing.T) {
	t.Parallel()
	t.Run("writes the PKI into dir", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		certs, err := WriteCerts(dir, CertOptions{})
		require.NoError(t, err)
		require.Equal(t, filepath.Join(dir, "ca.pem"), certs.CAFile)
		require.Equal(t, filepath.Join(dir, "client.pem"), certs.ClientCertFile)
		require.Equal(t, filepath.Join(dir, "client-key.pem"), certs.ClientKeyFile)
		for _, name := range []string{"ca.pem", "server.pem", "client.pem"} {
			_, err := os.Stat(filepath.Join(dir, name))
			require.NoError(t, err, name)
		}
		for _, name := range []string{"server-key.pem", "client-key.pem"} {
			fi, err := os.Stat(filepath.Join(dir, name))
			require.NoError(t, err, name)
			require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "%s is readable by its owner only", name)
		}
		// A client trusting the CA file verifies the server certificate
		// for kfake's loopback listeners.
		caPEM, err := os.ReadFile(certs.CAFile)
		require.NoError(t, err)
		roots := x509.NewCertPool()
		require.True(t, roots.AppendCertsFromPEM(caPEM))
		_, err = certs.ServerTLS(true).Certificates[0].Leaf.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: roots})
		require.NoError(t, err)
	})
	t.Run("a second call replaces the files and keeps keys private", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		first, err := WriteCerts(dir, CertOptions{})
		require.NoError(t, err)
		// A key file someone opened up must not stay open when replaced.
		require.NoError(t, os.Chmod(first.ClientKeyFile, 0o644))
		second, err := WriteCerts(dir, CertOptions{})
		require.NoError(t, err)
		require.False(t, first.CAPool.Equal(second.CAPool), "a fresh CA")
		fi, err := os.Stat(second.ClientKeyFile)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
		pair, err := tls.LoadX509KeyPair(second.ClientCertFile, second.ClientKeyFile)
		require.NoError(t, err)
		_, err = pair.Leaf.Verify(x509.VerifyOptions{Roots: second.CAPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		require.NoError(t, err)
	})
	t.Run("a missing directory is an error", func(t *testing.T) {
		t.Parallel()
		_, err := WriteCerts(filepath.Join(t.TempDir(), "absent"), CertOptions{})
		require.ErrorContains(t, err, "kafkatest: write")
	})
}
