"""The --profile mode -> PROFILE.md: perf stat, strace -c and perf record of each proxy
under 64 keep-alive connections, plus the request-path breakdown of routemaster's
DWARF call graphs. perf.data and full reports go to bench/.profile/ (not committed)."""

from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .layout import BENCH, LABEL, LOADGEN_CPU, PORTS, PROXY_CPU
from .loadgen import h2load, wrk
from .servers import render, start_proxy, start_routemaster

if TYPE_CHECKING:
    from .phases import Bench

PROFILE_DIR = BENCH / ".profile"  # perf.data and full reports (not committed)


def perf_report(data: Path, *args: str, limit: int = 0, user_only: bool = False) -> list[str]:
    """Rows of `perf report --stdio` without headers or padding."""
    argv = ["perf", "report", "-i", str(data), "--stdio", "-g", "none", "--percent-limit", "0.3", *args]
    text = subprocess.run(argv, capture_output=True, text=True, timeout=600).stdout
    rows = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        line = re.sub(r"\s+-\s+-\s*$", "", line).rstrip()
        line = re.sub(r"\s{3,}", "  ", line)
        if user_only and "[k]" in line:
            continue
        rows.append(line[:220])
    return rows[:limit] if limit else rows


# Request-path buckets for the routemaster call-graph profile: (label, frame predicate,
# or a thread's name). A sample counts in a bucket when any frame of its stack matches
# (inclusive time), or when its thread has that name.
BREAKDOWN = [
    ("kernel: writev/sendto (TCP send + loopback delivery to the peer, inline)",
     lambda f: f in ("do_writev", "__sys_sendto")),
    ("kernel: recvfrom", lambda f: f == "__sys_recvfrom"),
    ("kernel: epoll_wait", lambda f: f == "__x64_sys_epoll_wait"),
    ("kernel: waking the peer on CPU 0 (sock_def_readable → _raw_spin_unlock_irqrestore)",
     lambda f: f == "sock_def_readable"),
    ("user: h1 request head (parse, framing, route, upstream head)",
     lambda f: f.startswith("routemaster_data_plane::h1::request::prepare")),
    ("user:   routing::decide (normalise, RouteTable::lookup, pick)",
     lambda f: f.startswith("routemaster_data_plane::routing::decide")),
    ("user:   httparse (request and response heads)", lambda f: f.startswith("httparse::")),
    ("user:   request id (uuid v4 when the client sent none)",
     lambda f: f.startswith("routemaster_data_plane::h1::head::RequestId")),
    ("user: h1 response head (parse, rewrite for the client)",
     lambda f: f.startswith("routemaster_data_plane::h1::response::prepare")),
    ("user: h1 upstream pool (checkout/checkin)",
     lambda f: f.startswith("routemaster_data_plane::h1::pool::")),
    # Not `time::Driver::park_internal`: the I/O driver's epoll_wait runs inside it; not
    # `Timeout::poll` either: the future it bounds (an I/O call and its syscall) runs
    # inside it.
    ("user: tokio timers (keep-alive/header-read timer, route deadlines)",
     lambda f: f.startswith(("tokio::time", "<tokio::time", "tokio::runtime::time::entry",
                             "<tokio::runtime::time::entry", "tokio::runtime::time::wheel"))
     and "timeout::Timeout" not in f),
    ("user: tokio I/O readiness (ScheduledIo)", lambda f: f.startswith(("tokio::runtime::io", "<tokio::runtime::io"))),
    ("user: allocator (malloc/free/realloc)",
     lambda f: f.startswith(("__rustc::__rdl_alloc", "__rustc::__rdl_dealloc", "__rustc::__rdl_realloc"))),
    ("user: memcpy/memmove (self)", None),
    ("user: logging hook (observe::Observer::observe: metrics, access-log line)",
     lambda f: f.startswith("routemaster_data_plane::observe::Observer::observe")),
    ("user:   access-log line (format into the worker's buffer, hand-over)",
     lambda f: f.startswith("routemaster_data_plane::observe::access_log::")),
    ("user:   metrics (per-worker counters and histograms)",
     lambda f: f.startswith("routemaster_data_plane::observe::metrics::")),
    ("thread: access-log writer (incl. its write syscalls and its context switches)", "access-log"),
]


