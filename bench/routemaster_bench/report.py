"""RESULTS.md rendering: medians and spreads of the raw per-run results (summarize), and
the Markdown report (side-by-side table, route-table sizes, idle memory, notes)."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from .formatting import fmt_ms, fmt_num, pct, ratio
from .formatting import paired as paired_ratios
from .layout import LABEL, LOADGEN_CPU, PROXIES, PROXY_CPU
from .procstats import CLK_TCK
from .scenarios import SCENARIOS, TABLE_HOST, TABLE_PATH, TABLE_SIZES

if TYPE_CHECKING:
    from .phases import Bench


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values) -> str:
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return ""
    m = statistics.median(values)
    return f"±{(max(values) - min(values)) / 2 / m * 100:.0f}%" if m else ""


def summarize(res: dict) -> dict:
    thr = res["throughput"]
    lat = res["latency"]
    return {
        "rps": med([r["rps"] for r in thr]),
        "rps_spread": spread([r["rps"] for r in thr]),
        "cpu": med([r["cpu_us_per_req"] for r in thr]),
        "cpu1": med([r.get("cpu1_busy") for r in thr]),
        "cpu1_other": med([r.get("cpu1_not_proxy") for r in thr]),
        "up_conns": med([r.get("upstream_conns_opened") for r in thr]),
        "p50": med([r["p50"] for r in lat]),
        "p99": med([r["p99"] for r in lat]),
        "achieved": med([r["achieved_rps"] for r in lat]),
        "cpu_rate": med([r.get("cpu_us_per_req") for r in lat]),
        "rss": res.get("peak_rss_kb"),
        "errs": sum(r["non2xx"] + r["socket_errors"] for r in thr) + sum(r["non2xx"] + r["errors"] for r in lat),
        "failed": res["errors"],
    }


def obs_summary(obs: dict) -> dict:
    """The observability phase's figures: per variant the medians, min and max over rounds,
    the ratio of medians and the paired (same-round) ratios to off; routemaster-on vs
    nginx-log the same way."""
    def by_round(name):
        return {r.get("round", i): r["cpu_us_per_req"] for i, r in enumerate(obs.get(name, {}).get("throughput", []))
                if r.get("cpu_us_per_req")}

    def paired(a, b):
        """[`formatting.paired`] of a's CPU/request ÷ b's over the rounds both ran in."""
        ra, rb = by_round(a), by_round(b)
        return paired_ratios([ra[k] / rb[k] for k in ra if k in rb])

    off = med(list(by_round("routemaster-off").values()))
    out = {"variants": {}}
    for name, v in obs.items():
        if not isinstance(v, dict) or "throughput" not in v:
            continue
        thr = v["throughput"]
        cpus = [r["cpu_us_per_req"] for r in thr if r.get("cpu_us_per_req")]
        cpu = med(cpus)
        # The writer's ticks are few per run: its CPU over all rounds ÷ their requests.
        wr = [(r["thread_cpu_us_per_req"]["access-log"] * r["good"], r["good"]) for r in thr
              if r.get("thread_cpu_us_per_req", {}).get("access-log") is not None]
        ctx = [sum(r["ctx_switches_per_req"]) for r in thr if r.get("ctx_switches_per_req")]
        out["variants"][name] = {
            "rps": med([r["rps"] for r in thr]),
            "cpu": cpu,
            "min": min(cpus) if cpus else None,
            "max": max(cpus) if cpus else None,
            "vs_off": cpu / off if cpu and off else None,
            "paired": paired(name, "routemaster-off") if name != "routemaster-off" else None,
            "writer": sum(a for a, _ in wr) / sum(n for _, n in wr) if wr else None,
            "ctx": med(ctx),
        }
    # routemaster with both on ÷ nginx with its log (the goal), for each nginx line; and what
    # nginx's own log costs it.
    out["vs_nginx"] = {}
    for a, b in [("routemaster-on", "nginx-log"), ("routemaster-on", "nginx-json-log"),
                 ("nginx-log", "nginx-off"), ("nginx-json-log", "nginx-off")]:
        ca = out["variants"].get(a, {}).get("cpu")
        cb = out["variants"].get(b, {}).get("cpu")
        p = paired(a, b)
        if ca and cb and p:
            out["vs_nginx"][(a, b)] = (ca / cb, *p)
    return out


def report(b: Bench, meta: dict) -> str:
    st = b.settings
    R = b.results
    out = []
    w = out.append
    w("# Routemaster proxy benchmark: routemaster-proxy vs nginx vs HAProxy")
    w("")
    w(f"- Date: {meta['date']} ({'QUICK smoke run, not representative' if b.quick else 'full run'}); "
      f"wall time {meta['elapsed_min']:.1f} min")
    m = meta["machine"]
    w(f"- Machine: `nproc` = {m['nproc']}, `uname -r` = {m['uname_r']}, {m['cpu']}, {m['mem_gib']} GiB; "
      f"load average at start {' '.join(m['loadavg_start'])}, at end {' '.join(meta['loadavg_end'])}")
    w(f"- routemaster-proxy: {meta['versions']['routemaster-proxy']} at `{m['git']}` (release build)")
    v = meta["versions"]
    w(f"- Tools: {v['nginx']}; {v['haproxy']}; {v['wrk']}; {v['h2load']}; oha: {v['oha']}; Python {v['python']}")
    w(f"- Command: `{meta['command']}`")
    w(f"- Settings: {st.rounds} round(s) rotating the proxy order, {st.run_s} s per throughput run after a "
      f"{st.warmup_s} s warm-up per proxy (discarded); fixed-rate latency runs of {st.latency_s} s at 50% of "
      f"nginx's median peak for the scenario "
      f"({'oha `-q RATE --latency-correction`' if b.use_oha else 'FALLBACK wrk delay()/h2load --rps, not corrected for coordinated omission'}).")
    w(f"- Layout: backend (nginx 1 worker, `return 200 \"ok\"`) and the load generator (wrk -t1 / h2load -t1 / oha) "
      f"pinned to CPU {LOADGEN_CPU}; each proxy alone on CPU {PROXY_CPU} with one worker (nginx `worker_processes 1`, "
      f"HAProxy `nbthread 1`, routemaster `--workers 1`); keep-alive to the backend in all three; loopback only.")
    w("")
    w("## Side by side")
    w("")
    w("**Peak** (closed loop, wrk/h2load): req/s = median over rounds (± half the min-max range); CPU µs/req = "
      "utime+stime of all the proxy's processes (nginx master + worker) over the run ÷ requests completed; CPU1 = how "
      "busy the proxy's core was (≈100%: the proxy is the bottleneck); upstream conns opened = connections the "
      "backend accepted during the run (median; few = the pool reused them). **Fixed rate** (oha at 50% of nginx's peak for "
      "the scenario): achieved req/s, p50/p99 latency and CPU µs/req, medians over rounds; a proxy that cannot keep up "
      "with the rate queues, and its latency is then seconds. Peak RSS: VmHWM summed over the proxy's processes at the "
      "end of the scenario (fresh processes per scenario). Errors: non-2xx + socket errors over all runs.")
    w("")
    w("| Scenario | Proxy | peak req/s | CPU µs/req | CPU1 | upstream conns opened | @rate: achieved | p50 | p99 | CPU µs/req | peak RSS | errors |")
    w("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for scn in SCENARIOS:
        sres = R.get("scenarios", {}).get(scn.key)
        if not sres:
            continue
        rate = R.get("rates", {}).get(scn.key)
        s = {p: summarize(sres[p]) for p in PROXIES}
        first = True
        for p in PROXIES:
            x = s[p]
            cell = f"**{scn.title}**<br>rate {fmt_num(rate)} req/s" if first else ""
            first = False
            errs = str(x["errs"]) + (" + FAILED runs" if x["failed"] else "")
            w(f"| {cell} | {LABEL[p]} | {fmt_num(x['rps'])} {x['rps_spread']} | {fmt_num(x['cpu'], 1)} | {pct(x['cpu1'])} "
              f"| {fmt_num(x['up_conns'])} | {fmt_num(x['achieved'])} | {fmt_ms(x['p50'])} | {fmt_ms(x['p99'])} | {fmt_num(x['cpu_rate'], 1)} "
              f"| {fmt_num(x['rss'] and x['rss'] / 1024, 1)} MiB | {errs} |")
        d = R.get("direct", {}).get(scn.key)
        if d:
            label = ("no proxy (oha → backend; NOT a floor here: the backend then accepts every connection on CPU 0)"
                     if scn.close else "no proxy (oha → backend)")
            w(f"| | *{label}* | | | | | {fmt_num(d['achieved_rps'])} | {fmt_ms(d['p50'])} | {fmt_ms(d['p99'])} | | | |")
        rm = s["routemaster"]
        for other in ["nginx", "haproxy"]:
            o = s[other]
            w(f"| | *routemaster / {LABEL[other]}* | *{ratio(rm['rps'], o['rps'])}* | *{ratio(rm['cpu'], o['cpu'])}* | | "
              f"| *{ratio(rm['achieved'], o['achieved'])}* | *{ratio(rm['p50'], o['p50'])}* | *{ratio(rm['p99'], o['p99'])}* "
              f"| *{ratio(rm['cpu_rate'], o['cpu_rate'])}* | *{ratio(rm['rss'], o['rss'])}* | |")
    w("")
    w("Ratios: req/s above 1x is better for routemaster; CPU/req, latency and RSS below 1x are better.")
    w("")

    tables = R.get("tables")
    if tables:
        w("## Route-table size (routemaster only)")
        w("")
        w(f"64 keep-alive connections, `Host: {TABLE_HOST}`, `GET {TABLE_PATH}`; the matching route is declared "
          "LAST, after a generated mix of exact hosts, wildcard hosts and host-less routes with exact and prefix "
          "paths and ~1% regex paths. Goal: req/s at 10k and 100k routes ≥ 0.9x the 1-route table.")
        w("")
        w("| Routes | YAML | start → ready | RSS after load | peak RSS | req/s | vs 1 route (goal ≥ 0.9) | CPU µs/req |")
        w("|--:|--:|--:|--:|--:|--:|--:|--:|")
        base = med([r["rps"] for r in tables[TABLE_SIZES[0]]["throughput"]]) if TABLE_SIZES[0] in tables else None
        for n in TABLE_SIZES:
            t = tables.get(n)
            if not t:
                continue
            if "load_error" in t:
                w(f"| {n:,} | {t['yaml_bytes'] / 1024 / 1024:.1f} MiB | **does not load**: `{t['load_error'][:200]}` | | | | ❌ | |")
                continue
            rps = med([r["rps"] for r in t["throughput"]])
            cpu = med([r["cpu_us_per_req"] for r in t["throughput"]])
            r_ = rps / base if rps and base else None
            verdict = "" if r_ is None else (" ✅" if r_ >= 0.9 else " ❌")
            w(f"| {n:,} | {t['yaml_bytes'] / 1024 / 1024:.1f} MiB | {t['ready_s']:.2f} s | {t['rss_after_load_kb'] / 1024:.1f} MiB "
              f"| {fmt_num(t.get('peak_rss_kb', 0) / 1024, 1)} MiB | {fmt_num(rps)} {spread([r['rps'] for r in t['throughput']])} "
              f"| {'n/a' if r_ is None else f'{r_:.2f}x'}{verdict} | {fmt_num(cpu, 1)} |")
        w("")

    obs = R.get("observability")
    if obs:
        w("")
        w("## Observability cost (HTTP/1.1 keep-alive, 64 connections)")
        w("")
        w("routemaster with `--metrics off --access-log off` (off), metrics alone, `--access-log FILE` alone, both on, "
          "and nginx without a log, with its default `combined` log and with a JSON log of the fields routemaster "
          "logs (nginx-json-log; both `buffer=64k flush=1s`), same run, rounds interleaved (the order rotates). "
          f"Goal: on ≤ 1.05× off CPU/request, and ≤ nginx with its log. {obs.get('rounds', st.rounds)} rounds of "
          f"{obs.get('run_s', st.run_s)} s runs. µs CPU/req: median over rounds, and the "
          "min–max over rounds. *paired*: the variant's CPU/request ÷ off's in the same round (the machine's slow "
          "swings cancel out), as the geometric mean over rounds ± its 95% confidence interval, then the median and "
          "the min–max. writer: the access-log thread's own CPU over all rounds ÷ their requests (part of the total). ctx sw/req: "
          "voluntary + involuntary context switches of the process per request.")
        w("")
        w("| Variant | req/s | µs CPU/req | min–max | vs off (medians) | vs off (paired) | writer µs/req | ctx sw/req |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        s = obs_summary(obs)
        for name, x in s["variants"].items():
            pr = x.get("paired")
            w(f"| {name} | {fmt_num(x['rps'], 0)} | {fmt_num(x['cpu'], 2)} | {fmt_num(x['min'], 2)}–{fmt_num(x['max'], 2)} "
              f"| {fmt_num(x['vs_off'], 3) + '×' if x['vs_off'] else '–'} "
              f"| {f'{pr[4]:.3f}× ±{pr[5] * 100:.1f}%; median {pr[0]:.3f}× ({pr[1]:.3f}–{pr[2]:.3f})' if pr else '–'} "
              f"| {fmt_num(x['writer'], 2) if x['writer'] is not None else '–'} | {fmt_num(x['ctx'], 3)} |")
        w("")
        for (num, den), r in s.get("vs_nginx", {}).items():
            w(f"- {num} ÷ {den} CPU/request: {r[0]:.3f}× (medians); paired {r[5]:.3f}× "
              f"±{r[6] * 100:.1f}% (95% CI), median {r[1]:.3f}× ({r[2]:.3f}–{r[3]:.3f}) over {r[4]} rounds.")
        if s.get("vs_nginx"):
            w("")
        logs = [f"{n}: {v['access_log_lines']:,} lines, {v['access_log_bytes'] / max(1, v['access_log_lines']):.0f} B/line"
                for n, v in obs.items() if isinstance(v, dict) and v.get("access_log_lines")]
        w(f"Access log lines written: {'; '.join(logs) if logs else obs.get('routemaster_access_log_lines', 0)}.")
        w("")
    idle = R.get("idle")
    if idle:
        w("## Idle memory")
        w("")
        n = st.idle_conns
        w(f"Idle RSS: VmRSS 0.5 s after start, before any request. Connection cost: {n:,} client connections opened by "
          f"bench/idle_conns.py (asyncio, one `GET /` each, at most 64 in flight so the upstream pool stays small), "
          f"then held; RSS delta 1 s after they are all open ÷ connections. The baseline is taken after a 1 s warm-up "
          f"at 64 connections. Goals (routemaster): idle RSS ≤ 15 MB, ≤ 4 KB per idle connection.")
        w("")
        w(f"| Proxy | idle RSS | RSS before | RSS with {n:,} conns | per connection | still open after hold |")
        w("|---|--:|--:|--:|--:|--:|")
        for p in ["routemaster", "nginx", "haproxy"]:
            r = idle.get(p)
            if not r:
                continue
            if "error" in r and "per_conn_bytes" not in r:
                w(f"| {LABEL[p]} | {r['idle_rss_kb'] / 1024:.1f} MiB | failed: {r['error'][:120]} | | | |")
                continue
            goal_idle = goal_conn = ""
            if p == "routemaster":
                goal_idle = " ✅" if r["idle_rss_kb"] * 1024 <= 15e6 else " ❌"
                goal_conn = " ✅" if r["per_conn_bytes"] <= 4096 else " ❌"
            ready = r.get("ready", {})
            done = r.get("done", {})
            w(f"| {LABEL[p]} | {r['idle_rss_kb'] / 1024:.1f} MiB{goal_idle} | {r['before_kb'] / 1024:.1f} MiB "
              f"| {r['with_conns_kb'] / 1024:.1f} MiB ({ready.get('ok', 0):,} ok, {ready.get('failed', 0)} failed) "
              f"| {r['per_conn_bytes'] / 1024:.2f} KiB{goal_conn} | {fmt_num(done.get('still_open'))} after {r.get('held_s', 0):.0f} s |")
        w("")

    w("## How to reproduce (README section)")
    w("")
    w("```sh")
    w("./bench/run.sh            # full run, ~15-20 min: writes bench/RESULTS.md and bench/results.json")
    w("./bench/run.sh --quick    # smoke test, ~3 min: bench/RESULTS.quick.md (a full run alone replaces RESULTS.md)")
    w("./bench/run.sh --profile  # perf stat / perf record / strace -c under the 64-connection load: bench/PROFILE.md")
    w("```")
    w("")
    w("`run.sh` installs what is missing (apt-get: nginx, haproxy, wrk, nghttp2-client; `cargo install oha --locked` "
      "into bench/.tools, falling back to wrk/h2load for fixed-rate latency if that fails), stops the system "
      "nginx/haproxy services it installed, raises `ulimit -n` to the hard limit and runs bench/bench.py "
      "(Python 3 stdlib). Every server runs as a child process with its own config rendered from bench/templates/ "
      "into a temp dir; everything is stopped and removed on exit. Ports: 127.0.0.1:18080-18102, 18120, 18131-18135 and 18140-18148.")
    w("")
    w("## Notes")
    w("")
    others = [r.get("cpu1_not_proxy") for sres in R.get("scenarios", {}).values() for p in PROXIES
              for r in sres[p]["throughput"] if r.get("cpu1_not_proxy") is not None]
    if others:
        w(f"- CPU 1 time not charged to the proxy during peak runs (softirq for loopback packets + anything else "
          f"scheduled there): median {statistics.median(others) * 100:.0f}%, max {max(others) * 100:.0f}% of the core. "
          f"Load average per run is in results.json.")
    for note in b.notes + meta.get("notes", []):
        w(f"- {note}")
    w("- Noise: 2 shared vCPUs on a VM; other work on the machine (see load average) and the load generator "
      "sharing CPU 0 with the backend both move the numbers. Compare ratios within one run, not absolute "
      "figures across runs; the ± column is the spread across rounds.")
    w("- CPU accounting is in clock ticks (1/%d s): at these run lengths the error is well under 1%%." % CLK_TCK)
    w("- Peak RSS of nginx is the sum over master + worker (shared pages counted twice).")
    w(f"- Raw per-run numbers: {meta.get('json_name', 'bench/results.json')}.")
    w("")
    return "\n".join(out)
