"""Traceability: the WFP redirect IOCTL pages' statements, and the conformance cases that check them.

    wfp-harness report [--format text|markdown|json|html] [--junitxml FILE] [--file TOML] [--profile NAME]
                       [--statements]

The statements live in harness/conformance/traceability.toml (shipped with
the suite). This module loads and validates that file, collects the suite's
real test ids with an in-process pytest collection, and computes coverage:
page items with no statement, statements whose named tests do not exist,
untestable statements with their reasons, and conformance tests mapped to
no statement (informational). Given a JUnit file of a conformance run it
also shows whether each statement passed (every one of its tests passed).

Exit status of `report`: 0 when every page item has a statement and every
statement names only tests that exist (or says why it is untestable), 1
otherwise, 2 when the file (or the JUnit file) is malformed or the suite
cannot be collected.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.input_error import InputError
from harness.wording import plural

PAGES = ("records", "context", "set")
PAGE_PREFIX = {"records": "REC", "context": "CTX", "set": "SET"}
PAGE_TITLES = {"records": "SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS",
               "context": "SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT",
               "set": "SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS"}
SECTIONS = ("description", "parameter", "return", "error", "remarks")
SECTION_TAG = {"description": "DESC", "parameter": "PARAM", "return": "RET", "error": "ERR", "remarks": "REM"}
FIELDS = ("id", "page", "section", "item", "statement", "decision", "contradiction", "tests", "untestable", "note")
REQUIRED = ("id", "page", "section", "item", "statement")

# What each page states, item by item (MicrosoftDocs/win32 desktop-src/WinSock/, docs/facts.md §3.1-3.3):
# the file must hold at least one statement for every item of every page.
_PARAMETERS = ("s", "dwIoControlCode", "lpvInBuffer", "cbInBuffer", "lpvOutBuffer", "cbOutBuffer",
               "lpcbBytesReturned", "lpOverlapped", "lpCompletionRoutine", "lpThreadId", "lpErrno")
_QUERY_ERRORS = ("WSA_IO_PENDING", "WSA_OPERATION_ABORTED", "WSAEFAULT", "WSAEINPROGRESS", "WSAEINTR", "WSAEINVAL",
                 "WSAENETDOWN", "WSAENOPROTOOPT", "WSAENOTCONN", "WSAENOTSOCK", "WSAEOPNOTSUPP")
_COMMON_REMARKS = ("min-os", "redirect-feature", "multi-proxy", "tracking", "which-socket", "context-semantics",
                   "forward-set", "opaque")
PAGE_ITEMS = {
    "records": {"description": ("purpose", "wspioctl"), "parameter": _PARAMETERS, "return": ("success", "failure"),
                "error": ("ERROR_INSUFFICIENT_BUFFER",) + _QUERY_ERRORS,
                "remarks": _COMMON_REMARKS + ("udp-recvmsg", "udp-sendmsg", "udp-first-packet", "size-probe",
                                              "insufficient-buffer")},
    "context": {"description": ("purpose", "wspioctl"), "parameter": _PARAMETERS, "return": ("success", "failure"),
                "error": _QUERY_ERRORS,          # the context page's table omits ERROR_INSUFFICIENT_BUFFER (C2)
                "remarks": _COMMON_REMARKS + ("size-probe", "insufficient-buffer")},
    "set": {"description": ("purpose", "wspioctl"), "parameter": _PARAMETERS, "return": ("success", "failure"),
            "error": ("WSA_IO_PENDING", "WSA_OPERATION_ABORTED", "WSAEACCES", "WSAEFAULT", "WSAEINPROGRESS",
                      "WSAEINTR", "WSAEINVAL", "WSAENETDOWN", "WSAENOTSOCK", "WSAEOPNOTSUPP"),
            "remarks": _COMMON_REMARKS},
}

_ID = re.compile(r"^(REC|CTX|SET)-(DESC|PARAM|RET|ERR|REM)-[A-Za-z0-9_]+(-[A-Za-z0-9_]+)*$")
_NODE = re.compile(r"^(?:[A-Za-z0-9_]+/)*test_[A-Za-z0-9_]*\.py(?:::[A-Za-z_][A-Za-z0-9_]*)+(?:\[.+\])?$")
_CONTRADICTION = re.compile(r"^C([1-9]|1[0-7])$")


def default_path() -> Path:
    """The traceability file shipped with the conformance suite."""
    return conformance_dir() / "traceability.toml"


def conformance_dir() -> Path:
    import harness.conformance
    return Path(harness.conformance.__file__).resolve().parent


class TraceabilityError(InputError):
    """A malformed traceability file: names the file, the entry and the field."""

    def __init__(self, path, entry, field_name, message):
        super().__init__(path, 0, f"{entry}: {field_name}" if entry else field_name, message)
        self.entry, self.field = entry, field_name


@dataclass(frozen=True)
class Statement:
    id: str
    page: str
    section: str
    item: str
    statement: str
    decision: tuple = ()
    contradiction: tuple = ()
    tests: tuple = ()
    untestable: str = ""
    note: str = ""


# -- loading -----------------------------------------------------------------------------------------

def _known_decisions():
    try:
        from sim.decision_points import DECISIONS
    except ImportError:             # the suite without the simulator: names cannot be checked
        return None
    return set(DECISIONS)


def _string(path, entry, key, value, allow_empty=False) -> str:
    if not isinstance(value, str):
        raise TraceabilityError(path, entry, key, f"must be a string, not {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise TraceabilityError(path, entry, key, "must not be empty")
    return value


def _strings(path, entry, key, value) -> tuple:
    if not isinstance(value, list):
        raise TraceabilityError(path, entry, key, f"must be a list of strings, not {type(value).__name__}")
    if not value:
        raise TraceabilityError(path, entry, key, "must not be an empty list")
    out = []
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v.strip():
            raise TraceabilityError(path, entry, f"{key}[{i}]", f"must be a non-empty string, not {v!r}")
        if v in out:
            raise TraceabilityError(path, entry, f"{key}[{i}]", f"{v!r} is listed twice")
        out.append(v)
    return tuple(out)


def parse(data: dict, path="traceability.toml") -> list[Statement]:
    """Validate parsed TOML; raises TraceabilityError naming the file, the entry id and the field."""
    unknown_top = sorted(set(data) - {"statement"})
    if unknown_top:
        raise TraceabilityError(path, None, unknown_top[0], "unknown top-level key (only [[statement]] tables)")
    raw = data.get("statement")
    if not isinstance(raw, list) or not raw:
        raise TraceabilityError(path, None, "statement", "no [[statement]] tables")
    decisions = _known_decisions()
    seen: dict[str, int] = {}
    out = []
    for index, entry in enumerate(raw, 1):
        label = f"statement #{index}"
        if not isinstance(entry, dict):
            raise TraceabilityError(path, label, "statement", "must be a table")
        if isinstance(entry.get("id"), str) and entry["id"].strip():
            label = entry["id"]
        unknown = [k for k in entry if k not in FIELDS]
        if unknown:
            raise TraceabilityError(path, label, unknown[0],
                                    f"unknown field (known: {', '.join(FIELDS)})")
        for key in REQUIRED:
            if key not in entry:
                raise TraceabilityError(path, label, key, "missing")
            _string(path, label, key, entry[key])
        sid = entry["id"]
        if sid in seen:
            raise TraceabilityError(path, sid, "id", f"duplicate id (also statement #{seen[sid]})")
        seen[sid] = index
        page, section, item = entry["page"], entry["section"], entry["item"]
        if page not in PAGES:
            raise TraceabilityError(path, sid, "page", f"unknown page {page!r}; choose one of {', '.join(PAGES)}")
        if section not in SECTIONS:
            raise TraceabilityError(path, sid, "section",
                                    f"unknown section {section!r}; choose one of {', '.join(SECTIONS)}")
        match = _ID.match(sid)
        want = f"{PAGE_PREFIX[page]}-{SECTION_TAG[section]}-"
        if not match or not sid.startswith(want):
            raise TraceabilityError(path, sid, "id", f"must look like {want}<WHAT> (page {page}, section {section})")
        if item not in PAGE_ITEMS[page][section]:
            raise TraceabilityError(path, sid, "item", f"{item!r} is not a {section} item of the {page} page "
                                    f"(known: {', '.join(PAGE_ITEMS[page][section])})")
        kwargs = {}
        for key in ("decision", "contradiction", "tests"):
            if key in entry:
                kwargs[key] = _strings(path, sid, key, entry[key])
        for key in ("untestable", "note"):
            if key in entry:
                kwargs[key] = _string(path, sid, key, entry[key])
        if ("tests" in kwargs) == ("untestable" in kwargs):
            raise TraceabilityError(path, sid, "tests", "give either tests or untestable (the reason), not "
                                    + ("both" if "tests" in kwargs else "neither"))
        for i, node in enumerate(kwargs.get("tests", ())):
            if not _NODE.match(node):
                raise TraceabilityError(path, sid, f"tests[{i}]", f"{node!r} is not a node id relative to "
                                        "harness/conformance (test_file.py::[Class::]test_name[params])")
        for i, name in enumerate(kwargs.get("decision", ())):
            if decisions is not None and name not in decisions:
                raise TraceabilityError(path, sid, f"decision[{i}]", f"no decision point {name!r} in sim/decision_points.py")
        for i, name in enumerate(kwargs.get("contradiction", ())):
            if not _CONTRADICTION.match(name):
                raise TraceabilityError(path, sid, f"contradiction[{i}]", f"{name!r} is not one of C1-C17")
        out.append(Statement(sid, page, section, item, entry["statement"], **kwargs))
    return out


def load(path=None) -> list[Statement]:
    path = Path(path) if path else default_path()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise TraceabilityError(path, None, "file", exc.strerror or str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise TraceabilityError(path, None, "toml", str(exc)) from None
    return parse(data, path)


# -- the suite's real test ids ---------------------------------------------------------------------

class CollectionError(RuntimeError):
    pass


class _Collector:
    def __init__(self, root: Path):
        self.root = root
        self.ids: list[str] = []
        self.errors: list[str] = []

    def pytest_collectreport(self, report):
        if report.failed:
            self.errors.append(f"{report.nodeid}: {str(report.longrepr).strip().splitlines()[-1]}")

    def pytest_collection_finish(self, session):
        for item in session.items:
            path = Path(str(item.path)).resolve()
            try:
                rel = path.relative_to(self.root).as_posix()
            except ValueError:
                continue                 # not a conformance case (a plugin's own item)
            rest = item.nodeid.split("::", 1)[1] if "::" in item.nodeid else item.name
            self.ids.append(f"{rel}::{rest}")


def _plugin_autoloaded() -> bool:
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    from importlib.metadata import entry_points
    return any(ep.value.split(":")[0] == "harness.pytest_plugin" for ep in entry_points(group="pytest11"))


def collect_test_ids(root: Path = None) -> list[str]:
    """Every test id of the conformance suite, relative to its package directory, from pytest collection.

    Runs in-process and works whether the suite is an installed package or a checkout.
    """
    import pytest
    root = Path(root).resolve() if root else conformance_dir()
    collector = _Collector(root)
    args = ["--collect-only", "-q", "-p", "no:cacheprovider", "--rootdir", str(root), str(root)]
    if not _plugin_autoloaded():
        args[0:0] = ["-p", "harness.pytest_plugin"]
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        code = pytest.main(args, plugins=[collector])
    if collector.errors or int(code) not in (0, 5):
        detail = "; ".join(collector.errors) or sink.getvalue().strip().splitlines()[-1:]
        raise CollectionError(f"collecting {root} failed (pytest exit {int(code)}): {detail}")
    return collector.ids


def matches(ref: str, test_id: str) -> bool:
    """A reference names a test exactly, or without its [parameters] all of its parametrizations."""
    return test_id == ref or (test_id.startswith(ref + "[") and "[" not in ref)


# -- JUnit results --------------------------------------------------------------------------------

@dataclass
class JUnitRun:
    path: str
    outcomes: dict            # test id -> passed | failed | skipped
    properties: dict


def read_junit(path, known_files) -> JUnitRun:
    """Outcomes of a conformance run's JUnit file, keyed by conformance test id (harness.run_report reads it)."""
    from harness.run_report import JUnitError, read_run
    try:
        run = read_run(path)
    except JUnitError as exc:
        raise TraceabilityError(path, None, "junitxml", exc.message) from None
    known = set(known_files)
    simple = {"passed": "passed", "failed": "failed", "error": "failed", "skipped": "skipped", "xfailed": "skipped"}
    outcomes = {cid: simple[c.outcome] for cid, c in run.cases.items() if cid.split("::", 1)[0] in known}
    return JUnitRun(str(path), outcomes, run.properties)


