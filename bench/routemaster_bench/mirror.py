"""The mirroring phase (`--only mirror`, shadow mode's mirrored comparison): what a 100%
mirror costs the client. One routemaster (alone on the proxy CPU, one worker) serves
three routes to the same backend: `/on/` mirrors every request to a candidate service
and compares with a baseline call, i.e. two copies per client request; `/ff/` mirrors
without compare (fire-and-forget, one copy); `/` is the same route without a mirror.
The peer: nginx's `mirror` directive (fire-and-forget).

The copies go to a second nginx (the "mirror backend", the same `200 ok`) that runs
under `SCHED_IDLE` on the load generator's CPU: in a deployment the candidate is
another service on other machines, and here it must not take CPU from the primary
backend and the load generator that share CPU 0 (with the copies on the primary's own
nginx, most of the measured latency increase was that backend answering three times
the requests, not the proxy). HTTP/1.1 keep-alive clients at fixed rates (oha
`-q RATE --latency-correction`), rounds rotating the variants in the same run; proxy
CPU per client request from /proc, routemaster's own mean request and upstream times
from its metrics. The mirror's verdicts are read back from the proxy's metrics (all
must be `match`: the candidate is the primary).

Results go to results["mirror"] and bench/RESULTS.mirror.md (on / off ratios)."""

from __future__ import annotations

import re

from .formatting import fmt_ms, fmt_num, med, paired, ratio
from pathlib import Path

from .layout import BENCH, LOADGEN_CPU, PORTS, PROXY_CPU
from .loadgen import oha
from .procstats import CLK_TCK, proc_ticks
from .progress import log
from .servers import Server, Target, backend_counters, http_get, nginx_conf, start_routemaster, wait_port

RESULTS_MIRROR_MD = BENCH / "RESULTS.mirror.md"
PORT = PORTS["table_base"] + 7
ADMIN_PORT = PORTS["table_admin_base"] + 7
# Fixed rates both CPUs carry with the mirror on (three backend requests per client
# request on CPU 0, beside oha): latency, not saturation, is measured — at a light load
# and at one where the mirror's work doubles the proxy's CPU use.
RATES = [1000, 4000]
CONNS = 32
PATHS = {"on": "/on/x", "ff": "/ff/x", "off": "/x"}
ROUTES = {"on": "mirror-on", "ff": "mirror-ff", "off": "mirror-off"}
NGINX_PORT = PORTS["table_base"] + 8
MIRROR_BACKEND_PORT = PORTS["table_base"] + 9


def routes(backend_port: int) -> str:
    return f"""# bench/routemaster_bench/mirror.py: the same route with and without a 100% compared mirror
services:
  - name: backend
    instances: [{{ address: "127.0.0.1:{backend_port}" }}]
  - name: candidate
    instances: [{{ address: "127.0.0.1:{MIRROR_BACKEND_PORT}" }}]
  - name: baseline
    instances: [{{ address: "127.0.0.1:{MIRROR_BACKEND_PORT}" }}]
routes:
  - id: mirror-on
    path: {{ prefix: /on/ }}
    forward:
      service: backend
      mirror: {{ service: candidate, percent: 100, compare: {{ baseline: baseline, headers: [content-type] }} }}
  - id: mirror-ff
    path: {{ prefix: /ff/ }}
    forward:
      service: backend
      mirror: {{ service: candidate, percent: 100 }}
  - id: mirror-off
    path: {{ prefix: / }}
    forward: {{ service: backend }}
"""


def start_mirror_backend(workdir: Path) -> Server:
    """Where the copies go: an nginx like the backend (`return 200 "ok"`, one worker) under
    `SCHED_IDLE` on the load generator's CPU, so it only runs when the primary backend
    and the load generator leave the CPU idle."""
    d = workdir / "mirror-backend"
    d.mkdir(exist_ok=True)
    conf = nginx_conf(d, f"""    default_type text/plain;
    server {{
        listen 127.0.0.1:{MIRROR_BACKEND_PORT} backlog=4096;
        location / {{ return 200 "ok"; }}
    }}""")
    s = Server("mirror-backend", ["chrt", "--idle", "0", "nginx", "-p", str(d), "-c", str(conf)], LOADGEN_CPU,
               workdir)
    wait_port(MIRROR_BACKEND_PORT, 10, s)
    return s


