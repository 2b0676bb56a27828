"""How the bench scripts measure: calls per second over a stretch of wall time."""
from __future__ import annotations

import time


def per_second(fn, seconds: float, batch: int = 256) -> float:
    """Calls per second of fn() over about `seconds` (figures only; nothing asserts on them)."""
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed
