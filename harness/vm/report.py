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


def parse_junit(path: Path) -> list[TestCase]:
    """Test cases of a pytest JUnit file.  ``id`` is ``classname::name``."""
    root = ET.parse(path).getroot()
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
        out.append(TestCase(cid, outcome, t, msg))
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


def compute_verdict(results: dict, baseline: dict | None, *, driver: dict | None) -> dict:
    """The gate's decision with its evidence.

    ``pass``: every guest ran to the end, no test fails that passed (or was
    absent) in the baseline, no bugcheck, Driver Verifier was on on every
    guest.  ``fail``: a product problem.  ``inconclusive``: the lab or the
    harness kept us from knowing (never a pass)."""
    base_guests = {g["guest"]: g for g in (baseline or {}).get("guests", [])}
    reasons: list[str] = []
    new_failures: dict[str, list[str]] = {}
    guests = []
    product_bad = inconclusive = False
    for g in results["guests"]:
        fails = _failing(g)
        known = _failing(base_guests[g["guest"]]) if g["guest"] in base_guests else set()
        new = sorted(fails - known)
        if new:
            new_failures[g["guest"]] = new
        entry = {"guest": g["guest"], "os_build": g.get("os_build") or g.get("os_build_config"),
                 "status": g["status"], "classification": g.get("classification"),
                 "counts": g.get("counts", {}), "verifier_on": g.get("verifier_on"),
                 "bugcheck": bool(g.get("bugcheck")), "new_failures": new}
        guests.append(entry)
        if g["status"] in ("not_run", "interrupted") or g.get("classification") in ("infrastructure", "harness"):
            inconclusive = True
            reasons.append(f"{g['guest']}: {g['status']} ({g.get('classification')}): {g.get('cause', '')}")
            continue
        if g.get("bugcheck"):
            product_bad = True
            reasons.append(f"{g['guest']}: bugcheck")
        elif g.get("classification") == "product" and g.get("reason") != "tests_failed":
            product_bad = True
            reasons.append(f"{g['guest']}: {g.get('cause') or g.get('reason')}")
        if new:
            product_bad = True
            reasons.append(f"{g['guest']}: {len(new)} new failure(s): {', '.join(new[:5])}")
        if g.get("verifier_on") is not True:
            product_bad = True
            reasons.append(f"{g['guest']}: Driver Verifier was not on")
    if not results["guests"]:
        inconclusive = True
        reasons.append("no guest ran")
    verdict = "fail" if product_bad else "inconclusive" if inconclusive else "pass"
    totals = {k: sum(g.get("counts", {}).get(k, 0) for g in results["guests"]) for k in OUTCOMES}
    return {
        "verdict": verdict,
        "reasons": reasons,
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
    suites = ET.Element("testsuites", name=f"wfp-lab {results.get('run_id', '')}")
    for g in results["guests"]:
        tests = g.get("tests", [])
        c = counts(tests)
        s = ET.SubElement(suites, "testsuite", name=g["guest"], tests=str(len(tests) + 1),
                          failures=str(c["failed"]), errors=str(c["error"]), skipped=str(c["skipped"]))
        props = ET.SubElement(s, "properties")
        for k in ("os_build", "status", "classification", "verifier_on", "clone"):
            ET.SubElement(props, "property", name=f"wfp.{k}", value=str(g.get(k)))
        for t in tests:
            cls, _, name = t["id"].partition("::")
            tc = ET.SubElement(s, "testcase", classname=f"{g['guest']}.{cls}", name=name, time=f"{t['time']:.3f}")
            if t["outcome"] != "passed":
                tag = {"failed": "failure"}.get(t["outcome"], t["outcome"])
                el = ET.SubElement(tc, tag, message=t.get("message", "")[:500])
                el.text = t.get("message", "")
        # One case per guest for the lifecycle itself, so a guest that never
        # got to run its tests still turns CI red.
        tc = ET.SubElement(s, "testcase", classname=f"{g['guest']}.lab", name="lifecycle")
        if g["status"] != "passed" and not (g["status"] == "failed" and g.get("reason") == "tests_failed"):
            tag = "failure" if g.get("classification") == "product" else "error"
            el = ET.SubElement(tc, tag, message=f"{g['status']} ({g.get('classification')}) "
                                                f"in {g.get('phase')}: {g.get('cause', '')}"[:500])
            el.text = g.get("cause", "")
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


_CELL = {"passed": ("pass", "✔"), "failed": ("fail", "✘"), "error": ("fail", "E"),
         "skipped": ("skip", "–"), None: ("none", "")}


def _markdown(results: dict, out: Path, roots: dict[str, Path], verdict: dict | None) -> str:
    L = [f"# WFP lab run {results.get('run_id', '')}", ""]
    L.append(f"Harness {results.get('harness_version')}, mode {results.get('mode')}, "
             f"started {results.get('started')}, finished {results.get('finished')}.")
    drv = results.get("driver") or {}
    if drv:
        L.append(f"Driver `{drv.get('service')}` version {drv.get('version')}, SHA-256 `{drv.get('sha256')}`.")
    if results.get("stopped_early"):
        L += ["", f"**Run stopped early: {results['stopped_early']}**"]
    if verdict:
        L += ["", f"## Verdict: **{verdict['verdict'].upper()}**", ""]
        L += [f"- {r}" for r in verdict["reasons"]] or ["- no problems"]
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
                 f"{c.get('failed', 0)} | {c.get('error', 0)} | {c.get('skipped', 0)} | {g.get('verifier_on')} | "
                 f"{len(g.get('attempts', []))} | {' '.join(links)} |")
    problems = [g for g in results["guests"] if g.get("cause")]
    if problems:
        L += ["", "## Problems", ""]
        for g in problems:
            L.append(f"- **{_md(g['guest'])}** ({g.get('classification')}, {g.get('phase')}): {_md(g['cause'])}")
            for a in g.get("attempts", []):
                if a.get("cause"):
                    L.append(f"  - attempt {a['attempt']}: {a['classification']} in {a['phase']}: {_md(a['cause'])}")
            if g.get("bugcheck"):
                L.append("  - bugcheck analysis:")
                L += [f"    - `{_md(x)}`" for x in (g["bugcheck"].get("summary") or "(no debugger output)").splitlines()]
    ids = sorted({t["id"] for g in results["guests"] for t in g.get("tests", [])})
    if ids:
        L += ["", "## Matrix (tests x guests)", "",
              "| test | " + " | ".join(_md(g["guest"]) for g in results["guests"]) + " |",
              "|---|" + "---|" * len(results["guests"])]
        by = {g["guest"]: {t["id"]: t["outcome"] for t in g.get("tests", [])} for g in results["guests"]}
        for i in ids:
            L.append(f"| `{_md(i)}` | " + " | ".join(_CELL.get(by[g["guest"]].get(i), _CELL[None])[1]
                                                      for g in results["guests"]) + " |")
    return "\n".join(L) + "\n"


