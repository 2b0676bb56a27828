"""Known deviations of a target from Windows: the reviewed list of conformance cases a target is
expected to fail, each with what differs and where the target itself says so.

    devs = load_target("wine")                # harness/conformance/wine-deviations.toml, or None
    dev = devs.match(item.nodeid)             # the entry covering one test, or None

A deviation file is TOML, one `[[deviation]]` table per difference:

    [[deviation]]
    tests = ["test_wsapoll.py::test_invalid_request_flags[*]"]   # node ids after the last "/"; * is a wildcard
    differs = "Wine accepts ... ; Windows fails with WSAEINVAL"
    windows = "Wine dlls/ws2_32/tests/sock.c test_WSAPoll (ok() outside todo_wine runs on Windows)"
    kind = "todo_wine"                     # how the target itself says it differs (KINDS)
    wine = "Wine dlls/ws2_32/tests/sock.c test_WSAPoll: todo_wine on the invalid flags' ret == -1"
    replay = ["WSAPoll error"]             # optional: the same deviation met in any case of a trace replay

`replay` (harness/replay/classify.py) names, per string `FN[(PARAM=VALUE, ...)] PARAM[.FIELD] [in CASE]`, the
divergences of a trace replay that are this deviation whatever case they occur in: a call to FN
(for what a pending operation writes later, the call that started it) whose differing words all
belong to what argument PARAM points at (FIELD: an OVERLAPPED field), or PARAM `ret` / `error`: its
return value / last error; (PARAM=VALUE) keeps the calls whose argument PARAM has that value (a
harness.winsock.constants name or an integer; `ret`: the call's return value, for words); `in CASE`
keeps the cases matching CASE (a node-id pattern, as in `tests`): a deviation whose shape alone would
say too much.

The pytest plugin marks the matching cases xfail(strict=True) on that target,
so a target that stops deviating turns the case into a failure (XPASS) and the
entry has to go; nothing is skipped. A malformed file, or an entry without a
citation of the target's own evidence, raises DeviationError (file, line, field).
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.input_error import InputError
from harness.winsock import constants as C
from harness.winsock.api import EXTENSION_PROTOTYPES, PROTOTYPES
from harness.winsock.layouts import WSAOVERLAPPED

HERE = Path(__file__).parent
# target -> its deviation file (only Wine has one: a real Windows is what the suite describes)
FILES = {"wine": HERE / "wine-deviations.toml"}

# How Wine itself says it differs, and the form the `wine` citation takes for each:
KINDS = {
    # an ok() Windows passes that Wine marks todo_wine (function listed in docs/sources.md's Wine table)
    "todo_wine": re.compile(r"\bWine dlls/ws2_32/tests/(?:sock|afd)\.c test_\w+: todo_wine\b"),
    # a FIXME Wine prints when the call runs (WINEDEBUG=fixme+winsock), quoted
    "fixme": re.compile(r"\bWine 8\.0 \w+\.dll \w+ prints \"fixme:\w+:\w+ [^\"]+\""),
    # Wine's own source does it differently, named by file and function (docs/sources.md's
    # Wine implementation table)
    "source": re.compile(r"\bWine (?:dlls/\w+(?:/\w+)?|server)/\w+\.c \w+: "),
    # Wine's current test asserts the Windows behaviour outside todo_wine: Wine has fixed it since
    # 8.0 (the function is listed in docs/sources.md's Wine table)
    "fixed_later": re.compile(r"\bWine dlls/(?:ws2_32/tests/sock|ntdll/tests/file)\.c test_\w+: ok\(\) without todo_wine\b"),
    # the weakest: what Wine 8.0 was seen to do, naming the function, where Wine says nothing itself;
    # the `windows` citation then carries the case (reviewed list: see the report)
    "observed": re.compile(r"\bWine 8\.0 \w+\.dll \w+: observed\b"),
}
FIELDS = ("tests", "differs", "windows", "kind", "wine")
OPTIONAL = ("replay",)
_SIGNATURE = re.compile(r"(\w+)(?:\(([^()]*)\))? (\w+)(?:\.(\w+))?(?: in (\S+\.py::\S+))?")
_PARAM_NAMES = {name: tuple(p.rsplit(" ", 1)[-1].lstrip("*") for p in sig.split(", ") if p)
                for table in (PROTOTYPES, EXTENSION_PROTOTYPES) for name, (_ret, sig) in table.items()}


@dataclass(frozen=True)
class Signature:
    """One `replay` string: the divergences of a trace replay that are the deviation, in any case."""
    fn: str
    param: str               # an argument's name, or "ret" / "error"
    field: str               # an OVERLAPPED field of `param`, or ""
    where: tuple             # ((argument name, value), ...) the call's arguments must have
    case: str = ""           # a node-id pattern the case must match (tests' form), or "" for any case

    def _selects(self, fn: str, args: dict, session: str) -> bool:
        return (fn == self.fn and all(_same(args.get(name), value) for name, value in self.where)
                and (not self.case or _pattern(self.case).fullmatch(session.rsplit("/", 1)[-1]) is not None))

    def covers_value(self, fn: str, what: str, args: dict, session: str = "") -> bool:
        """A ret or error divergence of a call to `fn` with `args`, in the case `session`."""
        return what == self.param and self._selects(fn, args, session)

    def covers_word(self, owner: dict | None, session: str = "") -> bool:
        """A differing word, by the argument it belongs to (harness.replay.params.attribute)."""
        return (owner is not None and owner["param"] == self.param
                and self._selects(owner["fn"], {**owner["args"], "ret": owner.get("ret")}, session)
                and (not self.field or owner["field"] == self.field))


def _same(recorded, value: int) -> bool:
    return type(recorded) is int and (recorded & 0xFFFFFFFF) == (value & 0xFFFFFFFF)


def _signature(path, line: int, where: str, text) -> Signature:
    found = _SIGNATURE.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        raise DeviationError(path, line, where,
                             "a replay signature is `FN[(PARAM=VALUE, ...)] PARAM[.FIELD] [in FILE.py::CASE]`")
    fn, filters, param, fld, case = found.groups()
    names = _PARAM_NAMES.get(fn)
    if names is None:
        raise DeviationError(path, line, where, f"{fn!r} is not a function of the contract")
    if param not in names + ("ret", "error"):
        raise DeviationError(path, line, where, f"{fn} has no parameter {param!r}")
    if fld and fld not in {f.name for f in WSAOVERLAPPED.fields}:
        raise DeviationError(path, line, where, f"{fld!r} is not an OVERLAPPED field")
    pairs = []
    for item in filter(None, (part.strip() for part in (filters or "").split(","))):
        name, _, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if name not in names + ("ret",):
            raise DeviationError(path, line, where, f"{fn} has no parameter {name!r}")
        number = getattr(C, value, None) if not re.fullmatch(r"-?(?:0x[0-9a-fA-F]+|\d+)", value) else int(value, 0)
        if type(number) is not int:
            raise DeviationError(path, line, where, f"{value!r} is neither an integer nor a constant")
        pairs.append((name, number))
    return Signature(fn, param, fld or "", tuple(pairs), case or "")


class DeviationError(InputError):
    """A malformed deviation file: file, line and field (harness.input_error)."""


@dataclass(frozen=True)
class Deviation:
    tests: tuple
    differs: str
    windows: str
    kind: str
    wine: str
    line: int
    replay: tuple = ()       # Signatures

    @property
    def reason(self) -> str:
        return f"known Wine deviation: {self.differs} [{self.wine}]"

    def matches(self, nodeid: str) -> bool:
        name = nodeid.rsplit("/", 1)[-1]
        return any(_pattern(t).fullmatch(name) for t in self.tests)


def _pattern(glob: str) -> re.Pattern:
    """`*` matches anything; everything else (brackets of parametrized ids included) is literal."""
    return re.compile(".*".join(re.escape(part) for part in glob.split("*")))


class Deviations:
    def __init__(self, path: Path, entries: list):
        self.path = path
        self.entries = entries

    def match(self, nodeid: str) -> Deviation | None:
        for entry in self.entries:
            if entry.matches(nodeid):
                return entry
        return None

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def _entry_lines(text: str) -> list:
    return [n for n, line in enumerate(text.splitlines(), 1) if line.strip() == "[[deviation]]"]


def load(path) -> Deviations:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeviationError(path, 0, "file", f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        raise DeviationError(path, int(found.group(1)) if found else 0, "syntax", str(exc)) from None
    unknown = set(data) - {"deviation"}
    if unknown:
        raise DeviationError(path, 0, sorted(unknown)[0], "unknown top-level key (entries are [[deviation]])")
    raw = data.get("deviation", [])
    lines = _entry_lines(text)
    entries = []
    for i, entry in enumerate(raw):
        line = lines[i] if i < len(lines) else 0
        entries.append(_entry(path, line, i, entry))
    return Deviations(path, entries)


def _entry(path, line: int, i: int, entry: dict) -> Deviation:
    where = f"deviation[{i}]"
    extra = set(entry) - set(FIELDS) - set(OPTIONAL)
    if extra:
        raise DeviationError(path, line, f"{where}.{sorted(extra)[0]}", "unknown key")
    for field in FIELDS:
        value = entry.get(field)
        if field == "tests":
            if not (isinstance(value, list) and value and all(isinstance(t, str) and "::" in t for t in value)):
                raise DeviationError(path, line, f"{where}.tests",
                                     "required: a list of node ids (file.py::name, * as a wildcard)")
        elif not (isinstance(value, str) and value.strip()):
            raise DeviationError(path, line, f"{where}.{field}", "required string")
    kind = entry["kind"]
    if kind not in KINDS:
        raise DeviationError(path, line, f"{where}.kind", f"{kind!r} is not one of {sorted(KINDS)}")
    if not KINDS[kind].search(entry["wine"]):
        raise DeviationError(path, line, f"{where}.wine",
                             f"a {kind} deviation must cite Wine in the form {KINDS[kind].pattern!r}")
    replay = entry.get("replay", [])
    if not isinstance(replay, list):
        raise DeviationError(path, line, f"{where}.replay", "a list of replay signatures")
    signatures = tuple(_signature(path, line, f"{where}.replay[{n}]", text) for n, text in enumerate(replay))
    return Deviation(tuple(entry["tests"]), entry["differs"].strip(), entry["windows"].strip(), kind,
                     entry["wine"].strip(), line, signatures)


def load_target(target: str) -> Deviations | None:
    """The deviation list of `target` (env WFP_DEVIATIONS: another file for it), or None if it has none."""
    path = FILES.get(target)
    if path is None:
        return None
    return load(os.environ.get("WFP_DEVIATIONS") or path)
