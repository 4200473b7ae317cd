#!/usr/bin/env bash
# Soak run (not part of CI): the fault-test system — a 3-member etcd cluster, two
# control planes, two connected proxies behind HAProxy, two echo backends — under a
# moderate steady load (4 keep-alive clients at ~100 req/s each plus one slow client,
# through HAProxy) with a route change every 5 s, for SOAK_SECONDS (default 600).
#
# Reports the requests sent and failed (any non-2xx or connection error, with details),
# and the RSS (/proc/PID/status VmRSS) and open file descriptors (/proc/PID/fd) of every
# proxy, control plane, etcd member and HAProxy at the start and at the end; fails if
# any request failed.
#
#   ./scripts/soak.sh                  # 10 minutes
#   SOAK_SECONDS=3600 ./scripts/soak.sh
#
# The run is the ignored `soak` test in integration-tests/tests/faults.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_pkg protoc protobuf-compiler
need_pkg etcd etcd-server
need_pkg haproxy haproxy
export SOAK_SECONDS="${SOAK_SECONDS:-600}"
echo "soak: ${SOAK_SECONDS}s" >&2
cargo build --workspace --bins
# The processes' own logs go to stderr; the figures are the lines starting with "|".
cargo test -p routemaster-integration-tests --test faults -- --ignored --exact soak --nocapture