def start_nginx_mirror(workdir: Path) -> Target:
    """The peer: nginx (one worker, on the proxy CPU) with the `mirror` module (fire-and-
    forget; no comparison exists in nginx) on `/on/`, plain on `/`."""
    d = workdir / "nginx-mirror"
    d.mkdir(exist_ok=True)
    conf = nginx_conf(d, f"""    upstream backend {{
        server 127.0.0.1:{PORTS['backend']};
        keepalive 64;
        keepalive_requests 1000000000;
        keepalive_timeout 300s;
    }}
    upstream mirror_backend {{
        server 127.0.0.1:{MIRROR_BACKEND_PORT};
        keepalive 64;
        keepalive_requests 1000000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{NGINX_PORT} backlog=4096;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location /on/ {{
            mirror /__mirror;
            mirror_request_body off;
            proxy_pass http://backend;
        }}
        location = /__mirror {{
            internal;
            proxy_pass http://mirror_backend$request_uri;
        }}
        location / {{
            proxy_pass http://backend;
        }}
    }}""")
    s = Server("nginx-mirror", ["nginx", "-p", str(d), "-c", str(conf)], PROXY_CPU, workdir)
    t = Target("nginx", s, NGINX_PORT, NGINX_PORT)
    wait_port(NGINX_PORT, 10, s)
    return t


def route_times(admin: int) -> dict:
    """Per route: (request duration sum, count, upstream response sum, count) from the
    proxy's histograms."""
    code, body = http_get(admin, "/metrics")
    out: dict = {}
    if code != 200:
        return out
    for line in body.decode(errors="replace").splitlines():
        m = re.match(r'routemaster_(request_duration|upstream_response)_seconds_(sum|count)\{route="([^"]+)"\} (\S+)$',
                     line)
        if m:
            out.setdefault(m.group(3), {})[(m.group(1), m.group(2))] = float(m.group(4))
    return out


def measure(t, path: str, rate: int, seconds: float, route: str | None = None, admin: int | None = None) -> dict:
    pids = t.server.pids()
    times0 = route_times(admin).get(route, {}) if admin else {}
    ticks0 = proc_ticks(pids)
    acc0, req0 = backend_counters()
    r = oha(t.url(False, path), CONNS, rate, seconds, False, False, 1)
    cpu_s = (proc_ticks(pids) - ticks0) / CLK_TCK
    acc1, req1 = backend_counters()
    good = r["requests"] - r["non2xx"]
    r["cpu_us_per_req"] = cpu_s * 1e6 / good if good > 0 else None
    r["backend_requests_per_req"] = (req1 - req0 - 1) / good if good > 0 else None
    if admin:
        # The proxy's own view: mean time from the request head to the response's end,
        # and to the upstream response head.
        times1 = route_times(admin).get(route, {})

        def mean(kind: str):
            n = times1.get((kind, "count"), 0) - times0.get((kind, "count"), 0)
            return (times1.get((kind, "sum"), 0) - times0.get((kind, "sum"), 0)) / n if n > 0 else None

        r["proxy_mean_duration"] = mean("request_duration")
        r["proxy_mean_upstream"] = mean("upstream_response")
    return r


def verdicts(admin: int) -> dict:
    """The mirror-on route's `routemaster_shadow_total` by result."""
    code, body = http_get(admin, "/metrics")
    out = {}
    if code != 200:
        return out
    for line in body.decode(errors="replace").splitlines():
        m = re.match(r'routemaster_shadow_total\{(.*)\} (\S+)$', line)
        if m and 'route="mirror-on"' in m.group(1):
            res = re.search(r'result="([a-z]+)"', m.group(1))
            if res:
                out[res.group(1)] = float(m.group(2))
    return out


