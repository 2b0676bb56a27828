"""A conformance run's report for people: one self-contained HTML page built from the run's JUnit XML.

    run = read_run("reports/conformance-sim-documented.xml")
    page = to_html(run, statements=traceability.load(), profile=profile, deviations=load_target("wine"))

The page reads top down: the verdict and the totals; each failure with the
documented statement it checks (harness/conformance/traceability.toml), what
was expected and what happened (from the JUnit failure message), and the
decision points involved with the active profile's answer and provenance;
then coverage per documented statement; skips grouped by reason; known
deviations (xfail) with their citations. No external assets or scripts, and
whatever bytes a test printed end up as escaped text: invalid UTF-8 is
replaced, control characters are dropped.
"""
from __future__ import annotations

import collections
import html
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from harness.input_error import InputError
from harness.wording import plural

OUTCOMES = ("passed", "failed", "error", "xfailed", "skipped")

# XML 1.0 allows tab, newline, carriage return and U+0020 up; everything else below is dropped,
# raw or as a character reference (expat refuses both).
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_XML_BAD_REF = re.compile(r"&#(x[0-9a-fA-F]+|[0-9]+);")
# What a page shows: no C0/C1 controls (tab and newline stay), no lone surrogates.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class JUnitError(InputError):
    """A JUnit file that cannot be read (file, line, field)."""


@dataclass
class Case:
    id: str                    # test_file.py::[Class::]name[params], as traceability.toml names cases
    outcome: str               # one of OUTCOMES
    message: str = ""          # the failure's or skip's message
    detail: str = ""           # the failure's text (traceback)
    decisions: tuple = ()      # decision points the case consulted (testcase property wfp.decision)


@dataclass
class Run:
    path: str
    cases: dict = field(default_factory=dict)        # id -> Case
    properties: dict = field(default_factory=dict)   # wfp.target, wfp.profile, wfp.os_build, wfp.selection ...
    seconds: float | None = None

    def totals(self) -> collections.Counter:
        return collections.Counter(c.outcome for c in self.cases.values())

    @property
    def verdict(self) -> str:
        t = self.totals()
        if t["failed"] or t["error"]:
            return "FAIL"
        return "PASS" if t["passed"] else "NO TESTS RAN"


def clean(text) -> str:
    """Text as a page shows it: control characters dropped, lone surrogates replaced."""
    return _SURROGATE.sub("\ufffd", _CONTROL.sub("", str(text)))


