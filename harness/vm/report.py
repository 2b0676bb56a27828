"""Reports of a lab run: JUnit (per guest and merged), a Markdown and a
self-contained HTML matrix (guests x tests, with links to logs, dumps and
captures), ``results.json`` (machine-readable, what ``merge`` and ``gate``
read) and, for ``gate``, ``verdict.json``.

Every file is written through :func:`harness.vm.redact.write_scrubbed`, so
no registered secret reaches a report; all text in the HTML is escaped.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from harness.vm.redact import SecretRegistry, default_registry, write_scrubbed

__all__ = ["TestCase", "parse_junit", "write_reports", "compute_verdict", "load_results",
           "merge_runs", "shard_guests", "parse_shard"]

RESULTS = "results.json"
OUTCOMES = ("passed", "failed", "error", "skipped")


@dataclass(frozen=True)
class TestCase:
    id: str
    outcome: str
    time: float = 0.0
    message: str = ""


_XML_BAD = re.compile("[^\x09\x0A\x0D\x20-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


def xml_text(value: Any) -> str:
    """Text XML 1.0 can carry: control characters and lone surrogates a guest
    printed become U+FFFD, so JUnit and HTML stay well-formed."""
    return _XML_BAD.sub("\uFFFD", str(value if value is not None else ""))


def parse_junit(path: Path) -> list[TestCase]:
    """Test cases of a pytest JUnit file.  ``id`` is ``classname::name``.

    A guest can put any bytes in it: invalid UTF-8 and control characters
    are replaced before parsing; ValueError if it is still not XML."""
    data = Path(path).read_bytes()
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        text = xml_text(data.decode("utf-8", errors="replace"))
        text = re.sub(r"^<\?xml[^>]*\?>", "", text.lstrip("\ufeff"))
        try:
            root = ET.fromstring(text)
        except ET.ParseError as e:
            raise ValueError(f"{path}: not a JUnit XML file ({e})") from None
    out: list[TestCase] = []
    for tc in root.iter("testcase"):
        cls = tc.get("classname", "")
        # pytest prefixes the path from its rootdir (a venv on one guest,
        # site-packages on another): ids must match across guests and runs.
        i = cls.find("harness.conformance.")
        cid = f"{cls[i:] if i >= 0 else cls}::{tc.get('name', '')}"
        outcome, msg = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                msg = (el.get("message") or el.text or "")[:2000]
                break
        try:
            t = float(tc.get("time", "0") or 0)
        except ValueError:
            t = 0.0
        out.append(TestCase(xml_text(cid), outcome, t, xml_text(msg)))
    return out


def counts(tests: Iterable[dict]) -> dict[str, int]:
    c = {k: 0 for k in OUTCOMES}
    for t in tests:
        c[t["outcome"]] = c.get(t["outcome"], 0) + 1
    return c


# ---------------------------------------------------------------------------
# Sharding


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` -> (2, 3); 1-based."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 1/3") from None
    if not (n >= 1 and 1 <= i <= n):
        raise ValueError(f"--shard {text!r}: need 1 <= i <= n")
    return i, n


def shard_guests(names: Iterable[str], shard: tuple[int, int] | None) -> list[str]:
    """Deterministic split: sorted names, round robin.  Every guest lands in
    exactly one shard whatever the order of the config file."""
    ordered = sorted(set(names))
    if shard is None:
        return ordered
    i, n = shard
    return [g for k, g in enumerate(ordered) if k % n == i - 1]


# ---------------------------------------------------------------------------
# Verdict


def _failing(guest: dict) -> set[str]:
    return {t["id"] for t in guest.get("tests", []) if t["outcome"] in ("failed", "error")}


# The cases that need a connection the driver really redirected; they skip
# when the driver's policy discovery finds nothing to redirect.
REDIRECT_CASES = re.compile(r"(^|\.)test_wfp_redirect(\.|::)")


def _first_faults(g: dict) -> list[str]:
    """Every attempt before the last that failed, with its first cause."""
    return [f"attempt {a['attempt']}: {a.get('classification')} in {a.get('phase')}: {a.get('cause', '')}"
            for a in g.get("attempts", [])[:-1] if a.get("classification")]


def _short(ids: list[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def compute_verdict(results: dict, baseline: dict | None, *, driver: dict | None) -> dict:
    """The gate's decision with its evidence.

    ``pass`` only when every guest ran the suite to the end with tests, no
    test fails that passed (or was absent) in the baseline, every test that
    passed in the baseline passed again (skipped now: fail; not run now:
    inconclusive), no redirect case skipped with a driver installed, no
    bugcheck, and Driver Verifier was active for the driver on every guest.
    ``fail``: a product problem.  ``inconclusive``: the lab or the harness
    kept us from knowing (Verifier refused or inactive because of the
    template is the lab's), never a pass.  Faults retried away are listed in
    ``retried`` with their first cause."""
    base_guests = {g["guest"]: g for g in (baseline or {}).get("guests", [])}
    reasons: list[str] = []
    retried: list[str] = []
    new_failures: dict[str, list[str]] = {}
    guests = []
    product_bad = inconclusive = False
    for g in results["guests"]:
        fails = _failing(g)
        base = base_guests.get(g["guest"], {})
        known = _failing(base)
        new = sorted(fails - known)
        if new:
            new_failures[g["guest"]] = new
        now = {t["id"]: t["outcome"] for t in g.get("tests", [])}
        base_passed = sorted(t["id"] for t in base.get("tests", []) if t["outcome"] == "passed")
        skipped_now = [i for i in base_passed if now.get(i) == "skipped"]
        missing = [i for i in base_passed if i not in now]
        # (a guest without WFP, such as a stand-in's Wine, cannot redirect whatever is installed)
        redirect_skipped = sorted(i for i, o in now.items() if o == "skipped" and REDIRECT_CASES.search(i)) \
            if driver and g.get("wfp") is not False else []
        entry = {"guest": g["guest"], "os_build": g.get("os_build") or g.get("os_build_config"),
                 "status": g["status"], "classification": g.get("classification"),
                 "counts": g.get("counts", {}), "verifier_on": g.get("verifier_on"),
                 "bugcheck": bool(g.get("bugcheck")), "new_failures": new,
                 "skipped_now": skipped_now, "not_run_now": missing, "first_faults": _first_faults(g)}
        guests.append(entry)
        retried += [f"{g['guest']}: {x}" for x in entry["first_faults"]]
        if g["status"] in ("not_run", "interrupted") or g.get("classification") in ("infrastructure", "harness"):
            inconclusive = True
            reasons.append(f"{g['guest']}: {g['status']} ({g.get('classification')}): {g.get('cause', '')}")
            continue
        if g.get("bugcheck"):
            product_bad = True
            call = (g.get("in_flight") or {}).get("call")
            reasons.append(f"{g['guest']}: bugcheck" + (f" while the agent ran {call}" if call else ""))
        elif g.get("classification") in ("product", "guest") and g.get("reason") != "tests_failed":
            product_bad = True
            reasons.append(f"{g['guest']}: {g.get('cause') or g.get('reason')}")
        if new:
            product_bad = True
            reasons.append(f"{g['guest']}: {len(new)} new failure(s): {_short(new)}")
        if skipped_now:
            product_bad = True
            reasons.append(f"{g['guest']}: {len(skipped_now)} test(s) passed in the baseline and are skipped "
                           f"now: {_short(skipped_now)}")
        if redirect_skipped:
            product_bad = True
            reasons.append(f"{g['guest']}: {len(redirect_skipped)} redirect case(s) skipped with the driver "
                           f"installed (its policy discovery found nothing to redirect?): {_short(redirect_skipped)}")
        if missing:
            inconclusive = True
            reasons.append(f"{g['guest']}: {len(missing)} test(s) passed in the baseline and did not run now: "
                           f"{_short(missing)}")
        if not g.get("tests") and not g.get("bugcheck"):
            inconclusive = True
            reasons.append(f"{g['guest']}: no tests ran")
        if driver and g.get("verifier_on") is not True and not g.get("bugcheck"):
            inconclusive = True
            state = "unknown" if g.get("verifier_on") is None else "off"
            reasons.append(f"{g['guest']}: Driver Verifier {state} for the driver (infrastructure: "
                           f"{g.get('verifier_problem') or 'not checked'})")
    if not results["guests"]:
        inconclusive = True
        reasons.append("no guest ran")
    verdict = "fail" if product_bad else "inconclusive" if inconclusive else "pass"
    totals = {k: sum(g.get("counts", {}).get(k, 0) for g in results["guests"]) for k in OUTCOMES}
    if verdict != "fail" and not sum(totals.values()) and results["guests"]:
        verdict = "inconclusive"
    return {
        "verdict": verdict,
        "reasons": reasons,
        "retried": retried,
        "run_id": results.get("run_id"),
        "harness_version": results.get("harness_version"),
        "driver": {"sha256": (driver or {}).get("sha256"), "version": (driver or {}).get("version"),
                   "service": (driver or {}).get("service"), "files": (driver or {}).get("files", {})},
        "baseline": (baseline or {}).get("run_id"),
        "counts": totals,
        "new_failures": new_failures,
        "guests": guests,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }


# ---------------------------------------------------------------------------
# Writers


def _rel(path: str | None, base: Path, root: Path) -> str | None:
    """A link from a report in ``base`` to ``path`` (relative to the run dir ``root``)."""
    if not path:
        return None
    return os.path.relpath(root / path, base).replace(os.sep, "/")


def _merged_junit(results: dict, out: Path, roots: dict[str, Path]) -> str:
    x = xml_text
    suites = ET.Element("testsuites", name=x(f"wfp-lab {results.get('run_id', '')}"))
    for g in results["guests"]:
        tests = g.get("tests", [])
        c = counts(tests)
        s = ET.SubElement(suites, "testsuite", name=x(g["guest"]), tests=str(len(tests) + 1),
                          failures=str(c["failed"]), errors=str(c["error"]), skipped=str(c["skipped"]))
        props = ET.SubElement(s, "properties")
        for k in ("os_build", "status", "classification", "verifier_on", "clone"):
            ET.SubElement(props, "property", name=f"wfp.{k}", value=x(g.get(k)))
        for i, ff in enumerate(_first_faults(g)):
            ET.SubElement(props, "property", name=f"wfp.retried.{i + 1}", value=x(ff))
        for t in tests:
            cls, _, name = t["id"].partition("::")
            tc = ET.SubElement(s, "testcase", classname=x(f"{g['guest']}.{cls}"), name=x(name),
                               time=f"{t['time']:.3f}")
            if t["outcome"] != "passed":
                tag = {"failed": "failure"}.get(t["outcome"], t["outcome"])
                el = ET.SubElement(tc, tag, message=x(t.get("message", "")[:500]))
                el.text = x(t.get("message", ""))
        # One case per guest for the lifecycle itself, so a guest that never
        # got to run its tests still turns CI red.
        tc = ET.SubElement(s, "testcase", classname=x(f"{g['guest']}.lab"), name="lifecycle")
        if g["status"] != "passed" and not (g["status"] == "failed" and g.get("reason") == "tests_failed"):
            tag = "failure" if g.get("classification") in ("product", "guest") else "error"
            el = ET.SubElement(tc, tag, message=x(f"{g['status']} ({g.get('classification')}) "
                                                  f"in {g.get('phase')}: {g.get('cause', '')}"[:500]))
            el.text = x(g.get("cause", ""))
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


_CELL = {"passed": ("pass", "✔"), "failed": ("fail", "✘"), "error": ("fail", "E"),
         "skipped": ("skip", "skipped"), None: ("none", "not run")}


def _verifier(g: dict) -> str:
    return {True: "on", False: "off"}.get(g.get("verifier_on"), "unknown")


def _area(test_id: str) -> str:
    """``harness.conformance.test_wfp_redirect::test_x[...]`` -> ``test_wfp_redirect``."""
    cls = test_id.partition("::")[0]
    return cls.rsplit(".", 1)[-1] or cls


def _matrix(results: dict) -> list[tuple[str, list[str], list[tuple[str, list[dict | None]]]]]:
    """[(area, guests, [(test id, [test per guest or None])])], areas sorted."""
    names = [g["guest"] for g in results["guests"]]
    by = {g["guest"]: {t["id"]: t for t in g.get("tests", [])} for g in results["guests"]}
    areas: dict[str, list] = {}
    for i in sorted({t["id"] for g in results["guests"] for t in g.get("tests", [])}):
        areas.setdefault(_area(i), []).append((i, [by[n].get(i) for n in names]))
    return [(a, names, rows) for a, rows in sorted(areas.items())]


def _all_passed(cells: list[dict | None]) -> bool:
    return all(c is not None and c["outcome"] == "passed" for c in cells)


def _headline(verdict: dict, mode: str | None) -> str:
    word = "Verdict" if mode == "gate" else "Result"
    return f"{word}: {verdict['verdict'].upper()}"


def _markdown(results: dict, out: Path, roots: dict[str, Path], verdict: dict) -> str:
    L = [f"# WFP lab run {_md(results.get('run_id', ''))}", "",
         f"## {_headline(verdict, results.get('mode'))}", ""]
    L += [f"- {_md(r)}" for r in verdict["reasons"]] or ["- no problems"]
    if verdict.get("retried"):
        L += ["", "Retried (the run went on, the first cause stays on record):", ""]
        L += [f"- {_md(r)}" for r in verdict["retried"]]
    L += ["", f"Harness {results.get('harness_version')}, mode {results.get('mode')}, "
              f"started {results.get('started')}, finished {results.get('finished')}."]
    drv = results.get("driver") or {}
    if drv:
        L.append(f"Driver `{_md(drv.get('service'))}` version {_md(drv.get('version'))}, SHA-256 `{drv.get('sha256')}`.")
    if results.get("stopped_early"):
        L += ["", f"**Run stopped early: {_md(results['stopped_early'])}**"]
    problems = [g for g in results["guests"] if g.get("cause") or g.get("notes") or _first_faults(g)]
    failing = [(g["guest"], t) for g in results["guests"] for t in g.get("tests", [])
               if t["outcome"] in ("failed", "error")]
    if problems or failing:
        L += ["", "## Failures and problems", ""]
        for name, t in failing:
            L.append(f"- **{_md(name)}** `{_md(t['id'])}` {t['outcome']}: {_md(t.get('message', '')[:300])}")
        for g in problems:
            if g.get("cause"):
                L.append(f"- **{_md(g['guest'])}** ({g.get('classification')}, {g.get('phase')}): {_md(g['cause'])}")
            for ff in _first_faults(g):
                L.append(f"- **{_md(g['guest'])}** retried, {_md(ff)}")
            for n in g.get("notes", []):
                L.append(f"- **{_md(g['guest'])}** note: {_md(n)}")
            if g.get("bugcheck"):
                L.append(f"- **{_md(g['guest'])}** bugcheck analysis:")
                L += [f"    - `{_md(x)}`" for x in (g["bugcheck"].get("summary") or "(no debugger output)").splitlines()]
    L += ["", "## Guests", "",
          "| guest | OS build | status | class | phase | passed | failed | errors | skipped | verifier | attempts | links |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in results["guests"]:
        root = roots[g["guest"]]
        c = g.get("counts", {})
        links = []
        for label, key in (("logs", "logs"), ("junit", "junit"), ("capture", "capture"), ("analysis", "analysis")):
            if g.get(key):
                links.append(f"[{label}]({_rel(g[key], out, root)})")
        for d in g.get("dumps", []):
            links.append(f"[{Path(d).name}]({_rel(d, out, root)})")
        L.append(f"| {_md(g['guest'])} | {_md(g.get('os_build') or g.get('os_build_config'))} | {g['status']} | "
                 f"{g.get('classification') or ''} | {g.get('phase') or ''} | {c.get('passed', 0)} | "
                 f"{c.get('failed', 0)} | {c.get('error', 0)} | {c.get('skipped', 0)} | {_verifier(g)} | "
                 f"{len(g.get('attempts', []))} | {' '.join(links)} |")
    matrix = _matrix(results)
    if matrix:
        L += ["", "## Matrix by area", ""]
        for area, names, rows in matrix:
            ok = [r for r in rows if _all_passed(r[1])]
            L += [f"### {_md(area)}: {len(ok)} of {len(rows)} passed on every guest", ""]
            rest = [r for r in rows if not _all_passed(r[1])]
            if rest:
                L += ["| test | " + " | ".join(_md(n) for n in names) + " |", "|---|" + "---|" * len(names)]
                for i, cells in rest:
                    L.append(f"| `{_md(i)}` | " + " | ".join(_CELL.get(c["outcome"] if c else None, _CELL[None])[1]
                                                             for c in cells) + " |")
                L.append("")
    return "\n".join(L) + "\n"


def _md(text: Any) -> str:
    s = xml_text(text)
    return s.replace("|", "\\|").replace("\n", " ").replace("\r", " ").replace("`", "'")


_CSS = """body{font:14px sans-serif;margin:1em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
.pass{background:#d7f5d7}.fail{background:#f8d0d0}.skip{background:#eee}.none{background:#fff3cd}
.infrastructure{background:#fde9c0}.guest{background:#f8c0e0}.harness{background:#e6d5f7}.product{background:#f8d0d0}
.verdict{font-size:28px;padding:.3em .6em;display:inline-block;margin:.2em 0}
.v-pass{background:#2e7d32;color:#fff}.v-fail{background:#c62828;color:#fff}.v-inconclusive{background:#ef6c00;color:#fff}
pre{white-space:pre-wrap;margin:0}details{margin:.3em 0}"""


def _html(results: dict, out: Path, roots: dict[str, Path], verdict: dict) -> str:
    e = lambda v: html.escape(xml_text(v), quote=True)  # noqa: E731

    def a(label: str, href: str | None) -> str:
        return f'<a href="{e(href)}">{e(label)}</a>' if href else ""

    v = verdict["verdict"]
    H = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         f"<title>{e(_headline(verdict, results.get('mode')))} - WFP lab run {e(results.get('run_id'))}</title>",
         f"<style>{_CSS}</style></head><body>",
         f'<div id="verdict" class="verdict v-{e(v)}">{e(_headline(verdict, results.get("mode")))}</div>',
         "<ul id=\"reasons\">" + ("".join(f"<li>{e(r)}</li>" for r in verdict["reasons"]) or "<li>no problems</li>")
         + "</ul>"]
    if verdict.get("retried"):
        H.append("<p>Retried (first causes):</p><ul>" + "".join(f"<li>{e(r)}</li>" for r in verdict["retried"]) + "</ul>")
    H.append(f"<h1>WFP lab run {e(results.get('run_id'))}</h1>"
             f"<p>Harness {e(results.get('harness_version'))}, mode {e(results.get('mode'))}, "
             f"started {e(results.get('started'))}, finished {e(results.get('finished'))}.</p>")
    drv = results.get("driver") or {}
    if drv:
        H.append(f"<p>Driver <code>{e(drv.get('service'))}</code> version {e(drv.get('version'))}, "
                 f"SHA-256 <code>{e(drv.get('sha256'))}</code></p>")
    if results.get("stopped_early"):
        H.append(f"<p><strong>Run stopped early: {e(results['stopped_early'])}</strong></p>")
    failing = [(g["guest"], t) for g in results["guests"] for t in g.get("tests", [])
               if t["outcome"] in ("failed", "error")]
    problems = [g for g in results["guests"] if g.get("cause") or g.get("notes") or _first_faults(g)]
    if failing or problems:
        H.append("<h2>Failures and problems</h2><ul>")
        for name, t in failing:
            H.append(f"<li><b>{e(name)}</b> <code>{e(t['id'])}</code> {e(t['outcome'])}: {e(t.get('message', '')[:300])}</li>")
        for g in problems:
            if g.get("cause"):
                H.append(f"<li><b>{e(g['guest'])}</b> ({e(g.get('classification'))}, {e(g.get('phase'))}): {e(g['cause'])}</li>")
            H += [f"<li><b>{e(g['guest'])}</b> retried, {e(ff)}</li>" for ff in _first_faults(g)]
            H += [f"<li><b>{e(g['guest'])}</b> note: {e(n)}</li>" for n in g.get("notes", [])]
            if g.get("bugcheck"):
                H.append(f"<li><b>{e(g['guest'])}</b> bugcheck:<pre>{e(g['bugcheck'].get('summary') or '(no debugger output)')}</pre></li>")
        H.append("</ul>")
    H.append("<h2>Guests</h2><table><tr><th>guest</th><th>OS build</th><th>status</th><th>class</th>"
             "<th>phase</th><th>passed</th><th>failed</th><th>errors</th><th>skipped</th><th>verifier</th>"
             "<th>attempts</th><th>links</th></tr>")
    for g in results["guests"]:
        root = roots[g["guest"]]
        c = g.get("counts", {})
        links = [a(label, _rel(g.get(key), out, root)) for label, key in
                 (("logs", "logs"), ("junit", "junit"), ("capture", "capture"), ("analysis", "analysis"))
                 if g.get(key)]
        links += [a(Path(d).name, _rel(d, out, root)) for d in g.get("dumps", [])]
        cls = g.get("classification") or ("pass" if g["status"] == "passed" else "none")
        H.append(f'<tr class="{e(cls)}"><td>{e(g["guest"])}</td><td>{e(g.get("os_build") or g.get("os_build_config"))}</td>'
                 f"<td>{e(g['status'])}</td><td>{e(g.get('classification'))}</td><td>{e(g.get('phase'))}</td>"
                 f"<td>{c.get('passed', 0)}</td><td>{c.get('failed', 0)}</td><td>{c.get('error', 0)}</td>"
                 f"<td>{c.get('skipped', 0)}</td><td>{e(_verifier(g))}</td><td>{len(g.get('attempts', []))}</td>"
                 f"<td>{' '.join(links)}</td></tr>")
    H.append("</table>")
    matrix = _matrix(results)
    if matrix:
        H.append("<h2>Matrix by area</h2>")
        for area, names, rows in matrix:
            ok = [r for r in rows if _all_passed(r[1])]
            rest = [r for r in rows if not _all_passed(r[1])]
            head = "<tr><th>test</th>" + "".join(f"<th>{e(n)}</th>" for n in names) + "</tr>"

            def row(i: str, cells: list) -> str:
                tds = []
                for c in cells:
                    css, mark = _CELL.get(c["outcome"] if c else None, _CELL[None])
                    tds.append(f'<td class="{css}" title="{e(c.get("message", "") if c else "")}">{e(mark)}</td>')
                return f"<tr><td><code>{e(i)}</code></td>{''.join(tds)}</tr>"
            H.append(f"<h3>{e(area)}: {len(ok)} of {len(rows)} passed on every guest</h3>")
            if rest:
                H.append("<table>" + head + "".join(row(i, c) for i, c in rest) + "</table>")
            if ok:
                H.append(f"<details><summary>{len(ok)} passing</summary><table>{head}"
                         + "".join(row(i, c) for i, c in ok) + "</table></details>")
    H.append("</body></html>")
    return "\n".join(H) + "\n"


def write_reports(results: dict, out: Path, *, roots: dict[str, Path] | None = None,
                  verdict: dict | None = None, registry: SecretRegistry | None = None) -> dict[str, Path]:
    """Write results.json, junit.xml (merged), report.md, report.html (and
    verdict.json) into ``out``.  ``roots`` maps each guest to the run
    directory its relative paths start from (default: ``out``)."""
    reg = registry if registry is not None else default_registry
    roots = roots or {g["guest"]: out for g in results["guests"]}
    # Every report leads with a verdict: the gate's, or for a nightly the same
    # rules without a baseline.
    shown = verdict if verdict is not None else compute_verdict(results, None, driver=results.get("driver"))
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "results": write_scrubbed(out / RESULTS, json.dumps(results, indent=1, sort_keys=True), reg),
        "junit": write_scrubbed(out / "junit.xml", _merged_junit(results, out, roots), reg),
        "markdown": write_scrubbed(out / "report.md", _markdown(results, out, roots, shown), reg),
        "html": write_scrubbed(out / "report.html", _html(results, out, roots, shown), reg),
    }
    if verdict is not None:
        files["verdict"] = write_scrubbed(out / "verdict.json", json.dumps(verdict, indent=1, sort_keys=True), reg)
    return files


def load_results(path: Path) -> tuple[dict, Path]:
    """(results, run dir) from a results.json/verdict.json file or a run directory."""
    p = Path(path)
    f = p / RESULTS if p.is_dir() else p
    data = json.loads(f.read_text(encoding="utf-8"))
    if "guests" not in data:
        raise ValueError(f"{f}: not a results.json or verdict.json")
    return data, f.parent


def merge_runs(paths: Iterable[Path], out: Path, *, registry: SecretRegistry | None = None) -> dict:
    """Combine the results of several shards into one set of reports in ``out``."""
    merged: dict[str, Any] = {"guests": [], "shards": []}
    roots: dict[str, Path] = {}
    for p in paths:
        data, root = load_results(p)
        merged["shards"].append({"run_id": data.get("run_id"), "dir": str(root), "shard": data.get("shard")})
        for k in ("harness_version", "mode", "driver"):
            merged.setdefault(k, data.get(k))
        for key, pick in (("started", min), ("finished", max)):
            vals = [v for v in (merged.get(key), data.get(key)) if v]
            merged[key] = pick(vals) if vals else None
        if data.get("stopped_early"):
            merged["stopped_early"] = "; ".join(x for x in (merged.get("stopped_early"), data["stopped_early"]) if x)
        for g in data["guests"]:
            if g["guest"] in roots:
                raise ValueError(f"guest {g['guest']!r} appears in more than one shard")
            roots[g["guest"]] = root
            merged["guests"].append(g)
    merged["guests"].sort(key=lambda g: g["guest"])
    merged["run_id"] = "+".join(s["run_id"] or "?" for s in merged["shards"])
    write_reports(merged, out, roots=roots, registry=registry)
    return merged
