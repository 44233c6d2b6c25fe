// Command ingestd-sim serves the simulated upstream APIs of internal/sim as a
// standalone HTTP server, so that docker-compose (and anyone else) can run
// ingestd against them over a real network. Today it serves the Yandex
// Delivery claims journal; see run.go for the flags and SIM_* variables.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}
