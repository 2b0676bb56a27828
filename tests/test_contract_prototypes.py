"""The contract's C prototypes (harness.winsock.api) against the real headers, and what the
conformance cases call.

(a) x86_64-w64-mingw32-gcc checks PROTOTYPES and EXTENSION_PROTOTYPES against
    mingw-w64's headers: each real function is assigned to a function pointer
    spelled from the prototype (with -Werror=incompatible-pointer-types), and
    every spelled parameter type gets a static assert that its width and
    signedness are those harness.winsock.ctype.C_TYPES gives its contract type
    (what cfunc reduces arguments to, and what the agent narrows results to);
    the import libraries say which DLL exports each (DLL_OF, which the
    winsock-agent resolves from);
(b) every method the conformance cases call on `api` exists on the agent
    provider, or the cases guard it with hasattr.
"""
from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.agent import AgentMemory, AgentWinsock
from harness.winsock.api import DLL_OF, EXTENSION_PROTOTYPES, KERNEL32_FUNCTIONS, PROTOTYPES
from harness.winsock.ctype import C_TYPES, parse_signature
from support import cdefs
from support.mingw import CC, needs_cc, syntax_check

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = ROOT / "harness" / "conformance"
NM = shutil.which("x86_64-w64-mingw32-nm")
SIGNATURES = {name: (ret, tuple(tuple(p) for p in parse_signature(sig)))
              for name, (ret, sig) in {**PROTOTYPES, **EXTENSION_PROTOTYPES}.items()}


