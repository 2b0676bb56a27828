"""Known divergences between the simulator (profile wine-8.0) and Wine: tests/differential/known.toml.

Every divergence the differential test may meet is a simulator bug (fixed, so it
is not here), a decision point (the wine-8.0 profile answers it, so it does not
show), or a known Wine deviation: an entry here. An entry says when it applies
and which deviation it is:

    [[divergence]]
    name = "wfp-ioctls-unimplemented"                 # shown in hypothesis' statistics
    fn = ["WSAIoctl"]                                 # the differing call
    field = ["error"]                                 # ret | error | writes | completions | raised | memory | calls
    args = { 1 = [0x980000DC, 0x980000DD] }           # optional: argument index -> allowed literal values
    sim = [10057, 10022]                              # optional: the simulator's call failed with one of
                                                      # these last errors (whatever the differing field)
    wine = [10045]                                    # optional: Wine's call failed with one of these
    step = "closesocket"                              # optional: the program step starts with this
    wine_bytes = "0a000080"                           # optional: Wine's differing bytes contain this (hex)
    deviation = "test_wfp_checks.py::test_query_*"    # an entry of harness/conformance/wine-deviations.toml
                                                      # (one of its `tests` patterns), whose citations it takes
    continues = true                                  # optional: neither side's state changed, the
                                                      # program goes on (default: it ends there)

or, for a deviation no conformance case meets, the citations themselves in that list's format
(`differs`, `windows`, `kind`, `citation`: the `wine` field of harness/conformance/deviations.py,
checked against its KINDS). A malformed file raises KnownError (file, line, field).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.conformance import deviations
from harness.input_error import InputError

FILE = Path(__file__).with_name("known.toml")
FIELDS = ("ret", "error", "writes", "completions", "raised", "memory", "calls")
_KEYS = {"continues", "name", "fn", "field", "args", "sim", "wine", "step", "wine_bytes", "deviation", "differs", "windows",
         "kind", "citation", "note"}


class KnownError(InputError):
    """A malformed known-divergence file."""


@dataclass(frozen=True)
class Known:
    name: str
    fns: tuple
    fields: tuple
    args: dict
    sim: tuple | None
    wine: tuple | None
    reason: str
    line: int
    continues: bool = False
    step: str = ""
    wine_bytes: str = ""

    def matches(self, d) -> bool:
        if self.fns and d.fn not in self.fns:
            return False
        if d.field not in self.fields:
            return False
        for index, allowed in self.args.items():
            if index >= len(d.args) or d.args[index] not in allowed:
                return False
        # The sides' errors constrain every field: an entry names one failure, never any call failing.
        if self.sim is not None and d.sim_error not in self.sim:
            return False
        if self.wine is not None and d.wine_error not in self.wine:
            return False
        if self.step and not d.step.startswith(self.step):
            return False
        if self.wine_bytes and self.wine_bytes not in str(d.wine):
            return False
        return True


class KnownList:
    def __init__(self, entries: list):
        self.entries = entries

    def explain(self, divergence) -> Known | None:
        return next((e for e in self.entries if e.matches(divergence)), None)

    def __iter__(self):
        return iter(self.entries)


def _ints(path, line, where, value) -> tuple:
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in values):
        raise KnownError(path, line, where, "a value or a list of values (ints or strings)")
    return tuple(values)


def _text(path, line, where, value) -> str:
    if not isinstance(value, str):
        raise KnownError(path, line, where, "a string")
    return value


def _bool(path, line, where, value) -> bool:
    if not isinstance(value, bool):
        raise KnownError(path, line, where, "true or false")
    return value


def load(path=FILE) -> KnownList:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KnownError(path, getattr(exc, "lineno", 0), "syntax", str(exc)) from None
    if set(data) - {"divergence"}:
        raise KnownError(path, 0, sorted(set(data) - {"divergence"})[0], "unknown top-level key")
    lines = [n for n, ln in enumerate(text.splitlines(), 1) if ln.strip() == "[[divergence]]"]
    wine_list = deviations.load(deviations.FILES["wine"])
    entries, names = [], set()
    for i, raw in enumerate(data.get("divergence", [])):
        line = lines[i] if i < len(lines) else 0
        where = f"divergence[{i}]"
        extra = set(raw) - _KEYS
        if extra:
            raise KnownError(path, line, f"{where}.{sorted(extra)[0]}", "unknown key")
        name = raw.get("name")
        if not isinstance(name, str) or not name or name in names:
            raise KnownError(path, line, f"{where}.name", "required, unique")
        names.add(name)
        fields = _ints(path, line, f"{where}.field", raw.get("field", []))
        if not fields or set(fields) - set(FIELDS):
            raise KnownError(path, line, f"{where}.field", f"one or more of {', '.join(FIELDS)}")
        args = raw.get("args", {})
        if not isinstance(args, dict) or not all(k.isdigit() for k in args):
            raise KnownError(path, line, f"{where}.args", "a table: argument index -> value(s)")
        reason = _reason(path, line, where, raw, wine_list)
        entries.append(Known(name, _ints(path, line, f"{where}.fn", raw.get("fn", [])), fields,
                             {int(k): _ints(path, line, f"{where}.args.{k}", v) for k, v in args.items()},
                             _ints(path, line, f"{where}.sim", raw["sim"]) if "sim" in raw else None,
                             _ints(path, line, f"{where}.wine", raw["wine"]) if "wine" in raw else None,
                             reason, line, _bool(path, line, f"{where}.continues", raw.get("continues", False)),
                             _text(path, line, f"{where}.step", raw.get("step", "")),
                             _text(path, line, f"{where}.wine_bytes", raw.get("wine_bytes", ""))))
    return KnownList(entries)


def _reason(path, line, where, raw, wine_list) -> str:
    """The entry's citation: the wine-deviations.toml entry it names, or its own (checked alike)."""
    if "deviation" in raw:
        pattern = raw["deviation"]
        listed = next((d for d in wine_list if pattern in d.tests), None)
        if listed is None:
            raise KnownError(path, line, f"{where}.deviation",
                             f"{pattern!r} is not a `tests` pattern of {deviations.FILES['wine'].name}")
        return listed.reason
    for key in ("differs", "windows", "kind", "citation"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise KnownError(path, line, f"{where}.{key}", "required: `deviation`, or differs/windows/kind/citation")
    kind = raw["kind"]
    if kind not in deviations.KINDS:
        raise KnownError(path, line, f"{where}.kind", f"{kind!r} is not one of {sorted(deviations.KINDS)}")
    if not deviations.KINDS[kind].search(raw["citation"]):
        raise KnownError(path, line, f"{where}.citation",
                         f"a {kind} deviation must cite Wine in the form {deviations.KINDS[kind].pattern!r}")
    return f"known Wine deviation: {raw['differs'].strip()} [{raw['citation'].strip()}]"


KNOWN = load()
