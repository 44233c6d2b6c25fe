// Package cli holds what every ingestd command does the same way at its
// edges: telling a usage error (exit status 2) from a failure (1), turning
// run's error into the exit status with one message on stderr, and keeping
// passwords out of the messages that name a database. The product binary and
// each development tool used to carry their own copies, which had already
// drifted apart (one printed usage errors, one did not; one redaction leaked
// the password of a key=value DSN).
//
// cmd/ingestd's own usageError{err} and exitCode(err, stderr) are
// &UsageError{Err: err} and ExitCode("ingestd", err, stderr), status for
// status and byte for byte, so it can switch over without a visible change.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// UsageError marks a bad command line or configuration: the exit status is
// 2, which tells a script that retrying the same invocation cannot help.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// ExitCode maps a command's error to its exit status and prints the error
// once on stderr, prefixed with the command's name.
//
//   - nil and flag.ErrHelp: 0, nothing printed (the flag package already
//     printed the help).
//   - a *UsageError anywhere in the chain: 2.
//   - context.Canceled: 0, since a signal asked for the stop.
//   - anything else: 1.
//
// A usage error wins over a cancellation, and a cancellation is still
// printed: what was cut short is worth a line.
func ExitCode(name string, err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	_, _ = fmt.Fprintln(stderr, name+":", err)
	if ue := (*UsageError)(nil); errors.As(err, &ue) {
		return 2
	}
	if errors.Is(err, context.Canceled) {
		return 0
	}
	return 1
}

// Main is the whole of a command's main: it runs run with the process's
// arguments and standard streams under a context that SIGINT and SIGTERM
// cancel, and returns the exit status for os.Exit. Signal handling is
// restored before the error is printed, so that a second Ctrl-C during a
// slow exit ends the process at once.
func Main(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) int {
	return runMain(name, run, os.Args[1:], os.Stdout, os.Stderr)
}

// runMain is Main with its arguments and streams passed in, for the tests.
func runMain(name string, run func(context.Context, []string, io.Writer, io.Writer) error, args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, args, stdout, stderr)
	stop()
	return ExitCode(name, err, stderr)
}

// unknownServer stands for a DSN that cannot be shown safely.
const unknownServer = "the configured server"

// Redact returns dsn fit for a message: a URL (postgres://...) with its
// password, in the user info or in a parameter such as password or
// sslpassword, replaced by xxxxx. Anything that is not such a URL, a key=value DSN included, becomes
// "the configured server": its password cannot be found reliably, and
// echoing it whole would leak it.
func Redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return unknownServer
	}
	q := u.Query()
	masked := false
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q.Set(k, "xxxxx")
			masked = true
		}
	}
	if masked {
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