def mirror_phase(b) -> None:
    st = b.settings
    if not b.use_oha:
        log("mirror: skipped (needs oha for fixed-rate latency)")
        return
    log(f"mirror: routemaster, 100% compared mirror + baseline on vs off, HTTP/1.1, {CONNS} conns @ {RATES}/s")
    d = b.workdir / "mirror"
    d.mkdir(exist_ok=True)
    conf = d / "routes.yaml"
    conf.write_text(routes(PORTS["backend"]))
    mirror_backend = start_mirror_backend(b.workdir)
    rm = start_routemaster(conf, PORT, ADMIN_PORT, "routemaster-mirror", b.workdir)
    targets = [rm]
    res: dict = {"conns": CONNS, "rates": {}, "errors": []}
    try:
        targets.append(start_nginx_mirror(b.workdir))
        nginx = targets[1]
        variants = {key: (rm, path, ROUTES[key]) for key, path in PATHS.items()}
        variants["nginx-on"] = (nginx, "/on/x", None)
        variants["nginx-off"] = (nginx, "/x", None)
        for key, (t, path, _) in variants.items():
            code, body = http_get(t.h1_port, path)
            if code != 200 or body != b"ok":
                raise RuntimeError(f"mirror {key}: sanity GET answered {code} {body[:80]!r}")
            measure(t, path, RATES[0], st.warmup_s)  # warm-up, discarded
        names = list(variants)
        for rate in RATES:
            runs = res["rates"][str(rate)] = {key: [] for key in names}
            for rnd in range(st.mirror_rounds):
                order = names[rnd % len(names):] + names[: rnd % len(names)]
                for key in order:
                    t, path, route = variants[key]
                    try:
                        r = measure(t, path, rate, st.mirror_run_s, route, ADMIN_PORT if route else None)
                        r["round"] = rnd
                        runs[key].append(r)
                        own = ""
                        if r.get("proxy_mean_duration") is not None and r.get("proxy_mean_upstream") is not None:
                            own = (f", proxy sees mean {fmt_ms(r['proxy_mean_duration'])} "
                                   f"(upstream head {fmt_ms(r['proxy_mean_upstream'])})")
                        log(f"  @{rate}/s round {rnd + 1} {key:9s} p50 {fmt_ms(r['p50'])} p99 {fmt_ms(r['p99'])} "
                            f"(achieved {fmt_num(r['achieved_rps'], 0)}/s, {fmt_num(r['cpu_us_per_req'], 1)} µs CPU/req, "
                            f"{fmt_num(r['backend_requests_per_req'], 2)} backend req/req{own})"
                            f"{'  non2xx=%d' % r['non2xx'] if r['non2xx'] else ''}")
                    except Exception as e:  # noqa: BLE001
                        res["errors"].append(f"@{rate}/s round {rnd + 1} {key}: {e}")
                        log(f"  @{rate}/s round {rnd + 1} {key}: FAILED {e}")
        res["verdicts"] = verdicts(ADMIN_PORT)
        log(f"  mirror-on verdicts: {res['verdicts']}")
        for t in targets:
            if not t.server.alive():
                res["errors"].append(f"{t.server.name} died: " + t.server.tail(5))
    finally:
        for t in targets:
            t.server.stop()
        mirror_backend.stop()
    b.results["mirror"] = res
    RESULTS_MIRROR_MD.write_text(mirror_report(res, st))


LABELS = {
    "on": "routemaster, mirror + compare + baseline",
    "ff": "routemaster, mirror fire-and-forget",
    "off": "routemaster, no mirror",
    "nginx-on": "nginx, `mirror` (fire-and-forget)",
    "nginx-off": "nginx, no mirror",
}


