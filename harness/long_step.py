"""A long step the user waits for says so: a line when it starts, one every few seconds with the time
so far, and one when it ends with the time it took (line-oriented: CI logs and `tee` read it too)."""
from __future__ import annotations

import contextlib
import threading
import time


@contextlib.contextmanager
def long_step(say, what: str, every: float = 10.0):
    """with long_step(print, "building the vCenter simulator"): ...   (say: a one-line writer)"""
    started = time.monotonic()
    say(f"{what} ...")
    stop = threading.Event()

    def tick():
        while not stop.wait(every):
            say(f"  ... still {what} ({time.monotonic() - started:.0f} s so far)")

    ticker = threading.Thread(target=tick, name="long-step", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()
    say(f"  done in {time.monotonic() - started:.1f} s")
