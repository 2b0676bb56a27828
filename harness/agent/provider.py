"""`AgentWinsock`: the `WinsockApi` served by a winsock-agent process (Wine, a remote Windows host).

Every function of `PROTOTYPES` is generated from that table: the agent
resolved its address at session start (ws2_32 or kernel32, as
`harness.winsock.api.DLL_OF` says), the method is wrapped with `cfunc` (a non-int
raises TypeError naming the parameter; ints are reduced to the C width), the
arguments travel as 64-bit slots and the raw RAX comes back, narrowed here to
the C return type (int/BOOL sign-extended from 32 bits, DWORD zero-extended,
SOCKET/HANDLE 64 bits, void -> None). Adding a function to PROTOTYPES is enough
to make it callable here.

Threads: each Python thread calls through an agent thread of its own (created
on its first call), and `new_thread()`/`as_thread(t)` let one Python thread act
as several, as with the simulator. The agent thread keeps its last error
between calls, so WSAGetLastError/GetLastError are the real calls.

Completion routines: `completion_routine(fn)` returns a distinct native
trampoline in the agent. When an APC runs it during an alertable call, the
agent records (dwError, cbTransferred, lpOverlapped, dwFlags) on that thread
and returns the records with the call's response; the Python functions are
then called in order, on the calling Python thread, before the call returns
(an exception from one is re-raised after all have run). Unlike in-process C, their own API calls happen after the alertable
call rather than inside it.

A fault inside a call (e.g. an access violation that ws2_32 does not turn into
WSAEFAULT) raises AgentAccessViolation, an OSError worded as ctypes words it;
the agent survives.

Memory (`AgentMemory`): each
allocation its own reservation, the buffer at the end of its committed pages
(16-byte aligned) before a reserved guard page; read/write outside an
allocation raise harness.winsock.memory.AccessViolation without a round trip.
"""
from __future__ import annotations

import contextlib
import threading

from harness.agent.protocol import (MAX_FRAME, AgentAccessViolation, AgentError, AgentRequestError,
                                    describe_exception)
from harness.winsock import constants as C
from harness.winsock.memory import PROTS, AllocationTable, MemoryHelpers
from harness.winsock.api import DLL_OF, EXTENSION_PROTOTYPES, PROTOTYPES
from harness.winsock.layouts import WSADATA
from harness.winsock.ctype import C_TYPES, cfunc, parse_signature

__all__ = ["AgentWinsock", "AgentMemory", "AgentThread", "dll_of"]

_PROTS = PROTS
_CHUNK = MAX_FRAME // 2          # largest read/write sent in one frame

# Handles a provider closes when it is closed, so a reused agent starts clean:
# function -> kind of the handle its result is (None: not a handle maker).
_MAKES = {"socket": "socket", "WSASocketW": "socket", "accept": "socket", "WSACreateEvent": "event",
          "CreateIoCompletionPort": "port"}
_CLOSES = ("closesocket", "CloseHandle", "WSACloseEvent")

# Calls that wait for a time of their choosing: the index of their timeout (ms).
# The agent counts as hung only once that time plus the call timeout has passed.
_WAITS = {"SleepEx": 0, "WSAWaitForMultipleEvents": 3, "WSAPoll": 2, "GetQueuedCompletionStatus": 4,
          "GetQueuedCompletionStatusEx": 4}
_INFINITE = 0xFFFFFFFF


def dll_of(name: str) -> str:
    """The DLL exporting a PROTOTYPES function (kernel32 or ws2_32)."""
    return DLL_OF.get(name, "ws2_32")


def _narrow(ret: str):
    """A function reducing RAX to C return type `ret`."""
    if ret == "void":
        return lambda rax: None
    bits, signed = C_TYPES[ret]
    mask = (1 << bits) - 1
    if not signed:
        return (lambda rax: rax) if bits == 64 else (lambda rax: rax & mask)
    half = 1 << (bits - 1)
    return lambda rax: ((rax & mask) ^ half) - half


_HEX_TYPES = frozenset({"LPVOID", "SOCKET", "HANDLE", "WSAEVENT", "ULONG_PTR", "PTR"})


def _call_text(name: str, params, args) -> str:
    """`recv(s=0x4c, buf=0x18c0ff0, len=16, flags=0)`: pointers and handles in hex, counts in decimal."""
    def show(ctype, value):
        hexa = ctype in _HEX_TYPES or not -0x10000 < value < 0x10000
        return f"{value:#x}" if hexa and value else str(value)
    return f"{name}({', '.join(f'{p}={show(t, a)}' for (t, p), a in zip(params, args))})"