# -- coverage -----------------------------------------------------------------------------------------

@dataclass
class Coverage:
    statements: list
    collected: list
    resolved: dict = field(default_factory=dict)        # statement id -> [test ids]
    dangling: list = field(default_factory=list)        # (statement id, reference naming no test)
    missing_items: list = field(default_factory=list)   # (page, section, item) with no statement
    unmapped: list = field(default_factory=list)        # collected tests no statement names
    states: dict = field(default_factory=dict)          # statement id -> state (with JUnit)
    junit: JUnitRun = None

    @property
    def complete(self) -> bool:
        return not self.dangling and not self.missing_items

    def uncovered(self):
        """Statements with tests that resolve to no existing test at all."""
        return [s for s in self.statements if s.tests and not self.resolved.get(s.id)]


def compute(statements, collected, junit: JUnitRun = None) -> Coverage:
    cov = Coverage(statements, sorted(collected), junit=junit)
    used = set()
    for s in statements:
        ids = []
        for ref in s.tests:
            found = [t for t in cov.collected if matches(ref, t)]
            if not found:
                cov.dangling.append((s.id, ref))
            ids += [t for t in found if t not in ids]
        cov.resolved[s.id] = ids
        used.update(ids)
    present = {(s.page, s.section, s.item) for s in statements}
    for page in PAGES:
        for section in SECTIONS:
            for item in PAGE_ITEMS[page][section]:
                if (page, section, item) not in present:
                    cov.missing_items.append((page, section, item))
    cov.unmapped = [t for t in cov.collected if t not in used]
    if junit is not None:
        for s in statements:
            cov.states[s.id] = _state(s, cov.resolved[s.id], junit.outcomes)
    return cov


