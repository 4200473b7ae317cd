#!/usr/bin/env bash
# Runs every test: unit, table-driven routing, and multi-process integration tests.
# Installs what a fresh Debian machine with Rust lacks (protoc; etcd for the
# control-plane tests; HAProxy as the load balancer in the fault test; Python's
# websockets as a real WebSocket client and server; Python gRPC as a real gRPC client
# and server; promtool to check /metrics; headless Chromium for the dashboard; the
# openssl CLI as a TLS client and to make RSA test certificates).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_pkg protoc protobuf-compiler
need_pkg make make  # jemalloc (the proxy's allocator) is built with make
need_pkg etcd etcd-server
need_pkg haproxy haproxy
need_pkg curl curl
need_pkg openssl openssl
need_py_module websockets python3-websockets
need_py_module grpc python3-grpcio
need_pkg promtool prometheus
need_pkg chromium chromium
# Integration tests start the real binaries from target/debug.
cargo build --workspace --bins
cargo test --workspace "$@"