def mirror_report(res: dict, st) -> str:
    lines = [
        "# Mirroring cost: the client's latency with a 100% mirror on vs off", "",
        f"One run, every proxy with one worker alone on CPU 1 (backend nginx `return 200 \"ok\"` and oha on CPU 0). "
        f"routemaster: `/on/` forwards to `backend` and mirrors every request to `candidate` with "
        f"`compare: {{ baseline: baseline, headers: [content-type] }}` (two copies per client request); "
        f"`/ff/` mirrors without compare (one copy); `/` is the same route without a mirror. nginx: the `mirror` "
        f"directive (fire-and-forget, nginx cannot compare) on `/on/`, plain `/`. The copies (candidate and "
        f"baseline, and nginx's) go to a second nginx answering the same `200 ok` under `SCHED_IDLE` on CPU 0, so "
        f"they never take CPU from the primary backend and oha (in a deployment the candidate runs elsewhere); "
        f"*backend req per client req* counts the primary backend only. HTTP/1.1 keep-alive, "
        f"{res['conns']} connections, oha at a fixed rate with latency correction, {st.mirror_run_s} s per run, "
        f"{st.mirror_rounds} rounds per rate rotating the variants; medians over rounds; *paired*: the variant's p50 ÷ "
        f"the off variant's p50 in the same round (the machine's slow swings cancel out), geometric mean over the "
        f"rounds ± its 95% confidence interval. *proxy mean*: routemaster's own "
        f"`routemaster_request_duration_seconds` mean for the route (request head in → response out) and, in "
        f"brackets, its `upstream_response_seconds` mean. Goal (issue 13): p50 on/off ≤ 1.05, p99 reported.", "",
    ]
    for rate, runs in res["rates"].items():
        lines += rate_table(int(rate), runs)
    v = res.get("verdicts") or {}
    lines.append("Mirror verdicts counted by routemaster (`routemaster_shadow_total{route=\"mirror-on\"}`, warm-up "
                 "included): " + (", ".join(f"{k} {int(n):,}" for k, n in sorted(v.items())) or "none") + ".")
    if res["errors"]:
        lines += ["", "Errors: " + "; ".join(res["errors"])]
    return "\n".join(lines) + "\n"


def rate_table(rate: int, res: dict) -> list[str]:
    lines = [
        f"## {rate:,} req/s", "",
        "| Variant | achieved req/s | p50 | p99 | proxy CPU µs/req | backend req per client req | proxy mean |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for key, label in LABELS.items():
        rs = res.get(key, [])
        if not rs:
            continue
        own = ""
        if med(rs, "proxy_mean_duration") is not None:
            own = f"{fmt_ms(med(rs, 'proxy_mean_duration'))} ({fmt_ms(med(rs, 'proxy_mean_upstream'))})"
        lines.append(f"| {label} | {fmt_num(med(rs, 'achieved_rps'))} | {fmt_ms(med(rs, 'p50'))} | {fmt_ms(med(rs, 'p99'))} "
                     f"| {fmt_num(med(rs, 'cpu_us_per_req'), 1)} | {fmt_num(med(rs, 'backend_requests_per_req'), 2)} | {own} |")
    pairs = [("on", "off", "routemaster compare on / off"), ("ff", "off", "routemaster fire-and-forget / off"),
             ("nginx-on", "nginx-off", "nginx mirror / off")]
    for on, off, label in pairs:
        a, b = res.get(on, []), res.get(off, [])
        if not a or not b:
            continue
        p50 = (med(a, "p50"), med(b, "p50"))
        goal = ""
        if on == "on":
            goal = " ✅" if p50[0] is not None and p50[1] and p50[0] / p50[1] <= 1.05 else " ❌"
        lines.append(f"| *{label}* | | *{ratio(*p50)}*{goal} | *{ratio(med(a, 'p99'), med(b, 'p99'))}* "
                     f"| *{ratio(med(a, 'cpu_us_per_req'), med(b, 'cpu_us_per_req'))}* | | |")
    lines += ["", "| Paired p50 ratio | geometric mean ± 95% CI | median | min–max | rounds |",
              "|---|--:|--:|--:|--:|"]
    for on, off, label in pairs:
        by_round = {r.get("round"): r["p50"] for r in res.get(off, []) if r.get("p50")}
        p = paired([r["p50"] / by_round[r.get("round")] for r in res.get(on, [])
                    if r.get("p50") and r.get("round") in by_round])
        if p:
            mark = (" ✅" if p[4] <= 1.05 else " ❌") if on == "on" else ""
            lines.append(f"| {label} | {p[4]:.3f}× ± {p[5] * 100:.1f}%{mark} | {p[0]:.3f}× | {p[1]:.2f}–{p[2]:.2f}× | {p[3]} |")
    keys = [k for k in LABELS if res.get(k)]
    lines += ["", "Per round, p50 " + " / ".join(keys) + ": " + "; ".join(
        " / ".join(fmt_ms(r["p50"]) for r in row) for row in zip(*(res[k] for k in keys))) + ".", ""]
    return lines
