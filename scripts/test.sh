#!/usr/bin/env bash
# Runs every test: unit, table-driven routing, and multi-process integration tests.
# Installs what a fresh Debian machine with Rust lacks (protoc; etcd for the
# control-plane tests; HAProxy as the load balancer in the fault test; Python's
# websockets as a real WebSocket client and server; Python gRPC as a real gRPC client
# and server).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_pkg protoc protobuf-compiler
need_pkg etcd etcd-server
need_pkg haproxy haproxy
need_pkg curl curl
need_py_module websockets python3-websockets
need_py_module grpc python3-grpcio
# Integration tests start the real binaries from target/debug.
cargo build --workspace --bins
cargo test --workspace "$@"
