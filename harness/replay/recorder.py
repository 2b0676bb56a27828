"""`RecordingApi`: a WinsockApi wrapper that records every C-shaped call as a trace step.

    from harness.replay import recording, replay
    with recording(sim.SimulatedWinsock()) as api:
        s = api.socket(2, 1, 6)
        ...
    api.trace.dump("run.jsonl")

What is recorded for each call: the arguments (pointers and handles as
symbols, see harness.replay.trace), the return value, the thread's last
error after the call (read with the provider's own GetLastError, which does
not change it), the bytes the call changed in the memory the recorder
allocated (a snapshot before and after the call, compared in 8-byte words),
and every completion routine invocation during the call, with the calls the
routine made. The test's own memory operations (alloc, write, free,
protect, invalid_pointer) and completion_routine() are steps too, so the
trace replays on a target that numbers addresses and handles differently.
"""
from __future__ import annotations

import contextlib
import struct

from harness.winsock import constants as C
from harness.winsock.api import EXTENSION_PROTOTYPES, PROTOTYPES
from harness.winsock.ctype import coerce
from harness.winsock.layouts import guid_bytes

from .symbols import Symbols
from .trace import Trace, make_header

HANDLE_TYPES = frozenset({"SOCKET", "HANDLE", "WSAEVENT"})
VOLATILE_RETURNS = frozenset({"GetCurrentProcessId", "GetCurrentThreadId"})
EXTENSION_GUIDS = {guid_bytes(C.WSAID_WSARECVMSG): "WSARecvMsg", guid_bytes(C.WSAID_WSASENDMSG): "WSASendMsg",
                   guid_bytes(C.WSAID_ACCEPTEX): "AcceptEx", guid_bytes(C.WSAID_CONNECTEX): "ConnectEx",
                   guid_bytes(C.WSAID_GETACCEPTEXSOCKADDRS): "GetAcceptExSockaddrs"}


def parse_params(signature: str) -> tuple:
    return tuple(tuple(p.split()) for p in (x.strip() for x in signature.split(",")) if p)


SIGNATURES = {name: (ret, parse_params(sig)) for name, (ret, sig) in PROTOTYPES.items()}
EXT_SIGNATURES = {name: (ret, parse_params(sig)) for name, (ret, sig) in EXTENSION_PROTOTYPES.items()}


def encode_arg(symbols: Symbols, ctype: str, value: int):
    if ctype == "LPVOID":
        return symbols.pointer(value)
    if ctype in HANDLE_TYPES:
        return symbols.handle(value)
    if ctype == "ULONG_PTR":
        return symbols.word(value)
    return value


def encode_ret(symbols: Symbols, ret_type: str, value):
    """A return value as recorded: new handles become symbols; failure values stay literal."""
    if ret_type in HANDLE_TYPES and type(value) is int and value not in (0, C.INVALID_SOCKET):
        return symbols.add_handle(value)
    return value


def diff_words(before: bytes, after: bytes):
    """[(offset, bytes)] runs of changed 8-byte words (offsets relative to the region start)."""
    if before == after:
        return []
    runs = []
    n = len(after)
    start = None
    for off in range(0, n, 8):
        changed = before[off:off + 8] != after[off:off + 8]
        if changed and start is None:
            start = off
        elif not changed and start is not None:
            runs.append((start, after[start:off]))
            start = None
    if start is not None:
        runs.append((start, after[start:n]))
    return runs


class MemoryTracker:
    """Snapshots of the allocations a Symbols table knows, and the diff between two."""

    def __init__(self, memory, symbols: Symbols):
        self.memory = memory
        self.symbols = symbols

    def snapshot(self) -> dict:
        snap = {}
        for index, (start, size, live) in enumerate(self.symbols.allocs):
            if live and size:
                try:
                    snap[index] = self.memory.read(start, size)
                except Exception:       # noqa: BLE001 - an allocation the provider no longer has
                    pass
        return snap

    def writes(self, before: dict, after: dict) -> list:
        out = []
        for index, data in after.items():
            old = before.get(index)
            if old is None or len(old) != len(data):
                continue
            start = self.symbols.allocs[index][0]
            for off, chunk in diff_words(old, data):
                out.append({"alloc": index, "offset": off, "hex": chunk.hex(),
                            "syms": self.symbols.scan(start + off, chunk)})
        return out


def learn_extension(memory, symbols: Symbols, args) -> None:
    """After a successful SIO_GET_EXTENSION_FUNCTION_POINTER: name the pointer it wrote."""
    _s, code, inbuf, _cbin, outbuf, _cbout = args[:6]
    # Not the lengths: where a short GUID or output length succeeds (decision point
    # extension_pointer_sizes = "unchecked", as Wine), the pointer was written all the same.
    if code != C.SIO_GET_EXTENSION_FUNCTION_POINTER or not inbuf or not outbuf:
        return
    try:
        guid = memory.read(inbuf, 16)
        ptr = struct.unpack("<Q", memory.read(outbuf, 8))[0]
    except Exception:   # noqa: BLE001 - buffers outside the recorded allocations
        return
    name = EXTENSION_GUIDS.get(guid)
    if name and ptr:
        symbols.add_ext(name, ptr)


