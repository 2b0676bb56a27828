"""On --target wine the known deviations (harness/conformance/wine-deviations.toml) are xfail
strict: a case that still deviates is xfailed with the entry's reason, a case that stops
deviating fails (XPASS), nothing is skipped; the default profile is wine-8.0 and the report
lists the deviations."""
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEVIATING = "test_wsapoll.py::test_invalid_request_flags[0x1]"       # Wine test_WSAPoll: todo_wine
PASSING = "test_wsapoll.py::test_pollin_and_pollout_are_request_flags"
DECIDED = "test_wsapoll.py::test_no_valid_socket"                     # a decision point Wine answers like Windows


def _run(tmp_path, *ids, env=None):
    junit = tmp_path / "junit.xml"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rxX", "--target", "wine",
            f"--junitxml={junit}", *[f"{ROOT}/harness/conformance/{i}" for i in ids]]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, **(env or {})})
    suite = ET.parse(junit).getroot().find("testsuite") if junit.exists() else None
    return proc, suite


def _outcomes(suite) -> dict:
    out = {}
    for case in suite.iter("testcase"):
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        message = next((c.get("message", "") for c in case if c.tag in ("failure", "skipped")), "")
        out[case.get("name")] = (kind, message)
    return out


def test_deviations_are_xfailed_with_their_reason_and_others_run(wine_available, tmp_path):
    proc, suite = _run(tmp_path, DEVIATING, PASSING, DECIDED)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["wfp.target"] == "wine" and props["wfp.profile"] == "wine-8.0"
    got = _outcomes(suite)
    kind, message = got["test_invalid_request_flags[0x1]"]
    assert kind == "skipped" and "known Wine deviation" in message and "todo_wine" in message   # JUnit's xfail
    assert got["test_pollin_and_pollout_are_request_flags"] == ("passed", "")
    assert got["test_no_valid_socket"] == ("passed", "")
    assert "1 xfailed" in proc.stdout and "2 passed" in proc.stdout


def test_a_case_that_stops_deviating_fails(wine_available, tmp_path):
    listed = tmp_path / "dev.toml"
    listed.write_text(f'''[[deviation]]
tests = ["{PASSING}"]
differs = "pretend Wine differs here"
windows = "the WSAPoll page"
kind = "observed"
wine = "Wine 8.0 ws2_32.dll WSAPoll: observed nothing of the sort"
''', encoding="utf-8")
    proc, suite = _run(tmp_path, PASSING, env={"WFP_DEVIATIONS": str(listed)})
    assert proc.returncode == 1
    assert "XPASS(strict)" in proc.stdout and "pretend Wine differs here" in proc.stdout


def test_a_malformed_list_is_one_line_and_exit_2(wine_available, tmp_path):
    bad = tmp_path / "dev.toml"
    bad.write_text('[[deviation]]\ntests = ["test_a.py::b"]\ndiffers = "d"\nwindows = "w"\nkind = "todo_wine"\n'
                   'wine = "Wine thinks so"\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "conformance", "--target", "wine"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "WFP_DEVIATIONS": str(bad)})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and f"{bad}:1: deviation[0].wine" in proc.stderr


def test_the_report_lists_the_deviations(wine_available, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "conformance", "--target", "wine",
                           "--junitxml", str(tmp_path / "j.xml"), "--", "-k", "test_invalid_request_flags or test_listen"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    out = proc.stdout
    assert "profile wine-8.0" in out and "xfailed" in out
    assert "known wine deviations" in out and "todo_wine: Wine dlls/ws2_32/tests/sock.c test_WSAPoll" in out
    assert "cases: 13 xfailed" in out
