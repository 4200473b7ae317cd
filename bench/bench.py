#!/usr/bin/env python3
"""Side-by-side proxy benchmark: routemaster-proxy vs nginx vs HAProxy (stdlib only).

Run through ./bench/run.sh (which installs the tools and raises the fd limit):

    ./bench/run.sh            # full run (~15-20 min): 3 rounds, writes bench/RESULTS.md
    ./bench/run.sh --quick    # smoke test: short runs, 1 round, writes bench/RESULTS.quick.md
    ./bench/run.sh --profile  # perf stat / perf record / strace -c of the proxies under load

Layout on this 2-core machine: the backend (nginx, `return 200 "ok"`) and the load
generator share CPU 0; the proxy under test runs alone on CPU 1 with one worker. Every
server is a child process with its own config rendered from bench/templates/ into a temp
dir; all of them are stopped on exit.
"""

# The command line only: the benchmark itself is the routemaster_bench package next to
# this file (its __init__ lists the modules).

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from routemaster_bench.layout import PORTS, PROFILE_MD, PROXY_BIN, REPO, RESULTS_JSON, RESULTS_MD
from routemaster_bench.mirror import mirror_phase
from routemaster_bench.phases import Bench
from routemaster_bench.profiling import profile
from routemaster_bench.progress import START, log
from routemaster_bench.report import report
from routemaster_bench.scenarios import FULL, QUICK, SCENARIOS, TABLE_SIZES
from routemaster_bench.servers import Server, start_backend
from routemaster_bench.tls import tls_phase
from routemaster_bench.tools import machine, tool, tool_versions


def cleanup_handler(signum, frame):  # noqa: ARG001
    raise SystemExit(128 + signum)


def preflight() -> str | None:
    """Why the run cannot start (a missing tool or binary, too few CPUs, a busy port), or None."""
    for exe in ["nginx", "haproxy", "wrk", "h2load", "taskset"]:
        if not shutil.which(exe):
            return f"{exe} not found (run through ./bench/run.sh, which installs it)"
    if not PROXY_BIN.exists():
        return f"{PROXY_BIN} missing: cargo build --release --workspace --bins"
    if os.cpu_count() < 2:
        return "needs at least 2 CPUs"
    busy = []
    for key, port in PORTS.items():
        ports = [port] if not key.startswith("table") else [port + i for i in range(len(TABLE_SIZES))]
        for p in ports:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    busy.append(p)
    if busy:
        return f"loopback ports already in use: {busy}"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs, 1 round (smoke test)")
    ap.add_argument("--profile", action="store_true", help="perf/strace the proxies under load; writes bench/PROFILE.md (with --only obs, h2c "
                    "or grpc: that load, bench/PROFILE.<key>.md)")
    ap.add_argument("--workdir", type=Path, help="temp dir for configs and logs (default: a new one, removed at exit)")
    ap.add_argument("--only", help="comma-separated subset: scenarios keys (%s), tables, obs, idle, tls, mirror" % ",".join(s.key for s in SCENARIOS))
    ap.add_argument("--rounds", type=int, help="rounds per phase (default: 3, --quick 1; the obs phase: 30, --quick 2)")
    ap.add_argument("--run-seconds", type=int, help="seconds per throughput run (default: 8, --quick 3; the obs phase: 2)")
    ap.add_argument("--command", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, cleanup_handler)
    signal.signal(signal.SIGINT, cleanup_handler)
    signal.signal(signal.SIGHUP, cleanup_handler)

    own_workdir = args.workdir is None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="routemaster-bench."))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # nginx workers run as nobody
    Server.pid_file = workdir / "pids"

    problem = preflight()
    if problem:
        print(f"bench.py: {problem}", file=sys.stderr)
        return 1

    settings = QUICK if args.quick else FULL
    if args.rounds:
        settings = dataclasses.replace(settings, rounds=args.rounds, obs_rounds=args.rounds,
                                       mirror_rounds=args.rounds)
    if args.run_seconds:
        settings = dataclasses.replace(settings, run_s=args.run_seconds, obs_run_s=args.run_seconds,
                                       mirror_run_s=args.run_seconds)
    use_oha = tool("oha") is not None
    b = Bench(settings, workdir, args.quick, use_oha)
    if not use_oha:
        b.notes.append("oha was not available: fixed-rate latency used wrk with a Lua delay() per connection and "
                       "h2load --rps (closed loop: NOT corrected for coordinated omission; p99 understates tails).")
    meta = {"machine": machine(), "versions": tool_versions(),
            "command": args.command or " ".join([sys.argv[0], *sys.argv[1:]]),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    log(f"workdir {workdir}; settings {settings}; latency tool {'oha' if use_oha else 'wrk/h2load fallback'}")
    backend = None
    rc = 0
    try:
        backend = start_backend(workdir)
        if args.profile:
            only = (args.only or "").split(",")
            obs = "obs" in only
            h2 = next((k for k in ("h2c", "grpc") if k in only), None)
            text = profile(b, 5 if args.quick else 8, args.command or " ".join(sys.argv), obs=obs, h2=h2)
            name = "PROFILE.obs.md" if obs else f"PROFILE.{h2}.md" if h2 else PROFILE_MD.name
            PROFILE_MD.with_name(name).write_text(text + "\n")
            print(text)
            return 0
        only = set(args.only.split(",")) if args.only else None
        for scn in SCENARIOS:
            if only is None or scn.key in only:
                b.scenario(scn)
        if only is None or "tables" in only:
            b.tables()
        if only is None or "obs" in only:
            b.observability()
        if only is None or "idle" in only:
            b.idle()
        if only is None or "tls" in only:
            tls_phase(b)
        if only is None or "mirror" in only:
            mirror_phase(b)
        if not backend.alive():
            b.notes.append("the backend died during the run: " + backend.tail(5))
        meta["elapsed_min"] = (time.monotonic() - START) / 60
        meta["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        # Only a full run replaces the kept results; smoke and partial runs go beside them.
        partial = args.quick or args.only
        md = RESULTS_MD.with_name("RESULTS.quick.md") if partial else RESULTS_MD
        js = RESULTS_JSON.with_name("results.quick.json") if partial else RESULTS_JSON
        meta["json_name"] = str(js.relative_to(REPO))
        text = report(b, meta)
        md.write_text(text)
        js.write_text(json.dumps({"meta": meta, "settings": settings.__dict__, "results": b.results},
                                 indent=1, default=str) + "\n")
        print(text)
        log(f"wrote {md.relative_to(REPO)} and {js.relative_to(REPO)}")
    except SystemExit as e:
        log(f"interrupted ({e.code}); cleaning up")
        rc = int(e.code or 1)
    finally:
        Server.stop_all()
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
