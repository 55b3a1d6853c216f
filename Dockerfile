# syntax=docker/dockerfile:1
#
# ferrocast container image.
#
#   docker build -t ferrocast:local .
#   docker run --rm -p 8000:8000 \
#     -e FERROCAST_CLIENT_TOKEN_HMAC_SECRET_KEY=change-me -e FERROCAST_HTTP_API_KEY=change-me \
#     ferrocast:local
#
# Ports: 8000 public (WebSocket /connection/websocket, /health, /ready),
#        9000 internal (server API /api/*, /metrics; keep it off the internet).
# Config: /etc/ferrocast/config.toml (deploy/docker/config.toml); every key can be overridden
# with FERROCAST_<SECTION>_<KEY>, e.g. FERROCAST_ENGINE_TYPE=redis
# FERROCAST_ENGINE_REDIS_ADDRESS=redis://redis:6379.

ARG RUST_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
WORKDIR /src

# Only what the workspace needs to build (see .dockerignore as well). `tests` is a workspace
# member, so its manifest and sources must be present for cargo to load the workspace.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY tests ./tests

# The cargo registry and target directory are BuildKit cache mounts: rebuilds after a source
# change only recompile the workspace crates. The binary is copied out of the cache mount in
# the same step. aws-lc-sys (JWT signatures) builds with the image's C compiler, no cmake.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ferrocast \
    && install -D -m 0755 target/release/ferrocast /out/ferrocast

# ---------------------------------------------------------------------------------------------
# debian-slim rather than distroless: the HEALTHCHECK below and the Kubernetes preStop hook
# (`sleep`) need a shell and coreutils, and the extra ~70 MB buy `kubectl exec` debugging.
FROM ${RUNTIME_IMAGE} AS runtime

RUN groupadd --system --gid 10001 ferrocast \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin ferrocast

COPY --from=build /out/ferrocast /usr/local/bin/ferrocast
COPY deploy/docker/config.toml /etc/ferrocast/config.toml

# Numeric user so Kubernetes `runAsNonRoot` can verify it without a runAsUser override.
USER 10001:10001

EXPOSE 8000 9000

# No curl/wget in the image: bash's /dev/tcp sends a plain HTTP/1.1 request to /health
# (liveness: 200 while the process serves; /ready is for load balancers, it is 503 while
# draining or while Redis is unreachable, and an unhealthy mark must not follow a Redis blip).
# The port follows FERROCAST_HTTP_SERVER_PORT when that variable moves the listener.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${FERROCAST_HTTP_SERVER_PORT:-8000} && printf 'GET /health HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && IFS= read -r -t 2 status <&3 && [[ $status == 'HTTP/1.1 200'* ]]"]

# SIGTERM (docker stop, Kubernetes) starts the drain: readiness turns false at once, clients
# are closed with 3001 spread over shutdown.drain_window (5s), then the process exits 0 after
# at most ~7 s more. Give `docker stop -t` / stop_grace_period at least drain_window + 10s.
STOPSIGNAL SIGTERM

ENTRYPOINT ["ferrocast"]
CMD ["serve", "--config", "/etc/ferrocast/config.toml"]