# The same for the HTTP/2 path (`--profile --only h2c` or `grpc`): hyper's server and
# client, the h2 crate, tokio's per-stream tasks.
H2_BREAKDOWN = [
    ("kernel: writev/sendto", lambda f: f in ("do_writev", "__sys_sendto")),
    ("kernel: recvfrom", lambda f: f == "__sys_recvfrom"),
    ("kernel: epoll_wait", lambda f: f == "__x64_sys_epoll_wait"),
    ("user: client h2 connection (hyper server: frames in and out, HPACK)",
     lambda f: f.startswith(("h2::server::Connection", "<h2::server::Connection"))),
    ("user: stream tasks (hyper H2Stream: the request's future and its response body)",
     lambda f: f.startswith("<hyper::proto::h2::server::H2Stream")),
    ("user:   proxy::Proxy::forward (phases 5-7, incl. the client call)",
     lambda f: f.startswith("routemaster_data_plane::proxy::Proxy::forward")),
    ("user:   routing::decide", lambda f: f.startswith("routemaster_data_plane::routing::decide")),
    ("user: upstream HTTP/1.1 on the engine's client (h1::client: head out, response head in, body)",
     lambda f: f.startswith(("routemaster_data_plane::h1::client::", "<routemaster_data_plane::h1::client::"))),
    ("user: hyper-util legacy client (pool checkout, send_request)",
     lambda f: f.startswith(("hyper_util::client::legacy::", "<hyper_util::client::legacy::"))),
    ("user: upstream HTTP/1.1 connections (hyper h1 dispatcher, incl. syscalls)",
     lambda f: f.startswith(("hyper::proto::h1::dispatch", "<hyper::proto::h1::dispatch"))),
    ("user: upstream h2 connection (hyper ClientTask + h2 client, incl. syscalls)",
     lambda f: f.startswith(("<hyper::proto::h2::client::", "hyper::proto::h2::client::",
                             "<h2::client::Connection"))),
    ("user: HPACK encode (h2 crate)", lambda f: f.startswith(("h2::hpack::encoder", "h2::frame::headers::HeaderBlock::into_encoding"))),
    ("user: HPACK decode (h2 crate)", lambda f: f.startswith("h2::hpack::decoder")),
    ("user: tokio spawn (a task per stream; hyper's client adds one or two per request)",
     lambda f: f.startswith("tokio::task::spawn::spawn")),
    ("user: tokio timers", lambda f: f.startswith(("tokio::time", "<tokio::time", "tokio::runtime::time::entry",
                                                   "<tokio::runtime::time::entry", "tokio::runtime::time::wheel"))),
    ("user: allocator (jemalloc)", lambda f: f.startswith(("_rjem_", "tikv_jemalloc", "__rustc::__rdl_"))),
    ("user: memcpy/memmove (self)", None),
    ("user: logging hook (observe::Observer::observe)",
     lambda f: f.startswith("routemaster_data_plane::observe::Observer::observe")),
]


def perf_breakdown(data: Path, requests: int, buckets: list | None = None) -> list[str]:
    """Inclusive time per request-path bucket from a call-graph perf.data."""
    text = subprocess.run(["perf", "script", "-i", str(data), "-F", "comm,ip,sym"], capture_output=True, text=True,
                          timeout=900).stdout
    samples: list[list[str]] = []
    threads: list[str] = []  # each sample's thread name
    cur: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            if cur:
                samples.append(cur)
                cur = []
            continue
        if not line.startswith(("\t", " ")):
            threads.append(line.strip())
            continue
        parts = line.strip().split(" ", 1)
        cur.append(parts[1] if len(parts) > 1 else "?")
    if cur:
        samples.append(cur)
    if len(threads) != len(samples):
        threads = [""] * len(samples)
    if not samples or not requests:
        return ["(no samples)"]
    n = len(samples)
    # Samples are taken at 1999 Hz of CPU time: µs of CPU per request for 1% of samples.
    us_per_pct = n / 1999 * 1e6 / requests / 100
    kernel = sum(1 for s in samples if any(f.startswith(("entry_SYSCALL", "asm_", "ret_from_fork")) for f in s)) / n * 100
    rows = [f"{n:,} samples over {requests:,} requests: {n / 1999 * 1e6 / requests:.1f} µs CPU/request; "
            f"kernel {kernel:.0f}% ({kernel * us_per_pct:.1f} µs), user {100 - kernel:.0f}% "
            f"({(100 - kernel) * us_per_pct:.1f} µs)", "",
            "| bucket (inclusive) | % of samples | µs/request |", "|---|--:|--:|"]
    for label, pred in BREAKDOWN if buckets is None else buckets:
        if pred is None:
            hits = sum(1 for s in samples if s[0].startswith(("__memcpy", "__memmove")))
        elif isinstance(pred, str):  # a thread, by name
            hits = sum(1 for t in threads if t == pred)
        else:
            hits = sum(1 for s in samples if any(pred(f) for f in s))
        pct_ = hits / n * 100
        rows.append(f"| {label} | {pct_:.1f}% | {pct_ * us_per_pct:.2f} |")
    conn = sum(1 for s in samples if any(f.startswith("routemaster_data_plane::h1::connection::Conn")
                                         and "::run" in f for f in s)) / n * 100
    rows.append(f"| task: client connections (h1::connection::Conn::run, incl. their syscalls) | {conn:.1f}% | "
                f"{conn * us_per_pct:.2f} |")
    return rows