class _ErrorGuard:
    """Keeps the thread's last error as the call left it across the recorder's own memory reads.

    Reading a PAGE_NOACCESS allocation lifts its protection (VirtualProtect in
    the agent), which may touch the last error; the guard restores it.
    """

    def __init__(self, api):
        self.api = api

    def __enter__(self):
        self.saved = self.api.GetLastError()
        return self

    def __exit__(self, *exc):
        if self.api.GetLastError() != self.saved:
            self.api.WSASetLastError(self.saved)


def target_name(api) -> str:
    return "sim" if hasattr(api, "world") else getattr(api, "target", None) or type(api).__name__


def profile_name(api) -> str:
    profile = getattr(api, "profile", None)
    return getattr(profile, "name", "") or "unknown"


class RecordingMemory:
    """The Memory protocol, recording the test's allocations and writes."""

    def __init__(self, owner: "RecordingApi"):
        self._owner = owner
        self._inner = owner.inner.memory

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def alloc(self, size: int, prot: str = "rw", **kw) -> int:
        ptr = self._inner.alloc(size, prot, **kw)
        owner = self._owner
        sym = owner.symbols.add_alloc(ptr, size)
        if prot != "rw":
            owner._protected += 1
        owner._emit({"op": "alloc", "size": size, "prot": prot, "result": sym})
        return ptr

    def alloc_bytes(self, data: bytes, prot: str = "rw") -> int:
        ptr = self.alloc(len(data))
        self.write(ptr, data)
        if prot != "rw":
            self.protect(ptr, prot)
        return ptr

    def free(self, ptr: int) -> None:
        owner = self._owner
        sym = owner.symbols.pointer(ptr)
        self._inner.free(ptr)
        owner.symbols.free_alloc(ptr)
        owner._emit({"op": "free", "ptr": sym})

    def protect(self, ptr: int, prot: str) -> None:
        owner = self._owner
        self._inner.protect(ptr, prot)
        owner._protected += 1
        owner._emit({"op": "protect", "ptr": owner.symbols.pointer(ptr), "prot": prot})

    def write(self, ptr: int, data) -> None:
        data = bytes(data)
        owner = self._owner
        self._inner.write(ptr, data)
        owner._emit({"op": "write", "ptr": owner.symbols.pointer(ptr), "hex": data.hex(),
                     "syms": owner.symbols.scan(ptr, data)})

    def write_u32(self, ptr: int, value: int) -> None:
        self.write(ptr, struct.pack("<I", value & 0xFFFFFFFF))

    def write_u64(self, ptr: int, value: int) -> None:
        self.write(ptr, struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))

    def read(self, ptr: int, n: int) -> bytes:
        return self._inner.read(ptr, n)

    def read_u32(self, ptr: int) -> int:
        return struct.unpack("<I", self._inner.read(ptr, 4))[0]

    def read_u64(self, ptr: int) -> int:
        return struct.unpack("<Q", self._inner.read(ptr, 8))[0]

    def invalid_pointer(self) -> int:
        value = self._inner.invalid_pointer()
        owner = self._owner
        owner._emit({"op": "invalid_pointer", "result": owner.symbols.add_invalid(value)})
        return value


