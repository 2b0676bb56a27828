"""Live progress: one line per event, plus a periodic status line per guest.

Line-oriented on purpose (CI logs, ``tee``, no terminal tricks)::

    [   12.4s] ws2022   attempt 1  run_suite        3.1s  passed 40 failed 0
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO

from harness.vm.redact import SecretRegistry

__all__ = ["Progress", "GuestStatus"]


@dataclass
class GuestStatus:
    guest: str
    phase: str = "queued"
    attempt: int = 0
    phase_started: float = field(default_factory=time.monotonic)
    passed: int = 0
    failed: int = 0
    done: bool = False
    outcome: str = ""


class Progress:
    """Thread-safe status board.  ``listeners`` get ``(guest, status)`` on every change
    (tests use them to inject faults at a given phase)."""

    def __init__(self, streams: list[TextIO] | None = None, *, interval: float = 10.0,
                 registry: SecretRegistry | None = None) -> None:
        self._streams = streams or []
        self._interval = interval
        self._registry = registry
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self.guests: dict[str, GuestStatus] = {}
        self.listeners: list[Callable[[str, GuestStatus], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Progress":
        if self._interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.summary()

    def _emit(self, line: str) -> None:
        if self._registry is not None:
            line = self._registry.redact(line)
        for s in self._streams:
            try:
                s.write(line + "\n")
                s.flush()
            except (OSError, ValueError):
                pass  # a closed pipe must not stop the run

    def _line(self, st: GuestStatus) -> str:
        now = time.monotonic()
        tail = f"  {st.outcome}" if st.done else ""
        return (f"[{now - self._t0:8.1f}s] {st.guest:<16} attempt {st.attempt}  {st.phase:<16}"
                f"{now - st.phase_started:7.1f}s  passed {st.passed} failed {st.failed}{tail}")

    def update(self, guest: str, *, phase: str | None = None, attempt: int | None = None,
               passed: int | None = None, failed: int | None = None, outcome: str | None = None) -> None:
        with self._lock:
            st = self.guests.setdefault(guest, GuestStatus(guest))
            changed = False
            if attempt is not None and attempt != st.attempt:
                st.attempt, changed = attempt, True
            if phase is not None and phase != st.phase:
                st.phase, st.phase_started, changed = phase, time.monotonic(), True
            if passed is not None:
                st.passed = passed
            if failed is not None:
                st.failed = failed
            if outcome is not None:
                st.done, st.outcome, changed = True, outcome, True
            line = self._line(st) if changed else None
            listeners = list(self.listeners)
        if line:
            self._emit(line)
        for fn in listeners:
            fn(guest, st)

    def note(self, text: str) -> None:
        self._emit(f"[{time.monotonic() - self._t0:8.1f}s] {text}")

    def summary(self) -> None:
        with self._lock:
            lines = [self._line(st) for st in self.guests.values()]
        for ln in lines:
            self._emit(ln)

    def _tick(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                lines = [self._line(st) for st in self.guests.values() if not st.done]
            for ln in lines:
                self._emit(ln)
