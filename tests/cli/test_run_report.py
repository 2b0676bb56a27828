"""The conformance report people read (`conformance --format html`, `report --format html`): verdict and
totals first, failures with their statement, expected versus actual and the decision points behind
them, coverage per statement, skips by reason, known deviations with citations; well-formed whatever a
test printed, and readable in a real browser."""
from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.cli import main
from harness.run_report import read_run, to_html
from sim.profiles import load as load_profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.browser import HEIGHT, element_box, needs_chromium, screenshot  # noqa: E402

# A run of real pytest whose cases carry conformance ids: a failure of a documented statement's case
# (REC-PARAM-cbOutBuffer, decision points query_tiny_buffer and query_size_probe), skips, a known Wine
# deviation's case (wine-deviations.toml, test_wfp_checks.py::test_wfp_socket_options[*]), and output
# full of control characters and markup.
CASES = {
    "conftest.py": '''
import pytest

@pytest.fixture(scope="session", autouse=True)
def _props(record_testsuite_property):
    record_testsuite_property("wfp.target", "wine")
    record_testsuite_property("wfp.profile", "wine-8.0")
''',
    "test_wfp_redirect.py": '''
import pytest

@pytest.mark.parametrize("size, page", [(1, "records")], ids=["1-records"])
def test_tiny_buffer(size, page, request):
    request.node.user_properties.append(("wfp.decision", "query_tiny_buffer"))
    error = 10022
    assert error == 10045

def test_prints_junk():
    print("bell \\x07 escape \\x1b[31m <script>alert(1)</script> & done")
    raise AssertionError("got \\x1b[31m<b>bold</b>\\x00 and \\ufffd")

@pytest.mark.parametrize("n", [1, 2])
def test_needs_callout(n):
    pytest.skip("needs a WFP callout (requires_redirect)")
''',
    "test_wfp_checks.py": '''
import pytest

@pytest.mark.xfail(strict=True, reason="known Wine deviation: Wine accepts the WFP options")
@pytest.mark.parametrize("option", ["records"])
def test_wfp_socket_options(option):
    assert 0
''',
}


@pytest.fixture(scope="module")
def junit(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("run")
    for name, text in CASES.items():
        (d / name).write_text(text)
    out = d / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:wfp_harness",
                    "-o", "junit_logging=all", f"--junitxml={out}", str(d)], cwd=d, capture_output=True)
    assert out.is_file()
    return out


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def page(junit) -> str:
    code, out, err = _run(["report", "--format", "html", "--junitxml", str(junit)])
    assert code in (0, 1), err
    return out


def test_report_html_reads_top_down(page):
    order = [page.index(s) for s in ('id="verdict"', 'id="totals"', "<h2>Failures", "<h2>Coverage",
                                      "<h2>Skipped", "<h2>Known deviations")]
    assert order == sorted(order)
    assert "Verdict: FAIL" in page
    assert "5 cases: 0 passed, 2 failed, 0 errors, 2 skipped, 1 known deviation (xfail)" in page


def test_a_failure_names_its_statement_expected_actual_and_decision_points(page):
    failure = page[page.index("test_wfp_redirect.py::test_tiny_buffer[1-records]"):]
    failure = failure[:failure.index('<div class="failure">') if '<div class="failure">' in failure else None]
    assert "REC-PARAM-cbOutBuffer" in failure and "The output size must be at least sizeof(ULONG)" in failure
    assert "Expected <code>10045 (WSAEOPNOTSUPP)</code>, actual <code>10022 (WSAEINVAL)</code>" in failure
    wine = load_profile("wine-8.0")
    for name in ("query_tiny_buffer", "query_size_probe"):
        a = wine.assignments[name]
        row = re.search(rf"<tr><td><code>{name}</code></td>.*?</tr>", failure).group(0)
        assert f"<code>{a.value}</code>" in row and f"<td>{a.provenance}</td>" in row


def test_coverage_skips_and_deviations(page):
    assert re.search(r"<code>REC-PARAM-cbOutBuffer</code></td><td>[^<]*</td><td class=\"s-failed\">failed", page)
    assert "not run" in page                                   # statements whose cases this run did not have
    assert re.search(r"needs a WFP callout \(requires_redirect\)</td><td><details><summary>2 cases", page)
    deviations = page[page.index("<h2>Known deviations"):]
    assert "wine-deviations.toml" in deviations and "1 xfailed" in deviations
    assert "Wine dlls/ws2_32/tests/sock.c" in deviations     # the deviation's citations


def test_the_page_is_well_formed_and_self_contained(page):
    root = ET.fromstring(page.split("\n", 1)[1])              # after <!DOCTYPE html>: well-formed XML too
    assert root.tag == "html"
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f]", page)
    assert "<script" not in page and "&lt;script&gt;" in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page) and "@import" not in page


def test_any_bytes_in_the_junit_file_make_a_well_formed_page(tmp_path):
    raw = (b'<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="s" time="1.5">'
           b'<testcase classname="harness.conformance.test_sockets" name="test_x">'
           b'<failure message="assert 1 == 2 \xff\xfe \x1b[0m &#x1b; &#0;">bad \x00\x07 bytes \xc3\x28 '
           b'&lt;/pre&gt;&lt;script&gt;</failure></testcase></testsuite></testsuites>')
    path = tmp_path / "junk.xml"
    path.write_bytes(raw)
    run = read_run(path)
    case = run.cases["test_sockets.py::test_x"]
    assert case.outcome == "failed"
    html = to_html(run)
    ET.fromstring(html.split("\n", 1)[1])
    assert "\ufffd" in html and "\x1b" not in html and "\x00" not in html and "<script" not in html


def test_report_html_needs_a_run(tmp_path):
    code, _, err = _run(["report", "--format", "html"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--junitxml" in err


@needs_chromium
def test_the_page_renders_with_the_verdict_in_the_first_viewport(page, tmp_path):
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    screenshot(path, tmp_path)
    top, bottom, text = element_box(page, "verdict", tmp_path)
    assert 0 <= top < bottom <= HEIGHT and text == "Verdict: FAIL"
