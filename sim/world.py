"""The simulated world: hosts on a network, processes on hosts, all on one virtual clock."""
from __future__ import annotations

import gc
import threading

from sim import profiles
from sim.kernel import Kernel, SimThread
from sim.memory import AddressSpace
from sim.net import Network
from sim.scheduler import NS_PER_MS
from sim.socket import Socket

HANDLE_FIRST = 0x100
HANDLE_STEP = 4           # NT handle values are multiples of four


class FaultPlan:
    """Explicit fault injection for error codes that have no realistic cause here.

    inject('WSAIoctl', WSAEINPROGRESS, code=SIO_..., times=1): the next
    matching call fails with that error after ws2_32's own checks.
    """

    def __init__(self):
        self.rules = []             # [function, code, error, times left]; empty: nothing to check

    def inject(self, function: str, error: int, *, code=None, times: int = 1) -> None:
        self.rules.append([function, code, error, times])

    def take(self, function: str, code=None):
        for rule in self.rules:
            if rule[0] == function and (rule[1] is None or rule[1] == code) and rule[3] > 0:
                rule[3] -= 1
                if rule[3] == 0:
                    self.rules.remove(rule)
                return rule[2]
        return None

    def __bool__(self) -> bool:
        return bool(self.rules)


class Process:
    def __init__(self, world, host, pid: int, name: str, elevated: bool):
        self.world = world
        self.kernel = world.kernel
        self.host = host
        self.pid = pid
        self.name = name
        self.elevated = elevated
        self.profile = world.profile
        self.memory = AddressSpace(self.kernel.lock)
        self.handles: dict = {}
        self.sockets: dict = {}           # ws2_32's own table (docs/windows-observed.md item 8)
        self._next_handle = HANDLE_FIRST
        self.threads: list[SimThread] = []
        self._by_ident: dict = {}
        self._tls = threading.local()
        self.wsa_refcount = 0
        self.completed_flags: dict = {}
        self._routines: dict = {}
        self._extensions: dict = {}
        self.faults = FaultPlan()
        self.activity = 0                 # bumped when one of its sockets has news (sim.world services)
        host.processes.append(self)

    def __repr__(self) -> str:
        return f"<Process {self.pid} {self.name!r} on {self.host.name}>"

    # -- handles -----------------------------------------------------------
    def new_handle(self, obj) -> int:
        handle = self._next_handle
        self._next_handle += HANDLE_STEP       # never reused within the process (no stale aliasing)
        self.handles[handle] = obj
        return handle

    def new_socket(self, family, type_, protocol, overlapped_attr) -> Socket:
        handle = self._next_handle
        sock = Socket(self, handle, family, type_, protocol, overlapped_attr)
        self.new_handle(sock)
        self.sockets[handle] = sock
        return sock

    # -- threads -----------------------------------------------------------
    def new_thread(self, name: str = "") -> SimThread:
        tid = self.world.next_tid()
        thread = SimThread(self, tid, name or f"thread-{tid}")
        thread.handle = self.new_handle(thread)
        thread.kind = "thread"
        self.threads.append(thread)
        return thread

    def current_thread(self) -> SimThread:
        """The simulated thread of the calling Python thread (its own, unless as_thread() chose one)."""
        thread = self._tls.__dict__.get("thread")
        if thread is not None:
            return thread
        ident = threading.get_ident()
        thread = self._by_ident.get(ident)
        if thread is None:
            thread = self.new_thread(threading.current_thread().name)
            self._by_ident[ident] = thread
            self.kernel.enter()            # this Python thread now uses the world (kernel.wait)
        self._tls.thread = thread
        return thread

    # -- code pointers -----------------------------------------------------
    def register_routine(self, fn) -> int:
        ptr = self.memory.register_code(fn)
        self._routines[ptr] = fn
        return ptr

    def is_routine(self, ptr: int) -> bool:
        return ptr in self._routines

    def call_routine(self, ptr, error, transferred, overlapped, flags) -> None:
        self._routines[ptr](error, transferred, overlapped, flags)

    def extension_pointer(self, guid: bytes):
        from sim.ioctls import EXTENSION_GUIDS
        name = EXTENSION_GUIDS.get(guid)
        if name is None:
            return None
        if name not in self._extensions:
            self._extensions[name] = self.memory.register_code(("extension", name))
        return self._extensions[name]

    def extension_at(self, ptr: int):
        target = self.memory.code_at(ptr)
        if isinstance(target, tuple) and target[0] == "extension":
            return target[1]
        return None


