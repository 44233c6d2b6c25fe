// Command ingestd-demo runs the whole ingestd pipeline on one machine with
// embedded defaults: a simulated Yandex Delivery journal, an in-process
// Kafka-protocol broker on 127.0.0.1:9092, and the real ingestd daemon
// against PostgreSQL (INGESTD_DATABASE_URL, default the local server). It
// prints a live line of events/s, cursor and backlog, and samples of the
// normalized events, until Ctrl-C.
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
