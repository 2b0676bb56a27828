"""The native ctypes provider (harness.native), checked without Windows.

(a) the module imports on any OS and NativeWinsock() says Windows is required;
(b) every PROTOTYPES / EXTENSION_PROTOTYPES function has a ctypes prototype
    whose argument and return types have the width and signedness of the C
    type names (harness.winsock.ctype.C_TYPES), built with use_last_error; the
    class matches the WinsockApi / Memory protocols name for name and
    parameter for parameter; and the generated methods really marshal through
    ctypes (Python callbacks bound with the very same prototypes stand in for
    the DLL functions) with the simulator's argument checking;
(c) the ctypes Structures generated from layouts.py have its sizes and offsets;
(d) x86_64-w64-mingw32-gcc checks the prototypes against the real headers:
    each real function is assigned to a function pointer spelled from the
    prototype (with -Werror=incompatible-pointer-types), and every spelled
    parameter type gets a static assert that its width and signedness equal
    the ctypes argtype's; the import libraries say which DLL exports each;
(e) every method the conformance cases call on `api` exists on the native
    provider, or the cases guard it with hasattr.
NativeMemory's bookkeeping runs here on an mmap/mprotect backend (the same
class drives VirtualAlloc/VirtualProtect on Windows).
"""
from __future__ import annotations

import ast
import ctypes
import inspect
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from harness import native
from harness.winsock import layouts
from support import cdefs
from harness.winsock import constants as C
from harness.winsock.api import EXTENSION_PROTOTYPES, PROTOTYPES, Memory, WinsockApi
from harness.winsock.ctype import C_TYPES

ROOT = Path(__file__).resolve().parents[1]
NATIVE_SRC = ROOT / "harness" / "native.py"
CONFORMANCE = ROOT / "harness" / "conformance"
CC = shutil.which("x86_64-w64-mingw32-gcc")
NM = shutil.which("x86_64-w64-mingw32-nm")
needs_cc = pytest.mark.skipif(CC is None, reason="x86_64-w64-mingw32-gcc not installed "
                                                  "(Debian: apt-get install gcc-mingw-w64-x86-64)")


def width(t) -> tuple[int, bool]:
    """(bits, signed) of a ctypes integer or pointer type."""
    if t is ctypes.c_void_p:
        return 64, False
    return ctypes.sizeof(t) * 8, t(-1).value < 0


def parse(sig: str):
    return tuple(tuple(p.split()) for p in sig.split(",") if p.strip())


# --- (a) import anywhere, construct on Windows only --------------------------

def test_import_works_without_windows_and_touches_no_dll():
    code = "import harness.native as n; print(n.IS_WINDOWS, len(n.FUNCTION_TYPES))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(sys.platform == "win32"), str(len(PROTOTYPES))]
    # No DLL is loaded at import: windll is never used, WinDLL only inside methods.
    tree = ast.parse(NATIVE_SRC.read_text())
    assert "windll" not in NATIVE_SRC.read_text()
    module_level_calls = [n for stmt in tree.body if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef))
                          for n in ast.walk(stmt) if isinstance(n, ast.Attribute) and n.attr == "WinDLL"]
    assert module_level_calls == []


@pytest.mark.skipif(sys.platform == "win32", reason="checks the non-Windows error")
def test_construction_needs_windows():
    with pytest.raises(OSError, match="needs Windows") as info:
        native.NativeWinsock()
    assert isinstance(info.value, native.WindowsRequired)
    assert "--target sim" in str(info.value)


# --- (b) prototypes, protocol, marshalling ----------------------------------