def _state(s: Statement, ids, outcomes) -> str:
    if s.untestable:
        return "untestable"
    got = [outcomes.get(t) for t in ids]
    if not ids or all(o is None for o in got):
        return "not run"
    if "failed" in got:
        return "failed"
    if all(o == "passed" for o in got):
        return "passed"
    return "skipped" if None not in got else "not run"


# -- output -----------------------------------------------------------------------------------------------

def _profile(name):
    if not name:
        return None
    try:
        from sim.profiles import load as load_profile
        return load_profile(name)
    except Exception:                  # noqa: BLE001 - the report still works without decision values
        return None


def _decisions(s: Statement, profile) -> list:
    out = []
    for name in s.decision:
        value = profile.value(name) if profile is not None and name in profile.assignments else None
        out.append({"name": name, "value": value})
    return out


def _table(cov: Coverage):
    rows = []
    for page in PAGES:
        for section in SECTIONS:
            group = [s for s in cov.statements if s.page == page and s.section == section]
            if not group:
                continue
            dangling_ids = {sid for sid, _ in cov.dangling}
            row = {"page": page, "section": section, "statements": len(group),
                   "covered": sum(1 for s in group if s.tests and s.id not in dangling_ids),
                   "untestable": sum(1 for s in group if s.untestable),
                   "missing_tests": sum(1 for s in group if s.id in dangling_ids)}
            if cov.junit is not None:
                for state in ("passed", "failed", "skipped", "not run"):
                    row[state] = sum(1 for s in group if cov.states[s.id] == state)
            rows.append(row)
    return rows


