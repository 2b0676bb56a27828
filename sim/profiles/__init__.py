"""Behaviour profiles: data files that answer every decision point.

A profile is a TOML file:

    name = "windows-observed"
    description = "..."
    inherit = "documented"          # optional: start from another profile

    [decisions.unknown_ioctl_overlapped]
    value = "pending"
    provenance = "observed"         # documented | observed | field | assumed
    source = "docs/windows-observed.md item 13"

A malformed file raises ProfileError naming the file, the line and the field.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.input_error import InputError
from sim.decision_points import DECISIONS, PROVENANCES

BUILTIN_DIR = Path(__file__).parent
# Windows as documented and as observed, and the profiles of targets that are not Windows
# (what `profile probe` saw there: the default profile of that target, harness.targets).
BUILTIN = ("documented", "windows-observed", "wine-8.0")


class ProfileError(InputError):
    """A malformed profile file: file, line and field (harness.input_error)."""


@dataclass(frozen=True)
class Assignment:
    value: str
    provenance: str
    source: str


class Profile:
    def __init__(self, name: str, description: str, assignments: dict, path: str = ""):
        self.name = name
        self.description = description
        self.assignments: dict[str, Assignment] = assignments
        self.path = path
        # Plain attribute per decision: the hot paths read profile.<name>.
        for key, a in assignments.items():
            setattr(self, key, a.value)

    def value(self, name: str) -> str:
        return self.assignments[name].value

    def with_overrides(self, **values) -> "Profile":
        """A copy with some decisions changed (provenance 'assumed', source 'override')."""
        assignments = dict(self.assignments)
        for key, value in values.items():
            dp = DECISIONS.get(key)
            if dp is None:
                raise ProfileError("<override>", 0, key, "no such decision point")
            if value not in dp.choices:
                raise ProfileError("<override>", 0, key,
                                   f"{value!r} is not one of {sorted(dp.choices)}")
            assignments[key] = Assignment(value, "assumed", "override")
        return Profile(f"{self.name}+overrides", self.description, assignments, self.path)

    def __repr__(self) -> str:
        return f"<Profile {self.name}>"


def _line_of(text: str, needle: str, after: int = 0) -> int:
    """The first line at or after line `after` that holds `needle` (0: not found)."""
    for number, line in enumerate(text.splitlines(), 1):
        if number >= after and needle in line:
            return number
    return 0


def _shown(value) -> str:
    """A TOML value in an error message, cut short."""
    text = f'"{value}"' if isinstance(value, str) else type(value).__name__ if isinstance(value, (list, dict)) \
        else str(value).lower() if isinstance(value, bool) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


MAX_BYTES = 1 << 20          # a profile is a page of TOML; anything far larger is not one
MAX_INHERIT = 16             # profiles inheriting profiles, at most this deep


def _read(path: Path) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ProfileError(path, 0, "file", f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise ProfileError(path, 0, "file", f"larger than {MAX_BYTES} bytes: not a profile")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ProfileError(path, line, "file", f"not UTF-8 text (byte {exc.start})") from None


def load_file(path, _seen=()) -> Profile:
    """A profile file; `_seen` is the chain of files and names that inherit it (to refuse cycles)."""
    path = Path(path)
    text = _read(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        line = int(found.group(1)) if found else 0
        raise ProfileError(path, line, "syntax", str(exc)) from None
    except RecursionError:
        raise ProfileError(path, 0, "syntax", "nested too deeply") from None
    except ValueError:                      # an integer of more digits than Python converts
        raise ProfileError(path, 0, "syntax", "a number too long to read") from None

    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ProfileError(path, _line_of(text, "name"), "name", "required string")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ProfileError(path, _line_of(text, "description"), "description", "must be a string")
    assignments: dict[str, Assignment] = {}
    parent = data.get("inherit")
    if parent is not None:
        line = _line_of(text, "inherit")
        if not isinstance(parent, str) or not parent:
            raise ProfileError(path, line, "inherit", "must be a profile name or file")
        chain = _seen + (str(path.resolve()), name)
        parent_key = str(Path(parent).resolve()) if parent not in BUILTIN else parent
        if parent in chain or parent_key in chain:
            raise ProfileError(path, line, "inherit", f"{parent} inherits back to this profile (a cycle)")
        if len(chain) > 2 * MAX_INHERIT:
            raise ProfileError(path, line, "inherit", f"more than {MAX_INHERIT} profiles deep")
        if parent not in BUILTIN and not (Path(parent).suffix == ".toml" or Path(parent).exists()):
            raise ProfileError(path, line, "inherit", f"{parent!r} is neither a built-in profile "
                                                      f"({', '.join(BUILTIN)}) nor a profile file")
        assignments.update(load(parent, chain).assignments)
    unknown = set(data) - {"name", "description", "inherit", "decisions"}
    if unknown:
        key = sorted(unknown)[0]
        raise ProfileError(path, _line_of(text, key), key, "unknown top-level key")
    decisions = data.get("decisions", {})
    if not isinstance(decisions, dict):
        raise ProfileError(path, _line_of(text, "decisions"), "decisions", "must be a table")
    for key, entry in decisions.items():
        line = _line_of(text, f"[decisions.{key}]") or _line_of(text, key)
        field = f"decisions.{key}"
        dp = DECISIONS.get(key)
        if dp is None:
            raise ProfileError(path, line, field, "no such decision point")
        if not isinstance(entry, dict):
            raise ProfileError(path, line, field, "must be a table")
        value, prov, source = entry.get("value"), entry.get("provenance"), entry.get("source", "")
        extra = set(entry) - {"value", "provenance", "source"}
        if extra:
            raise ProfileError(path, line, f"{field}.{sorted(extra)[0]}", "unknown key")
        if not isinstance(value, str) or value not in dp.choices:
            raise ProfileError(path, _line_of(text, "value", line), f"{field}.value",
                               f"{_shown(value)} is not one of {sorted(dp.choices)}")
        if not isinstance(prov, str) or prov not in PROVENANCES:
            raise ProfileError(path, _line_of(text, "provenance", line), f"{field}.provenance",
                               f"{_shown(prov)} is not one of {list(PROVENANCES)}")
        if not isinstance(source, str) or not source.strip():
            raise ProfileError(path, line, f"{field}.source", "required: where the answer comes from")
        assignments[key] = Assignment(value, prov, source)
    missing = [k for k in DECISIONS if k not in assignments]
    if missing:
        raise ProfileError(path, 0, f"decisions.{missing[0]}",
                           f"not answered ({len(missing)} decision points missing)")
    return Profile(name, data.get("description", ""), assignments, str(path))


_cache: dict[str, Profile] = {}


def load(name_or_path, _seen=()) -> Profile:
    """A built-in profile by name, or a profile file by path."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    key = str(name_or_path)
    if key in BUILTIN:
        if key not in _cache:
            _cache[key] = load_file(BUILTIN_DIR / f"{key}.toml", _seen)
        return _cache[key]
    path = Path(key)
    if path.suffix == ".toml" or path.exists():
        return load_file(path, _seen)
    raise ProfileError(key, 0, "profile", f"unknown profile; built-in profiles are {', '.join(BUILTIN)}")
