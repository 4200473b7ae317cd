"""Fixed layout of a bench run: where files are, which CPU runs what, the loopback ports
and the proxies compared (with their display labels)."""

from __future__ import annotations

from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent  # bench/ (this package lives in it)
REPO = BENCH.parent
TEMPLATES = BENCH / "templates"
TOOLS_BIN = BENCH / ".tools" / "bin"
PROXY_BIN = REPO / "target" / "release" / "routemaster-proxy"
RESULTS_MD = BENCH / "RESULTS.md"
RESULTS_JSON = BENCH / "results.json"
PROFILE_MD = BENCH / "PROFILE.md"

LOADGEN_CPU = "0"  # load generator + backend
PROXY_CPU = "1"  # the proxy under test, alone

PORTS = {
    "backend": 18080,
    "backend_status": 18087,
    "nginx": 18081,
    "nginx_h2": 18082,
    "haproxy": 18083,
    "haproxy_h2": 18084,
    "routemaster": 18085,
    "routemaster_admin": 18086,
    # gRPC-shaped scenario: the backend's h2c listener and the peers' grpc frontends
    # (routemaster routes it by path on its one port).
    "backend_h2": 18088,
    "nginx_grpc": 18089,
    "haproxy_grpc": 18120,
    # route-table scenarios: one routemaster per table size
    "table_base": 18090,  # 18090.. (proxy), 18100.. (admin)
    "table_admin_base": 18100,
    # the observability phase's three nginx (no log, combined log, JSON log): 3 ports each
    "obs_nginx_base": 18140,
}

PROXIES = ["nginx", "haproxy", "routemaster"]
LABEL = {"nginx": "nginx", "haproxy": "HAProxy", "routemaster": "routemaster"}