def as_json(cov: Coverage, profile=None, path="") -> dict:
    return {
        "file": str(path), "complete": cov.complete,
        "profile": profile.name if profile is not None else None,
        "totals": {"statements": len(cov.statements),
                   "covered": sum(r["covered"] for r in _table(cov)),
                   "untestable": sum(1 for s in cov.statements if s.untestable),
                   "missing_tests": len({sid for sid, _ in cov.dangling}),
                   "missing_items": len(cov.missing_items), "unmapped_tests": len(cov.unmapped)},
        "by_section": _table(cov),
        "statements": [dict(asdict(s), decision=_decisions(s, profile), resolved_tests=cov.resolved[s.id],
                            state=cov.states.get(s.id)) for s in cov.statements],
        "dangling": [{"statement": sid, "test": ref} for sid, ref in cov.dangling],
        "missing_items": [{"page": p, "section": sec, "item": it} for p, sec, it in cov.missing_items],
        "unmapped_tests": cov.unmapped,
        "junit": None if cov.junit is None else {"file": cov.junit.path, "properties": cov.junit.properties},
    }


def _cols(cov):
    cols = ["statements", "covered", "untestable", "missing_tests"]
    return cols + (["passed", "failed", "skipped", "not run"] if cov.junit is not None else [])


def as_text(cov: Coverage, profile=None, path="", all_statements=False) -> str:
    lines = [f"Traceability of the WFP redirect IOCTL pages: {len(cov.statements)} statements ({path})"]
    if profile is not None:
        lines.append(f"  decision values from profile {profile.name}")
    cols = _cols(cov)
    heads = [c.replace("_", " ") for c in cols]
    lines.append(f"  {'page':<9}{'section':<13}" + "".join(f"{h:>{len(h) + 2}}" for h in heads))
    for row in _table(cov):
        lines.append(f"  {row['page']:<9}{row['section']:<13}"
                     + "".join(f"{row[c]:>{len(h) + 2}}" for c, h in zip(cols, heads)))
    untestable = [s for s in cov.statements if s.untestable]
    if untestable:
        lines.append("Untestable statements:")
        lines += [f"  {s.id}: {s.untestable}" for s in untestable]
    if cov.missing_items:
        lines.append("Page items with no statement:")
        lines += [f"  {p} / {sec} / {it}" for p, sec, it in cov.missing_items]
    if cov.dangling:
        lines.append("Named tests that do not exist:")
        lines += [f"  {sid}: {ref}" for sid, ref in cov.dangling]
    if cov.junit is not None:
        lines.append(f"Results from {cov.junit.path} (target {cov.junit.properties.get('wfp.target', '?')}, "
                     f"profile {cov.junit.properties.get('wfp.profile', '?')}):")
        for state in ("failed", "skipped", "not run"):
            for s in cov.statements:
                if cov.states[s.id] == state:
                    lines.append(f"  {state.upper():<8} {s.id}: {s.statement}")
        passed = sum(1 for v in cov.states.values() if v == "passed")
        lines.append(f"  {passed} of {plural(len(cov.statements) - len(untestable), 'testable statement')} passed")
    if all_statements:
        lines.append("Statements:")
        for s in cov.statements:
            state = f" [{cov.states[s.id]}]" if cov.junit is not None else ""
            lines.append(f"  {s.id}{state}: {s.statement}")
            for d in _decisions(s, profile):
                lines.append(f"      decision {d['name']}" + (f" = {d['value']}" if d["value"] else ""))
            for t in s.tests:
                lines.append(f"      test {t}")
    lines.append(f"Conformance tests mapped to no statement (informational): {len(cov.unmapped)}")
    lines.append("Verdict: " + ("complete" if cov.complete else "INCOMPLETE"))
    return "\n".join(lines)


