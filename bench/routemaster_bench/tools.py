"""External tools and the host: locating a tool (bench/.tools/bin first, then PATH),
the versions of the tools and of routemaster-proxy, and the machine description that
heads the results."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .layout import PROXY_BIN, REPO, TOOLS_BIN


def tool(name: str) -> str | None:
    local = TOOLS_BIN / name
    if local.exists():
        return str(local)
    return shutil.which(name)


def nginx_version() -> tuple[int, int, int]:
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)  # type: ignore[return-value]


def tool_versions() -> dict:
    def first(argv, stream="stdout"):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            text = (r.stdout + r.stderr).strip()
            return text.splitlines()[0] if text else "?"
        except Exception:  # noqa: BLE001
            return "missing"
    oha_bin = tool("oha")
    return {
        "routemaster-proxy": first([str(PROXY_BIN), "--version"]),
        "nginx": first(["nginx", "-v"]),
        "haproxy": first(["haproxy", "-v"]),
        "wrk": first(["wrk", "-v"]).split(" Copyright")[0],
        "h2load": first(["h2load", "--version"]),
        "oha": first([oha_bin, "--version"]) if oha_bin else "missing (fallback: wrk delay() / h2load --rps)",
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
    }


def machine() -> dict:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "uname_r": os.uname().release,
        "cpu": cpu,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "git": git + (" (+ uncommitted changes)" if dirty else ""),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }
