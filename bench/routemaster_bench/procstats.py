"""CPU and memory accounting read from /proc: the process tree of a server, CPU ticks
charged to processes, VmRSS/VmHWM sums, and how busy a CPU core was."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """The process and all its descendants (nginx: master + worker)."""
    found = [root]
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    i = 0
    while i < len(found):
        found.extend(children.get(found[i], []))
        i += 1
    return found


def proc_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2 :].split()
        total += int(f[11]) + int(f[12])  # utime + stime (fields 14, 15)
    return total


def proc_status_kb(pids: list[int], key: str) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def cpu_busy_jiffies(cpu: str) -> tuple[int, int]:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:]]
            total = sum(v[:8])
            idle = v[3] + v[4]
            return total - idle, total
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


def task_files(pids: list[int], name: str):
    """The text of /proc/PID/task/TID/`name` for every thread of the processes (threads
    that ended meanwhile are skipped)."""
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                yield Path(f"/proc/{pid}/task/{tid}/{name}").read_text()
            except OSError:
                continue


def thread_ticks(pids: list[int]) -> dict[str, int]:
    """utime+stime per thread name over the processes' threads (names as in
    /proc/PID/task/TID/comm; threads of the same name are summed)."""
    out: dict[str, int] = {}
    for stat in task_files(pids, "stat"):
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        f = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0) + int(f[11]) + int(f[12])
    return out


def context_switches(pids: list[int]) -> tuple[int, int]:
    """(voluntary, involuntary) context switches summed over the processes' threads."""
    vol = invol = 0
    for text in task_files(pids, "status"):
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                vol += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                invol += int(line.split()[1])
    return vol, invol
