# syntax=docker/dockerfile:1
#
# Two images from one Dockerfile. The default target is the production
# image: the ingestd daemon and nothing else. The `sim` target is the
# upstream simulator (tools/ingestd-sim) alone, for docker-compose and other
# test stacks; it never ships beside the daemon.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t ingestd .
#   docker build --target sim -t ingestd-sim .

# The builder runs on the build machine's platform and cross-compiles for the
# target one: CGO is off, so Go needs no C toolchain for another architecture.
# The stages below start FROM it and inherit its ARGs.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src

# Dependencies first: this layer is only rebuilt when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download

COPY . .

# Each binary is compiled in a stage of its own, so that a target builds only
# what it ships: the production image never waits for the simulator.
#
# -trimpath keeps build paths out of the binaries, -s -w drops the symbol and
# debug tables; main.version is what `ingestd version` prints. VERSION is
# declared after the source is copied so that a new version only invalidates
# the build step, not the dependency download.
FROM build AS build-ingestd
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
      go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/ingestd ./cmd/ingestd

# The simulator has no version variable, so it gets no -X.
FROM build AS build-sim
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
      go build -trimpath -ldflags "-s -w" -o /out/ingestd-sim ./tools/ingestd-sim

# The simulator image (docker build --target sim). distroless/static has CA
# certificates, tzdata and /etc/passwd with the nonroot user (65532), and
# nothing else: no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot AS sim
LABEL org.opencontainers.image.title="ingestd-sim" \
      org.opencontainers.image.description="Simulated courier APIs for testing ingestd; not for production" \
      org.opencontainers.image.source="https://github.com/ingestd/ingestd"
COPY --from=build-sim /out/ingestd-sim /ingestd-sim
USER 65532:65532
# The simulated APIs (SIM_ADDR).
EXPOSE 8081
ENTRYPOINT ["/ingestd-sim"]

# The production image, and the default target, so it must stay last.
FROM gcr.io/distroless/static-debian12:nonroot AS ingestd
ARG VERSION=dev
LABEL org.opencontainers.image.title="ingestd" \
      org.opencontainers.image.description="Courier API journals to Kafka, exactly once, through a PostgreSQL outbox" \
      org.opencontainers.image.source="https://github.com/ingestd/ingestd" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build-ingestd /out/ingestd /ingestd
# Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
# /healthz, /readyz and /metrics (INGESTD_HTTP_ADDR).
EXPOSE 8080
ENTRYPOINT ["/ingestd"]