class RecordingApi:
    """Wraps any WinsockApi; every C-shaped call, memory operation and completion becomes a step.

    `trace` is the Trace being written (pass one to append several sessions
    to one file, as `wfp-harness trace record` does: one session per test).
    Attributes that are not part of the C surface (a simulator's world,
    new_thread, ...) pass through unrecorded.
    """

    def __init__(self, inner, trace: Trace | None = None, session: str = "", *, target: str = "",
                 profile: str = ""):
        self.inner = inner
        self.symbols = Symbols()
        self.trace = trace if trace is not None else Trace(make_header(target or target_name(inner),
                                                                       profile or profile_name(inner)))
        self._sinks = [self.trace.steps]
        self._frames: list[dict] = []
        self._protected = 0
        self._threads: list = []
        self._tracker = MemoryTracker(inner.memory, self.symbols)
        self.trace.steps.append({"op": "session", "name": session or f"session-{self._session_count()}"})
        self.memory = RecordingMemory(self)

    def _session_count(self) -> int:
        return sum(1 for s in self.trace.steps if s.get("op") == "session")

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"<RecordingApi of {self.inner!r}: {len(self.trace.steps)} steps>"

    def _emit(self, step: dict) -> None:
        self._sinks[-1].append(step)

    def _snapshot(self) -> dict:
        if self._protected:
            with _ErrorGuard(self.inner):
                return self._tracker.snapshot()
        return self._tracker.snapshot()

    # -- simulated threads (simulator only; the steps replay on a target that has them) -----
    def new_thread(self, name: str = ""):
        thread = self.inner.new_thread(name)
        self._threads.append(thread)
        self._emit({"op": "thread", "name": name, "result": len(self._threads) - 1})
        return thread

    @contextlib.contextmanager
    def as_thread(self, thread):
        k = next((i for i, t in enumerate(self._threads) if t is thread), None)
        if k is None:                   # a thread made outside the recorder: not replayable, not recorded
            with self.inner.as_thread(thread) as t:
                yield t
            return
        self._emit({"op": "enter_thread", "thread": k})
        try:
            with self.inner.as_thread(thread) as t:
                yield t
        finally:
            self._emit({"op": "exit_thread"})

    # -- callbacks -------------------------------------------------------------------
    def completion_routine(self, fn) -> int:
        if not callable(fn):
            raise TypeError("completion_routine() needs a callable")
        holder = []
        symbols = self.symbols

        def routine(dwError, cbTransferred, lpOverlapped, dwFlags):
            record = {"routine": holder[0], "args": [dwError, cbTransferred, symbols.pointer(lpOverlapped),
                                                     dwFlags], "calls": []}
            if self._frames:
                self._frames[-1]["completions"].append(record)
            else:                       # delivered outside any recorded call: keep it with the last step
                steps = [s for s in self._sinks[-1] if s.get("op") == "call"]
                if steps:
                    steps[-1].setdefault("completions", []).append(record)
            self._sinks.append(record["calls"])
            try:
                return fn(dwError, cbTransferred, lpOverlapped, dwFlags)
            finally:
                self._sinks.pop()

        ptr = self.inner.completion_routine(routine)
        holder.append(self.symbols.add_routine(ptr))
        self._emit({"op": "routine", "result": holder[0]})
        return ptr

    # -- the C surface ----------------------------------------------------------------------
    def _record(self, name: str, ret_type: str, params, args, kwargs, call, ext_ptr=None):
        if kwargs:
            names = [p for _, p in params]
            args = list(args) + [None] * (len(names) - len(args))
            for key, value in kwargs.items():
                if key not in names:
                    raise TypeError(f"{name}() got an unexpected keyword argument {key!r}")
                args[names.index(key)] = value
            args = tuple(args)
        if len(args) != len(params) or any(not isinstance(a, int) for a in args):
            return call(*args)          # a Python mistake: let the provider raise, record nothing
        cargs = tuple(coerce(a, t, p, name) for a, (t, p) in zip(args, params))
        symbols = self.symbols
        step = {"op": "call", "fn": name, "args": [encode_arg(symbols, t, a) for a, (t, _) in zip(cargs, params)]}
        if ext_ptr is not None:
            step["ext"] = True
            step["fnptr"] = symbols.pointer(ext_ptr)
        step["completions"] = []
        self._emit(step)
        before = self._snapshot()
        self._frames.append(step)
        try:
            ret = call(*cargs)
        except Exception as exc:
            step["raised"] = f"{type(exc).__name__}: {exc}"
            raise
        else:
            if name == "WSAIoctl" and ret == 0:
                learn_extension(self.inner.memory, symbols, cargs)
            step["ret"] = encode_ret(symbols, ret_type, ret)
            return ret
        finally:
            self._frames.pop()
            step["error"] = self.inner.GetLastError() & 0xFFFFFFFF
            step["writes"] = self._tracker.writes(before, self._snapshot())
            if not step["completions"]:
                del step["completions"]

    def call(self, fnptr: int, *args):
        name = self.symbols.pointer(fnptr)
        if isinstance(name, list) and name[0] == "ext":
            ret_type, params = EXT_SIGNATURES[name[1]]
            return self._record(name[1], ret_type, params, args, {},
                                lambda *a: self.inner.call(fnptr, *a), ext_ptr=fnptr)
        return self.inner.call(fnptr, *args)      # a pointer not fetched through this recorder


def _make_method(name: str):
    ret_type, params = SIGNATURES[name]

    def method(self, *args, **kwargs):
        return self._record(name, ret_type, params, args, kwargs, getattr(self.inner, name))
    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"{ret_type} {name}({PROTOTYPES[name][1]}), recorded"
    return method


for _name in PROTOTYPES:
    setattr(RecordingApi, _name, _make_method(_name))
del _name


@contextlib.contextmanager
def recording(api, trace: Trace | None = None, session: str = ""):
    """`with recording(api) as rec:` ... `rec.trace` is the trace of everything done through rec."""
    rec = RecordingApi(api, trace, session)
    yield rec
