"""The load generators, pinned to the load-generator CPU: wrk and h2load for peak
throughput; oha (or, without it, wrk with a Lua delay() / h2load --rps) for fixed-rate
latency. Each run returns its parsed figures as a dict (stored as-is in results.json)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

from .layout import LOADGEN_CPU
from .tools import tool


def run_cmd(argv: list[str], timeout: float) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {r.returncode}: {r.stderr.strip()[-400:]} {r.stdout.strip()[-400:]}")
    return r.stdout + r.stderr


def parse_duration_s(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def wrk(url: str, conns: int, seconds: float, headers: list[str] = (), script: Path | None = None) -> dict:
    argv = ["taskset", "-c", LOADGEN_CPU, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for h in headers:
        argv += ["-H", h]
    if script:
        argv += ["-s", str(script)]
    argv.append(url)
    out = run_cmd(argv, seconds + 60)
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if not m:
        raise RuntimeError(f"wrk: cannot parse output:\n{out}")
    res = {"requests": int(m.group(1)), "seconds": parse_duration_s(m.group(2), m.group(3))}
    res["rps"] = res["requests"] / res["seconds"]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in sock.groups()) if sock else 0
    lat = {}
    for pct, val, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        lat[f"p{pct}"] = parse_duration_s(val, unit)
    res["latency"] = lat
    res["good"] = max(0, res["requests"] - res["non2xx"])
    return res


def h2load(url: str, conns: int, streams: int, seconds: float, log_file: Path | None = None, rps: float | None = None,
           grpc_body: Path | None = None) -> dict:
    argv = ["taskset", "-c", LOADGEN_CPU, "h2load", "-t", "1", "-c", str(conns), "-m", str(streams), "-D", str(int(seconds))]
    if grpc_body:
        # A gRPC-shaped unary call: POST of one framed message with gRPC's headers.
        argv += ["-d", str(grpc_body), "-H", "content-type: application/grpc", "-H", "te: trailers"]
    if log_file:
        argv += ["--log-file", str(log_file)]
    if rps:
        argv += ["--rps", f"{rps:.2f}"]
    argv.append(url)
    out = run_cmd(argv, seconds + 60)
    m = re.search(r"finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req/s", out)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    s = re.search(r"status codes: (\d+) 2xx", out)
    if not (m and r):
        raise RuntimeError(f"h2load: cannot parse output:\n{out}")
    seconds_taken = parse_duration_s(m.group(1), m.group(2))
    ok2xx = int(s.group(1)) if s else 0
    done = int(r.group(3))
    return {
        "requests": done,
        "good": ok2xx,
        "seconds": seconds_taken,
        "rps": ok2xx / seconds_taken if seconds_taken else 0.0,
        "rps_reported": float(m.group(3)),
        "non2xx": max(0, done - ok2xx),
        "socket_errors": int(r.group(5)) + int(r.group(6)) + int(r.group(7)),
    }


def oha(url: str, conns: int, rate: float, seconds: float, close: bool, h2: bool, streams: int) -> dict:
    argv = ["taskset", "-c", LOADGEN_CPU, tool("oha"), "-z", f"{seconds}s", "-c", str(conns), "-q", f"{rate:.0f}",
            "--latency-correction", "--no-tui", "--output-format", "json"]
    if close:
        argv.append("--disable-keepalive")
    if h2:
        argv += ["--http2", "-p", str(streams)]
    argv.append(url)
    out = run_cmd(argv, seconds + 60)
    data = json.loads(out[out.index("{"):])
    pct = data.get("latencyPercentiles", {})
    codes = data.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
    total = sum(codes.values())
    # Requests still in flight when -z ends are reported as "aborted due to deadline":
    # an artefact of stopping, not an error of the server.
    errors = sum(v for k, v in data.get("errorDistribution", {}).items() if "deadline" not in k)
    summ = data.get("summary", {})
    return {
        "p50": pct.get("p50"),
        "p99": pct.get("p99"),
        "achieved_rps": summ.get("requestsPerSec"),
        "requests": total,
        "non2xx": total - ok,
        "errors": errors,
        "tool": "oha",
    }


def wrk_fixed_rate(url: str, conns: int, rate: float, seconds: float, close: bool, workdir: Path) -> dict:
    """Fallback without oha: wrk with a per-connection delay() (closed loop, so not
    corrected for coordinated omission)."""
    script = workdir / "fixed_rate.lua"
    delay_ms = max(0.0, conns / rate * 1000.0)
    script.write_text(f"function delay()\n  return {delay_ms:.3f}\nend\n")
    r = wrk(url, conns, seconds, ["Connection: close"] if close else [], script)
    return {
        "p50": r["latency"].get("p50"),
        "p99": r["latency"].get("p99"),
        "achieved_rps": r["rps"],
        "requests": r["requests"],
        "non2xx": r["non2xx"],
        "errors": r["socket_errors"],
        "tool": "wrk-delay",
    }


def h2load_fixed_rate(url: str, conns: int, streams: int, rate: float, seconds: float, workdir: Path) -> dict:
    """Fallback without oha for h2c: h2load --rps per client, percentiles from its log."""
    log_file = workdir / "h2load-latency.log"
    r = h2load(url, conns, streams, seconds, log_file=log_file, rps=rate / conns)
    lat = sorted(int(line.split()[2]) for line in log_file.read_text().splitlines() if line.strip())
    def q(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] / 1e6 if lat else None
    return {"p50": q(0.5), "p99": q(0.99), "achieved_rps": r["rps"], "requests": r["requests"],
            "non2xx": r["non2xx"], "errors": r["socket_errors"], "tool": "h2load-rps"}
