// Command ingestd-demo runs the whole ingestd pipeline on one machine with
// embedded defaults: a simulated Yandex Delivery journal, an in-process
// Kafka-protocol broker on 127.0.0.1:9092, and the real ingestd daemon
// against PostgreSQL (INGESTD_DATABASE_URL, default the local server). It
// prints a live line of events/s, cursor and backlog, and samples of the
// normalized events, until Ctrl-C.
package main

import (
	"os"

	"github.com/ingestd/ingestd/internal/cli"
)

func main() { os.Exit(cli.Main("ingestd-demo", run)) }