def _param_names(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_every_function_lives_in_the_dll_assigned():
    assert set(DLL_OF) == set(PROTOTYPES)
    assert KERNEL32_FUNCTIONS <= set(PROTOTYPES)
    assert set(DLL_OF.values()) == {"ws2_32", "kernel32"}


# --- (a) prototypes against the mingw-w64 headers -----------------------------

# Where the contract says LPVOID and the header has a typed pointer, the C
# spelling uses the header's pointer type (each must be a pointer, and its
# contract type LPVOID, 64-bit unsigned).
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
    ("GetQueuedCompletionStatusEx", "lpCompletionPortEntries"): "LPOVERLAPPED_ENTRY",
    ("GetQueuedCompletionStatusEx", "ulNumEntriesRemoved"): "PULONG",
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


def _signatures(differences=KNOWN_CONTRACT_DIFFERENCES):
    """name -> (C return type, contract (bits, signed) of it or None for void,
    [(C spelling, contract (bits, signed), param, check width)])."""
    sigs = dict(SIGNATURES)
    sigs["COMPLETION_ROUTINE"] = COMPLETION_ROUTINE_C
    out = {}
    for name, (ret, params) in sigs.items():
        restype = None if ret == "void" else C_TYPES[ret]
        spelled = []
        for c_type, pname in params:
            t = C_TYPES[c_type]
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
        for c_type, (bits, signed), pname, check in spelled:
            if check:
                emit(f"_Static_assert(sizeof({c_type}) * 8 == {bits} && NATIVE_SIGNED({c_type}) == {int(signed)}, "
                     f"\"{name}.{pname}: {c_type} is ({bits}, {'signed' if signed else 'unsigned'}) as the "
                     f"contract says\");", f"{name}.{pname}")
        if restype is not None:
            bits, signed = restype
            emit(f"_Static_assert(sizeof({ret}) * 8 == {bits} && NATIVE_SIGNED({ret}) == {int(signed)}, "
                 f"\"{name}: returns {ret} ({bits}, {'signed' if signed else 'unsigned'})\");", f"{name}.return")
        args = ", ".join(c for c, *_ in spelled) or "void"
        if name == "COMPLETION_ROUTINE":
            init, conv = "(LPWSAOVERLAPPED_COMPLETION_ROUTINE)0", "CALLBACK"
        elif name in EXTENSION_TYPEDEFS:
            init, conv = f"({EXTENSION_TYPEDEFS[name]})0", "WSAAPI"
        else:
            init, conv = name, "WINAPI"
        emit(f"{ret} ({conv} *native_check_{name})({args}) = {init};", name)
    return "\n".join(lines) + "\n", owner



def _errors(stderr, filename, owner) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in re.finditer(rf"^{re.escape(filename)}:(\d+):\d+: error: (.*)$", stderr, re.MULTILINE):
        out.setdefault(owner.get(int(m.group(1)), f"line {m.group(1)}"), []).append(m.group(2))
    return out


@needs_cc
def test_prototypes_match_the_mingw_headers(tmp_path):
    sigs = _signatures()
    source, owner = _generate(sigs)
    proc = syntax_check(tmp_path, "prototypes.c", source)
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
    proc = syntax_check(tmp_path, "contract.c", source)
    errors = _errors(proc.stderr, "contract.c", owner)
    expected = {n for n, _ in KNOWN_CONTRACT_DIFFERENCES}          # the assignment, not the width
    assert set(errors) == expected, (f"fix KNOWN_CONTRACT_DIFFERENCES: {sorted(errors)} vs {sorted(expected)}"
                                     f"\n{proc.stderr[-8000:]}")


@needs_cc
def test_header_check_catches_drift(tmp_path):
    """The generated check bites: a wrong width, a wrong signedness, a missing parameter."""
    sigs = _signatures()
    ret, restype, spelled = sigs["WSAIoctl"]
    sigs["WSAIoctl"] = (ret, restype, [(*spelled[0][:1], (32, False), *spelled[0][2:]), *spelled[1:]])
    ret, restype, spelled = sigs["recv"]
    sigs["recv"] = (ret, restype, spelled[:-1])
    ret, restype, spelled = sigs["WSASendMsg"]
    sigs["WSASendMsg"] = (ret, restype, [spelled[0], spelled[1], ("int", (32, True), "dwFlags", True),
                                         *spelled[3:]])
    ret, restype, spelled = sigs["ioctlsocket"]
    sigs["ioctlsocket"] = (ret, restype, [spelled[0], ("LONG", (32, False), "cmd", True), spelled[2]])
    source, owner = _generate(sigs)
    proc = syntax_check(tmp_path, "drift.c", source)
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
    for name, dll in DLL_OF.items():
        assert name in exported[dll], f"{name} is not exported by {dll}.dll"


# --- (b) what the conformance cases use ---------------------------------------

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
    """A method the agent provider lacks may only be called in a case that first checks
    hasattr() for a name the agent provider lacks (so the case skips on a real Winsock)."""
    api_calls, mem_calls, guards = _conformance_uses()
    assert {"WSAIoctl", "call", "completion_routine", "WSAGetLastError", "WSACloseEvent", "memory"} <= set(api_calls)
    assert {"alloc", "invalid_pointer", "read", "write"} <= set(mem_calls)
    rows, missing = [], []
    for prefix, calls, cls in (("api", api_calls, AgentWinsock), ("api.memory", mem_calls, AgentMemory)):
        for name in sorted(calls):
            if callable(getattr(cls, name, None)) or (cls is AgentWinsock and name == "memory"):
                rows.append(f"{prefix}.{name}: agent")
                continue
            unguarded = [w for w in calls[name]
                         if not any(not hasattr(AgentWinsock, g) and not hasattr(AgentMemory, g)
                                    for g in guards.get(w, ()))]
            rows.append(f"{prefix}.{name}: absent, guarded by hasattr in {sorted(set(calls[name]))}"
                        if not unguarded else f"{prefix}.{name}: MISSING in {unguarded}")
            missing += [f"{prefix}.{name} in {w}" for w in unguarded]
    print("\n".join(rows))
    assert not missing, missing
    absent = {n for n in api_calls if not hasattr(AgentWinsock, n)} - {"memory"}
    assert not absent, absent
    # Read-only / no-access memory is offered (cases check hasattr(mem, "protect")) and alloc takes prot=.
    assert any("protect" in g for g in guards.values()) and callable(AgentMemory.protect)
    assert "prot" in _param_names(AgentMemory.alloc)
