// Command ingestd-sim serves the simulated upstream APIs of internal/sim as a
// standalone HTTP server, so that docker-compose (and anyone else) can run
// ingestd against them over a real network. Today it serves the Yandex
// Delivery claims journal; see run.go for the flags and SIM_* variables.
package main

import (
	"os"

	"github.com/ingestd/ingestd/internal/cli"
)

func main() { os.Exit(cli.Main("ingestd-sim", run)) }