def _md(text: Any) -> str:
    s = str(text if text is not None else "")
    return s.replace("|", "\\|").replace("\n", " ").replace("`", "'")


_CSS = """body{font:14px sans-serif;margin:1em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
.pass{background:#d7f5d7}.fail{background:#f8d0d0}.skip{background:#eee}.none{background:#fff}
.infrastructure{background:#fde9c0}.harness{background:#e6d5f7}.product{background:#f8d0d0}
pre{white-space:pre-wrap;margin:0}"""


def _html(results: dict, out: Path, roots: dict[str, Path], verdict: dict | None) -> str:
    e = lambda x: html.escape(str(x if x is not None else ""), quote=True)  # noqa: E731

    def a(label: str, href: str | None) -> str:
        return f'<a href="{e(href)}">{e(label)}</a>' if href else ""

    H = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         f"<title>WFP lab run {e(results.get('run_id'))}</title>", f"<style>{_CSS}</style></head><body>",
         f"<h1>WFP lab run {e(results.get('run_id'))}</h1>",
         f"<p>Harness {e(results.get('harness_version'))}, mode {e(results.get('mode'))}, "
         f"started {e(results.get('started'))}, finished {e(results.get('finished'))}.</p>"]
    drv = results.get("driver") or {}
    if drv:
        H.append(f"<p>Driver <code>{e(drv.get('service'))}</code> version {e(drv.get('version'))}, "
                 f"SHA-256 <code>{e(drv.get('sha256'))}</code></p>")
    if results.get("stopped_early"):
        H.append(f"<p><strong>Run stopped early: {e(results['stopped_early'])}</strong></p>")
    if verdict:
        H.append(f"<h2>Verdict: {e(verdict['verdict'].upper())}</h2><ul>"
                 + "".join(f"<li>{e(r)}</li>" for r in verdict["reasons"]) + "</ul>")
    H.append("<h2>Guests</h2><table><tr><th>guest</th><th>OS build</th><th>status</th><th>class</th>"
             "<th>phase</th><th>passed</th><th>failed</th><th>errors</th><th>skipped</th><th>verifier</th>"
             "<th>attempts</th><th>cause</th><th>links</th></tr>")
    for g in results["guests"]:
        root = roots[g["guest"]]
        c = g.get("counts", {})
        links = [a(label, _rel(g.get(key), out, root)) for label, key in
                 (("logs", "logs"), ("junit", "junit"), ("capture", "capture"), ("analysis", "analysis"))
                 if g.get(key)]
        links += [a(Path(d).name, _rel(d, out, root)) for d in g.get("dumps", [])]
        cls = g.get("classification") or ("pass" if g["status"] == "passed" else "none")
        bug = ""
        if g.get("bugcheck"):
            bug = f"<pre>{e(g['bugcheck'].get('summary') or '(no debugger output)')}</pre>"
        H.append(f'<tr class="{e(cls)}"><td>{e(g["guest"])}</td><td>{e(g.get("os_build") or g.get("os_build_config"))}</td>'
                 f"<td>{e(g['status'])}</td><td>{e(g.get('classification'))}</td><td>{e(g.get('phase'))}</td>"
                 f"<td>{c.get('passed', 0)}</td><td>{c.get('failed', 0)}</td><td>{c.get('error', 0)}</td>"
                 f"<td>{c.get('skipped', 0)}</td><td>{e(g.get('verifier_on'))}</td><td>{len(g.get('attempts', []))}</td>"
                 f"<td>{e(g.get('cause'))}{bug}</td><td>{' '.join(links)}</td></tr>")
    H.append("</table>")
    ids = sorted({t["id"] for g in results["guests"] for t in g.get("tests", [])})
    if ids:
        H.append("<h2>Matrix</h2><table><tr><th>test</th>"
                 + "".join(f"<th>{e(g['guest'])}</th>" for g in results["guests"]) + "</tr>")
        by = {g["guest"]: {t["id"]: t for t in g.get("tests", [])} for g in results["guests"]}
        for i in ids:
            cells = []
            for g in results["guests"]:
                t = by[g["guest"]].get(i)
                css, mark = _CELL.get(t["outcome"] if t else None, _CELL[None])
                title = e(t.get("message", "")) if t else ""
                cells.append(f'<td class="{css}" title="{title}">{e(mark)}</td>')
            H.append(f"<tr><td><code>{e(i)}</code></td>{''.join(cells)}</tr>")
        H.append("</table>")
    H.append("</body></html>")
    return "\n".join(H) + "\n"


def write_reports(results: dict, out: Path, *, roots: dict[str, Path] | None = None,
                  verdict: dict | None = None, registry: SecretRegistry | None = None) -> dict[str, Path]:
    """Write results.json, junit.xml (merged), report.md, report.html (and
    verdict.json) into ``out``.  ``roots`` maps each guest to the run
    directory its relative paths start from (default: ``out``)."""
    reg = registry if registry is not None else default_registry
    roots = roots or {g["guest"]: out for g in results["guests"]}
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "results": write_scrubbed(out / RESULTS, json.dumps(results, indent=1, sort_keys=True), reg),
        "junit": write_scrubbed(out / "junit.xml", _merged_junit(results, out, roots), reg),
        "markdown": write_scrubbed(out / "report.md", _markdown(results, out, roots, verdict), reg),
        "html": write_scrubbed(out / "report.html", _html(results, out, roots, verdict), reg),
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
