package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/cli"
	"github.com/ingestd/ingestd/internal/pg"
	"github.com/ingestd/ingestd/internal/pgtest"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/storage"
	"github.com/ingestd/ingestd/internal/watchlist"
)

// btsDB returns the DSN of a migrated schema.
func btsDB(t *testing.T) string {
	t.Helper()
	dsn := pgtest.Schema(t)
	cfg := pg.DefaultConfig()
	cfg.DatabaseURL = secret.New(dsn)
	_, err := pg.Migrate(context.Background(), cfg)
	require.NoError(t, err)
	return dsn
}

// btsRun runs `ingestd bts ARGS... --database-url DSN` and returns stdout,
// stderr and the exit status.
func btsRun(t *testing.T, dsn string, args ...string) (string, string, int) {
	t.Helper()
	if dsn != "" {
		args = append(args, "--database-url", dsn)
	}
	var stdout, stderr bytes.Buffer
	err := runBTS(context.Background(), args, &stdout, &stderr)
	code := cli.ExitCode("ingestd", err, &stderr) // prints the error to stderr
	return stdout.String(), stderr.String(), code
}

func TestBTSTrackUntrack(t *testing.T) {
	t.Parallel()
	dsn := btsDB(t)

	out, errOut, code := btsRun(t, dsn, "track", "4293644", "11950975")
	require.Zero(t, code, errOut)
	require.Contains(t, out, "4293644   added")
	require.Contains(t, out, "11950975  added")
	require.Contains(t, out, "bts/default: 2 added, 0 already tracked")

	// Flags may follow the ids; --json prints the admin API's shape.
	out, errOut, code = btsRun(t, dsn, "track", "11950975", "--json", "777")
	require.Zero(t, code, errOut)
	var tracked map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &tracked))
	require.Equal(t, map[string]any{"source": "bts/default", "added": []any{"777"}, "already_tracked": []any{"11950975"}}, tracked)

	out, errOut, code = btsRun(t, dsn, "untrack", "777", "999")
	require.Zero(t, code, errOut)
	require.Contains(t, out, "777  removed")
	require.Contains(t, out, "999  not tracked")
	out, _, code = btsRun(t, dsn, "untrack", "--json", "999")
	require.Zero(t, code)
	require.JSONEq(t, `{"source":"bts/default","removed":[],"not_tracked":["999"]}`, out)

	// Another account has its own watch-list.
	out, errOut, code = btsRun(t, dsn, "track", "--bts-account", "shop", "4293644")
	require.Zero(t, code, errOut)
	require.Contains(t, out, "bts/shop: 1 added")
}

func TestBTSList(t *testing.T) {
	t.Parallel()
	dsn := btsDB(t)
	ctx := context.Background()
	cfg := pg.DefaultConfig()
	cfg.DatabaseURL = secret.New(dsn)
	store, err := storage.Open(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(store.Close)

	// More orders than one page, so that listing pages through them.
	ids := make([]string, 2*btsListPage+17)
	for i := range ids {
		ids[i] = strconv.Itoa(5_000_000 + i)
	}
	_, err = store.Watchlist.Track(ctx, "bts/default", ids)
	require.NoError(t, err)
	claims, err := store.Watchlist.ClaimDue(ctx, "bts/default", "", 1, 60e9)
	require.NoError(t, err)
	_, _, err = store.Watchlist.RecordObservation(ctx, "bts/default", watchlist.Observation{
		OrderID: claims[0].OrderID, ChangeCount: 0, Token: claims[0].Token, NotFound: true,
	})
	require.NoError(t, err)

	out, errOut, code := btsRun(t, dsn, "list")
	require.Zero(t, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, len(ids)+2, "header, one row per order, footer")
	require.True(t, strings.HasPrefix(lines[0], "ORDER_ID"))
	require.Contains(t, lines[1], "5000000")
	require.Contains(t, lines[1], "not_found")
	require.Contains(t, lines[1], "not found upstream (HTTP 404)")
	require.Contains(t, lines[2], "active")
	require.Equal(t, "2017 orders in bts/default", lines[len(lines)-1])

	out, errOut, code = btsRun(t, dsn, "list", "--state", "not_found", "--json")
	require.Zero(t, code, errOut)
	var orders []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &orders))
	require.Len(t, orders, 1)
	require.Equal(t, "5000000", orders[0]["order_id"])
	require.Equal(t, "not_found", orders[0]["state"])
	require.Nil(t, orders[0]["next_poll_at"])

	out, _, code = btsRun(t, dsn, "list", "--json", "--state=active")
	require.Zero(t, code)
	require.NoError(t, json.Unmarshal([]byte(out), &orders))
	require.Len(t, orders, len(ids)-1)
	seen := map[string]bool{}
	for _, o := range orders {
		id := o["order_id"].(string)
		require.False(t, seen[id], "order %s listed twice", id)
		seen[id] = true
	}

	out, _, code = btsRun(t, dsn, "list", "--json", "--bts-account", "empty")
	require.Zero(t, code)
	require.Equal(t, "[]\n", out)
}

