# tessera in a container. Needs BuildKit (the default builder since Docker 23)
# for the cache mounts below.
#
#   docker build -t tessera .
#   docker run --rm -p 8080:8080 --stop-timeout 45 tessera     # SQLite, development master key
#
# Production (PostgreSQL, master key as a file, several instances):
# docs/deployment.md.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- build
FROM ${RUST_IMAGE} AS builder

# josekit and the openssl crate link the system OpenSSL, so the build needs
# its headers (the rust image usually has them; this makes sure).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The crate registry and the target directory live in cache mounts, so a
# rebuild after a source change recompiles tessera, not its dependencies.
# A cache mount is not part of the image, so the binary is copied out in
# the same step. SQLite is compiled in (sqlx bundles it); migrations are
# embedded in the binary.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tessera \
 && install -D -m 0755 target/release/tessera /out/tessera

# ---------------------------------------------------------------- run
FROM ${RUNTIME_IMAGE}

# The binary links libssl.so.3 and libcrypto.so.3 (josekit, openssl), so a
# distroless "cc" image is not enough. ca-certificates holds the roots a
# TLS connection to PostgreSQL is checked against (sslmode=verify-full, or
# sslrootcert=FILE for a private CA).
# A fixed numeric uid lets orchestrators check runAsNonRoot, and lets a
# host directory be prepared for a bind mount (chown 10001:10001).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tessera \
 && useradd --system --uid 10001 --gid tessera --no-create-home \
        --home-dir /var/lib/tessera --shell /usr/sbin/nologin tessera \
 && install -d -o tessera -g tessera -m 0700 /var/lib/tessera

COPY --from=builder /out/tessera /usr/local/bin/tessera

# Listen on every interface of the container (the default 127.0.0.1 would
# be unreachable through a published port). Without TESSERA_DATABASE_URL
# the image runs on SQLite in the volume; the development master key is
# generated next to it. Environment variables beat a --config file: to
# change these three, pass -e, not a file.
ENV TESSERA_LISTEN=0.0.0.0:8080 \
    TESSERA_DATA_DIR=/var/lib/tessera \
    TESSERA_DATABASE_URL=sqlite:///var/lib/tessera/tessera.db

WORKDIR /var/lib/tessera
VOLUME ["/var/lib/tessera"]
USER 10001:10001
EXPOSE 8080

# SIGTERM stops gracefully: in-flight requests get TESSERA_SHUTDOWN_TIMEOUT
# (30 s), queued audit events up to 10 s more. Docker's default stop
# timeout is 10 s; use --stop-timeout 45 (or docker stop -t 45).
STOPSIGNAL SIGTERM

# No HEALTHCHECK: the image has no HTTP client. Probe GET /healthz
# (liveness) and GET /readyz (readiness) from the orchestrator or the load
# balancer instead (docs/deployment.md).
ENTRYPOINT ["tessera"]
CMD ["serve"]