def as_markdown(cov: Coverage, profile=None, path="") -> str:
    cols = _cols(cov)
    out = ["# Traceability of the WFP redirect IOCTL pages", "",
           f"{len(cov.statements)} statements from `{path}`; verdict: "
           f"**{'complete' if cov.complete else 'INCOMPLETE'}**.", "",
           "| page | section | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
           "|---|---|" + "---:|" * len(cols)]
    for row in _table(cov):
        out.append(f"| {row['page']} | {row['section']} | " + " | ".join(str(row[c]) for c in cols) + " |")
    for page in PAGES:
        out += ["", f"## {PAGE_TITLES[page]}", "",
                "| id | statement | decision | tests" + (" | state" if cov.junit is not None else "") + " |",
                "|---|---|---|---" + ("|---" if cov.junit is not None else "") + "|"]
        for s in (x for x in cov.statements if x.page == page):
            decisions = ", ".join(f"`{d['name']}`" + (f" = `{d['value']}`" if d["value"] else "")
                                  for d in _decisions(s, profile))
            tests = "<br>".join(f"`{t}`" for t in s.tests) if s.tests else f"untestable: {s.untestable}"
            state = f" | {cov.states[s.id]}" if cov.junit is not None else ""
            out.append(f"| {s.id} | {s.statement.replace('|', '/')} | {decisions} | {tests}{state} |")
    if cov.dangling or cov.missing_items:
        out += ["", "## Problems", ""]
        out += [f"- `{sid}` names `{ref}`, which does not exist" for sid, ref in cov.dangling]
        out += [f"- no statement for {p} / {sec} / {it}" for p, sec, it in cov.missing_items]
    out += ["", f"{len(cov.unmapped)} conformance tests are mapped to no statement (informational)."]
    return "\n".join(out)