def test_every_prototype_has_ctypes_types_of_the_declared_widths():
    assert set(native.FUNCTION_TYPES) == set(PROTOTYPES)
    assert set(native.EXTENSION_TYPES) == set(EXTENSION_PROTOTYPES)
    checked = 0
    for table, types in ((PROTOTYPES, native.FUNCTION_TYPES), (EXTENSION_PROTOTYPES, native.EXTENSION_TYPES),
                         (native.MEMORY_PROTOTYPES, native.MEMORY_FUNCTION_TYPES)):
        for name, (ret, sig) in table.items():
            proto = types[name]
            params = parse(sig)
            assert len(proto._argtypes_) == len(params), name
            for (c_name, pname), t in zip(params, proto._argtypes_):
                assert width(t) == C_TYPES[c_name], f"{name}.{pname}: {t} is not {c_name} {C_TYPES[c_name]}"
                checked += 1
            if ret == "void":
                assert proto._restype_ is None, name
            else:
                assert width(proto._restype_) == C_TYPES[ret], f"{name} returns {ret}"
            assert proto._flags_ & ctypes._FUNCFLAG_USE_LASTERROR, f"{name}: use_last_error"
            assert native.SIGNATURES[name] == (ret, params)
    assert checked == sum(len(parse(s)) for _, s in
                          [*PROTOTYPES.values(), *EXTENSION_PROTOTYPES.values(), *native.MEMORY_PROTOTYPES.values()])
    # The two last-error readers keep C's signedness: int and DWORD.
    assert width(native.FUNCTION_TYPES["WSAGetLastError"]._restype_) == (32, True)
    assert width(native.FUNCTION_TYPES["GetLastError"]._restype_) == (32, False)
    # LPWSAOVERLAPPED_COMPLETION_ROUTINE
    cr = native.COMPLETION_ROUTINE
    assert cr._restype_ is None and [width(t) for t in cr._argtypes_] == [(32, False), (32, False), (64, False),
                                                                          (32, False)]
    # No platform-dependent long: c_long/c_ulong are 32-bit on Windows, 64-bit on Linux.
    used = {n.attr for n in ast.walk(ast.parse(NATIVE_SRC.read_text())) if isinstance(n, ast.Attribute)}
    assert "c_uint32" in used and not used & {"c_long", "c_ulong"}


def test_every_function_lives_in_the_dll_assigned():
    assert set(native.DLL_OF) == set(PROTOTYPES)
    assert native.KERNEL32_FUNCTIONS <= set(PROTOTYPES)
    assert {d for d in native.DLL_OF.values()} == {"ws2_32", "kernel32"}


def _protocol_members(proto) -> dict:
    return {n: v for n, v in vars(proto).items()
            if callable(v) and not n.startswith("_")}


