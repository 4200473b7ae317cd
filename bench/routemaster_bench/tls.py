"""The HTTPS phase (`--only tls`): nginx, HAProxy and routemaster terminating TLS with the
same certificate (ECDSA P-256, made with the openssl CLI for the run) in front of the same
backend, each alone on the proxy CPU like the other scenarios:

- keep-alive: wrk over HTTPS, 64 connections (TLS once per connection);
- new connection per request: `openssl s_time -new` (a full handshake, no resumption,
  then one `GET /` over HTTP/1.0) — handshakes per second and proxy CPU per handshake;
- HTTP/2 over TLS: h2load, 4 connections × 100 concurrent streams, h2 chosen by ALPN
  (nginx `listen … ssl http2`, HAProxy `alpn h2,http/1.1`, routemaster's `--tls-listen`),
  forwarded to the same HTTP/1.1 backend (like the h2c scenario). A run whose h2load output
  does not say `Application protocol: h2`, or that has a failed, errored, timed-out or
  non-2xx request, fails (logged and listed under its table, left out of the medians).

Results go to results["tls"] and bench/RESULTS.tls.md (ratios against nginx and HAProxy
from the same run)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from .formatting import fmt_num, med
from .layout import BENCH, LOADGEN_CPU, PORTS, PROXIES, PROXY_CPU
from .loadgen import parse_duration_s, run_cmd, wrk
from .procstats import CLK_TCK, proc_ticks
from .progress import log
from .servers import Server, Target, nginx_conf, start_routemaster, wait_port

TLS_PORTS = {"nginx": 18131, "haproxy": 18132, "routemaster": 18133, "routemaster_plain": 18134,
             "routemaster_admin": 18135}
RESULTS_TLS_MD = BENCH / "RESULTS.tls.md"


def make_cert(d: Path) -> tuple[Path, Path, Path]:
    cert, key, both = d / "cert.pem", d / "key.pem", d / "both.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", "/CN=bench.test", "-addext", "subjectAltName=DNS:bench.test",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    both.write_text(cert.read_text() + key.read_text())
    return cert, key, both


def start(name: str, d: Path, cert: Path, key: Path, both: Path) -> Target:
    d.mkdir(exist_ok=True)
    port = TLS_PORTS[name]
    backend = PORTS["backend"]
    if name == "nginx":
        conf = nginx_conf(d, f"""    upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; keepalive_requests 1000000000; }}
    server {{
        listen 127.0.0.1:{port} ssl http2 backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}""")
        s = Server("nginx-tls", ["nginx", "-p", str(d), "-c", str(conf)], PROXY_CPU, d.parent)
    elif name == "haproxy":
        conf = d / "haproxy.cfg"
        conf.write_text(f"""global
    nbthread 1
    maxconn 10200
    no strict-limits
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    http-reuse always
frontend tls
    bind 127.0.0.1:{port} ssl crt {both} alpn h2,http/1.1 backlog 4096
    default_backend backend
backend backend
    server b1 127.0.0.1:{backend}
""")
        s = Server("haproxy-tls", ["haproxy", "-db", "-f", str(conf)], PROXY_CPU, d.parent)
    else:
        conf = d / "routes.yaml"
        conf.write_text(f"""tls:
  certificates:
    - {{ name: bench, hosts: [bench.test], cert_file: {cert}, key_file: {key} }}
services:
  - {{ name: backend, instances: [{{ address: "127.0.0.1:{backend}" }}] }}
routes:
  - {{ id: all, forward: {{ service: backend }} }}
""")
        t = start_routemaster(conf, TLS_PORTS["routemaster_plain"], TLS_PORTS["routemaster_admin"],
                              "routemaster-tls", d.parent, extra=("--tls-listen", f"127.0.0.1:{port}"))
        wait_port(port, 10, t.server)
        t.h1_port = t.h2_port = port  # measured on the TLS listener
        return t
    t = Target(name, s, port, port)
    wait_port(port, 10, s)
    return t


def s_time(port: int, seconds: int) -> dict:
    """Full handshakes (`-new`), each followed by one GET, for `seconds`."""
    out = run_cmd(["taskset", "-c", LOADGEN_CPU, "openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new",
                   "-www", "/", "-time", str(seconds)], seconds + 60)
    m = re.search(r"(\d+) connections in (\d+) real seconds", out)
    if not m:
        raise RuntimeError(f"s_time: cannot parse:\n{out[-400:]}")
    n, real = int(m.group(1)), int(m.group(2))
    return {"requests": n, "good": n, "seconds": real, "rps": n / real if real else 0.0}


def h2load_tls(port: int, conns: int, streams: int, seconds: int) -> dict:
    """h2load over TLS (h2 by ALPN). Like loadgen.h2load, but it also needs h2load's own
    output: the run fails unless ALPN chose h2 and every request got a 2xx."""
    argv = ["taskset", "-c", LOADGEN_CPU, "h2load", "-t", "1", "-c", str(conns), "-m", str(streams),
            "-D", str(seconds), f"https://127.0.0.1:{port}/"]
    out = run_cmd(argv, seconds + 60)
    proto = re.search(r"Application protocol: (\S+)", out)
    m = re.search(r"finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req/s", out)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not (m and r and s):
        raise RuntimeError(f"h2load: cannot parse output:\n{out[-600:]}")
    if not proto or proto.group(1) != "h2":
        raise RuntimeError(f"h2load did not negotiate h2 (application protocol "
                           f"{proto.group(1) if proto else 'not reported'}):\n{out[-600:]}")
    done, failed, errored, timeout = int(r.group(3)), int(r.group(5)), int(r.group(6)), int(r.group(7))
    ok2xx, other = int(s.group(1)), sum(int(x) for x in s.groups()[1:])
    # (2xx can be one more than done: a response whose headers came before the deadline.)
    if failed or errored or timeout or other or not ok2xx:
        raise RuntimeError(f"h2load: {done} done, {ok2xx} 2xx, {other} not 2xx, {failed} failed, "
                           f"{errored} errored, {timeout} timeout:\n{out[-600:]}")
    secs = parse_duration_s(m.group(1), m.group(2))
    return {"requests": done, "good": ok2xx, "seconds": secs, "rps": ok2xx / secs if secs else 0.0,
            "rps_reported": float(m.group(3)), "protocol": proto.group(1)}


def measure(t: Target, kind: str, seconds: int) -> dict:
    pids = t.server.pids()
    ticks0 = proc_ticks(pids)
    if kind == "ka64":
        r = wrk(f"https://127.0.0.1:{t.h1_port}/", 64, seconds)
    elif kind == "h2":
        r = h2load_tls(t.h2_port, 4, 100, seconds)
    else:
        r = s_time(t.h1_port, seconds)
    cpu_s = (proc_ticks(pids) - ticks0) / CLK_TCK
    r["proxy_cpu_s"] = cpu_s
    r["cpu_us_per_req"] = cpu_s * 1e6 / r["good"] if r["good"] else None
    return r


KINDS = {"ka64": "HTTPS keep-alive, 64 conns (wrk)", "new": "HTTPS new connection per request (openssl s_time -new)",
         "h2": "HTTP/2 over TLS, 4 conns × 100 streams (h2load, h2 by ALPN)"}


def tls_phase(b) -> None:
    st = b.settings
    d = b.workdir / "tls"
    d.mkdir(exist_ok=True)
    cert, key, both = make_cert(d)
    log("scenario tls: HTTPS keep-alive, new-connection-per-request and h2 by ALPN, same certificate (ECDSA P-256)")
    targets = {name: start(name, d / name, cert, key, both) for name in PROXIES}
    res: dict = {kind: {name: [] for name in PROXIES} for kind in KINDS}
    failed: dict = {kind: [] for kind in KINDS}  # measured rounds that failed, for the report
    try:
        for kind in KINDS:
            for name, t in targets.items():
                try:
                    measure(t, kind, st.warmup_s)
                except Exception as e:  # noqa: BLE001
                    log(f"  {kind} warm-up {name}: FAILED {e}")
            for rnd in range(st.rounds):
                order = PROXIES[rnd % 3:] + PROXIES[: rnd % 3]
                for name in order:
                    try:
                        r = measure(targets[name], kind, st.run_s)
                        res[kind][name].append(r)
                        log(f"  {kind} round {rnd + 1} {name:11s} {r['rps']:9.0f}/s  "
                            f"{fmt_num(r['cpu_us_per_req'], 1)} µs proxy CPU each")
                    except Exception as e:  # noqa: BLE001
                        log(f"  {kind} round {rnd + 1} {name}: FAILED {e}")
                        failed[kind].append(f"{name} round {rnd + 1}: {str(e).splitlines()[0].rstrip(':')}")
                    time.sleep(0.2)
    finally:
        for t in targets.values():
            t.server.stop()
    b.results["tls"] = res
    b.results["tls_failed"] = failed
    RESULTS_TLS_MD.write_text(tls_report(res, st, failed))


def tls_report(res: dict, st, failed: dict) -> str:
    lines = ["# HTTPS: routemaster-proxy vs nginx vs HAProxy", "",
             f"Same ECDSA P-256 certificate, TLS 1.2/1.3, one proxy CPU each; medians of {st.rounds} rounds of "
             f"{st.run_s}s (`./bench/run.sh --only tls`). Load generator on the other CPU.", ""]
    for kind, title in KINDS.items():
        lines += [f"## {title}", "", "| proxy | per second | proxy CPU µs each | CPU vs nginx | CPU vs HAProxy |",
                  "|---|---:|---:|---:|---:|"]
        cpu = {name: med(res[kind][name], "cpu_us_per_req") for name in PROXIES}
        for name in PROXIES:
            rate = med(res[kind][name], "rps")
            c = cpu[name]
            vs = [f"{c / cpu[p]:.2f}×" if c and cpu[p] else "—" for p in ("nginx", "haproxy")]
            lines.append(f"| {name} | {fmt_num(rate, 0)} | {fmt_num(c, 1)} | {vs[0]} | {vs[1]} |")
        lines.append("")
        if failed[kind]:
            lines += [f"**FAILED rounds** (left out of the medians): {'; '.join(failed[kind])}", ""]
    return "\n".join(lines) + "\n"
