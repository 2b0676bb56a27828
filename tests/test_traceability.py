"""Traceability of the three WFP redirect IOCTL pages to the conformance suite (harness.traceability).

The first test is the gate the issue asks for: it fails when a statement of
the pages has no conformance case, or names a case that does not exist.
"""
import ast
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import cli
from harness import traceability as tr

GAPS = "test_wfp_traceability_gaps.py"
STATEMENT_ID = re.compile(r"\b(?:REC|CTX|SET)-(?:DESC|PARAM|RET|ERR|REM)-[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*")


@pytest.fixture(scope="module")
def collected():
    return tr.collect_test_ids()


@pytest.fixture(scope="module")
def shipped():
    return tr.load()


# -- the shipped file -----------------------------------------------------------------------------------

def test_shipped_file_is_complete(shipped, collected):
    """Every page item has a statement; every statement has tests that exist, or a reason it is untestable."""
    cov = tr.compute(shipped, collected)
    assert cov.missing_items == [], f"page items with no statement: {cov.missing_items}"
    assert cov.dangling == [], f"statements naming tests that do not exist: {cov.dangling}"
    assert cov.uncovered() == []
    assert cov.complete
    for s in shipped:
        assert bool(s.tests) != bool(s.untestable), s.id
        assert s.untestable or cov.resolved[s.id], s.id


def test_shipped_file_covers_the_three_pages(shipped):
    """Each error row of each page's table, each parameter and each Remarks topic is there, per page."""
    by_page = {page: {(s.section, s.item) for s in shipped if s.page == page} for page in tr.PAGES}
    assert ("error", "ERROR_INSUFFICIENT_BUFFER") in by_page["records"]
    assert ("error", "ERROR_INSUFFICIENT_BUFFER") not in by_page["context"]     # the context table omits it
    assert ("error", "WSAEACCES") in by_page["set"]
    assert not {("error", "WSAENOTCONN"), ("error", "WSAENOPROTOOPT")} & by_page["set"]
    for page in tr.PAGES:
        assert {("parameter", p) for p in tr.PAGE_ITEMS[page]["parameter"]} <= by_page[page]
        assert ("remarks", "multi-proxy") in by_page[page]
    for topic in ("udp-recvmsg", "udp-sendmsg", "udp-first-packet", "size-probe", "insufficient-buffer"):
        assert ("remarks", topic) in by_page["records"]


def test_untestable_statements_are_few_and_explained(shipped):
    untestable = [s for s in shipped if s.untestable]
    assert len(untestable) <= 3
    assert all(s.item == "min-os" and len(s.untestable) > 60 for s in untestable)


def test_contested_statements_name_their_decision_points(shipped):
    """Statements about the contradictions the profiles settle carry the decision point."""
    by_id = {s.id: s for s in shipped}
    assert "query_size_probe" in by_id["REC-REM-SIZE-PROBE"].decision
    assert "query_short_buffer" in by_id["REC-ERR-ERROR_INSUFFICIENT_BUFFER"].decision
    assert "query_tiny_buffer" in by_id["CTX-PARAM-cbOutBuffer"].decision
    assert "context_absent" in by_id["CTX-REM-CONTEXT-SEMANTICS"].decision
    assert "set_requires_elevation" in by_id["SET-ERR-WSAEACCES"].decision
    assert "C2" in by_id["REC-PARAM-lpcbBytesReturned-TOO-SMALL"].contradiction


