"""How numbers are printed, in the progress log and the Markdown tables: counts, seconds
as µs/ms, fractions as percentages, ratios; None prints as "n/a". Also the median over
rounds that the tables print."""

from __future__ import annotations

import math
import statistics


def fmt_num(v, digits=0) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}"


def fmt_ms(v) -> str:
    if v is None:
        return "n/a"
    if v < 1e-3:
        return f"{v * 1e6:.0f} µs"
    return f"{v * 1e3:.2f} ms"


def pct(v) -> str:
    return "n/a" if v is None else f"{v * 100:.0f}%"


def ratio(a, b) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def paired(q: list):
    """Same-round ratios `q` (a variant's figure ÷ its reference's in the same round, so the
    machine's slow swings cancel out): (median, min, max, n, geometric mean, 95% CI
    half-width of the geometric mean as a factor - 1), or None when there are none."""
    if not q:
        return None
    logs = [math.log(x) for x in q]
    half = 1.96 * statistics.stdev(logs) / math.sqrt(len(logs)) if len(logs) > 1 else float("nan")
    return (statistics.median(q), min(q), max(q), len(q), math.exp(statistics.fmean(logs)), math.exp(half) - 1)


def med(rs: list, key: str):
    """The median of `key` over the rounds `rs` that have it; None when none has."""
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None