func TestBTSUsageErrors(t *testing.T) {
	t.Parallel()
	const dsn = "postgres://ingestd:" + secretPassword + "@127.0.0.1:1/db"
	tests := []struct {
		name    string
		args    []string
		wantMsg string
	}{
		{"no subcommand", []string{}, "missing subcommand"},
		{"unknown subcommand", []string{"forget", "1"}, `unknown subcommand "forget"`},
		{"no ids", []string{"track", "--database-url", dsn}, "at least one ORDER_ID"},
		{"bad id", []string{"track", "1", "12/34", "--database-url", dsn}, `"12/34" is not a BTS order id`},
		{"bad id to untrack", []string{"untrack", "--database-url", dsn, strings.Repeat("9", 65)}, "is not a BTS order id"},
		{"bad state", []string{"list", "--state", "done", "--database-url", dsn}, "--state must be"},
		{"stray argument to list", []string{"list", "extra", "--database-url", dsn}, "takes no arguments"},
		{"bad account", []string{"list", "--bts-account", "Shop", "--database-url", dsn}, "INGESTD_BTS_ACCOUNT"},
		{"unknown flag", []string{"track", "--frobnicate", "1"}, "frobnicate"},
		{"bad database url", []string{"list", "--database-url", "postgres://u:" + secretPassword + "@[::1"}, "INGESTD_DATABASE_URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, errOut, code := btsRun(t, "", tc.args...)
			require.Equal(t, 2, code, errOut)
			require.Contains(t, errOut, tc.wantMsg)
			require.NotContains(t, errOut, secretPassword)
		})
	}
}

func TestBTSNeedsDatabaseURL(t *testing.T) {
	t.Setenv("INGESTD_DATABASE_URL", "")
	_, errOut, code := btsRun(t, "", "list")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "INGESTD_DATABASE_URL: required")

	// The variable works like the flag.
	t.Setenv("INGESTD_DATABASE_URL", btsDB(t))
	out, errOut, code := btsRun(t, "", "track", "42")
	require.Zero(t, code, errOut)
	require.Contains(t, out, "42  added")
}

func TestBTSUnreachableDatabaseIsExitOne(t *testing.T) {
	t.Parallel()
	_, errOut, code := btsRun(t, "postgres://ingestd:"+secretPassword+"@127.0.0.1:1/db?connect_timeout=2", "list")
	require.Equal(t, 1, code)
	require.NotContains(t, errOut, secretPassword)
}

func TestBTSHelp(t *testing.T) {
	t.Parallel()
	out, _, code := btsRun(t, "", "help")
	require.Zero(t, code)
	require.Contains(t, out, "ingestd bts track ORDER_ID...")
	require.Contains(t, out, "INSERT INTO bts_orders")
}