def test_gap_cases_cite_exactly_the_statements_that_name_them(shipped, collected):
    """Each case of the gaps file is mapped, and its docstring lists the statement ids that name it."""
    naming = {}
    for s in shipped:
        for ref in s.tests:
            if ref.startswith(GAPS + "::"):
                naming.setdefault(ref.split("::")[1].split("[")[0], set()).add(s.id)
    source = (tr.conformance_dir() / GAPS).read_text()
    cases = {node.name: set(STATEMENT_ID.findall(ast.get_docstring(node) or ""))
             for node in ast.parse(source).body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    assert cases, "no cases in the gaps file"
    assert cases == naming
    cov = tr.compute(shipped, collected)
    assert [t for t in cov.unmapped if t.startswith(GAPS)] == []


# -- matching and collection ----------------------------------------------------------------------------

@pytest.mark.parametrize("ref,test_id,expected", [
    ("a.py::t", "a.py::t", True),
    ("a.py::t", "a.py::t[x-1]", True),
    ("a.py::t", "a.py::tt", False),
    ("a.py::t", "a.py::t2[x]", False),
    ("a.py::t[x]", "a.py::t[x]", True),
    ("a.py::t[x]", "a.py::t[x-1]", False),
    ("a.py::C::t", "a.py::C::t", True),
    ("a.py::C", "a.py::C::t", False),
])
def test_reference_matching(ref, test_id, expected):
    assert tr.matches(ref, test_id) is expected


def test_collection_gives_ids_relative_to_the_package(collected):
    assert "test_wfp_redirect.py::TestSet::test_set_success" in collected
    assert "test_wfp_checks.py::test_query_unconnected_socket[0x980000dc]" in collected
    assert all(not t.startswith(("/", "harness/")) for t in collected)
    assert len(collected) == len(set(collected)) > 200


# -- malformed files ------------------------------------------------------------------------------------

GOOD = '''
[[statement]]
id = "REC-ERR-WSAENOTCONN"
page = "records"
section = "error"
item = "WSAENOTCONN"
statement = "Not connected."
decision = ["query_unconnected"]
tests = ["test_wfp_checks.py::test_query_unconnected_socket"]
'''


def _write(tmp_path, text, name="trace.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_minimal_good_file_loads(tmp_path):
    (s,) = tr.load(_write(tmp_path, GOOD))
    assert (s.id, s.page, s.tests, s.decision) == ("REC-ERR-WSAENOTCONN", "records",
                                                     ("test_wfp_checks.py::test_query_unconnected_socket",),
                                                     ("query_unconnected",))


@pytest.mark.parametrize("text,entry,field,words", [
    (GOOD + GOOD, "REC-ERR-WSAENOTCONN", "id", "duplicate id"),
    (GOOD.replace('item = "WSAENOTCONN"', 'item = "WSAENOTCONN"\nowner = "me"'), "REC-ERR-WSAENOTCONN", "owner",
     "unknown field"),
    (GOOD.replace('tests = ["test_wfp_checks.py::test_query_unconnected_socket"]', ""), "REC-ERR-WSAENOTCONN",
     "tests", "neither"),
    (GOOD + 'untestable = "because"\n', "REC-ERR-WSAENOTCONN", "tests", "both"),
    (GOOD.replace('page = "records"', 'page = "recs"'), "REC-ERR-WSAENOTCONN", "page", "unknown page 'recs'"),
    (GOOD.replace('section = "error"', 'section = "errors"'), "REC-ERR-WSAENOTCONN", "section", "unknown section"),
    (GOOD.replace('page = "records"', 'page = "set"'), "REC-ERR-WSAENOTCONN", "id", "SET-ERR-"),
    (GOOD.replace('item = "WSAENOTCONN"', 'item = "WSAEBOGUS"'), "REC-ERR-WSAENOTCONN", "item", "WSAEBOGUS"),
    (GOOD.replace('"query_unconnected"', '"query_telepathy"'), "REC-ERR-WSAENOTCONN", "decision[0]",
     "no decision point"),
    (GOOD.replace('decision = ["query_unconnected"]', 'contradiction = ["C42"]'), "REC-ERR-WSAENOTCONN",
     "contradiction[0]", "C1-C17"),
    (GOOD.replace("test_wfp_checks.py::test_query_unconnected_socket", "test_query_unconnected_socket"),
     "REC-ERR-WSAENOTCONN", "tests[0]", "not a node id"),
    (GOOD.replace('tests = ["test_wfp_checks.py::test_query_unconnected_socket"]', "tests = []"),
     "REC-ERR-WSAENOTCONN", "tests", "empty list"),
    (GOOD.replace('tests = ["test_wfp_checks.py::test_query_unconnected_socket"]', 'tests = "test_x.py::t"'),
     "REC-ERR-WSAENOTCONN", "tests", "list of strings"),
    (GOOD.replace('statement = "Not connected."', ""), "REC-ERR-WSAENOTCONN", "statement", "missing"),
    (GOOD.replace('statement = "Not connected."', 'statement = "  "'), "REC-ERR-WSAENOTCONN", "statement", "empty"),
    (GOOD.replace('id = "REC-ERR-WSAENOTCONN"\n', ""), "statement #1", "id", "missing"),
    ('title = "x"\n' + GOOD, None, "title", "unknown top-level key"),
    ("", None, "statement", "no [[statement]]"),
    (GOOD.replace('page = "records"', 'page = records'), None, "toml", "line"),
])
def test_malformed_files_are_refused_clearly(tmp_path, text, entry, field, words):
    path = _write(tmp_path, text)
    with pytest.raises(tr.TraceabilityError) as info:
        tr.load(path)
    exc = info.value
    assert (exc.path, exc.entry, exc.field) == (str(path), entry, field)
    message = str(exc)
    assert message.startswith(f"{path}: ") and words in message and "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(tr.TraceabilityError, match="file"):
        tr.load(tmp_path / "nope.toml")


def test_coverage_reports_dangling_tests_and_missing_items(tmp_path, collected):
    text = GOOD + GOOD.replace("REC-ERR-WSAENOTCONN", "REC-ERR-WSAENOTCONN-TYPO").replace(
        "test_query_unconnected_socket", "test_query_unconnected_sockets")
    statements = tr.load(_write(tmp_path, text))
    cov = tr.compute(statements, collected)
    assert cov.dangling == [("REC-ERR-WSAENOTCONN-TYPO",
                             "test_wfp_checks.py::test_query_unconnected_sockets")]
    assert [s.id for s in cov.uncovered()] == ["REC-ERR-WSAENOTCONN-TYPO"]
    assert cov.resolved["REC-ERR-WSAENOTCONN"] == ["test_wfp_checks.py::test_query_unconnected_socket[0x980000dc]",
                                                   "test_wfp_checks.py::test_query_unconnected_socket[0x980000dd]"]
    assert ("records", "error", "WSAENOTCONN") not in cov.missing_items
    assert ("set", "error", "WSAEACCES") in cov.missing_items
    assert not cov.complete


# -- the command ----------------------------------------------------------------------------------------

def test_report_text_exit_0(capsys):
    assert cli.main(["report"]) == 0
    out = capsys.readouterr().out
    assert "Verdict: complete" in out
    assert re.search(r"records\s+error\s+12\s+12\s+0\s+0", out)
    assert re.search(r"context\s+error\s+11\s+11\s+0\s+0", out)
    assert re.search(r"set\s+error\s+10\s+10\s+0\s+0", out)
    assert "Untestable statements:" in out and "SET-REM-MIN-OS:" in out
    assert "Named tests that do not exist" not in out


def test_report_json_and_markdown(capsys):
    assert cli.main(["report", "--format", "json", "--profile", "windows-observed"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["complete"] and data["profile"] == "windows-observed"
    totals = data["totals"]
    assert totals["statements"] == totals["covered"] + totals["untestable"] and totals["missing_tests"] == 0
    by_id = {s["id"]: s for s in data["statements"]}
    assert {"name": "sio_flush", "value": "unsupported"} in by_id["REC-ERR-WSA_OPERATION_ABORTED"]["decision"]
    assert by_id["REC-ERR-WSAENOTCONN"]["resolved_tests"]
    assert cli.main(["report", "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "## SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS" in md and "| SET-ERR-WSAEACCES |" in md
    assert "`set_requires_elevation` = `WSAEACCES`" in md


def test_report_exit_1_when_a_test_is_missing(tmp_path, capsys):
    path = _write(tmp_path, GOOD.replace("test_query_unconnected_socket", "test_query_gone"))
    assert cli.main(["report", "--file", str(path)]) == 1
    out = capsys.readouterr().out
    assert "Named tests that do not exist:" in out
    assert "REC-ERR-WSAENOTCONN: test_wfp_checks.py::test_query_gone" in out
    assert "Page items with no statement:" in out and "Verdict: INCOMPLETE" in out


def test_report_exit_1_when_statements_are_missing(tmp_path, capsys):
    assert cli.main(["report", "--file", str(_write(tmp_path, GOOD))]) == 1
    out = capsys.readouterr().out
    assert "set / error / WSAEACCES" in out and "Named tests that do not exist" not in out


def test_report_exit_2_on_a_malformed_file(tmp_path):
    path = _write(tmp_path, GOOD + GOOD)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "report", "--file", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == \
        f"wfp-harness report: {path}: REC-ERR-WSAENOTCONN: id: duplicate id (also statement #1)"


# -- with a conformance run's JUnit file ---------------------------------------------------------------

@pytest.fixture(scope="module")
def junit(tmp_path_factory):
    """The JUnit file of a real conformance run (documented profile, simulator)."""
    path = tmp_path_factory.mktemp("junit") / "conformance.xml"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "conformance", "--junitxml", str(path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return path


def _edit_junit(src, dst, name, child):
    tree = ET.parse(src)
    hits = 0
    for case in tree.getroot().iter("testcase"):
        if case.get("name") == name:
            ET.SubElement(case, child, message="edited by the test")
            hits += 1
    assert hits == 1
    tree.write(dst)
    return dst


def test_report_with_junit_all_pass(junit, capsys):
    assert cli.main(["report", "--junitxml", str(junit), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    states = {s["id"]: s["state"] for s in data["statements"]}
    assert data["junit"]["properties"]["wfp.profile"] == "documented"
    assert {v for k, v in states.items() if not k.endswith("-MIN-OS")} == {"passed"}
    assert {states[k] for k in states if k.endswith("-MIN-OS")} == {"untestable"}
    assert cli.main(["report", "--junitxml", str(junit)]) == 0
    out = capsys.readouterr().out
    assert "121 of 121 testable statements passed" in out and "FAILED" not in out


def test_report_with_junit_failure_and_skip(junit, tmp_path, capsys):
    failed = _edit_junit(junit, tmp_path / "failed.xml", "test_network_down[records]", "failure")
    assert cli.main(["report", "--junitxml", str(failed), "--format", "json"]) == 0   # coverage is complete
    states = {s["id"]: s["state"] for s in json.loads(capsys.readouterr().out)["statements"]}
    assert states["REC-ERR-WSAENETDOWN"] == "failed"
    assert states["CTX-ERR-WSAENETDOWN"] == "passed" and states["SET-ERR-WSAENETDOWN"] == "passed"
    assert cli.main(["report", "--junitxml", str(failed)]) == 0
    assert "FAILED   REC-ERR-WSAENETDOWN:" in capsys.readouterr().out
    skipped = _edit_junit(junit, tmp_path / "skipped.xml", "test_query_raw_socket[context]", "skipped")
    assert cli.main(["report", "--junitxml", str(skipped), "--format", "json"]) == 0
    states = {s["id"]: s["state"] for s in json.loads(capsys.readouterr().out)["statements"]}
    assert states["CTX-ERR-WSAENOPROTOOPT"] == "skipped" and states["REC-ERR-WSAENOPROTOOPT"] == "passed"


def test_junit_from_an_installed_suite_maps_to_package_ids(tmp_path, collected):
    """classname prefixes differ when the suite runs from site-packages; the module name anchors the id."""
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="..venv.lib.python3.11.site-packages.harness.conformance.test_wfp_redirect.TestSet" '
        'name="test_set_success"/>'
        '<testcase classname="harness.conformance.test_wfp_checks" name="test_query_unconnected_socket[0x980000dc]">'
        '<failure message="x"/></testcase>'
        '<testcase classname="tests.test_other" name="test_elsewhere"/>'
        '</testsuite></testsuites>')
    run = tr.read_junit(xml, {t.split("::")[0] for t in collected})
    assert run.outcomes == {"test_wfp_redirect.py::TestSet::test_set_success": "passed",
                            "test_wfp_checks.py::test_query_unconnected_socket[0x980000dc]": "failed"}


def test_report_exit_2_on_unreadable_junit(tmp_path, capsys):
    bad = tmp_path / "bad.xml"
    bad.write_text("<testsuites><testsuite>")
    assert cli.main(["report", "--junitxml", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wfp-harness report: {bad}: junitxml:") and err.count("\n") == 1
    assert cli.main(["report", "--junitxml", str(Path(tmp_path) / "absent.xml")]) == 2
