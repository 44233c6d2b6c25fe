// Command ingestd-bench measures ingestd on this machine: how fast the real
// ingestd binary drains a journal backlog end to end, how that compares with
// the raw limits of kafka-go and PostgreSQL measured in the same run, how
// fresh events are at a steady upstream rate, and what it costs in CPU and
// memory. It prints one table (or JSON with --json). See
// docs/performance.md for the method.
package main

import (
	"os"

	"github.com/ingestd/ingestd/internal/cli"
)

func main() { os.Exit(cli.Main("ingestd-bench", run)) }
