# syntax=docker/dockerfile:1
#
# protogate container image: docs/deployment.md.
#
#   docker build -t protogate:0.1.0 .
#   docker run --rm -p 8080:8080 -p 9901:9901 protogate:0.1.0
#
# Two stages: a Rust toolchain builds the release binary; the runtime image
# is Debian slim with that binary, the config of deploy/docker/protogate.yaml
# and the repository's descriptors/ folder under /etc/protogate. The build
# fails if `protogate check` rejects that config or folder.

# The toolchain the project is tested with (rust-version in Cargo.toml is the
# minimum). Builder and runtime share the Debian release, so the binary links
# against the same glibc it runs with.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /build

# Dependencies first, in a layer of their own that only Cargo.toml,
# Cargo.lock and benches/ invalidate: the manifest is built once with
# stand-in sources (an empty library, binary and build script), which compiles
# every dependency and build dependency at the locked versions. benches/ is
# copied because Cargo.toml declares its [[bench]] targets by name and cargo
# refuses a manifest whose declared targets are missing.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > build.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin protogate \
 && rm -rf src build.rs

# The real sources. COPY keeps the files' modification times, which may be
# older than the stand-in build above: touch them so cargo rebuilds the
# crate itself (the dependencies stay built).
COPY build.rs ./
COPY proto ./proto
COPY src ./src
RUN touch build.rs src/main.rs src/lib.rs \
 && cargo build --release --locked --bin protogate \
 && install -D -m 0755 target/release/protogate /out/protogate

# ---------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# No package is installed: the binary needs only glibc and libgcc (TLS roots
# are compiled in: webpki-roots), and the HEALTHCHECK below uses bash, which
# every Debian image has. A fixed numeric uid/gid lets Kubernetes verify
# runAsNonRoot without a runAsUser of its own.
RUN groupadd --system --gid 10001 protogate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin protogate

COPY --from=builder /out/protogate /usr/local/bin/protogate
# Owned by root and not writable by the gateway's user; the descriptor folder
# is still watched, so a folder mounted over /etc/protogate/descriptors
# reloads without a restart.
COPY deploy/docker/protogate.yaml /etc/protogate/protogate.yaml
COPY descriptors /etc/protogate/descriptors

USER 10001:10001
WORKDIR /etc/protogate

# The baked config and descriptors must load, as the user the gateway runs as
# (so unreadable files fail here too): a bad folder fails the build.
RUN ["/usr/local/bin/protogate", "check", "--config", "/etc/protogate/protogate.yaml"]

# 8080: the gateway (HTTP/1.1 and HTTP/2). 9901: admin (/healthz, /readyz,
# /metrics, /routes, /openapi.json, /descriptors); keep it off public networks.
EXPOSE 8080 9901

# Liveness on admin /healthz with bash's /dev/tcp: no curl or wget to install
# (and patch) in the image. Exit 0 only on a "200" status line.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9901 && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && read -r _ status _ <&3 && [ \"$status\" = 200 ]"]

# SIGTERM (the default stop signal) drains in-flight requests for up to
# shutdown_timeout (25 s in the baked config): stop with `docker stop -t 30`.
ENTRYPOINT ["/usr/local/bin/protogate"]
CMD ["serve", "--config", "/etc/protogate/protogate.yaml"]
