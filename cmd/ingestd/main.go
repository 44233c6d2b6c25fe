// Command ingestd turns courier APIs into one stream of delivery events on
// Kafka. See README.md.
package main

import (
	"os"

	"github.com/ingestd/ingestd/internal/cli"
)

func main() { os.Exit(cli.Main("ingestd", run)) }
