#!/usr/bin/env bash
# Runs the system locally: three demo backends and routemaster-proxy serving
# examples/routes.yaml (edit the file while it runs: changes apply within a second).
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_pkg protoc protobuf-compiler
cargo build --release --workspace --bins
bin=target/release
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for i in 1 2 3; do
  "$bin/routemaster-demo-backend" "demo-$i" "127.0.0.1:900$i" & pids+=($!)
done
"$bin/routemaster-proxy" --config examples/routes.yaml \
  --listen 127.0.0.1:8080 --admin-listen 127.0.0.1:9901 & pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:9901/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
cat <<'MSG'

Routemaster is up. Try:
  curl -H 'Host: www.example.com' http://127.0.0.1:8080/courses/101
  curl -H 'Host: www.example.com' -H 'x-env: beta' http://127.0.0.1:8080/courses/101
  curl -i http://127.0.0.1:8080/old-courses/101?page=2
  curl --http2-prior-knowledge http://127.0.0.1:8080/api/items
  curl http://127.0.0.1:9901/config
Edit examples/routes.yaml and the proxy reloads it. Ctrl-C to stop.
MSG
wait