class World:
    """Hosts, processes and the network, all on one virtual clock.

    World(profile="windows-observed", overrides={"wfp_query_completion": "pending"})
    """

    def __init__(self, profile="documented", overrides=None):
        self.kernel = Kernel()
        self.network = Network(self.kernel)
        base = profiles.load(profile)
        self.profile = base.with_overrides(**overrides) if overrides else base
        self._pid = 1000
        self._tid = 2000
        from sim.wfp.hops import HopTracker
        self.hops = HopTracker()
        self._engines: dict = {}

    @staticmethod
    def freeze() -> None:
        """Once a large world is built: collect, then move every object alive into the collector's
        permanent generation (gc.freeze), so later full collections do not walk the world's
        million objects again (a full collection of 750,000 took about a second; bench/bench_scale.py).
        Objects frozen are never collected: call it when what is built stays."""
        gc.collect()
        gc.freeze()

    def next_tid(self) -> int:
        self._tid += 4
        return self._tid

    @property
    def now_ns(self) -> int:
        return self.kernel.now_ns

    def add_host(self, name: str, addresses=("192.0.2.10", "2001:db8::10")):
        with self.kernel.lock:
            return self.network.add_host(name, addresses)

    def start_process(self, host, name: str = "process", *, elevated: bool = True, startup: bool = True):
        """A new process on `host`, returned as its WinsockApi (WSAStartup already called)."""
        from sim.winsock import SimulatedWinsock
        with self.kernel.lock:
            self._pid += 4
            process = Process(self, host, self._pid, name, elevated)
        api = SimulatedWinsock(process=process)
        if startup:
            api.startup()
        return api

    def wfp(self, host):
        """The host's WFP filter engine (created on first use)."""
        from sim.wfp.engine import FilterEngine
        with self.kernel.lock:
            engine = self._engines.get(host.name)
            if engine is None:
                engine = self._engines[host.name] = FilterEngine(host, self)
            return engine

    def add_service(self, poll, api=None):
        """Run `poll()` (non-blocking, returns True on progress) whenever the world waits.

        With `api` (the service's process), a poll is skipped while none of that
        process's sockets has had news since its last poll began: such a poll
        could only collect WSAEWOULDBLOCKs. News is anything arriving for a
        socket, and an accepted socket that already holds data. Gated services
        must handle, in one poll, everything that is ready when it looks
        (e.g. accept until WSAEWOULDBLOCK).
        """
        if api is not None:
            process = api.process
            seen = [-1]

            def gated():
                if process.activity == seen[0]:
                    return False
                seen[0] = process.activity
                return poll()
            gated.__wrapped__ = poll
            service = gated
        else:
            service = poll
        with self.kernel.lock:
            self.kernel.services.append(service)
        return service

    def remove_service(self, service) -> None:
        with self.kernel.lock:
            self.kernel.services.remove(service)

    def run(self, ms: float = None, until_ns: int = None) -> None:
        """Let virtual time pass: fire every timer up to the target time."""
        with self.kernel.lock:
            target = until_ns if until_ns is not None else self.kernel.now_ns + int((ms or 0) * NS_PER_MS)
            self._run_to(target)
            self.kernel.scheduler.advance_to(target)

    def run_until_idle(self, limit_ms: float = 60_000) -> None:
        """Fire timers until none is left (or the limit passes)."""
        with self.kernel.lock:
            self._run_to(self.kernel.now_ns + int(limit_ms * NS_PER_MS))

    def _run_to(self, limit_ns: int) -> None:
        """Fire timers and give services their turns until nothing is left before `limit_ns`."""
        kernel, sched = self.kernel, self.kernel.scheduler
        while True:
            sched.run_due()
            if kernel.services and kernel.run_services():
                continue
            if not sched.step(limit_ns):
                break
        kernel.poke()
