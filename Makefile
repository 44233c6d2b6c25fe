# ingestd: `make demo` runs the whole pipeline on embedded defaults,
# `make test` runs every test against the local PostgreSQL and an in-process
# Kafka-protocol broker.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
STATICCHECK_VERSION ?= v0.8.2

.PHONY: all build test test-short demo bench chaos lint fmt migrate image image-sim compose-config manifests clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ingestd ./cmd/ingestd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ingestd-sim ./tools/ingestd-sim
	$(GO) build -o bin/ingestd-demo ./tools/ingestd-demo

# The tests need PostgreSQL at INGESTD_TEST_DATABASE_URL (default: the local
# server at 127.0.0.1:5432, user postgres); Kafka is in-process.
#
# The race detector changes allocation counts, so the tests that hold
# allocation budgets skip under -race and run in a second, non-race pass.
# Every test that skips under -race is named ...Allocates... and lives in
# ALLOC_PKGS (internal/race's test checks both).
ALLOC_TESTS := Allocates
ALLOC_PKGS  := ./internal/event ./internal/yandex ./internal/outbox

test:
	$(GO) test -race -count=1 -timeout 10m ./...
	$(GO) test -count=1 -timeout 5m -run '$(ALLOC_TESTS)' $(ALLOC_PKGS)

test-short:
	$(GO) test -short -count=1 ./...

# The demo: simulator + in-process Kafka on 127.0.0.1:9092 + ingestd, against
# INGESTD_DATABASE_URL (default the local PostgreSQL). Ctrl-C stops it.
demo:
	$(GO) run ./tools/ingestd-demo

# The benchmark (docs/performance.md): a 1,000,000-event catch-up through the
# real ingestd binary against the simulator, the in-process broker and the
# local PostgreSQL, the raw kafka-go and PostgreSQL limits in the same run,
# freshness at 200 events/s, ingestd's footprint, and many accounts: 200 quiet
# accounts beside one with a 200,000-event backlog on one and on three
# instances, and their idle cost. About seven minutes.
# BENCH_FLAGS passes options, e.g. BENCH_FLAGS='--sizes 100k,1M --page-limit 250'
# or BENCH_FLAGS='--accounts 0' to skip the many-accounts scenario.
bench:
	$(GO) run ./tools/ingestd-bench $(BENCH_FLAGS)

# The chaos harness (docs/guarantees.md): 50,000 events, at least 25 SIGKILLs
# of real ingestd processes (some at exact points of the data path), two
# instances at once, a paused instance; then every event is checked in Kafka.
# It runs three times: against one broker; in cluster mode (-cluster): three
# brokers over TLS with SASL/SCRAM-SHA-512, partition leaders moving every few
# hundred ms, and now and then a broker removed during a produce request (its
# connections dropped) and added back; and in many-accounts mode
# (-accounts 24): 24 Yandex accounts from a sources file on three replicas,
# killed at random. Each run prints its RESULT line; each runs only if the
# one before passed.
# CHAOS_FLAGS passes options to each, e.g. CHAOS_FLAGS='-events 100000 -kills 40'.
chaos:
	$(GO) run ./tools/ingestd-chaos $(CHAOS_FLAGS)
	$(GO) run ./tools/ingestd-chaos -cluster $(CHAOS_FLAGS)
	$(GO) run ./tools/ingestd-chaos -accounts 24 $(CHAOS_FLAGS)

lint:
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1)

fmt:
	gofmt -w $$(git ls-files '*.go')

migrate:
	$(GO) run ./cmd/ingestd migrate

# Container images (need a Docker engine): the production image, which holds
# ingestd alone, and the simulator's, for test stacks (docker-compose builds
# both itself).
image:
	docker build --build-arg VERSION=$(VERSION) -t ingestd:$(VERSION) .

image-sim:
	docker build --target sim -t ingestd-sim:$(VERSION) .

# Offline validation of docker-compose.yml, the Dockerfile and deploy/ (also
# part of make test).
compose-config:
	$(GO) test -count=1 ./deploy/

# The example overlay, rendered.
manifests:
	kubectl kustomize deploy/overlays/example

clean:
	rm -rf bin
