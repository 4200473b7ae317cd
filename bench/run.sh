#!/usr/bin/env bash
# Side-by-side proxy benchmark: routemaster-proxy vs nginx vs HAProxy.
#
#   ./bench/run.sh            full run (~15-20 min), writes bench/RESULTS.md + bench/results.json
#   ./bench/run.sh --quick    smoke test (short runs, 1 round) -> bench/RESULTS.quick.md (not kept)
#   ./bench/run.sh --profile  perf stat / perf record / strace -c under load -> bench/PROFILE.md
#
# Installs what is missing (apt-get: nginx haproxy wrk nghttp2-client; --profile also
# linux-perf strace; `cargo install oha --locked` into bench/.tools, bounded by
# BENCH_OHA_INSTALL_TIMEOUT seconds, default 900 — without it the fixed-rate latency
# falls back to wrk/h2load, see RESULTS.md). The orchestration is bench/bench.py (command line)
# and the bench/routemaster_bench/ package it drives.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH_DIR/.." && pwd)"
TOOLS="$BENCH_DIR/.tools"
COMMAND="./bench/run.sh${*:+ $*}"

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi

log() { echo "[run.sh] $*" >&2; }

# ---------------------------------------------------------------- tools
need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx)
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v h2load >/dev/null || need_apt+=(nghttp2-client)
command -v taskset >/dev/null || need_apt+=(util-linux)
if [[ " $* " == *" --profile "* ]]; then
  command -v perf >/dev/null || need_apt+=(linux-perf)
  command -v strace >/dev/null || need_apt+=(strace)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing: ${need_apt[*]}"
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # Debian's packages start their services on install: stop them (ours run as children).
  for svc in nginx haproxy; do
    if [[ " ${need_apt[*]} " == *" $svc "* ]]; then
      "${SUDO[@]}" service "$svc" stop >/dev/null 2>&1 || "${SUDO[@]}" "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
      "${SUDO[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
fi

if [ ! -x "$TOOLS/bin/oha" ] && ! command -v oha >/dev/null; then
  if command -v cargo >/dev/null; then
    log "installing oha (cargo install oha --locked --root $TOOLS; up to ${BENCH_OHA_INSTALL_TIMEOUT:-900}s)"
    mkdir -p "$TOOLS"
    if ! timeout "${BENCH_OHA_INSTALL_TIMEOUT:-900}" cargo install oha --locked --root "$TOOLS" >"$TOOLS/install.log" 2>&1; then
      log "oha install failed or timed out (see $TOOLS/install.log): fixed-rate latency falls back to wrk/h2load"
    fi
  else
    log "no cargo: fixed-rate latency falls back to wrk/h2load"
  fi
fi

# Always (incremental): a release binary left from an older checkout must not be measured.
log "building routemaster-proxy (release)"
(cd "$REPO" && cargo build --release -p routemaster-data-plane --bin routemaster-proxy)

# ---------------------------------------------------------------- limits
# 10k idle client connections: client and proxy each need > 10k descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10300 ]; then
  log "warning: open-file limit $(ulimit -n) < 10300: the 10k idle-connection test will fall short"
fi

# ---------------------------------------------------------------- run
WORK="$(mktemp -d /tmp/routemaster-bench.XXXXXX)"
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "${PY_PID:-}" ] && kill -0 "$PY_PID" 2>/dev/null; then
    kill -TERM "$PY_PID" 2>/dev/null || true
    wait "$PY_PID" 2>/dev/null || true
  fi
  # Anything bench.py started and did not stop: each server is its own process group.
  if [ -f "$WORK/pids" ]; then
    while read -r pid; do
      [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null || true
    done <"$WORK/pids"
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export PATH="$TOOLS/bin:$PATH"
python3 "$BENCH_DIR/bench.py" --workdir "$WORK" --command "$COMMAND" "$@" &
PY_PID=$!
wait "$PY_PID"
