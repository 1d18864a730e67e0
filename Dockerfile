# orderly's container image: one static binary, two run stages.
#
#   docker build -t orderly .                  # the API and migrations (distroless)
#   docker build --target worker -t orderly-worker .
#
# The default stage runs `orderly api` and `orderly migrate` as a non-root
# user on distroless/static: no shell, no package manager. A worker runs
# the commands of its orders, so its stage has a Debian userland (the
# commands need one) and still runs as a non-root user: orders then run as
# that user only (worker.default_user in deploy/compose/worker.yaml). A
# worker that must act on the node itself belongs on the node (systemd,
# docs/deploy.md), not in a container.

# --- build: a static binary (no cgo), reproducible paths -------------------
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 GOOS=linux GOTOOLCHAIN=local \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/orderly ./cmd/orderly

# --- api (default): distroless, non-root -----------------------------------
# busybox's static wget is the only other binary: compose's healthcheck
# fetches /readyz with it (distroless has no shell or curl).
FROM busybox:1.37-musl AS busybox

FROM gcr.io/distroless/static-debian12:nonroot AS api
COPY --from=busybox /bin/busybox /bin/wget
COPY --from=build /out/orderly /usr/local/bin/orderly
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/orderly"]
CMD ["api"]

# --- worker: a Debian userland for the orders' commands, non-root -----------
FROM debian:bookworm-slim AS worker
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates procps wget \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 orderly \
    && useradd --system --uid 10001 --gid orderly --home-dir /var/lib/orderly --create-home orderly
COPY --from=build /out/orderly /usr/local/bin/orderly
USER 10001:10001
WORKDIR /var/lib/orderly
ENTRYPOINT ["/usr/local/bin/orderly"]
CMD ["worker"]

# The last stage is what a plain `docker build .` produces: the API.
FROM api
