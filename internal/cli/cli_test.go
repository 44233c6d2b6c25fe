package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestExitCode pins the mapping that cmd/ingestd's own exitCode has, so that
// the product binary can switch to this package without changing a status
// or a message.
func TestExitCode(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		err        error
		wantCode   int
		wantStderr string
	}{
		{"success", nil, 0, ""},
		{"help", flag.ErrHelp, 0, ""},
		{"wrapped help", fmt.Errorf("parse: %w", flag.ErrHelp), 0, ""},
		{"usage", &UsageError{Err: errors.New("bad flag")}, 2, "tool: bad flag\n"},
		{"wrapped usage", fmt.Errorf("config: %w", &UsageError{Err: errors.New("bad value")}), 2, "tool: config: bad value\n"},
		{"usage wins over cancellation", &UsageError{Err: context.Canceled}, 2, "tool: context canceled\n"},
		{"cancelled", fmt.Errorf("poll: %w", context.Canceled), 0, "tool: poll: context canceled\n"},
		{"deadline", context.DeadlineExceeded, 1, "tool: context deadline exceeded\n"},
		{"failure", errors.New("boom"), 1, "tool: boom\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			require.Equal(t, tc.wantCode, ExitCode("tool", tc.err, &stderr))
			require.Equal(t, tc.wantStderr, stderr.String())
		})
	}
}

func TestUsageErrorUnwraps(t *testing.T) {
	t.Parallel()
	inner := errors.New("inner")
	err := fmt.Errorf("outer: %w", &UsageError{Err: inner})
	require.ErrorIs(t, err, inner)
	var ue *UsageError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, "inner", ue.Error())
}

func TestRedact(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, dsn, want string }{
		{"password in the user info", "postgres://u:secret@db:5432/app?sslmode=disable", "postgres://u:xxxxx@db:5432/app?sslmode=disable"},
		{"no password", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"},
		{"password parameter", "postgres://u@db/app?password=secret&sslmode=require", "postgres://u@db/app?password=xxxxx&sslmode=require"},
		{"sslpassword parameter", "postgresql://db/app?sslpassword=secret", "postgresql://db/app?sslpassword=xxxxx"},
		{"key=value DSN", "host=db user=u password=secret", unknownServer},
		{"key=value DSN with a colon", "host=db password=se:cret", unknownServer},
		{"unparsable URL", "postgres://u:secret@db:port/app", unknownServer},
		{"opaque URL", "postgres:u:secret@db", unknownServer},
		{"empty", "", unknownServer},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := Redact(tc.dsn)
			require.Equal(t, tc.want, got)
			require.NotContains(t, got, "secret")
			require.NotContains(t, got, "se:cret")
		})
	}
}

// TestMainRunsWithSignalContext checks what Main adds to ExitCode: the arguments and streams
// reach run, and SIGINT or SIGTERM cancel run's context instead of killing
// the process.
func TestMainRunsWithSignalContext(t *testing.T) {
	// Not parallel: it signals its own process.
	cases := []struct {
		name     string
		signal   syscall.Signal
		runErr   func(ctx context.Context) error
		wantCode int
		wantOut  string
	}{
		{name: "success", runErr: func(context.Context) error { return nil }, wantCode: 0},
		{name: "usage error", runErr: func(context.Context) error { return &UsageError{Err: errors.New("bad")} }, wantCode: 2, wantOut: "tool: bad\n"},
		{name: "SIGINT cancels", signal: syscall.SIGINT, runErr: func(ctx context.Context) error { return ctx.Err() }, wantCode: 0, wantOut: "tool: context canceled\n"},
		// The cause names the signal and still counts as a cancellation.
		{name: "SIGTERM cancels", signal: syscall.SIGTERM, runErr: context.Cause, wantCode: 0, wantOut: "tool: terminated signal received\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			run := func(ctx context.Context, args []string, out, errOut io.Writer) error {
				require.Equal(t, []string{"-x", "y"}, args)
				require.Same(t, &stdout, out)
				require.Same(t, &stderr, errOut)
				if tc.signal != 0 {
					require.NoError(t, syscall.Kill(os.Getpid(), tc.signal))
					<-ctx.Done()
				}
				return tc.runErr(ctx)
			}
			require.Equal(t, tc.wantCode, runMain("tool", run, []string{"-x", "y"}, &stdout, &stderr))
			require.Equal(t, tc.wantOut, stderr.String())
		})
	}
}
