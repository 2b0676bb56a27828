"""Virtual time and the explicit scheduler.

Nothing in the simulator reads the wall clock. Work that Windows would do
later (a packet arriving, a deferred IOCTL completing) is a timer on this
scheduler; a blocking call advances virtual time to the next timer instead
of sleeping. Timers that fall due at the same instant fire in the order they
were scheduled, so a run replays identically.
"""
from __future__ import annotations

import heapq
import itertools

NS_PER_MS = 1_000_000
NS_PER_US = 1_000
NEVER = float("inf")


class Timer:
    __slots__ = ("when", "seq", "fn", "args", "cancelled", "label", "scheduler")

    def __init__(self, when: int, seq: int, fn, label: str, args: tuple = (), scheduler=None):
        self.when = when
        self.seq = seq
        self.fn = fn
        self.args = args
        self.cancelled = False
        self.label = label
        self.scheduler = scheduler

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            if self.scheduler is not None:
                self.scheduler._cancelled_one()


def _cancelled(entry) -> bool:
    """Is this heap entry (when, seq, Timer or posted (fn, args)) a cancelled timer?"""
    item = entry[2]
    return type(item) is not tuple and item.cancelled


class Scheduler:
    def __init__(self):
        self.now_ns = 0
        self._heap: list[Timer] = []
        self._seq = itertools.count()
        self._cancelled = 0            # cancelled timers still in the heap
        # Never later than the first entry's time: callers skip run_due() while it is in the
        # future (most C-shaped calls find nothing due). Lowered on push, set when run_due ends.
        self.next_due_ns = NEVER

    def _cancelled_one(self) -> None:
        # Most timers are cancelled long before they fall due (every connect's SYN timeout):
        # drop them once they are half the heap, so the heap stays the size of the live ones
        # (each push and pop compares about log2(size) entries; from 9 on: measured cheapest).
        self._cancelled += 1
        if self._cancelled > 8 and 2 * self._cancelled > len(self._heap):
            self._heap[:] = [entry for entry in self._heap if not _cancelled(entry)]   # in place: run_due holds it
            heapq.heapify(self._heap)
            self._cancelled = 0

    def call_at(self, when_ns: int, fn, label: str = "", *args) -> Timer:
        """Run fn(*args) at virtual time `when_ns` (now, if that has passed)."""
        return self.call_later(when_ns - self.now_ns, fn, label, *args)

    def call_later(self, delay_ns: int, fn, label: str = "", *args) -> Timer:
        """Run fn(*args) `delay_ns` from now, unless the returned Timer is cancelled first."""
        when = self.now_ns + delay_ns if delay_ns > 0 else self.now_ns
        timer = Timer(when, next(self._seq), fn, label, args, self)
        # (when, seq) is unique, so the heap compares plain tuples and never what they hold.
        heapq.heappush(self._heap, (when, timer.seq, timer))
        if when < self.next_due_ns:
            self.next_due_ns = when
        return timer

    def post(self, delay_ns: int, fn, *args) -> None:
        """Run fn(*args) `delay_ns` from now, for good: no Timer to cancel, so none is made.

        Every segment and datagram is delivered so. Same order as call_later's timers.
        """
        when = self.now_ns + delay_ns if delay_ns > 0 else self.now_ns
        heapq.heappush(self._heap, (when, next(self._seq), (fn, args)))
        if when < self.next_due_ns:
            self.next_due_ns = when

    def call_soon(self, fn, label: str = "") -> Timer:
        return self.call_at(self.now_ns, fn, label)

    def next_time(self):
        heap = self._heap
        while heap and _cancelled(heap[0]):
            heapq.heappop(heap)
            self._cancelled -= 1
        return heap[0][0] if heap else None

    def run_due(self) -> int:
        """Fire every timer due now (including ones they schedule for now)."""
        count = 0
        heap = self._heap
        while heap and heap[0][0] <= self.now_ns:
            timer = heapq.heappop(heap)[2]
            if type(timer) is tuple:            # posted: (fn, args)
                timer[0](*timer[1])
                count += 1
            elif timer.cancelled:
                self._cancelled -= 1
            else:
                timer.scheduler = None          # fired: a later cancel() has nothing to drop
                timer.fn(*timer.args)
                count += 1
        self.next_due_ns = heap[0][0] if heap else NEVER
        return count

    def step(self, limit_ns=None) -> bool:
        """Advance to the next timer (not past `limit_ns`) and fire what is due.

        Returns False when there is no timer at or before the limit.
        """
        when = self.next_time()
        if when is None or (limit_ns is not None and when > limit_ns):
            return False
        if when > self.now_ns:
            self.now_ns = when
        self.run_due()
        return True

    def advance_to(self, when_ns: int) -> None:
        """Run every timer up to `when_ns`, then set the clock to it."""
        while self.step(when_ns):
            pass
        if when_ns > self.now_ns:
            self.now_ns = when_ns

    def pending(self) -> int:
        return sum(1 for entry in self._heap if not _cancelled(entry))