def _xml_text(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")

    def ref(m):
        code = int(m.group(1)[1:], 16) if m.group(1)[0] in "xX" else int(m.group(1))
        ok = code in (9, 10, 13) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF
        return m.group(0) if ok else ""

    text = _XML_BAD_REF.sub(ref, _XML_ILLEGAL.sub("", text))
    return re.sub(r"^<\?xml[^>]*\?>", "", text.lstrip("\ufeff"))      # the bytes are decoded already


def case_id(classname: str, name: str) -> str:
    """JUnit (classname, name) -> test_file.py::[Class::]name (the last test_ module is the file)."""
    parts = classname.split(".") if classname else []
    at = max((i for i, p in enumerate(parts) if p.startswith("test_")), default=None)
    if at is None:
        return "::".join([*parts, name]) if parts else name
    return "::".join([parts[at] + ".py", *parts[at + 1:], name])


_RANK = {o: i for i, o in enumerate(("passed", "skipped", "xfailed", "failed", "error"))}


def read_run(path) -> Run:
    """A conformance run from its JUnit XML, whatever bytes its tests printed."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise JUnitError(path, 0, "junitxml", f"cannot read: {exc.strerror or exc}") from None
    try:
        root = ET.fromstring(_xml_text(raw))
    except ET.ParseError as exc:
        raise JUnitError(path, exc.position[0], "junitxml", f"not JUnit XML: {exc}") from None
    run = Run(str(path))
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    if root.tag not in ("testsuite", "testsuites"):
        raise JUnitError(path, 1, "junitxml", f"not JUnit XML: the root element is <{root.tag}>")
    for suite in suites:
        if suite.get("time"):
            try:
                run.seconds = (run.seconds or 0.0) + float(suite.get("time"))
            except ValueError:
                pass
        for prop in suite.findall("properties/property"):
            run.properties[prop.get("name")] = prop.get("value", "")
        for tc in suite.iter("testcase"):
            case = _case(tc)
            old = run.cases.get(case.id)
            if old is None or _RANK[case.outcome] > _RANK[old.outcome]:    # a teardown error after a pass
                run.cases[case.id] = case
    return run


def _case(tc) -> Case:
    cid = case_id(tc.get("classname") or "", tc.get("name") or "")
    decisions = tuple(p.get("value", "") for p in tc.findall("properties/property") if p.get("name") == "wfp.decision")
    for tag, outcome in (("error", "error"), ("failure", "failed"), ("skipped", "skipped")):
        el = tc.find(tag)
        if el is None:
            continue
        if tag == "skipped" and el.get("type") == "pytest.xfail":
            outcome = "xfailed"
        message = el.get("message", "")
        if tag == "skipped":
            message = message.removeprefix("Skipped: ")
        return Case(cid, outcome, message, el.text or "", decisions)
    return Case(cid, "passed", decisions=decisions)


# -- what a failure expected ---------------------------------------------------------------------

_ASSERT_EQ = re.compile(r"^(?:AssertionError: )?assert (.+?) == (.+)$")


def expected_actual(message: str):
    """(actual, expected) from pytest's `assert actual == expected` message, else None.

    The suite writes its assertions as `assert got == want`, so the left side is what the
    target did and the right side what the statement or profile asked for.
    """
    first = (message.strip().splitlines() or [""])[0]
    m = _ASSERT_EQ.match(first)
    if not m:
        return None
    return _named(m.group(1)), _named(m.group(2))


def _named(value: str) -> str:
    """10045 -> 10045 (WSAEOPNOTSUPP) where the number is a known error code."""
    try:
        number = int(value, 0)
    except ValueError:
        return value
    from harness.winsock import constants as C
    name = C.error_name(number)
    return f"{value} ({name})" if name and name != str(number) else value


# -- the page -----------------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1100px;padding:16px 24px;color:#1b1b1b}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccc}
#verdict{font-size:28px;font-weight:700;margin:4px 0 6px;padding:6px 12px;display:inline-block;border-radius:4px}
.PASS{background:#dff3e0;color:#14532d}.FAIL{background:#fde2e1;color:#7f1d1d}.NONE{background:#eee;color:#333}
.totals{font-size:16px;margin:6px 0}.meta{color:#555;font-size:13px}
table{border-collapse:collapse;width:100%;font-size:13px}td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4}.failure{border:1px solid #e5b4b2;border-radius:4px;padding:8px 12px;margin:10px 0}
code,pre{font:12px/1.4 ui-monospace,Consolas,monospace}pre{white-space:pre-wrap;word-break:break-word;background:#f7f7f7;padding:6px}
.s-passed{color:#14532d}.s-failed,.s-error{color:#7f1d1d;font-weight:700}.s-skipped,.s-not-run{color:#6b5900}
"""


def _e(text) -> str:
    return html.escape(clean(text), quote=True)


def totals_line(run: Run) -> str:
    t = run.totals()
    parts = [f"{t['passed']} passed", f"{t['failed']} failed", plural(t["error"], "error"), f"{t['skipped']} skipped",
             plural(t["xfailed"], "known deviation") + " (xfail)"]
    return f"{plural(len(run.cases), 'case')}: " + ", ".join(parts)


def _statements_of(statements, case_id_: str) -> list:
    from harness.traceability import matches
    return [s for s in statements if any(matches(ref, case_id_) for ref in s.tests)]


def _decision_rows(names, profile) -> str:
    if not names:
        return ""
    try:
        from sim.decision_points import DECISIONS
    except ImportError:                   # the suite without the simulator: names only
        DECISIONS = {}
    rows = []
    for name in names:
        a = profile.assignments.get(name) if profile is not None else None
        dp = DECISIONS.get(name)
        means = dp.choices.get(a.value, "") if dp is not None and a is not None else ""
        rows.append("<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code> {}</td><td>{}</td><td>{}</td></tr>".format(
            _e(name), _e(dp.question if dp else ""), _e(a.value if a else "?"), _e(means),
            _e(a.provenance if a else "not in the profile"), _e(a.source if a else "")))
    return ("<table><tr><th>decision point</th><th>question</th><th>the profile's answer</th><th>provenance</th>"
            "<th>source</th></tr>" + "".join(rows) + "</table>")


def _failure(case: Case, statements, profile) -> str:
    out = [f'<div class="failure"><div><b class="s-{case.outcome}">{case.outcome.upper()}</b> '
           f"<code>{_e(case.id)}</code></div>"]
    owned = _statements_of(statements, case.id)
    for s in owned:
        out.append(f"<p>Statement <b>{_e(s.id)}</b>: {_e(s.statement)}</p>")
    if not owned:
        out.append("<p>No documented statement of the three IOCTL pages names this case.</p>")
    pair = expected_actual(case.message)
    if pair:
        out.append(f"<p>Expected <code>{_e(pair[1])}</code>, actual <code>{_e(pair[0])}</code></p>")
    else:
        out.append(f"<p>Message: <code>{_e((case.message.strip().splitlines() or [''])[0])}</code></p>")
    names = list(dict.fromkeys([*case.decisions, *(d for s in owned for d in s.decision)]))
    if names:
        out.append("<p>Decision points involved:</p>" + _decision_rows(names, profile))
    if case.detail.strip():
        out.append(f"<details><summary>traceback</summary><pre>{_e(case.detail)}</pre></details>")
    out.append("</div>")
    return "".join(out)


def _statement_state(s, run: Run) -> tuple:
    if s.untestable:
        return "untestable", []
    from harness.traceability import matches
    got = [c for c in run.cases.values() if any(matches(ref, c.id) for ref in s.tests)]
    outcomes = {c.outcome for c in got}
    for state in ("error", "failed", "xfailed"):
        if state in outcomes:
            return state, got
    if not got:
        return "not run", got
    if outcomes == {"passed"}:
        return "passed", got
    return "skipped" if "passed" not in outcomes else "partly skipped", got


def _coverage(run: Run, statements) -> str:
    from harness.traceability import PAGE_TITLES
    states = {s.id: _statement_state(s, run) for s in statements}
    summary = collections.Counter(state for state, _ in states.values())
    out = ["<h2>Coverage of the documented statements</h2>",
           "<p>" + _e(", ".join(f"{n} {k}" for k, n in sorted(summary.items()))) + f" (of {len(statements)})</p>"]
    for page, title in PAGE_TITLES.items():
        group = [s for s in statements if s.page == page]
        if not group:
            continue
        out.append(f"<h3>{_e(title)}</h3><table><tr><th>statement</th><th>what the page says</th><th>state</th>"
                   "<th>cases</th></tr>")
        for s in group:
            state, got = states[s.id]
            cases = (f"{len(got)} run" if got else "none run") if not s.untestable else _e(s.untestable)
            out.append(f"<tr><td><code>{_e(s.id)}</code></td><td>{_e(s.statement)}</td>"
                       f"<td class=\"s-{state.replace(' ', '-')}\">{_e(state)}</td><td>{cases}</td></tr>")
        out.append("</table>")
    return "".join(out)


def _skips(run: Run) -> str:
    by_reason = collections.defaultdict(list)
    for c in run.cases.values():
        if c.outcome == "skipped":
            by_reason[c.message.strip() or "no reason given"].append(c.id)
    if not by_reason:
        return ""
    out = ["<h2>Skipped, by reason</h2><table><tr><th>reason</th><th>cases</th></tr>"]
    for reason, ids in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        items = "".join(f"<li><code>{_e(i)}</code></li>" for i in ids)
        out.append(f"<tr><td>{_e(reason)}</td><td><details><summary>{plural(len(ids), 'case')}</summary>"
                   f"<ul>{items}</ul></details></td></tr>")
    out.append("</table>")
    return "".join(out)


def _deviations(run: Run, deviations) -> str:
    xfails = [c for c in run.cases.values() if c.outcome == "xfailed"]
    if deviations is None and not xfails:
        return ""
    out = ["<h2>Known deviations (xfail)</h2>"]
    if deviations is not None:
        out.append(f"<p>{plural(len(deviations), 'reviewed deviation')} of target "
                   f"{_e(run.properties.get('wfp.target', '?'))} ({_e(Path(deviations.path).name)}), run as "
                   "xfail(strict): a case that stops deviating fails until its entry goes.</p><table><tr>"
                   "<th>what differs</th><th>Windows</th><th>the target says so</th><th>cases in this run</th></tr>")
        covered = set()
        for dev in deviations:
            cases = [c for c in run.cases.values() if dev.matches(c.id)]
            covered.update(c.id for c in cases)
            seen = collections.Counter(c.outcome for c in cases)
            out.append(f"<tr><td>{_e(dev.differs)}</td><td>{_e(dev.windows)}</td><td>{_e(dev.kind)}: {_e(dev.wine)}"
                       f"</td><td>{_e(', '.join(f'{n} {k}' for k, n in sorted(seen.items())) or 'not run')}</td></tr>")
        out.append("</table>")
        xfails = [c for c in xfails if c.id not in covered]
    if xfails:
        out.append("<p>Expected failures with no entry in a deviation list:</p><ul>")
        out += [f"<li><code>{_e(c.id)}</code>: {_e(c.message)}</li>" for c in xfails]
        out.append("</ul>")
    return "".join(out)


def to_html(run: Run, statements=(), profile=None, deviations=None, title: str = "") -> str:
    """The whole page: verdict and totals first, then failures, coverage, skips, known deviations."""
    props = run.properties
    target, pname = props.get("wfp.target", "?"), props.get("wfp.profile", profile.name if profile else "?")
    verdict = run.verdict
    css_class = {"PASS": "PASS", "FAIL": "FAIL"}.get(verdict, "NONE")
    title = title or f"Conformance: target {target}, profile {pname}"
    meta = [f"OS build {props.get('wfp.os_build', '?')}", f"driver {props.get('wfp.driver_version', 'none')}",
            f"JUnit {run.path}"]
    if run.seconds is not None:
        meta.append(f"time {run.seconds:.2f} s")
    out = ["<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>",
           f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{_e(title)}</h1>",
           f'<div id="verdict" class="{css_class}">Verdict: {_e(verdict)}</div>',
           f'<p class="totals" id="totals">{_e(totals_line(run))}</p>']
    if props.get("wfp.selection"):
        out.append(f"<p><b>A selection, not the whole suite</b> (pytest arguments: "
                   f"<code>{_e(props['wfp.selection'])}</code>).</p>")
    out.append(f'<p class="meta">{_e("; ".join(meta))}</p>')
    failures = [c for c in run.cases.values() if c.outcome in ("failed", "error")]
    out.append("<h2>Failures</h2>")
    out += [_failure(c, statements, profile) for c in failures] or ["<p>None.</p>"]
    if statements:
        out.append(_coverage(run, statements))
    out.append(_skips(run))
    out.append(_deviations(run, deviations))
    out.append("</body></html>\n")
    return "".join(out)
