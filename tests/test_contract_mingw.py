"""The Winsock contract (constants.py, layouts.py) checked by a real C compiler.

tests/support/cdefs.py turns every layout and integer constant into C11
static asserts; x86_64-w64-mingw32-gcc compiles them against the mingw-w64
headers, so a size, offset or value that drifts from the headers fails the
build. GUIDs cannot be compared in a static assert: they are compiled into
an object file and their 16 bytes are read back from its COFF symbol table.

Names mingw-w64 does not define are detected by the compiler itself
(macro list from `-E -dM`, then an "undeclared" probe compile for the rest)
and must match ABSENT_FROM_MINGW exactly: a typo in constants.py shows up as
an unexpected absence, a mingw upgrade that adds a name shows up as a stale
allowlist entry.

Six compiler runs in all, each in its own tmp_path (safe under xdist).
"""
from __future__ import annotations

import os
import re
import struct
import subprocess
import uuid

import pytest

from harness.winsock import constants, layouts
from support import cdefs
from support.mingw import CC, needs_cc

pytestmark = needs_cc

CFLAGS = ["-std=gnu11", "-fdiagnostics-color=never", "-Wall",
          "-Werror=implicit-function-declaration", "-fmax-errors=0"]

INT_CONSTANTS = {k: v for k, v in sorted(vars(constants).items())
                 if k.isupper() and type(v) is int}
GUID_CONSTANTS = {k: v for k, v in sorted(vars(constants).items())
                  if k.isupper() and isinstance(v, uuid.UUID)}

# Names from constants.py that mingw-w64 (Debian mingw-w64-x86-64-dev 10.0.0)
# does not define; each must really be absent, and nothing else may be.
_KM = "kernel-only, SDK km/fwpsk.h; mingw-w64 ships no fwpsk.h"
_FWPS_TYPES = "SDK shared/fwpstypes.h; mingw-w64 ships no fwpstypes.h"
_FWPM_GUID = "SDK fwpmu.h DEFINE_GUID; mingw-w64 fwpmu.h defines only 3 FWPM_PROVIDER_* GUIDs"
_WFP_SIO = "SDK mstcpip.h WFP proxy block; mingw-w64 mstcpip.h lacks it (docs/facts.md §1.2)"
ABSENT_FROM_MINGW = {
    "IOC_WSK": "SDK ws2def.h only (WSK-specific ioctl class, Vista+)",
    "MSG_ERRQUEUE": "SDK ws2def.h 0x1000 (Win10 WSAMSG flag); mingw-w64 10 lacks it",
    "TCP_KEEPALIVE": "SDK ws2ipdef.h 3 (Vista+); mingw-w64 10 lacks it",
    "TCP_KEEPCNT": "SDK ws2ipdef.h 16 (Windows 10 1709+); mingw-w64 10 lacks it",
    "TCP_KEEPINTVL": "SDK ws2ipdef.h 17 (Windows 10 1709+); mingw-w64 10 lacks it",
    "SIO_IDEAL_SEND_BACKLOG_QUERY": "SDK only, _IOR('t', 123, ULONG); mingw-w64 10 lacks it",
    "SIO_QUERY_WFP_ALE_ENDPOINT_HANDLE": _WFP_SIO,
    "SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS": _WFP_SIO,
    "SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT": _WFP_SIO,
    "SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS": _WFP_SIO,
    "FWPS_LAYER_ALE_CONNECT_REDIRECT_V4": _KM + " (enum FWPS_BUILTIN_LAYERS)",
    "FWPS_LAYER_ALE_CONNECT_REDIRECT_V6": _KM + " (enum FWPS_BUILTIN_LAYERS)",
    "FWPS_LAYER_ALE_BIND_REDIRECT_V4": _KM + " (enum FWPS_BUILTIN_LAYERS)",
    "FWPS_LAYER_ALE_BIND_REDIRECT_V6": _KM + " (enum FWPS_BUILTIN_LAYERS)",
    "FWPS_CONNECTION_NOT_REDIRECTED": _KM + " (enum FWPS_CONNECTION_REDIRECT_STATE)",
    "FWPS_CONNECTION_REDIRECTED_BY_SELF": _KM + " (enum FWPS_CONNECTION_REDIRECT_STATE)",
    "FWPS_CONNECTION_REDIRECTED_BY_OTHER": _KM + " (enum FWPS_CONNECTION_REDIRECT_STATE)",
    "FWPS_CONNECTION_PREVIOUSLY_REDIRECTED_BY_SELF": _KM + " (enum FWPS_CONNECTION_REDIRECT_STATE)",
    "FWPS_CONNECTION_REDIRECT_STATE_MAX": _KM + " (enum FWPS_CONNECTION_REDIRECT_STATE)",
    "FWPS_CLASSIFY_FLAG_REAUTHORIZE_IF_MODIFIED_BY_OTHERS": _KM + " (FwpsApplyModifiedLayerData0 flag)",
    "FWPS_METADATA_FIELD_LOCAL_REDIRECT_TARGET_PID": _KM,
    "FWPS_METADATA_FIELD_ORIGINAL_DESTINATION": _KM,
    "FWPS_METADATA_FIELD_REDIRECT_RECORD_HANDLE": _KM,
    "FWPS_RIGHT_ACTION_WRITE": _FWPS_TYPES,
    "FWPS_CLASSIFY_OUT_FLAG_ABSORB": _FWPS_TYPES,
    "FWPM_LAYER_ALE_CONNECT_REDIRECT_V4": _FWPM_GUID,
    "FWPM_LAYER_ALE_CONNECT_REDIRECT_V6": _FWPM_GUID,
    "FWPM_LAYER_ALE_BIND_REDIRECT_V4": _FWPM_GUID,
    "FWPM_LAYER_ALE_BIND_REDIRECT_V6": _FWPM_GUID,
}