class AgentThread:
    """A real thread in the agent. `handle` is its thread HANDLE, `tid` its thread id."""
    __slots__ = ("tag", "tid", "handle", "name")

    def __init__(self, tag: int, tid: int, handle: int, name: str):
        self.tag, self.tid, self.handle, self.name = tag, tid, handle, name

    def __repr__(self) -> str:
        return f"<AgentThread {self.name!r} tid={self.tid}>"


class _Region:
    __slots__ = ("start", "size", "prot")

    def __init__(self, start, size, prot):
        self.start, self.size, self.prot = start, size, prot


class AgentMemory(AllocationTable, MemoryHelpers):
    """The `Memory` protocol over the agent process's memory."""

    ALIGN = 16

    def __init__(self, session):
        super().__init__()
        self._session = session
        self.PAGE = session.hello.page_size

    def __repr__(self) -> str:
        return f"<AgentMemory {len(self._regions)} allocations in agent pid {self._session.hello.pid}>"

    def alloc(self, size: int, prot: str = "rw", tag: str = "") -> int:
        """Allocate `size` zero-filled bytes ending at most 15 bytes before a guard page; returns the address."""
        self._check_alloc(size, prot)
        with self._lock:
            self._check_open()
            return self._insert(_Region(self._session.alloc(size, prot), size, prot))

    def free(self, ptr: int) -> None:
        with self._lock:
            i = self._index_of_start(ptr, "free")
            self._session.free(ptr)
            self._remove(i)

    def protect(self, ptr: int, prot: str) -> None:
        if prot not in _PROTS:
            raise ValueError(f"protect prot must be one of {_PROTS}, not {prot!r}")
        with self._lock:
            region = self._regions[self._index_of_start(ptr, "protect")]
            self._session.protect(ptr, prot)
            region.prot = prot

    def is_allocated(self, ptr: int) -> bool:
        with self._lock:
            return self._region_at(ptr) is not None

    def invalid_pointer(self) -> int:
        with self._lock:
            if not self._invalid:
                self._check_open()
                self._invalid = self._session.invalid_pointer()
            return self._invalid

    def close(self) -> None:
        """Decommit every allocation, keeping the ranges reserved until the next provider closes:
        an overlapped operation still in flight (aborted by WSACleanup) may write after this, and
        into a reserved range the write faults harmlessly where a released one could have been
        reused by another allocation. (The agent releases them at the next RETIRE, so a pooled
        agent's mappings stay bounded.)"""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            starts, self._starts, self._regions = self._starts, [], []
            if starts and self._session.alive:
                self._session.retire(starts)

    def read(self, ptr: int, n: int) -> bytes:
        if type(n) is not int or n < 0:
            raise ValueError(f"read length must be a non-negative int, not {n!r}")
        if n == 0:
            return b""
        with self._lock:
            self._range(ptr, n, "read")
        if n <= _CHUNK:
            return self._session.read(ptr, n)
        return b"".join(self._session.read(p, min(_CHUNK, ptr + n - p)) for p in range(ptr, ptr + n, _CHUNK))

    def write(self, ptr: int, data) -> None:
        data = bytes(data)
        if not data:
            return
        with self._lock:
            self._range(ptr, len(data), "write")
        for off in range(0, len(data), _CHUNK):
            self._session.write(ptr + off, data[off:off + _CHUNK])


class _Extension:
    """`self` of an extension caller: the pointer being called through `provider`."""
    __slots__ = ("provider", "ptr", "name")

    def __init__(self, provider, ptr, name):
        self.provider, self.ptr, self.name = provider, ptr, name

    def invoke(self, args):
        return self.provider._invoke(self.name, self.ptr, args)


