# riskgate: build with the Rust toolchain, run on a slim Debian as a non-root user.
#   docker build -t riskgate .
#   docker run -p 50051:50051 -p 9090:9090 -v riskgate-data:/var/lib/riskgate riskgate

FROM rust:1.95-bookworm AS build
# protoc, for the etcd client of the cluster feature (riskgate's own proto needs none).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo ./.cargo
COPY proto ./proto
COPY src ./src
COPY benches ./benches
# With cluster mode ([cluster] in the configuration; docs/cluster.md).
RUN cargo build --release --locked --features cluster --bin riskgate

FROM debian:bookworm-slim
# The binary carries SQLite and rustls; the image needs nothing installed.
RUN groupadd --system --gid 10001 riskgate \
    && useradd --system --uid 10001 --gid riskgate --home-dir /var/lib/riskgate --shell /usr/sbin/nologin riskgate \
    && mkdir -p /var/lib/riskgate /etc/riskgate \
    && chown riskgate:riskgate /var/lib/riskgate
COPY --from=build /src/target/release/riskgate /usr/local/bin/riskgate
COPY deploy/riskgate.toml /etc/riskgate/riskgate.toml
USER 10001:10001
WORKDIR /var/lib/riskgate
VOLUME ["/var/lib/riskgate"]
# gRPC, then Prometheus metrics.
EXPOSE 50051 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/riskgate", "health", "--addr", "http://127.0.0.1:50051"]
ENTRYPOINT ["/usr/local/bin/riskgate"]
CMD ["serve", "--config", "/etc/riskgate/riskgate.toml"]
