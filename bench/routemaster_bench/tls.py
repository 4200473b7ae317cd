"""The HTTPS phase (`--only tls`): nginx, HAProxy and routemaster terminating TLS with the
same certificate (ECDSA P-256, made with the openssl CLI for the run) in front of the same
backend, each alone on the proxy CPU like the other scenarios:

- keep-alive: wrk over HTTPS, 64 connections (TLS once per connection);
- new connection per request: `openssl s_time -new` (a full handshake, no resumption,
  then one `GET /` over HTTP/1.0) — handshakes per second and proxy CPU per handshake.

Results go to results["tls"] and bench/RESULTS.tls.md (ratios against nginx and HAProxy
from the same run)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from .formatting import fmt_num, med
from .layout import BENCH, LOADGEN_CPU, PORTS, PROXIES, PROXY_CPU
from .loadgen import run_cmd, wrk
from .procstats import CLK_TCK, proc_ticks
from .progress import log
from .servers import Server, Target, start_routemaster, wait_port

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
        conf = d / "nginx.conf"
        conf.write_text(f"""worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; keepalive_requests 1000000000; }}
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}
}}
""")
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
    bind 127.0.0.1:{port} ssl crt {both} alpn http/1.1 backlog 4096
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


def measure(t: Target, kind: str, seconds: int) -> dict:
    pids = t.server.pids()
    ticks0 = proc_ticks(pids)
    if kind == "ka64":
        r = wrk(f"https://127.0.0.1:{t.h1_port}/", 64, seconds)
    else:
        r = s_time(t.h1_port, seconds)
    cpu_s = (proc_ticks(pids) - ticks0) / CLK_TCK
    r["proxy_cpu_s"] = cpu_s
    r["cpu_us_per_req"] = cpu_s * 1e6 / r["good"] if r["good"] else None
    return r


KINDS = {"ka64": "HTTPS keep-alive, 64 conns (wrk)", "new": "HTTPS new connection per request (openssl s_time -new)"}


def tls_phase(b) -> None:
    st = b.settings
    d = b.workdir / "tls"
    d.mkdir(exist_ok=True)
    cert, key, both = make_cert(d)
    log("scenario tls: HTTPS keep-alive and new-connection-per-request, same certificate (ECDSA P-256)")
    targets = {name: start(name, d / name, cert, key, both) for name in PROXIES}
    res: dict = {kind: {name: [] for name in PROXIES} for kind in KINDS}
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
                    time.sleep(0.2)
    finally:
        for t in targets.values():
            t.server.stop()
    b.results["tls"] = res
    RESULTS_TLS_MD.write_text(tls_report(res, st))


def tls_report(res: dict, st) -> str:
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
    return "\n".join(lines) + "\n"
