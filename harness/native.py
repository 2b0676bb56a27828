"""`NativeWinsock`: the `WinsockApi` over the real ws2_32.dll and kernel32.dll (ctypes).

    from harness import native
    api = native.NativeWinsock()          # WSAStartup(2.2) done, like sim.SimulatedWinsock()
    s = api.socket(2, 1, 6)
    ...
    api.close()                           # WSACleanup, memory decommitted

Importing this module works on any OS (it touches no DLL); constructing
`NativeWinsock` needs Windows and raises `OSError` elsewhere.

The C surface is generated from one table, `harness.winsock.api.PROTOTYPES`
(and `EXTENSION_PROTOTYPES`): each C type name maps to the ctypes integer of
its width and signedness in `harness.winsock.ctype.C_TYPES` (pointers,
SOCKET and HANDLE are `c_uint64`; DWORD `c_uint32`; int/BOOL/LONG `c_int32`;
WORD `c_uint16`; never `c_long`/`c_ulong`, whose width differs between
platforms). Every method is decorated with `harness.winsock.ctype.cfunc`, so
argument checking and wrapping are those of the simulator: a non-int raises
TypeError naming the parameter, an out-of-range int is reduced to the C width.

Last error: every function (and the completion-routine callback type) is
built with `use_last_error=True`, so ctypes keeps the thread's Win32 last
error in a private per-thread slot between calls, out of reach of the Python
interpreter's own Win32 calls. `WSAGetLastError` and `GetLastError` are the
real functions called through that same mechanism: they return exactly what
a C program would see (int for WSAGetLastError, unsigned DWORD for
GetLastError, as declared).

Memory (`NativeMemory`): every allocation is its own VirtualAlloc
reservation, committed page by page and followed by a reserved, never
committed guard page. The buffer is placed at the *end* of its committed
pages (start aligned to 16 bytes, MEMORY_ALLOCATION_ALIGNMENT on x64), so a
range that runs more than 15 bytes past the end of a buffer touches the
guard page and faults, as on the simulator. (The simulator places buffers at
the start of a page and guards them exactly; the native provider cannot
guard below page granularity, so it guards the end, where run-off-the-end
tests look.)
"""
from __future__ import annotations

import bisect
import ctypes
import functools
import re
import struct
import sys
import threading

from harness.winsock import constants as C
from harness.winsock.memory import AccessViolation, AllocationTable, MemoryHelpers  # noqa: F401 (AccessViolation: part of this module's interface)
from harness.winsock import layouts as L
from harness.winsock.api import EXTENSION_PROTOTYPES, PROTOTYPES
from harness.winsock.ctype import C_TYPES, cfunc

__all__ = ["NativeWinsock", "NativeMemory", "AccessViolation", "WindowsRequired", "structure",
           "ctype_of", "parse_signature", "SIGNATURES", "FUNCTION_TYPES", "EXTENSION_TYPES",
           "MEMORY_PROTOTYPES", "MEMORY_FUNCTION_TYPES", "COMPLETION_ROUTINE", "DLL_OF",
           "KERNEL32_FUNCTIONS", "IS_WINDOWS"]

IS_WINDOWS = sys.platform == "win32"


class WindowsRequired(OSError):
    """NativeWinsock was constructed on an OS that has no ws2_32.dll."""




# --- C types -> ctypes, from the contract's table ---------------------------

_INT_CTYPES = {
    (8, False): ctypes.c_uint8, (8, True): ctypes.c_int8,
    (16, False): ctypes.c_uint16, (16, True): ctypes.c_int16,
    (32, False): ctypes.c_uint32, (32, True): ctypes.c_int32,
    (64, False): ctypes.c_uint64, (64, True): ctypes.c_int64,
}


def ctype_of(c_name: str):
    """The ctypes type of a C type name of the contract ('void' -> None)."""
    if c_name == "void":
        return None
    try:
        return _INT_CTYPES[C_TYPES[c_name]]
    except KeyError:
        raise ValueError(f"C type {c_name!r} is not in harness.winsock.ctype.C_TYPES") from None


