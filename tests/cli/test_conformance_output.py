"""What `wfp-harness conformance` tells: a selection never overwrites the whole suite's results, one
elapsed time per run, and --format html writes the page beside the JUnit file."""
from __future__ import annotations

import contextlib
import io
import re

import pytest

from harness.cli import main

WHOLE = "reports/conformance-sim-documented.xml"
SELECTION = "reports/conformance-sim-documented-selection.xml"


@pytest.fixture(scope="module")
def selection_run(tmp_path_factory):
    """`conformance -k overlapped` in a directory that already holds a whole-suite result."""
    d = tmp_path_factory.mktemp("cwd")
    (d / "reports").mkdir()
    (d / WHOLE).write_text("<testsuites><!-- the whole suite's results --></testsuites>")
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.chdir(d)
        code = main(["conformance", "-k", "overlapped"])
    return d, code, out.getvalue(), err.getvalue()


def test_a_selection_writes_a_file_of_its_own_and_says_so(selection_run):
    d, code, out, err = selection_run
    assert code == 0, err
    assert (d / WHOLE).read_text() == "<testsuites><!-- the whole suite's results --></testsuites>"
    text = (d / SELECTION).read_text()
    assert '<property name="wfp.selection" value="-k overlapped"' in text
    assert f"JUnit: {SELECTION}" in out and f"whole suite's results, {WHOLE}, are left as they were" in out


def test_one_elapsed_time_per_run(selection_run):
    _, _, out, _ = selection_run
    times = re.findall(r"\b\d+\.\d+ ?s\b", out)
    assert len(times) == 1, out[-3000:]
    assert out.rstrip().splitlines()[-1].endswith(f" in {times[0]}")      # pytest's own summary line


def test_format_html_writes_the_page_beside_the_junit_file(tmp_path):
    junit = tmp_path / "run.xml"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["conformance", "--format", "html", "--junitxml", str(junit), "-k", "overlapped"]) == 0
    assert f"HTML report: {tmp_path / 'run.html'}" in out.getvalue()
    text = (tmp_path / "run.html").read_text()
    assert "Verdict: PASS" in text and "A selection, not the whole suite" in text


def test_given_junitxml_is_used_for_a_selection_too(tmp_path):
    out = io.StringIO()
    target = tmp_path / "mine.xml"
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["conformance", "--junitxml", str(target), "-k", "test_unknown_code_sync"]) == 0
    assert target.is_file() and "left as they were" not in out.getvalue()
