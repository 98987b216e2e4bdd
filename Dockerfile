# Image with the service's binaries — tenant-api (the default command) and tenant-worker — and the
# operators' command line, tenantctl (`docker compose exec api tenantctl tenants list`).
#   docker build -t tenant-service:local .
#   docker run --rm tenant-service:local tenant-api migrate
# Builder and runtime must be the same Debian release (the binaries link its glibc). The Rust
# version follows the dependencies' needs (uuid 1.29 wants 1.89+), not the workspace's MSRV.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    SQLX_OFFLINE=true
COPY Cargo.toml Cargo.lock ./
COPY domain domain
COPY jobs jobs
COPY api api
COPY worker worker
COPY cli cli
COPY tests tests
COPY migrations migrations
# Cache mounts (BuildKit) keep the registry and target between builds; the binaries are copied
# out because the target cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tenant-api --bin tenant-worker --bin tenantctl \
 && mkdir -p /out \
 && cp target/release/tenant-api target/release/tenant-worker target/release/tenantctl /out/

FROM debian:${DEBIAN_RELEASE}-slim
# ca-certificates for TLS to Stripe, SMTP and Redis (rediss://); curl for the Compose health check. Debian's
# stable security updates are wanted here, so no version pins.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 tenant \
 && useradd --system --uid 10001 --gid tenant --home-dir /app --shell /usr/sbin/nologin tenant \
 && mkdir -p /app/backups \
 && chown -R tenant:tenant /app
COPY --from=builder /out/tenant-api /out/tenant-worker /out/tenantctl /usr/local/bin/
WORKDIR /app
ENV SERVICE_HOST=0.0.0.0 \
    SERVICE_PORT=3004 \
    APP_ENV=production \
    LOG_FORMAT=json \
    BACKUP_DIR=/app/backups
# Numeric, so runtimes that check runAsNonRoot can tell.
USER 10001:10001
EXPOSE 3004
CMD ["tenant-api"]
