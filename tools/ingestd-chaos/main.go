// Command ingestd-chaos proves ingestd's promise under faults: it runs the
// real ingestd binary as child processes against a simulated Yandex journal,
// PostgreSQL and an in-process Kafka-protocol broker, SIGKILLs them over and
// over (at random moments, at exact failpoints, after pausing one past its
// lease), lets two instances compete at times, and finally consumes the
// whole topic with an independent client to check that every journal entry
// arrived exactly once, in per-shipment order. `make chaos` runs it.
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
