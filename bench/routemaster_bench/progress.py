"""The progress log on stderr, timestamped from START (when the run began)."""

from __future__ import annotations

import sys
import time

START = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - START:7.1f}s] {msg}", file=sys.stderr, flush=True)
