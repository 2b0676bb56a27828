"""The trace file: JSON Lines, one header line and one line per step.

    {"format": "wfp-harness-trace", "version": 1, "target": "sim", "profile": "documented",
     "harness_version": "0.1.0", "os_build": "simulated"}
    {"op": "session", "name": "harness/conformance/test_x.py::test_y"}   (+ "sim_only": true for a case
                     that set up the simulator's world beyond its calls: not replayed)
    {"op": "alloc", "size": 36, "prot": "rw", "result": ["alloc", 0, 0]}
    {"op": "write", "ptr": ["alloc", 0, 0], "hex": "a5a5...", "syms": [[8, ["handle", 0]]]}
    {"op": "call", "fn": "WSAIoctl", "args": [["handle", 0], 3758096385, 0, 0, ...],
     "ret": -1, "error": 10045, "writes": [{"alloc": 3, "offset": 32, "hex": "00000000", "syms": []}],
     "completions": []}

Values that differ between targets are symbolic, as JSON lists:

    ["alloc", i, offset]   an address inside (or just past) the i-th allocation of the session
    ["handle", k]          the k-th handle (socket, event, port) returned by a call; ["handle", k, tag]
                           when the low bits carry a flag (hEvent | 1)
    ["routine", k]         the k-th pointer made by api.completion_routine
    ["invalid", k]         the k-th result of memory.invalid_pointer()
    ["ext", name]          an extension function pointer (WSARecvMsg, WSASendMsg)

Every other value is a literal int. Steps:

    session          a fresh provider starts (WSAStartup already done); symbols restart
    alloc            memory.alloc(size, prot) -> ["alloc", i, 0]
    free / protect   memory.free(ptr) / memory.protect(ptr, prot)
    write            memory.write(ptr, bytes) by the test; "syms" lists the 8-byte-aligned words
                     of the data that held a symbolic value (offset in the data, symbol)
    invalid_pointer  memory.invalid_pointer() -> ["invalid", k]
    routine          api.completion_routine(fn) -> ["routine", k]
    thread           api.new_thread(name) -> thread index (simulated threads; simulator only)
    enter_thread     calls from here on act as that thread (api.as_thread), until exit_thread
    call             a C call: fn, args, ret, error (the thread's last error after the call, as
                     the DWORD GetLastError returns), writes (what the call changed in the
                     recorded allocations, 8-byte aligned runs), completions (each routine
                     invocation during the call: routine, args [dwError, cbTransferred,
                     lpOverlapped, dwFlags], and the calls the routine made, as nested steps);
                     "ext": true for api.call(fnptr, ...) with "fnptr"; "raised" when the
                     provider raised a Python exception instead of returning.

A malformed file raises TraceError naming the file, the line and the field.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.input_error import InputError

FORMAT = "wfp-harness-trace"
VERSION = 1
SYMBOL_KINDS = ("alloc", "handle", "routine", "invalid", "ext")
OPS = ("session", "alloc", "free", "protect", "write", "invalid_pointer", "routine", "call",
       "thread", "enter_thread", "exit_thread")
PROTS = ("rw", "r", "none")
# The fields each op may carry (a field on the wrong op is a malformed trace, not something to ignore).
FIELDS = {
    "session": {"name", "sim_only"}, "alloc": {"size", "prot", "result"}, "free": {"ptr"}, "protect": {"ptr", "prot"},
    "write": {"ptr", "hex", "syms"}, "invalid_pointer": {"result"}, "routine": {"result"},
    "thread": {"name", "result"}, "enter_thread": {"thread"}, "exit_thread": set(),
    "call": {"fn", "args", "ext", "fnptr", "ret", "error", "raised", "writes", "completions"},
}
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1      # a literal is a C value of at most 64 bits
MAX_NESTING = 8                                   # completion routines inside completion routines


class TraceError(InputError):
    """A malformed trace: names the file, the line (1-based, 0 when unknown) and the field."""


@dataclass
class Trace:
    header: dict
    steps: list = field(default_factory=list)
    path: str = ""

    # -- writing -------------------------------------------------------------
    def lines(self):
        yield json.dumps(self.header, separators=(",", ":"))
        for step in self.steps:
            yield json.dumps(step, separators=(",", ":"))

    def dump(self, path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as out:
            for line in self.lines():
                out.write(line + "\n")
        self.path = str(path)

    def dumps(self) -> str:
        return "".join(line + "\n" for line in self.lines())

    @property
    def calls(self) -> list:
        return [s for s in self.steps if s.get("op") == "call"]


def make_header(target: str, profile: str, os_build: str = "") -> dict:
    from harness import __version__
    return {"format": FORMAT, "version": VERSION, "target": target, "profile": profile,
            "harness_version": __version__, "os_build": os_build or ("simulated" if target == "sim" else "")}


# --- loading and validation ------------------------------------------------------

def load(path) -> Trace:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise TraceError(path, 0, "file", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise TraceError(path, line, "file", f"not UTF-8 text (byte {exc.start})") from None
    return loads(text, path)


def loads(text: str, path="<trace>") -> Trace:
    header = None
    steps = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(path, number, "json", f"not valid JSON: {exc.msg} (column {exc.colno})") from None
        except RecursionError:
            raise TraceError(path, number, "json", "nested too deeply") from None
        except ValueError:                  # an integer of more digits than Python converts
            raise TraceError(path, number, "json", "a number too long to read") from None
        if not isinstance(obj, dict):
            raise TraceError(path, number, "line", f"must be a JSON object, not {type(obj).__name__}")
        if header is None:
            _check_header(obj, path, number)
            header = obj
        else:
            _check_step(obj, path, number, "")
            steps.append(obj)
    if header is None:
        raise TraceError(path, 0, "header", "empty file: the first line must be the trace header")
    return Trace(header, steps, str(path))


def _check_header(obj, path, line):
    if obj.get("format") != FORMAT:
        raise TraceError(path, line, "format", f"must be {FORMAT!r}, not {_shown(obj.get('format'))}")
    version = obj.get("version")
    if type(version) is not int:
        raise TraceError(path, line, "version", f"required int, got {_shown(version)}")
    if version != VERSION:
        raise TraceError(path, line, "version", f"unsupported trace version {version}; this harness reads "
                                                f"version {VERSION}")
    for key in ("target", "profile", "harness_version"):
        if not isinstance(obj.get(key), str) or not obj.get(key):
            raise TraceError(path, line, key, "required non-empty string")


def _int(value) -> bool:
    return type(value) is int


def _shown(value) -> str:
    """A value in an error message: JSON, cut short (never a Python repr of a huge structure)."""
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def check_symbolic(value, path, line, fld):
    """A literal int of at most 64 bits or a well-formed symbol."""
    if _int(value):
        if not INT_MIN <= value <= INT_MAX:
            raise TraceError(path, line, fld, "integer does not fit in 64 bits")
        return
    if not isinstance(value, list) or not value or value[0] not in SYMBOL_KINDS:
        raise TraceError(path, line, fld, f"must be an int or a symbol {list(SYMBOL_KINDS)}, got {_shown(value)}")
    kind = value[0]
    if kind == "alloc":
        ok = len(value) == 3 and _int(value[1]) and value[1] >= 0 and _int(value[2])
    elif kind == "handle":
        ok = len(value) in (2, 3) and _int(value[1]) and value[1] >= 0 and all(_int(v) for v in value[2:])
    elif kind == "ext":
        ok = len(value) == 2 and isinstance(value[1], str)
    else:
        ok = len(value) == 2 and _int(value[1]) and value[1] >= 0
    if not ok:
        raise TraceError(path, line, fld, f"malformed {kind} symbol")


def _hex(value, path, line, fld):
    if not isinstance(value, str):
        raise TraceError(path, line, fld, "required hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise TraceError(path, line, fld, f"not hex: {value[:40]!r}") from None


def _syms(value, path, line, fld):
    if not isinstance(value, list):
        raise TraceError(path, line, fld, "must be a list of [offset, symbol]")
    for i, item in enumerate(value):
        if not (isinstance(item, list) and len(item) == 2 and _int(item[0]) and item[0] >= 0):
            raise TraceError(path, line, f"{fld}[{i}]", "must be [offset, symbol]")
        check_symbolic(item[1], path, line, f"{fld}[{i}][1]")


def _check_step(obj, path, line, prefix):
    def need(key):
        if key not in obj:
            raise TraceError(path, line, prefix + key, "required field missing")
        return obj[key]

    op = need("op")
    if not isinstance(op, str) or op not in OPS:
        raise TraceError(path, line, prefix + "op", f"unknown op {_shown(op)}; one of {list(OPS)}")
    extra = set(obj) - FIELDS[op] - {"op"}
    if extra:
        raise TraceError(path, line, prefix + sorted(extra)[0], f"not a field of a {op!r} step")
    if op == "session":
        if not isinstance(need("name"), str):
            raise TraceError(path, line, prefix + "name", "required string")
        if type(obj.get("sim_only", False)) is not bool:
            raise TraceError(path, line, prefix + "sim_only", "must be true or false")
    elif op == "alloc":
        size = need("size")
        if not _int(size) or size < 0:
            raise TraceError(path, line, prefix + "size", "required non-negative int")
        if need("prot") not in PROTS:
            raise TraceError(path, line, prefix + "prot", f"one of {list(PROTS)}")
        check_symbolic(need("result"), path, line, prefix + "result")
    elif op in ("free", "protect"):
        check_symbolic(need("ptr"), path, line, prefix + "ptr")
        if op == "protect" and need("prot") not in PROTS:
            raise TraceError(path, line, prefix + "prot", f"one of {list(PROTS)}")
    elif op == "write":
        check_symbolic(need("ptr"), path, line, prefix + "ptr")
        _hex(need("hex"), path, line, prefix + "hex")
        _syms(obj.get("syms", []), path, line, prefix + "syms")
    elif op in ("invalid_pointer", "routine"):
        check_symbolic(need("result"), path, line, prefix + "result")
    elif op == "thread":
        if not _int(need("result")) or obj["result"] < 0:
            raise TraceError(path, line, prefix + "result", "required non-negative int (thread index)")
    elif op == "enter_thread":
        if not _int(need("thread")) or obj["thread"] < 0:
            raise TraceError(path, line, prefix + "thread", "required non-negative int (thread index)")
    elif op == "call":
        _check_call(obj, need, path, line, prefix)


def _check_call(obj, need, path, line, prefix):
    from harness.winsock.api import EXTENSION_PROTOTYPES, PROTOTYPES
    fn = need("fn")
    if "ext" in obj and type(obj["ext"]) is not bool:
        raise TraceError(path, line, prefix + "ext", "must be true or false")
    table = EXTENSION_PROTOTYPES if obj.get("ext") else PROTOTYPES
    if not isinstance(fn, str) or fn not in table:
        raise TraceError(path, line, prefix + "fn", f"unknown function {_shown(fn)}")
    args = need("args")
    nparams = len([p for p in table[fn][1].split(",") if p.strip()])
    if not isinstance(args, list) or len(args) != nparams:
        raise TraceError(path, line, prefix + "args", f"{fn} takes {nparams} arguments, got {_shown(args)}")
    for i, a in enumerate(args):
        check_symbolic(a, path, line, f"{prefix}args[{i}]")
    if obj.get("ext"):
        check_symbolic(need("fnptr"), path, line, prefix + "fnptr")
    if "raised" in obj:
        if not isinstance(obj["raised"], str):
            raise TraceError(path, line, prefix + "raised", "must be a string")
    else:
        ret = need("ret")
        if ret is not None:
            check_symbolic(ret, path, line, prefix + "ret")
    err = need("error")
    if not _int(err) or not INT_MIN <= err <= INT_MAX:
        raise TraceError(path, line, prefix + "error", f"required int of at most 64 bits, got {_shown(err)}")
    writes = obj.get("writes", [])
    if not isinstance(writes, list):
        raise TraceError(path, line, prefix + "writes", "must be a list")
    for i, w in enumerate(writes):
        f = f"{prefix}writes[{i}]"
        if not isinstance(w, dict):
            raise TraceError(path, line, f, "must be an object")
        for key in ("alloc", "offset"):
            if not _int(w.get(key)) or w[key] < 0:
                raise TraceError(path, line, f"{f}.{key}", "required non-negative int")
        _hex(w.get("hex"), path, line, f"{f}.hex")
        _syms(w.get("syms", []), path, line, f"{f}.syms")
    comps = obj.get("completions", [])
    if not isinstance(comps, list):
        raise TraceError(path, line, prefix + "completions", "must be a list")
    for i, c in enumerate(comps):
        f = f"{prefix}completions[{i}]"
        if not isinstance(c, dict):
            raise TraceError(path, line, f, "must be an object")
        check_symbolic(c.get("routine"), path, line, f"{f}.routine")
        cargs = c.get("args")
        if not isinstance(cargs, list) or len(cargs) != 4:
            raise TraceError(path, line, f"{f}.args", "must be [dwError, cbTransferred, lpOverlapped, dwFlags]")
        for j, a in enumerate(cargs):
            check_symbolic(a, path, line, f"{f}.args[{j}]")
        nested = c.get("calls", [])
        if not isinstance(nested, list):
            raise TraceError(path, line, f"{f}.calls", "must be a list")
        if nested and prefix.count(".calls[") >= MAX_NESTING:
            raise TraceError(path, line, f"{f}.calls", f"completions nested more than {MAX_NESTING} deep")
        for j, step in enumerate(nested):
            if not isinstance(step, dict):
                raise TraceError(path, line, f"{f}.calls[{j}]", "must be an object")
            _check_step(step, path, line, f"{f}.calls[{j}].")
