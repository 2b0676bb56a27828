"""The HTML report in a real browser: headless Chromium (Debian package
`chromium`, tools/apt-packages.txt) renders it, and the verdict is in the
first viewport.  Installs nothing; skips when Chromium is absent."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.vm.report import compute_verdict, write_reports
from test_lab_reports import DRV, guest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.browser import HEIGHT, element_box, needs_chromium, screenshot  # noqa: E402


@needs_chromium
def test_report_renders_with_the_verdict_in_the_first_viewport(tmp_path):
    tests = [(f"harness.conformance.test_area{i % 7}::test_case_{i}", "passed", "") for i in range(300)]
    tests[5] = (tests[5][0], "failed", "boom \x07")
    res = {"run_id": "r-browser", "mode": "gate", "guests": [
        guest("g1", tests, status="failed", classification="product", reason="tests_failed", cause="1 failed"),
        guest("g2", tests[:200], verifier_on=None)]}
    files = write_reports(res, tmp_path / "run", verdict=compute_verdict(res, None, driver=DRV))
    screenshot(files["html"], tmp_path)
    # The DOM Chromium built: the verdict element exists, and its box ends inside the first viewport.
    _top, bottom, text = element_box(files["html"].read_text(), "verdict", tmp_path)
    assert 0 < bottom <= HEIGHT and text == "Verdict: FAIL"