def start_obs_variant(name: str, b: Bench):
    """routemaster-off / routemaster-on exactly as the obs phase starts them (metrics and
    access log off, or both on with the log in a file)."""
    d = b.workdir / "obs-prof"
    d.mkdir(exist_ok=True)
    conf = render("routemaster-routes.yaml", d / "routes.yaml", BACKEND_PORT=PORTS["backend"],
                  BACKEND_H2_PORT=PORTS["backend_h2"])
    extra = (("--metrics", "off", "--access-log", "off") if name == "routemaster-off"
             else ("--metrics", "on", "--access-log", str(d / "routemaster-access.log")))
    t = start_routemaster(conf, PORTS["routemaster"], PORTS["routemaster_admin"], f"{name}-prof", b.workdir,
                          extra=extra)
    time.sleep(0.5)
    return t


def profile(b: Bench, seconds: int, command: str, obs: bool = False, h2: str | None = None) -> str:
    """perf stat, perf record and strace -c of each proxy under the 64-connection load;
    with `obs`, of routemaster with metrics and the access log off and on instead (the
    observability phase's variants: where the access log's CPU goes); with `h2` ("h2c" or
    "grpc"), of each proxy under that scenario's h2load (4 connections x 100 streams)."""
    if h2:
        title = f"# Profile: proxies under h2load, 4 conns x 100 streams ({h2})"
    else:
        title = "# Profile: proxies under 64 keep-alive connections" + (" (observability off vs on)" if obs else "")
    out = [title, ""]
    out.append(f"- Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}; "
               f"`nproc` {os.cpu_count()}, `uname -r` {os.uname().release}; same layout as bench.py "
               f"(backend + wrk on CPU {LOADGEN_CPU}, proxy alone on CPU {PROXY_CPU}, one worker)")
    out.append(f"- Command: `{command}`; perf data and full reports in bench/.profile/ (not committed)")
    out.append("")
    pdir = PROFILE_DIR
    pdir.mkdir(exist_ok=True)
    names = ["routemaster-off", "routemaster-on"] if obs else ["routemaster", "nginx", "haproxy"]
    for name in names:
        t = start_obs_variant(name, b) if obs else start_proxy(name, b.workdir, tag="-prof")

        def load(secs: int, t=t) -> dict:
            if h2 == "grpc":
                return h2load(t.grpc_url(), 4, 100, secs, grpc_body=b.grpc_body())
            if h2:
                return h2load(t.url(True), 4, 100, secs)
            return wrk(t.url(False), 64, secs)

        try:
            load(2)  # warm-up
            pids = t.server.pids()
            out.append(f"## {LABEL.get(name, name)}")
            out.append("")
            # 1) perf stat over a fixed-length wrk run
            stat_file = pdir / f"{name}.stat"
            ps = subprocess.Popen(["perf", "stat", "-e", "task-clock,context-switches,cpu-migrations,page-faults",
                                   "-p", ",".join(map(str, pids)), "-o", str(stat_file)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.2)
            r = load(seconds)
            ps.send_signal(signal.SIGINT)
            ps.wait(30)
            out.append(f"### perf stat ({seconds} s, {r['requests']:,} requests, {r['rps']:,.0f} req/s)")
            out.append("")
            out.append("```")
            stat_text = stat_file.read_text()
            out += [line for line in stat_text.splitlines() if line.strip() and not line.startswith("#")]
            cs = re.search(r"([\d,]+)\s+context-switches", stat_text)
            if cs and r["requests"]:
                out.append(f"=> context switches per request: {int(cs.group(1).replace(',', '')) / r['requests']:.3f}")
            out.append("```")
            out.append("")
            # 2) strace -c -f over a fixed-length wrk run
            sfile = pdir / f"{name}.strace"
            sargv = ["strace", "-c", "-f", "-o", str(sfile)]
            for pid in pids:
                sargv += ["-p", str(pid)]
            sp = subprocess.Popen(sargv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            r = load(3)
            sp.send_signal(signal.SIGINT)
            sp.wait(30)
            text = sfile.read_text()
            out.append(f"### strace -c -f (3 s under strace, {r['requests']:,} requests — slowed by strace)")
            out.append("")
            out.append("| syscall | calls | per request | errors |")
            out.append("|---|--:|--:|--:|")
            total_calls = 0
            for line in text.splitlines():
                f = line.split()
                if len(f) >= 5 and re.match(r"^[\d.]+$", f[0]) and f[-1] != "total":
                    calls = int(f[3])
                    errors = f[4] if len(f) == 6 else ""
                    total_calls += calls
                    if r["requests"]:
                        out.append(f"| {f[-1]} | {calls:,} | {calls / r['requests']:.3f} | {errors} |")
            if r["requests"]:
                out.append(f"| **total** | {total_calls:,} | **{total_calls / r['requests']:.2f}** | |")
            out.append("")
            # 3) perf record: where the CPU time goes (call graphs for routemaster only;
            #    Debian's nginx/haproxy binaries have no debug info).
            data = PROFILE_DIR / f"{name}.perf.data"
            data.unlink(missing_ok=True)
            Path(f"{data}.old").unlink(missing_ok=True)
            ours = name.startswith("routemaster")
            cg = ["-g", "--call-graph", "dwarf,16384"] if ours else []
            pr = subprocess.Popen(["perf", "record", "-F", "1999", *cg, "-p", ",".join(map(str, pids)), "-o", str(data)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
            r = load(seconds)
            pr.send_signal(signal.SIGINT)
            pr.wait(120)
            reports = {
                "self time by DSO": perf_report(data, "--no-children", "--sort", "dso"),
                "self time by symbol, top 30 (kernel [k] and user [.])":
                    perf_report(data, "--no-children", "--sort", "dso,symbol", limit=30),
                "user-space self time by symbol, top 30 (% of all samples)":
                    perf_report(data, "--no-children", "--sort", "dso,symbol", limit=30, user_only=True),
            }
            if ours:
                breakdown = perf_breakdown(data, r["requests"], H2_BREAKDOWN if h2 else None)
                (PROFILE_DIR / f"{name}.breakdown.md").write_text("\n".join(breakdown) + "\n")
                incl = perf_report(data, "--children", "--sort", "symbol", limit=400)
                keep = [line for line in incl if re.search(r"routemaster_|hyper|h2::|http::|uuid|tracing|HeaderMap|"
                                                           r"malloc|free|memmove|memcpy|sys_|do_syscall", line)
                        and not re.search(r"\(inlined\)|poll_future|catch_unwind|do_call|with_mut|call_once|"
                                          r"FnOnce|__rust_begin|tokio::runtime", line)]
                reports["inclusive (self + callees) time, request-path functions ≥ 1%"] = keep[:45]
            (PROFILE_DIR / f"{name}.report.txt").write_text(
                "\n\n".join(f"## {k}\n" + "\n".join(v) for k, v in reports.items()) + "\n")
            out.append(f"### perf record ({seconds} s at 1999 Hz, {r['requests']:,} requests, {r['rps']:,.0f} req/s)")
            out.append("")
            if ours:
                out.append("Request-path breakdown (from the DWARF call graphs; buckets overlap, a sample counts in "
                           "every bucket that is on its stack):")
                out.append("")
                out += breakdown
                out.append("")
            for title, lines in reports.items():
                out.append(f"{title}:")
                out.append("")
                out.append("```")
                out += lines
                out.append("```")
                out.append("")
        finally:
            t.server.stop()
    return "\n".join(out)
