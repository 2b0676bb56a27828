"""The simulated kernel: one lock, virtual time, threads with APC queues, waits.

Every C-shaped call runs under the world's lock, so the simulator is safe to
call from several Python threads. A blocking call waits through `wait`,
which advances virtual time to the next timer instead of sleeping. When a
wait can never end (nothing scheduled, no other Python thread using the
world), Windows would hang; the simulator raises `SimulationDeadlock`
instead, naming the call, so a test fails rather than hangs.
"""
from __future__ import annotations

import collections
import threading

from sim.scheduler import NS_PER_MS, Scheduler

INFINITE = 0xFFFFFFFF


class SimulationDeadlock(RuntimeError):
    """A simulated call would block forever: nothing can ever wake it."""


class Diagnostic:
    """Something a real program would get away with only by luck (kept, not raised)."""

    __slots__ = ("time_ns", "kind", "message")

    def __init__(self, time_ns: int, kind: str, message: str):
        self.time_ns = time_ns
        self.kind = kind
        self.message = message

    def __repr__(self) -> str:
        return f"<{self.kind} at {self.time_ns}ns: {self.message}>"


class SimThread:
    """A simulated thread: its own last error and user-APC queue."""

    def __init__(self, process, tid: int, name: str):
        self.process = process
        self.tid = tid
        self.name = name
        self.last_error = 0
        self.apcs: collections.deque = collections.deque()
        self.waiting = False
        self.interrupted = None   # set to an error code to break a blocking call
        self.port = None          # the completion port it last removed a packet from (its association)

    def __repr__(self) -> str:
        return f"<SimThread {self.tid} {self.name!r} of pid {self.process.pid}>"


class Event:
    """A manual-reset event (WSACreateEvent creates manual-reset events)."""

    kind = "event"

    def __init__(self, signalled: bool = False, manual_reset: bool = True):
        self.signalled = signalled
        self.manual_reset = manual_reset


class CompletionPort:
    kind = "iocp"

    def __init__(self):
        self.packets: collections.deque = collections.deque()
        self.closed = False


class CompletionPacket:
    __slots__ = ("key", "information", "overlapped", "status")

    def __init__(self, key: int, information: int, overlapped: int, status: int):
        self.key = key
        self.information = information
        self.overlapped = overlapped
        self.status = status


class Kernel:
    """Shared by every host and process of one world."""

    def __init__(self):
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.scheduler = Scheduler()
        self.diagnostics: list[Diagnostic] = []
        self._python_threads: set[int] = set()
        self.deadlock_grace_s = 2.0     # real time a stuck infinite wait allows other Python threads
        self.cross_thread_grace_s = 0.02
        self.generation = 0
        self._poke_waiters = 0          # Python threads inside _wait_for_poke
        self.services: list = []        # other processes' event loops, run while a thread waits
        self._in_services = False

    @property
    def now_ns(self) -> int:
        return self.scheduler.now_ns

    def note(self, kind: str, message: str) -> None:
        self.diagnostics.append(Diagnostic(self.now_ns, kind, message))

    def enter(self) -> None:
        ident = threading.get_ident()
        if ident not in self._python_threads:
            self._python_threads.add(ident)

    def poke(self) -> None:
        """Wake Python threads blocked in simulated waits: state changed."""
        self.generation += 1
        if self._poke_waiters:          # notify_all is Python code: skip it when nobody listens
            self.cond.notify_all()

    def _others_alive(self) -> bool:
        me = threading.get_ident()
        threads = self._python_threads
        if not threads or (len(threads) == 1 and me in threads):
            return False                    # the common single-threaded case: no enumeration
        alive = {t.ident for t in threading.enumerate()}
        self._python_threads &= alive
        return any(t != me for t in self._python_threads)

    def run_apcs(self, thread: SimThread) -> int:
        ran = 0
        while thread.apcs:
            apc = thread.apcs.popleft()
            ran += 1
            apc()
        return ran

    def wait(self, thread: SimThread, ready, timeout_ms: int, alertable: bool, what: str):
        """Block `thread` until `ready()` returns non-None, an APC runs, or time runs out.

        Returns ('ready', value), ('apc', None), ('timeout', None) or
        ('interrupted', error) when another thread broke the wait
        (closesocket of the socket a blocking call waits on: WSAEINTR).
        The order of checks follows the NT wait: signalled objects first,
        then user APCs for an alertable wait, then the timeout (ledger:
        `wait_satisfaction_order`).
        """
        sched = self.scheduler
        deadline = None if timeout_ms == INFINITE else sched.now_ns + timeout_ms * NS_PER_MS
        thread.waiting = True
        try:
            while True:
                sched.run_due()
                if thread.interrupted is not None:
                    err, thread.interrupted = thread.interrupted, None
                    return "interrupted", err
                value = ready()
                if value is not None:
                    return "ready", value
                if alertable and thread.apcs:
                    self.run_apcs(thread)
                    return "apc", None
                if deadline is not None and sched.now_ns >= deadline:
                    return "timeout", None
                if self.services and self.run_services():
                    continue    # another simulated process did some work: look again
                if self._others_alive() and self._wait_for_poke(self.cross_thread_grace_s):
                    continue    # another Python thread changed something: look again
                if sched.step(deadline):
                    continue
                if deadline is not None:
                    sched.advance_to(deadline)
                    continue
                if self._others_alive() and self._wait_for_poke(self.deadlock_grace_s):
                    continue
                raise SimulationDeadlock(
                    f"{what} on {thread!r} would block forever: nothing is scheduled and no "
                    f"other Python thread changed anything (virtual time {sched.now_ns} ns)")
        finally:
            thread.waiting = False

    def run_services(self) -> bool:
        """Give every registered service one non-blocking turn; True if any made progress.

        Services are the event loops of simulated processes (proxies, servers)
        that run cooperatively on this thread's time, deterministically.
        """
        if self._in_services:
            return False
        self._in_services = True
        try:
            progress = False
            for service in list(self.services):
                if service():
                    progress = True
            return progress
        finally:
            self._in_services = False

    def _wait_for_poke(self, seconds: float) -> bool:
        """Release the lock for up to `seconds` of real time; True if state changed."""
        before = self.generation
        self._poke_waiters += 1
        try:
            self.cond.wait(seconds)
        finally:
            self._poke_waiters -= 1
        return self.generation != before
