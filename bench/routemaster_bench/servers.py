"""The servers of a run, each a child process in its own process group pinned with
taskset: the backend and the proxies under test (configs rendered from bench/templates/),
readiness checks, and the backend's request/connection counters."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .layout import LOADGEN_CPU, PORTS, PROXY_BIN, PROXY_CPU, TEMPLATES
from .procstats import proc_status_kb, process_tree
from .tools import nginx_version


class Server:
    """A server started as its own process group, pinned with taskset."""

    registry: list["Server"] = []
    pid_file: Path | None = None

    def __init__(self, name: str, argv: list[str], cpu: str, workdir: Path):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["taskset", "-c", cpu, *argv],
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        Server.registry.append(self)
        if Server.pid_file:
            with open(Server.pid_file, "a") as f:
                f.write(f"{self.proc.pid}\n")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        """The process and all its descendants (nginx: master + worker)."""
        return process_tree(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        # nginx workers may outlive the master by a moment: the group goes too.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.logf.close()
        if self in Server.registry:
            Server.registry.remove(self)

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    @classmethod
    def stop_all(cls) -> None:
        for s in list(cls.registry):
            s.stop()


@dataclass
class Target:
    """One proxy under test: its server and its URLs."""

    name: str
    server: Server
    h1_port: int
    h2_port: int
    admin_port: int | None = None
    idle_rss_kb: int = 0
    start_s: float = 0.0
    grpc_port: int | None = None

    def url(self, h2: bool, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.h2_port if h2 else self.h1_port}{path}"

    def grpc_url(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port or self.h2_port}/grpc.Bench/Unary"


def wait_port(port: int, timeout: float, server: Server) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited:\n{server.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{server.name}: port {port} not open after {timeout}s:\n{server.tail()}")


def http_get(port: int, path: str = "/", host: str | None = None, timeout: float = 5) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host} if host else {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def wait_http_200(port: int, timeout: float, server: Server, path: str = "/", host: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited:\n{server.tail()}")
        try:
            status, body = http_get(port, path, host)
            if status == 200:
                return
            last = f"status {status} body {body[:80]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise RuntimeError(f"{server.name}: no 200 on :{port}{path} after {timeout}s ({last}):\n{server.tail()}")


def backend_counters() -> tuple[int, int]:
    """(accepted connections, requests) of the backend, from nginx stub_status."""
    _, body = http_get(PORTS["backend_status"], "/")
    nums = re.search(rb"\n\s*(\d+)\s+(\d+)\s+(\d+)\s*\n", body)
    if not nums:
        raise RuntimeError(f"cannot parse stub_status: {body!r}")
    # The status request itself is one accepted connection and one request.
    return int(nums.group(1)), int(nums.group(3))


def render(template: str, out: Path, **values: object) -> Path:
    text = (TEMPLATES / template).read_text()
    for k, v in values.items():
        text = text.replace(f"@@{k}@@", str(v))
    left = re.findall(r"@@[A-Z0-9_]+@@", text)
    if left:
        raise RuntimeError(f"{template}: unfilled placeholders {sorted(set(left))}")
    out.write_text(text)
    return out


def nginx_h2_listen(port: int) -> tuple[str, str]:
    """h2c prior knowledge: `http2 on;` from nginx 1.25.1, `listen ... http2` before."""
    v = nginx_version()
    if v >= (1, 25, 1):
        return (f"listen 127.0.0.1:{port} backlog=4096;\n        http2 on;", "`http2 on;`")
    return (f"listen 127.0.0.1:{port} http2 backlog=4096;", "`listen ... http2`")


def nginx_conf(d: Path, http_body: str) -> Path:
    """Writes `d/nginx.conf` for a bench nginx (one worker in the foreground, no access log,
    keep-alive never recycled, temp paths in `d`) with `http_body` inside its `http` block."""
    conf = d / "nginx.conf"
    conf.write_text(f"""worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
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
{http_body}
}}
""")
    return conf


def start_backend(workdir: Path) -> Server:
    """The backend: nginx with one worker answering `return 200 "ok"`, on the load generator's CPU."""
    d = workdir / "backend"
    d.mkdir(exist_ok=True)
    h2_listen, _ = nginx_h2_listen(PORTS["backend_h2"])
    conf = render("backend-nginx.conf", d / "nginx.conf", DIR=d, BACKEND_PORT=PORTS["backend"],
                  STATUS_PORT=PORTS["backend_status"], BACKEND_H2_LISTEN=h2_listen)
    s = Server("backend", ["nginx", "-p", str(d), "-c", str(conf)], LOADGEN_CPU, workdir)
    wait_http_200(PORTS["backend"], 10, s)
    wait_port(PORTS["backend_h2"], 10, s)
    return s


