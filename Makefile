# ingestd: `make demo` runs the whole pipeline on embedded defaults,
# `make test` runs every test against the local PostgreSQL and an in-process
# Kafka-protocol broker.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
STATICCHECK_VERSION ?= v0.8.2

.PHONY: all build test test-short demo lint fmt migrate clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ingestd ./cmd/ingestd
	$(GO) build -o bin/ingestd-demo ./cmd/ingestd-demo

# The tests need PostgreSQL at INGESTD_TEST_DATABASE_URL (default: the local
# server at 127.0.0.1:5432, user postgres); Kafka is in-process.
test:
	$(GO) test -race -count=1 -timeout 10m ./...

test-short:
	$(GO) test -short -count=1 ./...

# The demo: simulator + in-process Kafka on 127.0.0.1:9092 + ingestd, against
# INGESTD_DATABASE_URL (default the local PostgreSQL). Ctrl-C stops it.
demo:
	$(GO) run ./cmd/ingestd-demo

lint:
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1)

fmt:
	gofmt -w $$(git ls-files '*.go')

migrate:
	$(GO) run ./cmd/ingestd migrate

clean:
	rm -rf bin
