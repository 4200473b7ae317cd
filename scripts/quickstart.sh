#!/usr/bin/env bash
# Runs the whole system locally: etcd (data in a temp dir), one routemaster-control,
# two routemaster-proxy instances, three demo backends, and examples/routes.yaml applied
# with the CLI. Prints what to curl. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_pkg protoc protobuf-compiler
need_pkg make make  # jemalloc (the proxy's allocator) is built with make
need_pkg etcd etcd-server
cargo build --release --workspace --bins
bin=$PWD/target/release
data=$(mktemp -d -t routemaster-quickstart.XXXXXX)
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT INT TERM

wait_ok() { # URL WHAT
  for _ in $(seq 1 200); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "timed out waiting for $2 ($1)" >&2
  exit 1
}

etcd --data-dir "$data/etcd" --name quickstart \
  --listen-client-urls http://127.0.0.1:22379 --advertise-client-urls http://127.0.0.1:22379 \
  --listen-peer-urls http://127.0.0.1:22380 --initial-advertise-peer-urls http://127.0.0.1:22380 \
  --initial-cluster quickstart=http://127.0.0.1:22380 \
  --max-txn-ops 100000 --max-request-bytes 134217728 >"$data/etcd.log" 2>&1 & pids+=($!)
wait_ok http://127.0.0.1:22379/health etcd

"$bin/routemaster-control" --etcd http://127.0.0.1:22379 \
  --grpc-listen 127.0.0.1:7000 --http-listen 127.0.0.1:7001 2>"$data/control.log" & pids+=($!)
wait_ok http://127.0.0.1:7001/readyz routemaster-control

for i in 1 2 3; do
  "$bin/routemaster-demo-backend" "demo-$i" "127.0.0.1:900$i" >/dev/null & pids+=($!)
done
for i in 1 2; do
  "$bin/routemaster-proxy" --control-plane http://127.0.0.1:7000 --node-id "proxy-$i" \
    --group default --label "slot=$i" \
    --listen "127.0.0.1:808$((i - 1))" --admin-listen "127.0.0.1:990$i" \
    2>"$data/proxy-$i.log" >/dev/null & pids+=($!)
done

"$bin/routemaster" --control-plane http://127.0.0.1:7000 apply -f examples/routes.yaml
wait_ok http://127.0.0.1:9901/readyz proxy-1
wait_ok http://127.0.0.1:9902/readyz proxy-2

cat <<MSG

Routemaster is up: etcd :22379, control plane gRPC :7000 / status :7001,
proxies :8080 and :8081 (admin :9901, :9902), demo backends :9001-9003.
Logs: $data
Try:
  curl -H 'Host: www.example.com' http://127.0.0.1:8080/courses/101
  curl -H 'Host: www.example.com' -H 'x-env: beta' http://127.0.0.1:8081/courses/101
  curl -i http://127.0.0.1:8080/old-courses/101?page=2
  curl --http2-prior-knowledge http://127.0.0.1:8081/api/items
  curl http://127.0.0.1:7001/v1/status
  $bin/routemaster get routes
  $bin/routemaster status
Edit examples/routes.yaml, then: $bin/routemaster diff -f examples/routes.yaml; $bin/routemaster apply -f examples/routes.yaml
Ctrl-C stops everything.
MSG
wait