# nginx's access log in the observability phase's like-for-like variant: a JSON line with
# the fields routemaster's access log carries (nginx has no route or service name, so
# those are constants; `flags` is the upstream's status), escaped as JSON by nginx.
NGINX_JSON_LOG_FORMAT = (
    "log_format rmjson escape=json '{\"time\":\"$time_iso8601\",\"request_id\":\"$request_id\","
    "\"trace_id\":\"$http_traceparent\",\"client\":\"$remote_addr:$remote_port\","
    "\"method\":\"$request_method\",\"authority\":\"$host\",\"path\":\"$uri\","
    "\"protocol\":\"$server_protocol\",\"route\":\"bench\",\"service\":\"backend\","
    "\"endpoint\":\"$upstream_addr\",\"status\":$status,\"flags\":\"$upstream_status\","
    "\"bytes_in\":$request_length,\"bytes_out\":$bytes_sent,\"duration_ms\":$request_time,"
    "\"upstream_ms\":\"$upstream_response_time\",\"tls_version\":\"$ssl_protocol\","
    "\"tls_sni\":\"$ssl_server_name\"}';"
)


def start_proxy(name: str, workdir: Path, tag: str = "", nginx_access_log: Path | None = None,
                nginx_log_format: str = "combined", nginx_port_base: int | None = None) -> Target:
    """Start one proxy under test (fresh config dir `<name><tag>`), wait until it listens,
    then record its start time and idle RSS."""
    d = workdir / f"{name}{tag}"
    d.mkdir(exist_ok=True)
    t0 = time.monotonic()
    if name == "nginx":
        # Several nginx side by side (the observability phase): their own three ports.
        h1, h2, grpc = ((PORTS["nginx"], PORTS["nginx_h2"], PORTS["nginx_grpc"]) if nginx_port_base is None
                        else (nginx_port_base, nginx_port_base + 1, nginx_port_base + 2))
        listen, syntax = nginx_h2_listen(h2)
        grpc_listen, _ = nginx_h2_listen(grpc)
        v = ".".join(map(str, nginx_version()))
        conf = render("nginx-proxy.conf", d / "nginx.conf", DIR=d, BACKEND_PORT=PORTS["backend"],
                      H1_PORT=h1, H2_PORT=h2, H2_LISTEN=listen,
                      H2_SYNTAX=syntax, NGINX_VERSION=v, GRPC_LISTEN=grpc_listen,
                      BACKEND_H2_PORT=PORTS["backend_h2"])
        if nginx_access_log is not None:
            # The access-log comparison: nginx's usual buffered log (64 KiB, flushed every
            # second), like routemaster's per-worker buffer; `combined` (nginx's default
            # line) or "json" (the fields routemaster logs, NGINX_JSON_LOG_FORMAT).
            fmt = "combined"
            decl = ""
            if nginx_log_format == "json":
                fmt, decl = "rmjson", NGINX_JSON_LOG_FORMAT + "\n    "
            text = conf.read_text().replace(
                "access_log off;", f"{decl}access_log {nginx_access_log} {fmt} buffer=64k flush=1s;")
            conf.write_text(text)
        s = Server(f"nginx{tag}", ["nginx", "-p", str(d), "-c", str(conf)], PROXY_CPU, workdir)
        t = Target(name, s, h1, h2, grpc_port=grpc)
        wait_port(t.h1_port, 10, s)
        wait_port(t.h2_port, 10, s)
    elif name == "haproxy":
        conf = render("haproxy.cfg", d / "haproxy.cfg", BACKEND_PORT=PORTS["backend"],
                      H1_PORT=PORTS["haproxy"], H2_PORT=PORTS["haproxy_h2"],
                      GRPC_PORT=PORTS["haproxy_grpc"], BACKEND_H2_PORT=PORTS["backend_h2"])
        s = Server(f"haproxy{tag}", ["haproxy", "-db", "-f", str(conf)], PROXY_CPU, workdir)
        t = Target(name, s, PORTS["haproxy"], PORTS["haproxy_h2"], grpc_port=PORTS["haproxy_grpc"])
        wait_port(t.h1_port, 10, s)
        wait_port(t.h2_port, 10, s)
    elif name == "routemaster":
        conf = render("routemaster-routes.yaml", d / "routes.yaml", BACKEND_PORT=PORTS["backend"],
                      BACKEND_H2_PORT=PORTS["backend_h2"])
        t = start_routemaster(conf, PORTS["routemaster"], PORTS["routemaster_admin"], f"routemaster{tag}",
                              workdir)
    else:
        raise ValueError(name)
    t.start_s = time.monotonic() - t0
    time.sleep(0.5)
    t.idle_rss_kb = proc_status_kb(t.server.pids(), "VmRSS")
    return t


def start_routemaster(conf: Path, port: int, admin: int, name: str, workdir: Path, timeout: float = 120,
                      extra: tuple[str, ...] = ()) -> Target:
    """routemaster-proxy with one worker on `conf` (plus `extra` flags); ready when its admin
    /readyz answers 200."""
    argv = [str(PROXY_BIN), "--config", str(conf), "--listen", f"127.0.0.1:{port}",
            "--admin-listen", f"127.0.0.1:{admin}", "--workers", "1", "--drain-timeout", "1s",
            # The same connection cap as HAProxy's `maxconn 10200` (the default, half the
            # open-file limit, refuses part of the 10k idle-connection test).
            "--max-connections", "10200", *extra]
    s = Server(name, argv, PROXY_CPU, workdir)
    wait_http_200(admin, timeout, s, "/readyz")
    return Target("routemaster", s, port, port, admin)