def _param_names(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_class_matches_the_protocols():
    members = _protocol_members(WinsockApi)
    assert set(PROTOTYPES) | {"completion_routine", "call"} == set(members)
    for name, pfn in members.items():
        impl = getattr(native.NativeWinsock, name, None)
        assert callable(impl), f"NativeWinsock lacks {name}"
        assert _param_names(impl) == _param_names(pfn), name
    for name in PROTOTYPES:
        impl = getattr(native.NativeWinsock, name)
        assert impl.__c_signature__ == parse(PROTOTYPES[name][1]), name
    assert "memory" in WinsockApi.__annotations__
    for name, pfn in _protocol_members(Memory).items():
        impl = getattr(native.NativeMemory, name, None)
        assert callable(impl), f"NativeMemory lacks {name}"
        assert _param_names(impl)[:len(_param_names(pfn))] == _param_names(pfn), name
    assert "prot" in _param_names(native.NativeMemory.alloc)
    assert isinstance(native.NativeMemory(), Memory)
    # Simulated threads are not faked.
    assert not hasattr(native.NativeWinsock, "new_thread") and not hasattr(native.NativeWinsock, "as_thread")


class FakeDlls:
    """Python callbacks in place of ws2_32/kernel32, bound with FUNCTION_TYPES,
    so a NativeWinsock call really goes through ctypes' C conversion."""

    def __init__(self, behaviour=None):
        self.calls: list = []
        self.behaviour = behaviour or {}
        self.thunks = {}
        self.functions = {}
        for name, proto in native.FUNCTION_TYPES.items():
            thunk = proto(self._recorder(name, proto._restype_))
            self.thunks[name] = thunk
            self.functions[name] = proto(ctypes.cast(thunk, ctypes.c_void_p).value)

    def _recorder(self, name, restype):
        def record(*args):
            args = tuple(a or 0 for a in args)
            self.calls.append((name, args))
            fn = self.behaviour.get(name)
            if fn is not None:
                return fn(*args)
            return None if restype is None else -1
        return record


def test_generated_methods_wrap_like_the_simulator_and_marshal_through_ctypes():
    fake = FakeDlls()
    api = native.NativeWinsock.from_functions(fake.functions)
    for name, (ret, sig) in PROTOTYPES.items():
        params = parse(sig)
        fake.calls.clear()
        # -1 in every parameter: each must arrive as the all-ones pattern of its C width.
        rc = getattr(api, name)(*[-1] * len(params))
        expected = tuple(-1 if C_TYPES[t][1] else (1 << C_TYPES[t][0]) - 1 for t, _ in params)
        assert fake.calls == [(name, expected)], name
        if ret == "void":
            assert rc is None
        else:
            bits, signed = C_TYPES[ret]
            assert rc == (-1 if signed else (1 << bits) - 1), f"{name} returned {rc}"
        # Values wider than the C type are reduced, as cfunc does for the simulator.
        if params:
            fake.calls.clear()
            getattr(api, name)(*[(1 << 64) + 5] * len(params))
            assert fake.calls == [(name, (5,) * len(params))], name
            with pytest.raises(TypeError, match=repr(params[-1][1])):
                getattr(api, name)(*[0] * (len(params) - 1), "x")
    assert api.WSAGetLastError() == -1 and api.GetLastError() == 0xFFFFFFFF


def test_extension_pointers_are_learned_from_wsaioctl_and_called_with_their_prototype():
    mem = native.NativeMemory()
    ext_calls = []

    def make_ext(name):
        proto = native.EXTENSION_TYPES[name]
        thunk = proto(lambda *a: ext_calls.append((name, tuple(x or 0 for x in a))) or 0)
        return thunk, ctypes.cast(thunk, ctypes.c_void_p).value

    recv_thunk, recv_ptr = make_ext("WSARecvMsg")       # the thunks must stay referenced while called
    send_thunk, send_ptr = make_ext("WSASendMsg")
    keepalive = (recv_thunk, send_thunk)
    by_guid = {layouts.guid_bytes(C.WSAID_WSARECVMSG): recv_ptr, layouts.guid_bytes(C.WSAID_WSASENDMSG): send_ptr}

    def wsaioctl(s, code, inp, cbin, out, cbout, nret, ovl, routine):
        ptr = by_guid.get(ctypes.string_at(inp, 16)) if code == C.SIO_GET_EXTENSION_FUNCTION_POINTER else None
        if ptr is None:
            return -1
        ctypes.memmove(out, struct.pack("<Q", ptr), 8)
        return 0

    fake = FakeDlls({"WSAIoctl": wsaioctl, "socket": lambda *a: 77, "closesocket": lambda s: 0})
    api = native.NativeWinsock.from_functions(fake.functions, mem)
    inp, out, n = mem.alloc(16), mem.alloc(8), mem.alloc(4)
    mem.write(inp, layouts.guid_bytes(C.WSAID_WSARECVMSG))
    assert api.WSAIoctl(9, C.SIO_GET_EXTENSION_FUNCTION_POINTER, inp, 16, out, 8, n, 0, 0) == 0
    got = mem.read_u64(out)
    assert got == recv_ptr
    assert [c for c in fake.calls if c[0] == "socket"] == []        # learned from the call itself
    assert api.call(got, -1, 0x1000, 0x2000, 0, 0) == 0
    assert ext_calls == [("WSARecvMsg", ((1 << 64) - 1, 0x1000, 0x2000, 0, 0))]
    with pytest.raises(TypeError, match="'lpMsg'"):
        api.call(got, 1, "msg", 0, 0, 0)
    with pytest.raises(TypeError):
        api.call(got, 1, 2)                                          # WSARecvMsg takes five arguments
    # A pointer not seen through WSAIoctl: learned once from a throwaway socket.
    assert api.call(send_ptr, 5, 0x10, (1 << 32) + 1, 0x20, 0, 0) == 0
    assert ext_calls[-1] == ("WSASendMsg", (5, 0x10, 1, 0x20, 0, 0))
    assert ("socket", (C.AF_INET, C.SOCK_DGRAM, C.IPPROTO_UDP)) in fake.calls
    assert ("closesocket", (77,)) in fake.calls
    with pytest.raises(TypeError, match="not an extension function pointer"):
        api.call(0x1234, 1, 2, 3, 4, 5)
    with pytest.raises(TypeError, match="fnptr must be an int"):
        api.call("WSARecvMsg", 1, 2, 3, 4, 5)
    mem.close()
    assert all(keepalive)


def test_completion_routine_is_a_real_callback_and_its_errors_surface_after_the_wait():
    seen = []
    routine = {}

    def sleep_ex(ms, alertable):          # an alertable wait that delivers one APC
        native.COMPLETION_ROUTINE(routine["ptr"])(995, 12, 0xABC0, 0)
        native.COMPLETION_ROUTINE(routine["ptr"])(0, 0, None, 7)
        return 0xC0  # WAIT_IO_COMPLETION

    api = native.NativeWinsock.from_functions(FakeDlls({"SleepEx": sleep_ex}).functions)
    routine["ptr"] = api.completion_routine(lambda *a: seen.append(a))
    assert type(routine["ptr"]) is int and routine["ptr"] != 0
    assert api.SleepEx(0, 1) == 0xC0
    assert seen == [(995, 12, 0xABC0, 0), (0, 0, 0, 7)]

    def boom(*a):
        raise RuntimeError("routine failed")
    routine["ptr"] = api.completion_routine(boom)
    with pytest.raises(RuntimeError, match="routine failed"):
        api.SleepEx(0, 1)
    routine["ptr"] = api.completion_routine(lambda *a: seen.append(a))
    assert api.SleepEx(0, 1) == 0xC0                                # both errors were consumed by one raise
    assert seen[-2:] == [(995, 12, 0xABC0, 0), (0, 0, 0, 7)]
    with pytest.raises(TypeError):
        api.completion_routine(42)


# --- NativeMemory ------------------------------------------------------------

def _maps() -> list[tuple[int, int, str]]:
    out = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        rng, perms = line.split()[:2]
        lo, hi = (int(x, 16) for x in rng.split("-"))
        out.append((lo, hi, perms[:3]))
    return out


def _perms_at(addr: int) -> str | None:
    for lo, hi, perms in _maps():
        if lo <= addr < hi:
            return perms
    return None


def test_memory_bookkeeping_and_bounds():
    mem = native.NativeMemory()
    sizes = [0, 1, 4, 15, 16, 17, 72, 4095, 4096, 4097, 10000]
    ptrs = [mem.alloc(n) for n in sizes]
    for ptr, n in zip(ptrs, sizes):
        assert ptr % 16 == 0
        end = ptr + max(n, 1)
        guard = -(-end // native.PAGE) * native.PAGE if end % native.PAGE else end
        assert guard - (ptr + n) < 16 or n == 0, (n, hex(ptr))     # ends within 15 bytes of its guard page
        assert mem.read(ptr, n) == bytes(n)
        if n:
            data = bytes(range(256)) * (n // 256 + 1)
            mem.write(ptr, data[:n])
            assert mem.read(ptr, n) == data[:n]
            with pytest.raises(native.AccessViolation):
                mem.read(ptr, n + 1)
            with pytest.raises(native.AccessViolation):
                mem.write(ptr + n - 1, b"ab")
            with pytest.raises(native.AccessViolation):
                mem.read(ptr - 1, 1)                                # slack before the buffer is not ours
    mem.write_u32(ptrs[2], 0x1_2345_6789)
    assert mem.read_u32(ptrs[2]) == 0x2345_6789
    mem.write_u64(ptrs[6], -1)
    assert mem.read_u64(ptrs[6]) == (1 << 64) - 1
    bad = mem.invalid_pointer()
    assert bad == mem.invalid_pointer() and not mem.is_allocated(bad)
    with pytest.raises(native.AccessViolation):
        mem.read(bad, 4)
    with pytest.raises(native.AccessViolation):
        mem.free(ptrs[6] + 8)
    mem.free(ptrs[6])
    assert not mem.is_allocated(ptrs[6])
    with pytest.raises(native.AccessViolation):
        mem.read(ptrs[6], 1)
    with pytest.raises(ValueError):
        mem.alloc(-1)
    with pytest.raises(ValueError):
        mem.alloc(4, prot="rwx")
    mem.close()
    with pytest.raises(native.AccessViolation):
        mem.read(ptrs[2], 4)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps (Linux)")
def test_memory_guard_pages_and_protection_are_real():
    mem = native.NativeMemory()
    p = mem.alloc(72)
    page = p & ~(native.PAGE - 1)
    assert _perms_at(page) == "rw-"
    assert _perms_at(page + native.PAGE) == "---"                   # the guard page right after
    r = mem.alloc(4, prot="r")
    z = mem.alloc(4, prot="none")
    assert _perms_at(r) == "r--" and _perms_at(z) == "---"
    mem.write_u32(r, 7)                                             # helpers lift the protection...
    mem.write_u32(z, 8)
    assert mem.read_u32(r) == 7 and mem.read_u32(z) == 8
    assert _perms_at(r) == "r--" and _perms_at(z) == "---"         # ...and restore it
    mem.protect(z, "rw")
    assert _perms_at(z) == "rw-"
    with pytest.raises(native.AccessViolation):
        mem.protect(z + 4, "r")
    assert _perms_at(mem.invalid_pointer()) == "---"
    mem.free(p)
    assert _perms_at(p) is None                                     # released
    mem.close()
    assert _perms_at(r) == "---"                                    # decommitted, still reserved


# --- (c) structures from the layouts ----------------------------------------

def test_structures_have_the_layout_sizes_and_offsets():
    for lay in layouts.ALL_LAYOUTS:
        cls = native.structure(lay)
        assert native.structure(lay) is cls
        assert ctypes.sizeof(cls) == lay.size, lay.name
        for f in lay.fields:
            desc = getattr(cls, f.name)
            assert (desc.offset, desc.size) == (f.offset, f.size), f"{lay.name}.{f.name}"
        # Round trip: bytes packed by the layout read back through the structure.
        values = {}
        for i, f in enumerate(lay.fields):
            if f.fmt.endswith("s"):
                values[f.name] = bytes((i + j) % 251 + 1 for j in range(f.size))
            else:
                values[f.name] = (0x0102030405060708 + i) & ((1 << (8 * f.size - 1)) - 1)
        obj = cls.from_buffer_copy(lay.pack(**values))
        for f in lay.fields:
            got = getattr(obj, f.name)
            assert (bytes(got) if f.fmt.endswith("s") else got) == values[f.name], f"{lay.name}.{f.name}"
        assert bytes(obj) == lay.pack(**values)
    sin = native.structure(layouts.SOCKADDR_IN)()
    sin.sin_port = 0x1F90
    assert bytes(sin)[2:4] == b"\x1f\x90"                           # network byte order, as the layout


# --- (d) prototypes against the mingw-w64 headers -----------------------------

# Where the contract says LPVOID and the header has a typed pointer, the C
# spelling uses the header's pointer type (each must be a pointer, and its
# ctypes counterpart a 64-bit unsigned).
HEADER_POINTER_TYPES = {
    ("WSAStartup", "lpWSAData"): "LPWSADATA",
    ("WSASocketW", "lpProtocolInfo"): "LPWSAPROTOCOL_INFOW",
    ("bind", "name"): "const struct sockaddr *",
    ("accept", "addr"): "struct sockaddr *", ("accept", "addrlen"): "int *",
    ("connect", "name"): "const struct sockaddr *",
    ("send", "buf"): "const char *",
    ("recv", "buf"): "char *",
    ("sendto", "buf"): "const char *", ("sendto", "to"): "const struct sockaddr *",
    ("recvfrom", "buf"): "char *", ("recvfrom", "from_"): "struct sockaddr *", ("recvfrom", "fromlen"): "int *",
    ("getsockname", "name"): "struct sockaddr *", ("getsockname", "namelen"): "int *",
    ("getpeername", "name"): "struct sockaddr *", ("getpeername", "namelen"): "int *",
    ("setsockopt", "optval"): "const char *",
    ("getsockopt", "optval"): "char *", ("getsockopt", "optlen"): "int *",
    ("ioctlsocket", "argp"): "u_long *",
    ("WSAIoctl", "lpcbBytesReturned"): "LPDWORD", ("WSAIoctl", "lpOverlapped"): "LPWSAOVERLAPPED",
    ("WSAIoctl", "lpCompletionRoutine"): "LPWSAOVERLAPPED_COMPLETION_ROUTINE",
    ("WSARecv", "lpBuffers"): "LPWSABUF", ("WSARecv", "lpNumberOfBytesRecvd"): "LPDWORD",
    ("WSARecv", "lpFlags"): "LPDWORD", ("WSARecv", "lpOverlapped"): "LPWSAOVERLAPPED",
    ("WSARecv", "lpCompletionRoutine"): "LPWSAOVERLAPPED_COMPLETION_ROUTINE",
    ("WSASend", "lpBuffers"): "LPWSABUF", ("WSASend", "lpNumberOfBytesSent"): "LPDWORD",
    ("WSASend", "lpOverlapped"): "LPWSAOVERLAPPED",
    ("WSASend", "lpCompletionRoutine"): "LPWSAOVERLAPPED_COMPLETION_ROUTINE",
    ("WSAGetOverlappedResult", "lpOverlapped"): "LPWSAOVERLAPPED",
    ("WSAGetOverlappedResult", "lpcbTransfer"): "LPDWORD", ("WSAGetOverlappedResult", "lpdwFlags"): "LPDWORD",
    ("WSAWaitForMultipleEvents", "lphEvents"): "const WSAEVENT *",
    ("WSAPoll", "fdArray"): "LPWSAPOLLFD",
    ("select", "readfds"): "fd_set *", ("select", "writefds"): "fd_set *", ("select", "exceptfds"): "fd_set *",
    ("select", "timeout"): "PTIMEVAL",
    ("WSAEnumNetworkEvents", "lpNetworkEvents"): "LPWSANETWORKEVENTS",
    ("GetQueuedCompletionStatus", "lpNumberOfBytesTransferred"): "LPDWORD",
    ("GetQueuedCompletionStatus", "lpCompletionKey"): "PULONG_PTR",
    ("GetQueuedCompletionStatus", "lpOverlapped"): "LPOVERLAPPED *",
    ("PostQueuedCompletionStatus", "lpOverlapped"): "LPOVERLAPPED",
    ("CancelIoEx", "lpOverlapped"): "LPOVERLAPPED",
    ("WSARecvMsg", "lpMsg"): "LPWSAMSG", ("WSARecvMsg", "lpdwNumberOfBytesRecvd"): "LPDWORD",
    ("WSARecvMsg", "lpOverlapped"): "LPWSAOVERLAPPED",
    ("WSARecvMsg", "lpCompletionRoutine"): "LPWSAOVERLAPPED_COMPLETION_ROUTINE",
    ("WSASendMsg", "lpMsg"): "LPWSAMSG", ("WSASendMsg", "lpNumberOfBytesSent"): "LPDWORD",
    ("WSASendMsg", "lpOverlapped"): "LPWSAOVERLAPPED",
    ("WSASendMsg", "lpCompletionRoutine"): "LPWSAOVERLAPPED_COMPLETION_ROUTINE",
    ("AcceptEx", "lpdwBytesReceived"): "LPDWORD", ("AcceptEx", "lpOverlapped"): "LPOVERLAPPED",
    ("ConnectEx", "name"): "const struct sockaddr *", ("ConnectEx", "lpdwBytesSent"): "LPDWORD",
    ("ConnectEx", "lpOverlapped"): "LPOVERLAPPED",
    ("GetAcceptExSockaddrs", "LocalSockaddr"): "struct sockaddr **",
    ("GetAcceptExSockaddrs", "LocalSockaddrLength"): "LPINT",
    ("GetAcceptExSockaddrs", "RemoteSockaddr"): "struct sockaddr **",
    ("GetAcceptExSockaddrs", "RemoteSockaddrLength"): "LPINT",
    ("VirtualProtect", "lpflOldProtect"): "PDWORD",
    ("COMPLETION_ROUTINE", "lpOverlapped"): "LPWSAOVERLAPPED",
}

# Where the contract's C type is not the header's and is not an LPVOID: each
# is a finding about harness/winsock/api.py, checked to still be true below.
KNOWN_CONTRACT_DIFFERENCES: dict = {}

# LPWSAOVERLAPPED_COMPLETION_ROUTINE as the contract would spell it.
COMPLETION_ROUTINE_C = ("void", (("DWORD", "dwError"), ("DWORD", "cbTransferred"), ("LPVOID", "lpOverlapped"),
                                 ("DWORD", "dwFlags")))

# Extension functions are compared with the header's typedefs, not a symbol.
EXTENSION_TYPEDEFS = {"WSARecvMsg": "LPFN_WSARECVMSG", "WSASendMsg": "LPFN_WSASENDMSG",
                      "AcceptEx": "LPFN_ACCEPTEX", "ConnectEx": "LPFN_CONNECTEX",
                      "GetAcceptExSockaddrs": "LPFN_GETACCEPTEXSOCKADDRS"}

CHECK_PRELUDE = cdefs.PRELUDE + """
#define NATIVE_IS_PTR(T) (__builtin_classify_type((T)0) == 5)
#define NATIVE_SIGNED(T) (NATIVE_IS_PTR(T) ? 0 : ((T)-1 < (T)0))
"""
CHECK_FLAGS = ["-std=gnu11", "-fsyntax-only", "-fdiagnostics-color=never", "-fmax-errors=0",
               "-Werror=incompatible-pointer-types", "-Werror=int-conversion"]


def _ctypes_of(name):
    if name == "COMPLETION_ROUTINE":
        return None, native.COMPLETION_ROUTINE._argtypes_
    for table in (native.FUNCTION_TYPES, native.EXTENSION_TYPES, native.MEMORY_FUNCTION_TYPES):
        if name in table:
            return table[name]._restype_, table[name]._argtypes_
    raise KeyError(name)


def _signatures(differences=KNOWN_CONTRACT_DIFFERENCES):
    """name -> (C return type, [(C spelling, ctypes type, param, check width)])."""
    sigs = {name: native.SIGNATURES[name] for name in
            [*PROTOTYPES, *EXTENSION_PROTOTYPES, *native.MEMORY_PROTOTYPES]}
    sigs["COMPLETION_ROUTINE"] = COMPLETION_ROUTINE_C
    out = {}
    for name, (ret, params) in sigs.items():
        restype, argtypes = _ctypes_of(name)
        assert len(argtypes) == len(params), name
        spelled = []
        for (c_type, pname), t in zip(params, argtypes):
            key = (name, pname)
            if key in HEADER_POINTER_TYPES:
                assert c_type == "LPVOID", f"{key}: only LPVOID parameters may be mapped"
                spelled.append((HEADER_POINTER_TYPES[key], t, pname, True))
            elif key in differences:
                spelled.append((differences[key][0], t, pname, False))
            else:
                spelled.append((c_type, t, pname, True))
        out[name] = (ret, restype, spelled)
    return out


def _generate(sigs) -> tuple[str, dict[int, str]]:
    """C source and line -> 'name' or 'name.param' for every generated line."""
    lines, owner = CHECK_PRELUDE.splitlines(), {}

    def emit(text, who):
        lines.append(text)
        owner[len(lines)] = who

    for name, (ret, restype, spelled) in sigs.items():
        for c_type, t, pname, check in spelled:
            if check:
                bits, signed = width(t)
                emit(f"_Static_assert(sizeof({c_type}) * 8 == {bits} && NATIVE_SIGNED({c_type}) == {int(signed)}, "
                     f"\"{name}.{pname}: {c_type} is ({bits}, {'signed' if signed else 'unsigned'}) like ctypes "
                     f"{t.__name__}\");", f"{name}.{pname}")
        if restype is not None:
            bits, signed = width(restype)
            emit(f"_Static_assert(sizeof({ret}) * 8 == {bits} && NATIVE_SIGNED({ret}) == {int(signed)}, "
                 f"\"{name}: returns {ret} like ctypes {restype.__name__}\");", f"{name}.return")
        args = ", ".join(c for c, *_ in spelled) or "void"
        if name == "COMPLETION_ROUTINE":
            init, conv = "(LPWSAOVERLAPPED_COMPLETION_ROUTINE)0", "CALLBACK"
        elif name in EXTENSION_TYPEDEFS:
            init, conv = f"({EXTENSION_TYPEDEFS[name]})0", "WSAAPI"
        else:
            init, conv = name, "WINAPI"
        emit(f"{ret} ({conv} *native_check_{name})({args}) = {init};", name)
    return "\n".join(lines) + "\n", owner


def _compile(tmp_path, name, source):
    (tmp_path / name).write_text(source)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "LANGUAGE": ""}
    return subprocess.run([CC, *CHECK_FLAGS, name], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def _errors(stderr, filename, owner) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in re.finditer(rf"^{re.escape(filename)}:(\d+):\d+: error: (.*)$", stderr, re.MULTILINE):
        out.setdefault(owner.get(int(m.group(1)), f"line {m.group(1)}"), []).append(m.group(2))
    return out


@needs_cc
def test_prototypes_match_the_mingw_headers(tmp_path):
    sigs = _signatures()
    source, owner = _generate(sigs)
    proc = _compile(tmp_path, "prototypes.c", source)
    assert proc.returncode == 0, (f"prototypes differ from the headers: {_errors(proc.stderr, 'prototypes.c', owner)}"
                                  f"\n{proc.stderr[-8000:]}")
    assert sum(1 for v in owner.values() if "." not in v) == len(sigs)
    used = {(n, p) for n, (_, _, spelled) in sigs.items() for _, _, p, _ in spelled}
    assert set(HEADER_POINTER_TYPES) <= used, "stale HEADER_POINTER_TYPES entries"
    assert all(re.search(r"\*|^LP|^P", t) for t in HEADER_POINTER_TYPES.values())


@needs_cc
def test_known_contract_differences_are_still_real(tmp_path):
    """Spelled as PROTOTYPES has them, exactly these parameters fail to compile."""
    source, owner = _generate(_signatures(differences={}))
    proc = _compile(tmp_path, "contract.c", source)
    errors = _errors(proc.stderr, "contract.c", owner)
    expected = {n for n, _ in KNOWN_CONTRACT_DIFFERENCES}          # the assignment, not the width
    assert set(errors) == expected, (f"fix KNOWN_CONTRACT_DIFFERENCES: {sorted(errors)} vs {sorted(expected)}"
                                     f"\n{proc.stderr[-8000:]}")


@needs_cc
def test_header_check_catches_drift(tmp_path):
    """The generated check bites: a wrong width, a wrong signedness, a missing parameter."""
    sigs = _signatures()
    ret, restype, spelled = sigs["WSAIoctl"]
    sigs["WSAIoctl"] = (ret, restype, [(*spelled[0][:1], ctypes.c_uint32, *spelled[0][2:]), *spelled[1:]])
    ret, restype, spelled = sigs["recv"]
    sigs["recv"] = (ret, restype, spelled[:-1])
    ret, restype, spelled = sigs["WSASendMsg"]
    sigs["WSASendMsg"] = (ret, restype, [spelled[0], spelled[1], ("int", ctypes.c_int32, "dwFlags", True),
                                         *spelled[3:]])
    ret, restype, spelled = sigs["ioctlsocket"]
    sigs["ioctlsocket"] = (ret, restype, [spelled[0], ("LONG", ctypes.c_uint32, "cmd", True), spelled[2]])
    source, owner = _generate(sigs)
    proc = _compile(tmp_path, "drift.c", source)
    errors = _errors(proc.stderr, "drift.c", owner)
    assert set(errors) == {"WSAIoctl.s", "recv", "WSASendMsg", "ioctlsocket.cmd"}, proc.stderr[-8000:]


@needs_cc
@pytest.mark.skipif(NM is None, reason="x86_64-w64-mingw32-nm not installed (binutils-mingw-w64-x86-64)")
def test_import_libraries_export_each_function_from_its_dll():
    exported = {}
    for dll in ("ws2_32", "kernel32"):
        lib = subprocess.run([CC, f"-print-file-name=lib{dll}.a"], capture_output=True, text=True,
                             check=True).stdout.strip()
        assert os.path.isabs(lib), f"lib{dll}.a not found"
        out = subprocess.run([NM, lib], capture_output=True, text=True, timeout=120, check=True).stdout
        exported[dll] = set(re.findall(r"^\S+ I __imp_(\w+)$", out, re.MULTILINE))
    for name, dll in native.DLL_OF.items():
        assert name in exported[dll], f"{name} is not exported by {dll}.dll"
    for name in native.MEMORY_PROTOTYPES:
        assert name in exported["kernel32"]


# --- (e) what the conformance cases use ---------------------------------------

def _conformance_uses():
    """({api method: [functions calling it]}, {memory method: [...]}, {function: names it hasattr-checks})."""
    api_calls: dict[str, list[str]] = {}
    mem_calls: dict[str, list[str]] = {}
    guards: dict[str, set[str]] = {}
    for path in sorted(CONFORMANCE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            where = f"{path.name}::{fn.name}"
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hasattr" \
                        and len(node.args) == 2 and isinstance(node.args[1], ast.Constant):
                    guards.setdefault(where, set()).add(node.args[1].value)
                if not isinstance(node, ast.Attribute):     # calls and references (`for f in (api.X, ...)`)
                    continue
                target = ast.unparse(node.value)
                if target == "api":
                    api_calls.setdefault(node.attr, []).append(where)
                elif target in ("api.memory", "mem", "self.api.memory"):
                    mem_calls.setdefault(node.attr, []).append(where)
    return api_calls, mem_calls, guards


def test_conformance_methods_exist_or_are_guarded():
    """A method the native provider lacks may only be called in a case that first checks
    hasattr() for a name the native provider lacks (so the case skips on native)."""
    api_calls, mem_calls, guards = _conformance_uses()
    assert {"WSAIoctl", "call", "completion_routine", "WSAGetLastError", "WSACloseEvent", "memory"} <= set(api_calls)
    assert {"alloc", "invalid_pointer", "read", "write"} <= set(mem_calls)
    rows, missing = [], []
    for prefix, calls, cls in (("api", api_calls, native.NativeWinsock), ("api.memory", mem_calls, native.NativeMemory)):
        for name in sorted(calls):
            if callable(getattr(cls, name, None)) or (cls is native.NativeWinsock and name == "memory"):
                rows.append(f"{prefix}.{name}: native")
                continue
            unguarded = [w for w in calls[name]
                         if not any(not hasattr(native.NativeWinsock, g) and not hasattr(native.NativeMemory, g)
                                    for g in guards.get(w, ()))]
            rows.append(f"{prefix}.{name}: absent, guarded by hasattr in {sorted(set(calls[name]))}"
                        if not unguarded else f"{prefix}.{name}: MISSING in {unguarded}")
            missing += [f"{prefix}.{name} in {w}" for w in unguarded]
    print("\n".join(rows))
    assert not missing, missing
    absent = {n for n in api_calls if not hasattr(native.NativeWinsock, n)} - {"memory"}
    assert absent <= {"new_thread", "as_thread"}, absent
    # Read-only / no-access memory is offered (cases check hasattr(mem, "protect")) and alloc takes prot=.
    assert any("protect" in g for g in guards.values()) and callable(native.NativeMemory.protect)
    assert "prot" in _param_names(native.NativeMemory.alloc)
