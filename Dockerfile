# paxos-kv container image.
#
#   docker build -t paxos-kv .
#   docker run --rm paxos-kv --help
#   docker run -d -p 7001:7001 -v pkv1:/var/lib/paxos-kv \
#       -e PAXOS_KV_ID=1 -e PAXOS_KV_PEERS=1=http://host1:7001,2=...,3=... \
#       -e PAXOS_KV_CLUSTER_TOKEN=... paxos-kv serve
#   docker run --rm paxos-kv get --url http://host1:7001 KEY
#
# The binary is the entrypoint; the default command is `serve`, configured by the
# PAXOS_KV_* environment variables (see docker-compose.yml for a three-node cluster).
# Plain Dockerfile syntax only (no BuildKit-only features), so both the classic builder
# and BuildKit build it.

# Base images. Both must be of the same Debian suite, so that the binary built against
# the builder's glibc runs on the runtime's. scripts/docker-offline-images.sh creates
# images under these names where no registry can be reached.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
WORKDIR /build
# A release binary without debug info or symbols: the image stays small and links fast.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never

# The build context holds only Cargo.toml, Cargo.lock and src/ (.dockerignore): the
# tables of the test, bench and example targets, whose files are not there, are dropped
# from the manifest built here. That changes no dependency, so --locked still holds.
COPY Cargo.toml Cargo.lock ./
RUN awk '/^\[/ { skip = ($0 ~ /^\[\[(test|bench|example)\]\]/) } !skip' \
        Cargo.toml > Cargo.image.toml

# Layer 1, the dependencies: compiled against an empty crate, so this layer stays cached
# until the manifest or the lockfile changes. The stub has none of the real target files,
# so the [lib] and [[bin]] tables are dropped too; the default targets it gets instead
# have the same names.
RUN awk '/^\[/ { skip = ($0 ~ /^\[(lib|\[bin\])\]/) } !skip' \
        Cargo.image.toml > Cargo.toml \
 && mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src target/release/.fingerprint/paxos-kv-* target/release/deps/paxos_kv-* \
           target/release/deps/libpaxos_kv-* target/release/paxos-kv* \
 && mv Cargo.image.toml Cargo.toml

# Layer 2, the project itself (its stub artifacts are gone, so it is always rebuilt here).
COPY src ./src
RUN cargo build --release --locked --bin paxos-kv \
 && install -D -m 0755 target/release/paxos-kv /out/paxos-kv

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="paxos-kv" \
      org.opencontainers.image.description="A distributed key-value store of write-once registers (Paxos per key)"
# An unprivileged user owns the data directory; a named volume mounted there starts
# with this ownership.
RUN groupadd --system --gid 10001 paxos \
 && useradd --system --uid 10001 --gid paxos --no-create-home \
        --home-dir /var/lib/paxos-kv --shell /usr/sbin/nologin paxos \
 && mkdir -p /var/lib/paxos-kv \
 && chown paxos:paxos /var/lib/paxos-kv
COPY --from=builder /out/paxos-kv /usr/local/bin/paxos-kv
USER paxos:paxos
# Defaults for `serve`; NO_COLOR keeps escape codes out of `docker logs`.
ENV PAXOS_KV_LISTEN=0.0.0.0:7001 \
    PAXOS_KV_DATA_DIR=/var/lib/paxos-kv \
    NO_COLOR=1
WORKDIR /var/lib/paxos-kv
EXPOSE 7001
VOLUME ["/var/lib/paxos-kv"]
# Readiness: GET /ready must answer 200, i.e. the node serves clients and counts in
# quorums. A node whose cluster is still forming, or that rebuilds after a lost disk, is
# unhealthy until it serves, which is the truth (`docker compose up --wait` waits for it).
# No curl in a slim image: bash's /dev/tcp speaks the little HTTP needed, on the port of
# PAXOS_KV_LISTEN.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${PAXOS_KV_LISTEN##*:} && printf 'GET /ready HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && read -r -t 2 _ code _ <&3 && [ \"$code\" = 200 ]"]
ENTRYPOINT ["paxos-kv"]
CMD ["serve"]
