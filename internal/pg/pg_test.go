package pg_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/pg"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/secret"
)

func TestOpenRequiresMigration(t *testing.T) {
	t.Parallel()
	cfg := pg.DefaultConfig()
	cfg.DatabaseURL = secret.New(pgtest.Schema(t))
	_, err := pg.Open(context.Background(), cfg)
	require.ErrorIs(t, err, pg.ErrNotMigrated)
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := pg.DefaultConfig()
	cfg.DatabaseURL = secret.New(pgtest.Schema(t))
	first, err := pg.Migrate(ctx, cfg)
	require.NoError(t, err)
	require.NotEmpty(t, first)
	again, err := pg.Migrate(ctx, cfg)
	require.NoError(t, err)
	require.Empty(t, again)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     pg.Config
		wantErr string
	}{
		{"missing url", pg.Config{MaxConns: 8}, "INGESTD_DATABASE_URL: required"},
		{"bad url", pg.Config{DatabaseURL: secret.New("postgres://u:hunter2@[::1"), MaxConns: 8}, "INGESTD_DATABASE_URL: not a valid"},
		{"pool too small", pg.Config{DatabaseURL: secret.New("postgres://localhost/db"), MaxConns: 1}, "INGESTD_DATABASE_MAX_CONNS"},
		{"ok", pg.Config{DatabaseURL: secret.New("postgres://localhost/db"), MaxConns: 8}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
			require.NotContains(t, err.Error(), "hunter2")
		})
	}
}