def parse_signature(signature: str) -> tuple[tuple[str, str], ...]:
    """'TYPE name, ...' -> ((TYPE, name), ...), the grammar `cfunc` reads."""
    out = []
    for part in filter(None, (p.strip() for p in signature.split(","))):
        c_type, name = part.split()
        out.append((c_type, name))
    return tuple(out)


# Calling convention: WINAPI/WSAAPI. On x64 stdcall and cdecl are one ABI;
# CFUNCTYPE stands in off Windows, where the types are only inspected (and
# used by the tests to call Python callbacks through the same prototypes).
_FUNCTYPE = getattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE)


def _function_type(restype: str, params):
    return _FUNCTYPE(ctype_of(restype), *(ctype_of(t) for t, _ in params), use_last_error=True)


# Which DLL exports each function of PROTOTYPES (everything else is ws2_32).
KERNEL32_FUNCTIONS = frozenset({
    "SleepEx", "CreateIoCompletionPort", "GetQueuedCompletionStatus", "PostQueuedCompletionStatus",
    "SetFileCompletionNotificationModes", "CancelIoEx", "CloseHandle", "GetLastError",
    "GetCurrentProcessId", "GetCurrentThreadId",
})
DLL_OF = {name: "kernel32" if name in KERNEL32_FUNCTIONS else "ws2_32" for name in PROTOTYPES}

# The memory functions NativeMemory uses (kernel32), in the same grammar.
MEMORY_PROTOTYPES: dict[str, tuple[str, str]] = {
    "VirtualAlloc": ("LPVOID", "LPVOID lpAddress, SIZE_T dwSize, DWORD flAllocationType, DWORD flProtect"),
    "VirtualFree": ("BOOL", "LPVOID lpAddress, SIZE_T dwSize, DWORD dwFreeType"),
    "VirtualProtect": ("BOOL", "LPVOID lpAddress, SIZE_T dwSize, DWORD flNewProtect, LPVOID lpflOldProtect"),
}

# name -> (return C type, ((C type, parameter name), ...))
SIGNATURES = {name: (ret, parse_signature(sig))
              for name, (ret, sig) in {**PROTOTYPES, **EXTENSION_PROTOTYPES, **MEMORY_PROTOTYPES}.items()}
FUNCTION_TYPES = {name: _function_type(*SIGNATURES[name]) for name in PROTOTYPES}
EXTENSION_TYPES = {name: _function_type(*SIGNATURES[name]) for name in EXTENSION_PROTOTYPES}
MEMORY_FUNCTION_TYPES = {name: _function_type(*SIGNATURES[name]) for name in MEMORY_PROTOTYPES}

# LPWSAOVERLAPPED_COMPLETION_ROUTINE: void CALLBACK (DWORD dwError, DWORD cbTransferred,
# LPWSAOVERLAPPED lpOverlapped, DWORD dwFlags). use_last_error=True makes ctypes
# swap the thread's last error around the Python body, so a routine that calls
# no API leaves the interrupted function's last error as it found it (as C).
COMPLETION_ROUTINE = _FUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32,
                               use_last_error=True)

# Trampolines handed to Windows are never freed: an APC for a routine may be
# delivered after its NativeWinsock is gone (an operation aborted by
# WSACleanup completes in the issuing thread's next alertable wait), and
# calling a freed thunk would crash the process. Each costs a few hundred bytes.
_LIVE_ROUTINES: list = []

_EXTENSION_GUIDS = {L.guid_bytes(C.WSAID_WSARECVMSG): "WSARecvMsg",
                    L.guid_bytes(C.WSAID_WSASENDMSG): "WSASendMsg",
                    L.guid_bytes(C.WSAID_ACCEPTEX): "AcceptEx",
                    L.guid_bytes(C.WSAID_CONNECTEX): "ConnectEx",
                    L.guid_bytes(C.WSAID_GETACCEPTEXSOCKADDRS): "GetAcceptExSockaddrs"}
# Which socket type the throwaway socket of _learn_extensions needs for each function.
_STREAM_EXTENSIONS = frozenset({"AcceptEx", "ConnectEx", "GetAcceptExSockaddrs"})


# --- virtual memory backends -------------------------------------------------

PAGE = 0x1000
ALIGN = 16
_PROTS = ("rw", "r", "none")

