# Multi-stage build of all Routemaster binaries; the runtime image carries only them.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --bins \
    && mkdir /out \
    && cp target/release/routemaster-proxy target/release/routemaster-control \
          target/release/routemaster target/release/routemaster-demo-backend /out/

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 routemaster
COPY --from=build /out/ /usr/local/bin/
COPY examples/ /etc/routemaster/examples/
USER routemaster
ENTRYPOINT []
CMD ["routemaster-proxy", "--help"]
