// Command consumer is an example downstream consumer of ingestd's delivery
// events: it reads the topic in a consumer group, validates every payload
// against schemas/delivery-event.v1.json, and applies each event exactly
// once to a PostgreSQL table by deduplicating on ce_id in the same
// transaction as its effect (the idempotent-consumer pattern). Run it while
// `make demo` runs:
//
//	go run ./examples/consumer --brokers 127.0.0.1:9092
package main

import (
	"os"

	"github.com/ingestd/ingestd/internal/cli"
)

func main() { os.Exit(cli.Main("consumer", run)) }
