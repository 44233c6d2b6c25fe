// Command ingestd-chaos proves ingestd's promise under faults: it runs the
// real ingestd binary as child processes against a simulated Yandex journal,
// PostgreSQL and an in-process Kafka-protocol broker, SIGKILLs them over and
// over (at random moments, at exact failpoints, after pausing one past its
// lease), lets two instances compete at times, and finally consumes the
// whole topic with an independent client to check that every journal entry
// arrived exactly once, in per-shipment order. `make chaos` runs it.
package main

import (
	"os"

	"github.com/ingestd/ingestd/internal/cli"
)

func main() { os.Exit(cli.Main("ingestd-chaos", run)) }