# -- the command ----------------------------------------------------------------------------------------

def cmd_report(args) -> int:
    path = Path(args.file) if args.file else default_path()
    try:
        statements = load(path)
    except TraceabilityError as exc:
        print(f"wfp-harness report: {exc}", file=sys.stderr)
        return 2
    try:
        collected = collect_test_ids()
    except CollectionError as exc:
        print(f"wfp-harness report: {exc}", file=sys.stderr)
        return 2
    if args.format == "html" and not args.junitxml:
        print("wfp-harness report: --format html shows a conformance run: give its JUnit file with --junitxml FILE",
              file=sys.stderr)
        return 2
    junit = None
    if args.junitxml:
        try:
            junit = read_junit(args.junitxml, {t.split("::", 1)[0] for t in collected})
        except TraceabilityError as exc:
            print(f"wfp-harness report: {exc}", file=sys.stderr)
            return 2
    if args.profile:
        from sim.profiles import ProfileError, load as load_profile
        try:
            profile = load_profile(args.profile)
        except ProfileError as exc:
            print(f"wfp-harness report: --profile: {exc}", file=sys.stderr)
            return 2
    else:
        profile = _profile((junit.properties.get("wfp.profile") if junit else None) or "documented")
    cov = compute(statements, collected, junit)
    if args.format == "html":
        from harness.conformance.deviations import DeviationError, load_target
        from harness.run_report import read_run, to_html
        try:
            deviations = load_target(junit.properties.get("wfp.target", ""))
        except DeviationError as exc:
            print(f"wfp-harness report: {exc}", file=sys.stderr)
            return 2
        print(to_html(read_run(args.junitxml), statements, profile, deviations), end="")
    elif args.format == "json":
        print(json.dumps(as_json(cov, profile, path), indent=2))
    elif args.format == "markdown":
        print(as_markdown(cov, profile, path))
    else:
        print(as_text(cov, profile, path, all_statements=args.statements))
    return 0 if cov.complete else 1


def register(subparsers) -> None:
    """Add `report` to the wfp-harness command (harness.cli calls this)."""
    p = subparsers.add_parser("report", help="show which documented statement of the WFP IOCTL pages each "
                                             "conformance case checks, and whether it passed in a run")
    p.add_argument("--format", choices=("text", "markdown", "json", "html"), default="text",
                   help="text (default), markdown, json, or html (a self-contained page of a conformance run: "
                        "needs --junitxml)")
    p.add_argument("--junitxml", help="JUnit XML of a conformance run: show whether each statement passed")
    p.add_argument("--file", help="traceability file (default: the one shipped with the suite)")
    p.add_argument("--profile", help="profile whose decision values to show (default: the JUnit run's, "
                                     "else documented)")
    p.add_argument("--statements", action="store_true", help="text format: list every statement")
    p.set_defaults(fn=cmd_report)


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m harness.traceability")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *(sys.argv[1:] if argv is None else argv)])
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