class AgentWinsock:
    """`WinsockApi` over a winsock-agent session. WSAStartup(2.2) is called on construction.

    `close()` closes what the test left open (sockets, events, ports), balances
    WSAStartup, ends this provider's agent threads and decommits its memory,
    then hands the session to `on_close` (a pool may reuse it) if it is clean.
    It is not clean if a call is still in flight, if a call faulted (the
    callee may have died holding a lock), or if the agent broke: then the
    process is killed and the next provider gets a fresh one.
    """

    def __init__(self, session, *, on_close=None, name: str = "agent"):
        self._session = session
        self._on_close = on_close
        self.target = name
        self.hello = session.hello
        self.memory = AgentMemory(session)
        self._tls = threading.local()
        self._by_ident: dict[int, AgentThread] = {}
        self._threads: list[AgentThread] = []
        self._threads_lock = threading.Lock()
        self._routines: dict[int, object] = {}
        self._extensions: dict[int, str] = dict(session.hello.extensions)
        self._handles: dict[int, str] = {}
        self._routine_errors: list[BaseException] = []
        self.unclaimed_completions: list[tuple] = []
        self._closed = False
        self._tainted = False
        if not session.functions:
            session.functions = session.resolve({name: dll_of(name) for name in PROTOTYPES})
        self._by_ident[threading.get_ident()] = self._spawn(threading.current_thread().name)
        data = self.memory.alloc(WSADATA.size)
        rc = self.WSAStartup(C.WINSOCK_VERSION, data)
        self.memory.free(data)
        if rc != 0:
            raise AgentError(f"WSAStartup(2.2) in the agent failed: {rc}")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<AgentWinsock {self.target} pid={self.hello.pid} {self.hello.os} {state}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def session(self):
        return self._session

    # -- threads --------------------------------------------------------------------------
    def _spawn(self, name: str) -> AgentThread:
        tag, tid, handle = self._session.new_thread()
        thread = AgentThread(tag, tid, handle, name)
        with self._threads_lock:
            self._threads.append(thread)
        return thread

    def _current(self) -> AgentThread:
        thread = self._tls.__dict__.get("thread")
        if thread is not None:
            return thread
        ident = threading.get_ident()
        thread = self._by_ident.get(ident)
        if thread is None:
            thread = self._spawn(threading.current_thread().name)
            self._by_ident[ident] = thread
        return thread

    def new_thread(self, name: str = "") -> AgentThread:
        """A new agent thread; act as it with `as_thread`."""
        return self._spawn(name or f"thread-{len(self._threads)}")

    @contextlib.contextmanager
    def as_thread(self, thread: AgentThread):
        """Make calls from this Python thread run on agent thread `thread`."""
        if not isinstance(thread, AgentThread):
            raise TypeError(f"as_thread() needs a thread from new_thread(), not {type(thread).__name__}")
        previous = self._tls.__dict__.get("thread")
        self._tls.thread = thread
        try:
            yield thread
        finally:
            self._tls.thread = previous

    # -- callbacks ------------------------------------------------------------------------
    def completion_routine(self, fn) -> int:
        """A LPWSAOVERLAPPED_COMPLETION_ROUTINE (a trampoline in the agent) that calls
        fn(dwError, cbTransferred, lpOverlapped, dwFlags)."""
        if not callable(fn):
            raise TypeError("completion_routine() needs a callable")
        ptr = self._session.routine()
        self._routines[ptr] = fn
        return ptr

    def call(self, fnptr: int, *args: int):
        """Call an extension function pointer (SIO_GET_EXTENSION_FUNCTION_POINTER)."""
        if type(fnptr) is not int:
            raise TypeError("call(): fnptr must be an int")
        name = self._extensions.get(fnptr)
        if name is None:
            raise TypeError(f"call(): 0x{fnptr:x} is not an extension function pointer obtained through "
                            f"this provider (known: {sorted(set(self._extensions.values()))})")
        return _EXTENSION_CALLERS[name](_Extension(self, fnptr, name), *args)

    # -- the call path --------------------------------------------------------------------
    def _invoke(self, name: str, fnptr: int, args: tuple):
        if self._closed:
            raise ValueError(f"{name}(): this AgentWinsock is closed")
        thread = self._tls.__dict__.get("thread") or self._current()
        timeout = None
        if name in _WAITS:
            ms = args[_WAITS[name]]
            if 0 < ms < _INFINITE and not (name == "WSAPoll" and ms >= 1 << 31):
                timeout = self._session.call_timeout + ms / 1000
        rax, _last_error, exc, completions, learned = self._session.call(
            thread.tag, fnptr, args, lambda: _call_text(name, SIGNATURES[name][1], args), timeout)
        if learned is not None:
            self._extensions[learned[0]] = learned[1]
        if completions:
            self._deliver(completions)
        if exc is not None:
            self._tainted = True        # a callee died mid-way: it may have left a lock held
            code, address, info0, info1 = exc
            raise AgentAccessViolation(f"{describe_exception(code, address, info0, info1)} in "
                                       f"{_call_text(name, SIGNATURES[name][1], args)} [agent thread "
                                       f"{thread.name!r}]", code, address, (info0, info1))
        result = _NARROW[name](rax)
        if name in _TRACKED:
            self._track(name, args, result)
        if self._routine_errors:
            errors, self._routine_errors = self._routine_errors, []
            raise errors[0]
        return result

    def _deliver(self, completions) -> None:
        for routine, error, transferred, overlapped, flags in completions:
            fn = self._routines.get(routine)
            if fn is None:
                self.unclaimed_completions.append((routine, error, transferred, overlapped, flags))
                continue
            try:
                fn(error, transferred, overlapped, flags)
            except BaseException as exc:  # noqa: BLE001 - re-raised once the call has returned
                self._routine_errors.append(exc)

    def _track(self, name, args, result) -> None:
        kind = _MAKES.get(name)
        if kind is not None:
            if name == "CreateIoCompletionPort" and args[1]:
                return                              # associating with an existing port makes nothing
            if result and result != C.INVALID_SOCKET:
                self._handles[result] = kind
            return
        if (result == 0) if name == "closesocket" else (result != 0):
            self._handles.pop(args[0], None)

    # -- cleanup --------------------------------------------------------------------------
    def close(self) -> None:
        """Leave the agent as this provider found it, or kill it if that is not possible."""
        if self._closed:
            return
        session = self._session
        reusable = session.alive and not session.busy and not self._tainted
        if reusable:
            try:
                self._clean()
            except AgentError:
                reusable = False
        self._closed = True
        if not reusable:
            session.kill("discarded: a call was still in flight, a call faulted, or the agent broke")
        if self._on_close is not None:
            self._on_close(session, reusable and session.alive)

    def _clean(self) -> None:
        main = self._by_ident.get(threading.get_ident()) or self._threads[0]
        with self.as_thread(main):
            for handle, kind in list(self._handles.items()):
                if kind == "socket":
                    self.closesocket(handle)
                else:
                    self.CloseHandle(handle)
            self._handles.clear()
            for _ in range(64):                     # balance every WSAStartup the test made
                if self.WSACleanup() != 0:
                    break
        for thread in self._threads:                # their queued APCs die with them
            self._session.end_thread(thread.tag)
        self._threads.clear()
        self.memory.close()


