package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"

	"github.com/ingestd/ingestd/internal/child"
)

// buildFlags are the go build flags of the measured binary: trimmed paths,
// as `make build` and the Dockerfile use, but with the symbols kept so that
// perf can attribute samples.
func buildFlags() []string { return []string{"-trimpath"} }

// logBytes is how much of ingestd's log a failure report quotes.
const logBytes = 32 << 10

// stopTimeout bounds a graceful stop of the ingestd child before it is
// killed. It is above ingestd's default shutdown timeout (20s) so that a
// healthy shutdown is never cut short.
const stopTimeout = 30 * time.Second

// startIngestd starts bin with env as its only INGESTD_* settings. The
// caller defers Kill, so no ingestd outlives a benchmark; the normal way
// out is stop.
func startIngestd(bin string, env []string) (*child.Process, error) {
	return child.Start(bin, child.Options{Env: env, LogBytes: logBytes})
}

// exitErr describes an exit the benchmark did not ask for, with the end of
// ingestd's log.
func exitErr(c *child.Process) error {
	return fmt.Errorf("ingestd exited unexpectedly (%v); its log ends with:\n%s", c.State(), c.Log())
}

// stop sends SIGTERM, waits for a graceful exit (killing ingestd if it
// takes longer than stopTimeout), and returns its resource usage. An exit
// status other than 0 is an error: ingestd exits 0 after SIGTERM.
func stop(ctx context.Context, c *child.Process) (*syscall.Rusage, error) {
	if err := c.Stop(ctx, stopTimeout); err != nil {
		return nil, fmt.Errorf("stop ingestd: %w. Its log ends with:\n%s", err, c.Log())
	}
	if st := c.State(); !st.Success() {
		return nil, fmt.Errorf("ingestd exited with %v after SIGTERM; its log ends with:\n%s", st, c.Log())
	}
	ru, ok := c.State().SysUsage().(*syscall.Rusage)
	if !ok {
		return nil, errors.New("no resource usage for the ingestd process on this platform")
	}
	return ru, nil
}

// migrate applies ingestd's migrations to dsn with the binary under test,
// so the schema is exactly the one that binary expects.
func migrate(ctx context.Context, bin, dsn string) error {
	cmd := exec.CommandContext(ctx, bin, "migrate")
	cmd.Env = append(child.BaseEnv(), "INGESTD_DATABASE_URL="+dsn)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ingestd migrate: %w\n%s", err, out)
	}
	return nil
}
