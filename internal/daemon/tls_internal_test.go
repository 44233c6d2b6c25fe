package daemon

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestUpstreamTLSIsVerified: an upstream with a certificate from an unknown
// CA is refused, and trusted once INGESTD_CA_BUNDLE names that CA.
func TestUpstreamTLSIsVerified(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)

	plain, err := UpstreamConfig{}.HTTPClient(0)
	require.NoError(t, err)
	_, err = plain.Get(srv.URL)
	require.ErrorContains(t, err, "certificate", "an unknown CA is never trusted")

	bundle := filepath.Join(t.TempDir(), "ca.pem")
	cert := srv.Certificate()
	require.NoError(t, os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600))
	trusting, err := UpstreamConfig{CABundle: bundle}.HTTPClient(0)
	require.NoError(t, err)
	resp, err := trusting.Get(srv.URL)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	// A bundle that is not PEM is a configuration error naming the variable.
	bad := filepath.Join(t.TempDir(), "bad.pem")
	require.NoError(t, os.WriteFile(bad, []byte("not a certificate"), 0o600))
	cfg := DefaultConfig()
	cfg.Upstream.CABundle = bad
	require.ErrorContains(t, cfg.Validate(), "INGESTD_CA_BUNDLE")
}
