"""The measured phases of a run and the raw results they collect: per scenario, peak
throughput and fixed-rate latency of every proxy (rounds rotating the proxy order, CPU
accounted from /proc); route-table sizes (routemaster only); the observability cost
(metrics and access log off, each alone, both on; nginx with its access log); idle-connection memory."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .formatting import fmt_ms, fmt_num, pct
from .layout import BENCH, LOADGEN_CPU, PORTS, PROXIES, PROXY_CPU
from .loadgen import h2load, h2load_fixed_rate, oha, wrk, wrk_fixed_rate
from .procstats import CLK_TCK, context_switches, cpu_busy_jiffies, proc_status_kb, proc_ticks, thread_ticks
from .progress import log
from .scenarios import TABLE_HOST, TABLE_PATH, TABLE_SIZES, Scenario, Settings, gen_route_table
from .servers import Target, backend_counters, http_get, render, start_proxy, start_routemaster


@dataclass
class Bench:
    """One run: its settings and the results (raw per-run dicts) the phases collect."""

    settings: Settings
    workdir: Path
    quick: bool
    use_oha: bool
    results: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    # -- one measured run ----------------------------------------------------------------

    def throughput(self, t: Target, scn: Scenario, seconds: float) -> dict:
        pids = t.server.pids()
        busy0, total0 = cpu_busy_jiffies(PROXY_CPU)
        acc0, req0 = backend_counters()
        ticks0 = proc_ticks(pids)
        w0 = time.monotonic()
        if scn.grpc:
            r = h2load(t.grpc_url(), scn.conns, scn.streams, seconds, grpc_body=self.grpc_body())
        elif scn.h2:
            r = h2load(t.url(True), scn.conns, scn.streams, seconds)
        else:
            r = wrk(t.url(False), scn.conns, seconds, ["Connection: close"] if scn.close else [])
        wall = time.monotonic() - w0
        ticks1 = proc_ticks(pids)
        busy1, total1 = cpu_busy_jiffies(PROXY_CPU)
        cpu_s = (ticks1 - ticks0) / CLK_TCK
        r["proxy_cpu_s"] = cpu_s
        r["cpu_us_per_req"] = cpu_s * 1e6 / r["good"] if r["good"] else None
        r["cpu1_busy"] = (busy1 - busy0) / (total1 - total0) if total1 > total0 else None
        # CPU 1 time not charged to the proxy: softirq (loopback packet processing) and
        # anything else the machine scheduled there.
        r["cpu1_not_proxy"] = r["cpu1_busy"] - cpu_s / wall if r["cpu1_busy"] is not None else None
        r["loadavg"] = Path("/proc/loadavg").read_text().split()[0]
        acc1, req1 = backend_counters()
        r["upstream_conns_opened"] = acc1 - acc0 - 1
        r["backend_requests"] = req1 - req0 - 1
        return r

    def grpc_body(self) -> Path:
        """One gRPC message: uncompressed flag, length 5, payload `hello`."""
        p = self.workdir / "grpc-unary.bin"
        if not p.exists():
            p.write_bytes(b"\x00\x00\x00\x00\x05hello")
        return p

    def latency(self, t: Target, scn: Scenario, rate: float, seconds: float) -> dict:
        url = t.url(scn.h2)
        pids = t.server.pids()
        ticks0 = proc_ticks(pids)
        if self.use_oha:
            r = oha(url, scn.conns, rate, seconds, scn.close, scn.h2, scn.streams)
        elif scn.h2:
            r = h2load_fixed_rate(url, scn.conns, scn.streams, rate, seconds, self.workdir)
        else:
            r = wrk_fixed_rate(url, scn.conns, rate, seconds, scn.close, self.workdir)
        cpu_s = (proc_ticks(pids) - ticks0) / CLK_TCK
        good = r["requests"] - r["non2xx"]
        r["cpu_us_per_req"] = cpu_s * 1e6 / good if good > 0 else None
        return r

    def latency_direct(self, scn: Scenario, rate: float, seconds: float) -> dict:
        """The same fixed-rate run straight at the backend: the floor that the load
        generator and the backend sharing CPU 0 put under every proxy's figures."""
        url = f"http://127.0.0.1:{PORTS['backend']}/"
        if self.use_oha:
            return oha(url, scn.conns, rate, seconds, scn.close, False, 1)
        return wrk_fixed_rate(url, scn.conns, rate, seconds, scn.close, self.workdir)

    # -- phases -----------------------------------------------------------------------

    def scenario(self, scn: Scenario) -> None:
        st = self.settings
        log(f"scenario {scn.key}: {scn.title}")
        targets = {name: start_proxy(name, self.workdir) for name in PROXIES}
        res = {name: {"throughput": [], "latency": [], "errors": []} for name in PROXIES}
        try:
            for name, t in targets.items():
                code, body = http_get(t.h1_port)
                if code != 200 or body != b"ok":
                    raise RuntimeError(f"{name}: sanity GET answered {code} {body[:80]!r}")
                res[name]["idle_rss_kb"] = t.idle_rss_kb
                try:
                    self.throughput(t, scn, st.warmup_s)  # warm-up, discarded
                except Exception as e:  # noqa: BLE001
                    res[name]["errors"].append(f"warm-up: {e}")
            for rnd in range(st.rounds):
                order = PROXIES[rnd % 3:] + PROXIES[: rnd % 3]
                for name in order:
                    try:
                        r = self.throughput(targets[name], scn, st.run_s)
                        res[name]["throughput"].append(r)
                        log(f"  round {rnd + 1} {name:11s} {r['rps']:10.0f} req/s  "
                            f"{fmt_num(r['cpu_us_per_req'], 1)} µs CPU/req  cpu1 {pct(r['cpu1_busy'])}"
                            f"{'  non2xx=%d' % r['non2xx'] if r['non2xx'] else ''}"
                            f"{'  sockerr=%d' % r['socket_errors'] if r['socket_errors'] else ''}")
                    except Exception as e:  # noqa: BLE001
                        res[name]["errors"].append(f"round {rnd + 1}: {e}")
                        log(f"  round {rnd + 1} {name}: FAILED {e}")
            nginx_rps = [r["rps"] for r in res["nginx"]["throughput"]]
            # The gRPC scenario measures throughput and CPU only (no fixed-rate phase).
            if nginx_rps and not scn.grpc:
                rate = 0.5 * statistics.median(nginx_rps)
                self.results.setdefault("rates", {})[scn.key] = rate
                for rnd in range(st.rounds):
                    order = PROXIES[rnd % 3:] + PROXIES[: rnd % 3]
                    for name in order:
                        try:
                            r = self.latency(targets[name], scn, rate, st.latency_s)
                            res[name]["latency"].append(r)
                            log(f"  latency @{rate:.0f}/s round {rnd + 1} {name:11s} p50 {fmt_ms(r['p50'])} "
                                f"p99 {fmt_ms(r['p99'])} (achieved {fmt_num(r['achieved_rps'], 0)}/s, "
                                f"{fmt_num(r['cpu_us_per_req'], 1)} µs CPU/req)")
                        except Exception as e:  # noqa: BLE001
                            res[name]["errors"].append(f"latency round {rnd + 1}: {e}")
                            log(f"  latency round {rnd + 1} {name}: FAILED {e}")
                if not scn.h2:
                    try:
                        r = self.latency_direct(scn, rate, st.latency_s)
                        self.results.setdefault("direct", {})[scn.key] = r
                        log(f"  latency @{rate:.0f}/s direct to backend: p50 {fmt_ms(r['p50'])} p99 {fmt_ms(r['p99'])}")
                    except Exception as e:  # noqa: BLE001
                        log(f"  latency direct to backend: FAILED {e}")
            for name, t in targets.items():
                res[name]["peak_rss_kb"] = proc_status_kb(t.server.pids(), "VmHWM")
                if not t.server.alive():
                    res[name]["errors"].append(f"{name} died: {t.server.tail(5)}")
        finally:
            for t in targets.values():
                t.server.stop()
        self.results.setdefault("scenarios", {})[scn.key] = res

    def tables(self) -> None:
        st = self.settings
        log("route tables (routemaster only): " + ", ".join(map(str, TABLE_SIZES)))
        targets = {}
        res = {}
        try:
            for i, n in enumerate(TABLE_SIZES):
                d = self.workdir / f"table-{n}"
                d.mkdir(exist_ok=True)
                conf = d / "routes.yaml"
                conf.write_text(gen_route_table(n, PORTS["backend"]))
                t0 = time.monotonic()
                try:
                    t = start_routemaster(conf, PORTS["table_base"] + i, PORTS["table_admin_base"] + i,
                                          f"routemaster-table-{n}", self.workdir)
                except RuntimeError as e:
                    msg = " ".join(str(e).split("\n")[1:3]).replace(str(conf), "routes.yaml")
                    res[n] = {"yaml_bytes": conf.stat().st_size, "load_error": msg.strip(), "throughput": [], "errors": []}
                    log(f"  {n} routes: routemaster-proxy did not start: {msg}")
                    continue
                t.start_s = time.monotonic() - t0
                time.sleep(0.5)
                t.idle_rss_kb = proc_status_kb(t.server.pids(), "VmRSS")
                code, body = http_get(t.h1_port, TABLE_PATH, TABLE_HOST)
                if code != 200 or body != b"ok":
                    raise RuntimeError(f"table {n}: sanity GET answered {code} {body[:80]!r}")
                targets[n] = t
                res[n] = {"yaml_bytes": conf.stat().st_size, "ready_s": t.start_s, "rss_after_load_kb": t.idle_rss_kb,
                          "throughput": [], "errors": []}
                log(f"  {n} routes: ready in {t.start_s:.2f}s, RSS {t.idle_rss_kb / 1024:.1f} MiB")

            def run(n: int, seconds: float) -> dict:
                t = targets[n]
                pids = t.server.pids()
                ticks0 = proc_ticks(pids)
                r = wrk(t.url(False, TABLE_PATH), 64, seconds, [f"Host: {TABLE_HOST}"])
                cpu_s = (proc_ticks(pids) - ticks0) / CLK_TCK
                r["cpu_us_per_req"] = cpu_s * 1e6 / r["good"] if r["good"] else None
                return r

            sizes = [n for n in TABLE_SIZES if n in targets]
            for n in sizes:
                run(n, st.warmup_s)
            for rnd in range(st.rounds):
                order = sizes[rnd % len(sizes):] + sizes[: rnd % len(sizes)]
                for n in order:
                    try:
                        r = run(n, st.run_s)
                        res[n]["throughput"].append(r)
                        log(f"  round {rnd + 1} {n:6d} routes {r['rps']:10.0f} req/s  {fmt_num(r['cpu_us_per_req'], 1)} µs CPU/req"
                            f"{'  non2xx=%d' % r['non2xx'] if r['non2xx'] else ''}")
                    except Exception as e:  # noqa: BLE001
                        res[n]["errors"].append(f"round {rnd + 1}: {e}")
                        log(f"  round {rnd + 1} {n} routes: FAILED {e}")
            for n, t in targets.items():
                res[n]["peak_rss_kb"] = proc_status_kb(t.server.pids(), "VmHWM")
        finally:
            for t in targets.values():
                t.server.stop()
        self.results["tables"] = res

    # The observability phase's routemaster variants: (--metrics, access log file name or None).
    OBS_VARIANTS = {
        "routemaster-off": ("off", None),
        "routemaster-metrics": ("on", None),
        "routemaster-log": ("off", "routemaster-log-access.log"),
        "routemaster-on": ("on", "routemaster-access.log"),
    }

    def observability(self) -> None:
        """The logging hook's cost: the 64-connection HTTP/1.1 scenario against routemaster
        with metrics and the access log off, metrics only, access log only, both on, and
        nginx with its access log on, in the same run (interleaved rounds, the order
        rotating). Besides the process's CPU per request, each run records the access-log
        writer thread's own CPU and the process's context switches, so the report can say
        which part costs what."""
        st = self.settings
        scn = Scenario("obs64", "HTTP/1.1 keep-alive, 64 conns: observability", 64)
        log("observability: routemaster off / metrics only / access log only / both on, nginx access log on")
        d = self.workdir / "obs"
        d.mkdir(exist_ok=True)
        conf = render("routemaster-routes.yaml", d / "routes.yaml", BACKEND_PORT=PORTS["backend"],
                      BACKEND_H2_PORT=PORTS["backend_h2"])
        targets = {}
        res = {}
        try:
            for i, (name, (metrics, log_name)) in enumerate(self.OBS_VARIANTS.items()):
                extra = ("--metrics", metrics, "--access-log", str(d / log_name) if log_name else "off")
                targets[name] = start_routemaster(conf, PORTS["table_base"] + 5 + i, PORTS["table_admin_base"] + 5 + i,
                                                  name, self.workdir, extra=extra)
            # nginx without a log, with its default `combined` line, and with a JSON line of
            # the fields routemaster logs (like for like), each on its own ports.
            base = PORTS["obs_nginx_base"]
            targets["nginx-off"] = start_proxy("nginx", self.workdir, tag="-nolog", nginx_port_base=base)
            targets["nginx-log"] = start_proxy("nginx", self.workdir, tag="-log",
                                               nginx_access_log=d / "nginx-access.log", nginx_port_base=base + 3)
            targets["nginx-json-log"] = start_proxy("nginx", self.workdir, tag="-jsonlog",
                                                    nginx_access_log=d / "nginx-json-access.log",
                                                    nginx_log_format="json", nginx_port_base=base + 6)
            names = list(targets)
            for name in names:
                res[name] = {"throughput": [], "errors": []}
                self.throughput(targets[name], scn, st.warmup_s)
            res["rounds"], res["run_s"] = st.obs_rounds, st.obs_run_s
            for rnd in range(st.obs_rounds):
                order = names[rnd % len(names):] + names[: rnd % len(names)]
                for name in order:
                    try:
                        pids = targets[name].server.pids()
                        th0, cs0 = thread_ticks(pids), context_switches(pids)
                        r = self.throughput(targets[name], scn, st.obs_run_s)
                        th1, cs1 = thread_ticks(pids), context_switches(pids)
                        r["round"] = rnd
                        r["thread_cpu_us_per_req"] = {
                            k: (v - th0.get(k, 0)) / CLK_TCK * 1e6 / r["good"] for k, v in th1.items()
                        } if r["good"] else {}
                        r["ctx_switches_per_req"] = [(b - a) / r["good"] for a, b in zip(cs0, cs1)] if r["good"] else None
                        res[name]["throughput"].append(r)
                        writer = r["thread_cpu_us_per_req"].get("access-log")
                        log(f"  round {rnd + 1} {name:19s} {r['rps']:10.0f} req/s  "
                            f"{fmt_num(r['cpu_us_per_req'], 2)} µs CPU/req"
                            f"{'  (writer thread %.2f)' % writer if writer is not None else ''}")
                    except Exception as e:  # noqa: BLE001
                        res[name]["errors"].append(f"round {rnd + 1}: {e}")
                        log(f"  round {rnd + 1} {name}: FAILED {e}")
            for name in names:
                res[name]["peak_rss_kb"] = proc_status_kb(targets[name].server.pids(), "VmHWM")
            logs = {name: log_name for name, (_, log_name) in self.OBS_VARIANTS.items()}
            logs |= {"nginx-log": "nginx-access.log", "nginx-json-log": "nginx-json-access.log"}
            for name, log_name in logs.items():
                lines = d / log_name if log_name else None
                if lines and lines.exists():
                    with lines.open("rb") as f:
                        n = sum(1 for _ in f)
                    res[name]["access_log_lines"] = n
                    res[name]["access_log_bytes"] = lines.stat().st_size
            res["routemaster_access_log_lines"] = res["routemaster-on"].get("access_log_lines", 0)
        finally:
            for t in targets.values():
                t.server.stop()
        self.results["observability"] = res

    def idle(self) -> None:
        st = self.settings
        n = st.idle_conns
        log(f"idle memory: {n} idle keep-alive connections per proxy")
        res = {}
        for name in ["routemaster", "nginx", "haproxy"]:
            t = start_proxy(name, self.workdir, tag="-idle")
            r: dict = {"idle_rss_kb": t.idle_rss_kb}
            holder = None
            try:
                # Warm the upstream pool and the allocator, then take the baseline.
                wrk(t.url(False), 64, 1)
                time.sleep(1)
                pids = t.server.pids()
                r["before_kb"] = proc_status_kb(pids, "VmRSS")
                holder = subprocess.Popen(
                    ["taskset", "-c", LOADGEN_CPU, sys.executable, str(BENCH / "idle_conns.py"),
                     "--port", str(t.h1_port), "-n", str(n), "--concurrency", "64"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                ready = json.loads(holder.stdout.readline() or "{}")
                t_ready = time.monotonic()
                r["ready"] = ready
                time.sleep(1)
                r["with_conns_kb"] = proc_status_kb(pids, "VmRSS")
                r["per_conn_bytes"] = (r["with_conns_kb"] - r["before_kb"]) * 1024 / max(1, ready.get("ok", 0))
                time.sleep(max(0.0, st.idle_hold_s - (time.monotonic() - t_ready)))
                r["held_s"] = time.monotonic() - t_ready
                holder.stdin.write("\n")
                holder.stdin.flush()
                done = json.loads(holder.stdout.readline() or "{}")
                r["done"] = done
                holder.wait(30)
                log(f"  {name:11s} idle RSS {t.idle_rss_kb / 1024:.1f} MiB; {ready.get('ok')} conns: "
                    f"{r['before_kb'] / 1024:.1f} -> {r['with_conns_kb'] / 1024:.1f} MiB = {r['per_conn_bytes']:.0f} B/conn; "
                    f"still open after {r['held_s']:.0f}s: {done.get('still_open')}")
            except Exception as e:  # noqa: BLE001
                r["error"] = str(e)
                log(f"  {name}: FAILED {e}")
            finally:
                if holder and holder.poll() is None:
                    holder.kill()
                    holder.wait()
                t.server.stop()
            res[name] = r
        self.results["idle"] = res