_TRACKED = frozenset(_MAKES) | frozenset(_CLOSES)

# name -> (return C type, ((C type, parameter name), ...))
SIGNATURES = {name: (ret, tuple(parse_signature(sig)))
              for name, (ret, sig) in {**PROTOTYPES, **EXTENSION_PROTOTYPES}.items()}
_NARROW = {name: _narrow(ret) for name, (ret, _) in SIGNATURES.items()}


def _generate(name: str, body: str, first: str = "self"):
    params = ", ".join(p for _, p in SIGNATURES[name][1])
    src = f"def {name}({first}{', ' if params else ''}{params}):\n    {body.format(params=params)}\n"
    ns: dict = {}
    exec(src, ns)  # noqa: S102 - generated from the fixed PROTOTYPES grammar
    return ns[name]


def _missing(self, name: str) -> int:
    raise AgentRequestError(f"{name} is not exported by {dll_of(name)}.dll in the agent "
                            f"({self.hello.os})")


AgentWinsock._missing = _missing

for _name, (_ret, _sig) in PROTOTYPES.items():
    _params = SIGNATURES[_name][1]
    _fn = _generate(_name, "return self._invoke(" + repr(_name) + ", self._session.functions[" + repr(_name)
                    + "] or self._missing(" + repr(_name) + "), (" + "".join(p + ", " for _, p in _params) + "))")
    _fn.__qualname__ = f"AgentWinsock.{_name}"
    _fn.__doc__ = f"{_ret} {_name}({_sig}) [{dll_of(_name)}.dll, in the agent]"
    setattr(AgentWinsock, _name, cfunc(_sig)(_fn))

# Argument checking for extension calls: the same cfunc wrapper, with an _Extension as `self`.
_EXTENSION_CALLERS = {
    _name: cfunc(_sig)(_generate(_name, "return self.invoke((" + "".join(
        p + ", " for _, p in SIGNATURES[_name][1]) + "))"))
    for _name, (_ret, _sig) in EXTENSION_PROTOTYPES.items()
}
del _name, _ret, _sig, _fn, _params