MEM_COMMIT = 0x1000
MEM_RESERVE = 0x2000
MEM_DECOMMIT = 0x4000
MEM_RELEASE = 0x8000
PAGE_NOACCESS = 0x01
PAGE_READONLY = 0x02
PAGE_READWRITE = 0x04
_WIN_PROT = {"rw": PAGE_READWRITE, "r": PAGE_READONLY, "none": PAGE_NOACCESS}


class _WindowsVM:
    """Reserve/commit/protect/release through kernel32 (VirtualAlloc and friends)."""

    def __init__(self):
        k32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        self._f = {name: t((name, k32)) for name, t in MEMORY_FUNCTION_TYPES.items()}

    @staticmethod
    def _fail(what):
        err = ctypes.get_last_error()  # type: ignore[attr-defined]
        raise OSError(f"{what} failed: {ctypes.FormatError(err).strip()} ({err})")  # type: ignore[attr-defined]

    def reserve(self, n: int) -> int:
        base = self._f["VirtualAlloc"](0, n, MEM_RESERVE, PAGE_NOACCESS)
        if not base:
            self._fail(f"VirtualAlloc(MEM_RESERVE, {n:#x})")
        return base

    def commit(self, base: int, n: int) -> None:
        if not self._f["VirtualAlloc"](base, n, MEM_COMMIT, PAGE_READWRITE):
            self._fail(f"VirtualAlloc(MEM_COMMIT, {base:#x}, {n:#x})")

    def protect(self, base: int, n: int, prot: str) -> None:
        old = ctypes.c_uint32()
        if not self._f["VirtualProtect"](base, n, _WIN_PROT[prot], ctypes.addressof(old)):
            self._fail(f"VirtualProtect({base:#x}, {n:#x}, {prot})")

    def decommit(self, base: int, n: int) -> None:
        if not self._f["VirtualFree"](base, n, MEM_DECOMMIT):
            self._fail(f"VirtualFree(MEM_DECOMMIT, {base:#x})")

    def release(self, base: int, n: int) -> None:
        if not self._f["VirtualFree"](base, 0, MEM_RELEASE):
            self._fail(f"VirtualFree(MEM_RELEASE, {base:#x})")


