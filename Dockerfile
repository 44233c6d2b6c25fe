# syntax=docker/dockerfile:1
#
# ingestd and its upstream simulator in one small image. The daemon is the
# entrypoint; docker-compose runs the simulator from the same image with
# `entrypoint: ["/ingestd-sim"]`, so there is one image to build and ship.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t ingestd .

# The builder runs on the build machine's platform and cross-compiles for the
# target one: CGO is off, so Go needs no C toolchain for another architecture.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src

# Dependencies first: this layer is only rebuilt when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download

COPY . .
# VERSION is declared after the source is copied so that a new version only
# invalidates the build step, not the dependency download.
ARG VERSION=dev
# -trimpath keeps build paths out of the binaries, -s -w drops the symbol and
# debug tables; main.version is what `ingestd version` prints. The simulator
# has no version variable, so it gets no -X.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
      go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/ingestd ./cmd/ingestd && \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
      go build -trimpath -ldflags "-s -w" -o /out/ingestd-sim ./tools/ingestd-sim

# distroless/static has CA certificates, tzdata and /etc/passwd with the
# nonroot user (65532), and nothing else: no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="ingestd" \
      org.opencontainers.image.description="Courier API journals to Kafka, exactly once, through a PostgreSQL outbox" \
      org.opencontainers.image.source="https://github.com/ingestd/ingestd" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/ingestd /ingestd
COPY --from=build /out/ingestd-sim /ingestd-sim
# Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
# /healthz, /readyz and /metrics (INGESTD_HTTP_ADDR).
EXPOSE 8080
ENTRYPOINT ["/ingestd"]