# Absent names whose value is still checked, under the header's own name.
ALIASES: dict = {}

# Layout.name -> the C type mingw-w64 spells differently (none needed so far).
TYPE_NAMES: dict[str, str] = {}

CMSG_LENGTHS = list(range(0, 41)) + [63, 64, 65, 127, 128, 129, 4095, 4096, 65535]


# --- compiler helpers --------------------------------------------------------

def _run(args, cwd):
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "LANGUAGE": ""}  # plain ASCII quotes
    return subprocess.run([CC, *CFLAGS, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def _error_lines(stderr: str, filename: str) -> dict[int, list[str]]:
    """line number in `filename` -> error messages reported there."""
    out: dict[int, list[str]] = {}
    for m in re.finditer(rf"^{re.escape(filename)}:(\d+):\d+: error: (.*)$", stderr, re.M):
        out.setdefault(int(m.group(1)), []).append(m.group(2))
    return out


def _compile(tmp_path, name: str, source: str, obj: bool = False) -> subprocess.CompletedProcess:
    """Compile `source` (syntax only, or into `name`.o); on failure, fail the
    test with the compiler output and the generated lines it complains about."""
    path = tmp_path / name
    path.write_text(source)
    proc = _run(["-c", name, "-o", name + ".o"] if obj else ["-fsyntax-only", name], tmp_path)
    if proc.returncode != 0:
        src = source.splitlines()
        bad = "\n".join(f"{n}: {src[n - 1]}" for n in sorted(_error_lines(proc.stderr, name))
                        if 0 < n <= len(src))
        pytest.fail(f"{CC} failed on {path} (rc={proc.returncode})\n"
                    f"--- offending generated lines ---\n{bad or '(none in the generated file)'}\n"
                    f"--- compiler output ---\n{proc.stderr[-20000:]}", pytrace=False)
    return proc


def _coff_symbol_bytes(obj: bytes, size: int) -> dict[str, bytes]:
    """Read `size` bytes at every section-defined symbol of a COFF object."""
    machine, nsec, _, symptr, nsym, optsz = struct.unpack_from("<HHIIIH", obj, 0)
    assert machine == 0x8664, f"not an AMD64 COFF object: machine {machine:#x}"
    sections = [struct.unpack_from("<16xII", obj, 20 + optsz + 40 * i)  # SizeOfRawData, PointerToRawData
                for i in range(nsec)]
    strtab = symptr + 18 * nsym
    out, i = {}, 0
    while i < nsym:
        raw, value, secno, _, _, naux = struct.unpack_from("<8sIhHBB", obj, symptr + 18 * i)
        if raw[:4] == b"\0\0\0\0":
            off = strtab + struct.unpack_from("<I", raw, 4)[0]
            name = obj[off:obj.index(b"\0", off)].decode()
        else:
            name = raw.rstrip(b"\0").decode()
        if secno > 0:
            rawsize, rawptr = sections[secno - 1]
            if value + size <= rawsize:
                out[name] = obj[rawptr + value: rawptr + value + size]
        i += 1 + naux
    return out


# --- which names does mingw-w64 define? -------------------------------------

@pytest.fixture(scope="module")
def mingw(tmp_path_factory):
    """{'macros': set of macro names, 'absent': set of contract names mingw lacks}."""
    d = tmp_path_factory.mktemp("mingw_probe")
    (d / "prelude.c").write_text(cdefs.PRELUDE)
    proc = _run(["-E", "-dM", "prelude.c"], d)
    assert proc.returncode == 0, proc.stderr
    macros = set(re.findall(r"^#define ([A-Za-z_]\w*)", proc.stdout, re.M))

    # Names that are not macros may be enumerators or DEFINE_GUID variables:
    # one probe line each; the compiler reports the undeclared ones by line.
    names = [n for n in [*INT_CONSTANTS, *GUID_CONSTANTS] if n not in macros]
    first = cdefs.PRELUDE.count("\n") + 1
    probe = cdefs.PRELUDE + "".join(
        f"enum {{ cdefs_probe_{i} = (int)sizeof({n}) }};\n" for i, n in enumerate(names))
    (d / "probe.c").write_text(probe)
    proc = _run(["-fsyntax-only", "probe.c"], d)
    errors = _error_lines(proc.stderr, "probe.c")
    absent, unexplained = set(), []
    for line, msgs in errors.items():
        n = names[line - first] if 0 <= line - first < len(names) else None
        if n and all(f"'{n}' undeclared" in m for m in msgs):
            absent.add(n)
        else:
            unexplained.append((line, msgs))
    assert not unexplained, f"probe compile failed for other reasons:\n{proc.stderr}"
    assert (proc.returncode == 0) == (not absent), proc.stderr
    return {"macros": macros, "absent": absent}


def test_absent_names_match_allowlist(mingw):
    absent = mingw["absent"]
    unexpected = sorted(absent - set(ABSENT_FROM_MINGW))
    stale = sorted(set(ABSENT_FROM_MINGW) - absent)
    assert not unexpected, (f"not defined by mingw-w64 and not in ABSENT_FROM_MINGW "
                            f"(typo in constants.py, or add with a reason): {unexpected}")
    assert not stale, f"in ABSENT_FROM_MINGW but mingw-w64 defines them now: {stale}"
    assert set(ABSENT_FROM_MINGW) <= set(INT_CONSTANTS) | set(GUID_CONSTANTS)
    assert all(reason.strip() for reason in ABSENT_FROM_MINGW.values())
    assert set(ALIASES) <= set(ABSENT_FROM_MINGW) and not set(ALIASES.values()) & absent


# --- static asserts ----------------------------------------------------------

def test_layouts_constants_and_cmsg_arithmetic(mingw, tmp_path):
    present = {k: v for k, v in INT_CONSTANTS.items() if k not in mingw["absent"]}
    assert len(present) >= len(INT_CONSTANTS) - len(ABSENT_FROM_MINGW) > 200
    present.update({c: INT_CONSTANTS[py] for py, c in ALIASES.items()})
    body = (cdefs.static_asserts(layouts.ALL_LAYOUTS, present, TYPE_NAMES)
            + cdefs.cmsg_asserts(CMSG_LENGTHS))
    source = cdefs.PRELUDE + body
    _compile(tmp_path, "contract.c", source)
    n_asserts = body.count("_Static_assert(")
    n_fields = sum(len(lay.fields) for lay in layouts.ALL_LAYOUTS)
    assert n_asserts == (len(layouts.ALL_LAYOUTS) + 2 * n_fields + len(present)
                         + 1 + 4 * len(CMSG_LENGTHS))


def test_static_asserts_catch_drift(mingw, tmp_path):
    """The generated asserts really bite: wrong offset, size, value and sign fail."""
    wrong_layout = layouts.Layout("WSABUF", 16, (layouts.Field("len", 0, layouts.U32),
                                                 layouts.Field("buf", 4, layouts.PTR)))
    wrong_size = layouts.Layout("LINGER", 8, ())
    wrong = {"WSAEWOULDBLOCK": constants.WSAEWOULDBLOCK + 1,
             "INVALID_SOCKET": 0xFFFFFFFF,            # 32-bit pattern of a 64-bit SOCKET
             "INVALID_HANDLE_VALUE": 0xFFFFFFFFFFFFFFFE,  # pointer-valued: GNU folding must bite
             "STATUS_PENDING": 0x1_0000_0103,         # does not fit a 32-bit NTSTATUS
             "FWP_E_NOT_FOUND": 0x80320009 - (1 << 32),
             "SOCKET_ERROR": -2}
    good = {"ERROR_IO_PENDING": 997}
    source = cdefs.PRELUDE + cdefs.static_asserts([wrong_layout, wrong_size], {**good, **wrong})
    (tmp_path / "drift.c").write_text(source)
    proc = _run(["-fsyntax-only", "drift.c"], tmp_path)
    assert proc.returncode != 0
    failed = {msg for msgs in _error_lines(proc.stderr, "drift.c").values() for msg in msgs}
    text = "\n".join(failed)
    for expected in ("WSABUF.buf: offsetof(buf) == 4", "LINGER: sizeof == 8",
                     *(f"{n} == " for n in wrong)):
        assert expected in text, f"{expected!r} not reported:\n{proc.stderr}"
    assert "ERROR_IO_PENDING" not in text and "WSABUF.len" not in text


def test_negative_constant_must_be_negative_in_c(tmp_path):
    """A negative Python value also demands a negative C value (HRESULT is signed)."""
    source = (cdefs.PRELUDE + "#define CDEFS_U 0xFFFFFFFFu\n#define CDEFS_S (-1)\n"
              + cdefs.constant_assert("CDEFS_S", -1) + "\n"
              + cdefs.constant_assert("CDEFS_U", -1) + "\n")
    (tmp_path / "sign.c").write_text(source)
    proc = _run(["-fsyntax-only", "sign.c"], tmp_path)
    errors = _error_lines(proc.stderr, "sign.c")
    assert proc.returncode != 0 and list(errors) == [source.count("\n")], proc.stderr
    assert "CDEFS_U == " in proc.stderr and "CDEFS_S == " not in proc.stderr, proc.stderr


# --- GUIDs -------------------------------------------------------------------

def test_guids_match_bytes_le(mingw, tmp_path):
    present = {k: v for k, v in GUID_CONSTANTS.items() if k not in mingw["absent"]}
    assert present, "no GUID of constants.py is defined by mingw-w64?"
    braced = {k: v for k, v in present.items() if k in mingw["macros"]}
    # Non-macro GUIDs are DEFINE_GUID variables: INITGUID makes this object define them.
    source = "#define INITGUID\n" + cdefs.PRELUDE + cdefs.guid_definitions(braced)
    _compile(tmp_path, "guids.c", source, obj=True)
    symbols = _coff_symbol_bytes((tmp_path / "guids.c.o").read_bytes(), 16)
    got = {k: symbols.get(f"cdefs_guid_{k}" if k in braced else k) for k in present}
    missing = sorted(k for k, b in got.items() if b is None)
    assert not missing, f"symbols not found in the object file: {missing}"
    mismatched = {k: (uuid.UUID(bytes_le=got[k]), v) for k, v in present.items() if got[k] != v.bytes_le}
    assert not mismatched, f"GUID (mingw, constants.py) differ: {mismatched}"
    assert layouts.guid_bytes(next(iter(present.values()))) == got[next(iter(present))]