class _PosixVM:
    """The same operations with mmap/mprotect, so NativeMemory's bookkeeping
    (placement, guard pages, protection) can be exercised off Windows."""

    def __init__(self):
        import mmap
        libc = ctypes.CDLL(None, use_errno=True)
        self._mmap = libc.mmap
        self._mmap.restype = ctypes.c_void_p
        self._mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                               ctypes.c_int64)
        self._mprotect = libc.mprotect
        self._mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        self._munmap = libc.munmap
        self._munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        self._prot = {"rw": mmap.PROT_READ | mmap.PROT_WRITE, "r": mmap.PROT_READ, "none": 0}
        self._flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
        self._fixed = 0x10 if sys.platform.startswith("linux") or sys.platform == "darwin" else 0  # MAP_FIXED

    @staticmethod
    def _fail(what):
        import os
        err = ctypes.get_errno()
        raise OSError(err, f"{what} failed: {os.strerror(err)}")

    def reserve(self, n: int) -> int:
        base = self._mmap(None, n, 0, self._flags, -1, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            self._fail(f"mmap({n:#x})")
        return base

    def protect(self, base: int, n: int, prot: str) -> None:
        if self._mprotect(base, n, self._prot[prot]) != 0:
            self._fail(f"mprotect({base:#x}, {n:#x}, {prot})")

    def commit(self, base: int, n: int) -> None:
        self.protect(base, n, "rw")

    def decommit(self, base: int, n: int) -> None:
        if self._mmap(base, n, 0, self._flags | self._fixed, -1, 0) != base:
            self._fail(f"mmap(MAP_FIXED, {base:#x})")

    def release(self, base: int, n: int) -> None:
        if self._munmap(base, n) != 0:
            self._fail(f"munmap({base:#x})")


def _default_vm():
    return _WindowsVM() if IS_WINDOWS else _PosixVM()


# --- process memory ----------------------------------------------------------

class _Region:
    __slots__ = ("base", "reserved", "committed", "start", "size", "prot", "tag")

    def __init__(self, base, reserved, committed, start, size, prot, tag):
        self.base, self.reserved, self.committed = base, reserved, committed
        self.start, self.size, self.prot, self.tag = start, size, prot, tag


class NativeMemory(AllocationTable, MemoryHelpers):
    """The `Memory` protocol over this process's real memory.

    `alloc(size, prot)` returns a 16-byte-aligned buffer that ends at most 15
    bytes before a guard page (see the module docstring); `prot` is "rw",
    "r" or "none" (VirtualProtect). `read`/`write` work on any allocation
    whatever its protection (they lift it for the copy, like a debugger, as
    the simulator's helpers do) and raise AccessViolation, without touching
    memory, for a range outside the allocations of this object.
    `invalid_pointer()` is a reserved page that is never committed: no
    buffer can ever be placed there while this object lives, so every access
    faults (ws2_32 and the kernel report WSAEFAULT).
    """

    PAGE = PAGE
    ALIGN = ALIGN

    def __init__(self, vm=None):
        self._vm = vm if vm is not None else _default_vm()
        self._lock = threading.RLock()
        self._starts: list[int] = []
        self._regions: list[_Region] = []
        self._invalid = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"<NativeMemory {len(self._regions)} allocations>"

    # -- allocation -----------------------------------------------------------
    def alloc(self, size: int, prot: str = "rw", tag: str = "") -> int:
        """Allocate `size` zero-filled bytes; returns the address."""
        if type(size) is not int or size < 0:
            raise ValueError(f"alloc size must be a non-negative int, not {size!r}")
        if prot not in _PROTS:
            raise ValueError(f"alloc prot must be one of {_PROTS}, not {prot!r}")
        span = max(ALIGN, -(-size // ALIGN) * ALIGN)
        committed = -(-span // PAGE) * PAGE
        reserved = committed + PAGE                       # + the guard page, never committed
        with self._lock:
            self._check_open()
            base = self._vm.reserve(reserved)
            try:
                self._vm.commit(base, committed)
                if prot != "rw":
                    self._vm.protect(base, committed, prot)
            except BaseException:
                self._vm.release(base, reserved)
                raise
            start = base + committed - span
            region = _Region(base, reserved, committed, start, size, prot, tag)
            i = bisect.bisect(self._starts, start)
            self._starts.insert(i, start)
            self._regions.insert(i, region)
            return start

    def free(self, ptr: int) -> None:
        """VirtualFree(MEM_RELEASE) of an allocation (ptr as alloc returned it)."""
        with self._lock:
            i = self._index_of_start(ptr, "free")
            region = self._regions[i]
            self._vm.release(region.base, region.reserved)
            del self._starts[i]
            del self._regions[i]

    def protect(self, ptr: int, prot: str) -> None:
        """Change the protection of a whole allocation: "rw", "r" or "none"."""
        if prot not in _PROTS:
            raise ValueError(f"protect prot must be one of {_PROTS}, not {prot!r}")
        with self._lock:
            region = self._regions[self._index_of_start(ptr, "protect")]
            self._vm.protect(region.base, region.committed, prot)
            region.prot = prot

    def is_allocated(self, ptr: int) -> bool:
        with self._lock:
            return self._region_at(ptr) is not None

    def invalid_pointer(self) -> int:
        with self._lock:
            if not self._invalid:
                self._check_open()
                self._invalid = self._vm.reserve(16 * PAGE)
            return self._invalid

    def close(self) -> None:
        """Decommit every allocation, keeping the address ranges reserved.

        An overlapped operation still in flight (aborted by WSACleanup) may
        write its OVERLAPPED or buffer after this; into a reserved range the
        write faults harmlessly, where a released range could have been reused
        by another allocation of the process.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            regions, self._regions, self._starts = self._regions, [], []
            for region in regions:
                self._vm.decommit(region.base, region.committed)

    # -- Python-side access -----------------------------------------------------
    def read(self, ptr: int, n: int) -> bytes:
        if type(n) is not int or n < 0:
            raise ValueError(f"read length must be a non-negative int, not {n!r}")
        if n == 0:
            return b""
        with self._lock:
            region = self._range(ptr, n, "read")
            if region.prot == "none":
                self._vm.protect(region.base, region.committed, "r")
                try:
                    return ctypes.string_at(ptr, n)
                finally:
                    self._vm.protect(region.base, region.committed, "none")
            return ctypes.string_at(ptr, n)

    def write(self, ptr: int, data) -> None:
        data = bytes(data)
        if not data:
            return
        with self._lock:
            region = self._range(ptr, len(data), "write")
            if region.prot != "rw":
                self._vm.protect(region.base, region.committed, "rw")
                try:
                    ctypes.memmove(ptr, data, len(data))
                finally:
                    self._vm.protect(region.base, region.committed, region.prot)
            else:
                ctypes.memmove(ptr, data, len(data))


# --- ctypes structures from the layouts -------------------------------------

_FMT = re.compile(r"^([<>=!]?)(\d*)([bBhHiIqQs])$")
_FMT_CTYPES = {"b": ctypes.c_int8, "B": ctypes.c_uint8, "h": ctypes.c_int16, "H": ctypes.c_uint16,
               "i": ctypes.c_int32, "I": ctypes.c_uint32, "q": ctypes.c_int64, "Q": ctypes.c_uint64}


def _field_ctype(fmt: str):
    m = _FMT.match(fmt)
    if not m:
        raise ValueError(f"no ctypes type for struct format {fmt!r}")
    order, count, code = m.groups()
    if code == "s":
        return ctypes.c_ubyte * int(count or 1)
    if count not in ("", "1"):
        raise ValueError(f"no ctypes type for struct format {fmt!r}")
    base = _FMT_CTYPES[code]
    return base.__ctype_be__ if order in (">", "!") else base.__ctype_le__


def _build(layout, packed: bool):
    fields, pos = [], 0
    for f in sorted(layout.fields, key=lambda f: f.offset):
        if f.offset < pos:
            raise ValueError(f"{layout.name}.{f.name} overlaps the field before it")
        if f.offset > pos:
            fields.append((f"_pad_{pos}", ctypes.c_ubyte * (f.offset - pos)))
        fields.append((f.name, _field_ctype(f.fmt)))
        pos = f.offset + f.size
    if pos < layout.size:
        fields.append((f"_pad_{pos}", ctypes.c_ubyte * (layout.size - pos)))
    name = layout.name.split()[-1]
    ns = {"_fields_": fields, "layout": layout, "__doc__": f"{layout.name} ({layout.header}), from layouts.py"}
    if packed:
        ns.update(_pack_=1, _layout_="ms")
    return type(name, (ctypes.Structure,), ns)


@functools.cache
def structure(layout):
    """A ctypes.Structure with exactly `layout`'s size and field offsets.

    Named fields keep the layout's names (nested C members are flattened, as
    in layouts.py: WSAMSG.Control_len); gaps become `_pad_N` byte arrays;
    '16s'-style fields are c_ubyte arrays; '>H' (ports) is big-endian.
    Natural alignment is kept when it reproduces the layout, else `_pack_=1`.
    """
    cls = _build(layout, packed=False)
    if ctypes.sizeof(cls) != layout.size or any(getattr(cls, f.name).offset != f.offset
                                                for f in layout.fields):
        cls = _build(layout, packed=True)
    return cls


# --- the provider ------------------------------------------------------------

class NativeWinsock:
    """`WinsockApi` over the real ws2_32.dll and kernel32.dll of this process.

    Construction calls WSAStartup(2.2) once (as sim.SimulatedWinsock does);
    `close()` calls WSACleanup once and decommits the memory. Simulated
    threads (`new_thread`/`as_thread`) are deliberately absent: conformance
    cases that need them skip.
    """

    def __init__(self):
        if not IS_WINDOWS:
            raise WindowsRequired(
                f"harness.native.NativeWinsock needs Windows (ws2_32.dll, kernel32.dll); this is "
                f"{sys.platform!r}. Use sim.SimulatedWinsock(), or run the conformance suite with --target sim.")
        dlls = {dll: ctypes.WinDLL(dll, use_last_error=True)  # type: ignore[attr-defined]
                for dll in sorted(set(DLL_OF.values()))}
        functions = {name: FUNCTION_TYPES[name]((name, dlls[DLL_OF[name]])) for name in PROTOTYPES}
        self._setup(functions, NativeMemory())
        wsadata = ctypes.create_string_buffer(L.WSADATA.size)
        rc = self.WSAStartup(C.WINSOCK_VERSION, ctypes.addressof(wsadata))
        if rc != 0:
            raise OSError(f"WSAStartup(2.2) failed: {rc}")
        self._started = True

    @classmethod
    def from_functions(cls, functions, memory=None) -> NativeWinsock:
        """A provider over other ctypes function objects, one per PROTOTYPES
        name, typed with FUNCTION_TYPES (tracing shims, tests). No WSAStartup."""
        missing = set(PROTOTYPES) - set(functions)
        if missing:
            raise ValueError(f"from_functions: missing {sorted(missing)}")
        self = cls.__new__(cls)
        self._setup(dict(functions), memory)
        return self

    def _setup(self, functions, memory) -> None:
        for name in PROTOTYPES:
            setattr(self, "_c_" + name, functions[name])
        self.memory = memory
        self._extensions: dict[int, tuple[str, object]] = {}
        self._routine_errors: list[BaseException] = []
        self._started = False
        self._closed = False
        self._learned = False

    def __repr__(self) -> str:
        return f"<NativeWinsock {'closed' if self._closed else 'open'}>"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """WSACleanup once (balancing the constructor's WSAStartup); decommit memory."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            self._c_WSACleanup()
        if self.memory is not None and hasattr(self.memory, "close"):
            self.memory.close()

    # -- callbacks --------------------------------------------------------------
    def completion_routine(self, fn) -> int:
        """A LPWSAOVERLAPPED_COMPLETION_ROUTINE calling fn(dwError, cbTransferred, lpOverlapped, dwFlags).

        An exception raised by fn cannot cross the C frames that called it: it
        is kept and re-raised when the API call that ran the routine (SleepEx,
        an alertable wait) returns to Python.
        """
        if not callable(fn):
            raise TypeError("completion_routine() needs a callable")
        errors = self._routine_errors

        def trampoline(dwError, cbTransferred, lpOverlapped, dwFlags):
            try:
                fn(dwError, cbTransferred, lpOverlapped or 0, dwFlags)
            except BaseException as exc:  # noqa: BLE001 - re-raised after the C call returns
                errors.append(exc)

        thunk = COMPLETION_ROUTINE(trampoline)
        _LIVE_ROUTINES.append(thunk)
        return ctypes.cast(thunk, ctypes.c_void_p).value

    def _raise_routine_error(self):
        errors = self._routine_errors
        exc = errors[0]
        del errors[:]
        raise exc

    # -- extension functions ------------------------------------------------------
    def _observe_extension(self, code, lpvInBuffer, cbInBuffer, lpvOutBuffer, cbOutBuffer):
        """After a successful SIO_GET_EXTENSION_FUNCTION_POINTER: remember which
        GUID the returned pointer belongs to."""
        if code != C.SIO_GET_EXTENSION_FUNCTION_POINTER or cbInBuffer < 16 or cbOutBuffer < 8 \
                or not lpvInBuffer or not lpvOutBuffer:
            return
        try:   # the call just read and wrote both buffers; ctypes turns a fault into OSError anyway
            guid = ctypes.string_at(lpvInBuffer, 16)
            ptr = struct.unpack("<Q", ctypes.string_at(lpvOutBuffer, 8))[0]
        except (OSError, ValueError):
            return
        name = _EXTENSION_GUIDS.get(guid)
        if name and ptr:
            self._extensions[ptr] = (name, EXTENSION_TYPES[name](ptr))

    def _learn_extensions(self) -> None:
        """Fetch every extension function once from throwaway sockets (a UDP one for
        WSARecvMsg/WSASendMsg, a TCP one for AcceptEx, ConnectEx and
        GetAcceptExSockaddrs), for pointers the caller obtained without this object's WSAIoctl."""
        if self._learned:
            return
        self._learned = True
        guid = ctypes.create_string_buffer(16)
        out = ctypes.create_string_buffer(8)
        n = ctypes.c_uint32()
        for stream in (False, True):
            kind = (C.SOCK_STREAM, C.IPPROTO_TCP) if stream else (C.SOCK_DGRAM, C.IPPROTO_UDP)
            for af in (C.AF_INET, C.AF_INET6):
                s = self._c_socket(af, *kind)
                if s == C.INVALID_SOCKET:
                    continue
                try:
                    for raw, name in _EXTENSION_GUIDS.items():
                        if (name in _STREAM_EXTENSIONS) != stream:
                            continue
                        ctypes.memmove(guid, raw, 16)
                        if self._c_WSAIoctl(s, C.SIO_GET_EXTENSION_FUNCTION_POINTER, ctypes.addressof(guid), 16,
                                            ctypes.addressof(out), 8, ctypes.addressof(n), 0, 0) == 0:
                            self._observe_extension(C.SIO_GET_EXTENSION_FUNCTION_POINTER,
                                                    ctypes.addressof(guid), 16, ctypes.addressof(out), 8)
                finally:
                    self._c_closesocket(s)
                break

    def call(self, fnptr: int, *args: int) -> int:
        """Call an extension function pointer (SIO_GET_EXTENSION_FUNCTION_POINTER:
        WSARecvMsg, WSASendMsg, AcceptEx, ConnectEx or GetAcceptExSockaddrs) with its C
        arguments; GetAcceptExSockaddrs (void) returns None."""
        if type(fnptr) is not int:
            raise TypeError("call(): fnptr must be an int")
        entry = self._extensions.get(fnptr)
        if entry is None and self._c_WSAIoctl is not None:
            self._learn_extensions()
            entry = self._extensions.get(fnptr)
        if entry is None:
            raise TypeError(f"call(): 0x{fnptr:x} is not an extension function pointer obtained through "
                            f"this provider (known: {sorted(n for n, _ in self._extensions.values())})")
        name, cfn = entry
        rc = _EXTENSION_CALLERS[name](cfn, *args)
        if self._routine_errors:
            self._raise_routine_error()
        return rc

    # -- ws2_32 functions that need more than the pass-through ---------------------
    @cfunc(PROTOTYPES["WSAIoctl"][1])
    def WSAIoctl(self, s, dwIoControlCode, lpvInBuffer, cbInBuffer, lpvOutBuffer, cbOutBuffer,
                 lpcbBytesReturned, lpOverlapped, lpCompletionRoutine):
        rc = self._c_WSAIoctl(s, dwIoControlCode, lpvInBuffer, cbInBuffer, lpvOutBuffer, cbOutBuffer,
                              lpcbBytesReturned, lpOverlapped, lpCompletionRoutine)
        if rc == 0 and dwIoControlCode == C.SIO_GET_EXTENSION_FUNCTION_POINTER:
            self._observe_extension(dwIoControlCode, lpvInBuffer, cbInBuffer, lpvOutBuffer, cbOutBuffer)
        if self._routine_errors:
            self._raise_routine_error()
        return rc


def _generate(name: str, params, body: str, owner: str):
    """A function `name(first, <params>)` with `body` (a format of name and args), from source."""
    args = ", ".join(p for _, p in params)
    src = (f"def {name}({owner}{', ' if args else ''}{args}):\n"
           + body.format(name=name, args=args))
    ns: dict = {}
    exec(src, ns)  # noqa: S102 - generated from the fixed PROTOTYPES grammar
    return ns[name]


_PASS_THROUGH = ("    rc = self._c_{name}({args})\n"
                 "    if self._routine_errors:\n"
                 "        self._raise_routine_error()\n"
                 "    return rc\n")

for _name, (_ret, _sig) in PROTOTYPES.items():
    if _name in vars(NativeWinsock):
        continue
    _fn = _generate(_name, SIGNATURES[_name][1], _PASS_THROUGH, "self")
    _fn.__qualname__ = f"NativeWinsock.{_name}"
    _fn.__doc__ = f"{_ret} {_name}({_sig}) [{DLL_OF[_name]}.dll]"
    setattr(NativeWinsock, _name, cfunc(_sig)(_fn))

# Argument checking for extension calls: the same cfunc wrapper, with the
# ctypes function object in place of `self`.
_EXTENSION_CALLERS = {
    _name: cfunc(_sig)(_generate(_name, SIGNATURES[_name][1], "    return self({args})\n", "self"))
    for _name, (_ret, _sig) in EXTENSION_PROTOTYPES.items()
}
del _name, _ret, _sig, _fn
