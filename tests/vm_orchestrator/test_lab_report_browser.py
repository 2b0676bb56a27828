"""The HTML report in a real browser: headless Chromium (Debian package
`chromium`, tools/apt-packages.txt) renders it, and the verdict is in the
first viewport.  Installs nothing; skips when Chromium is absent."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from harness.vm.report import compute_verdict, write_reports
from test_lab_reports import DRV, guest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH, HEIGHT = 1280, 720


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _chromium(*args: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WIDTH},{HEIGHT}", *args],
        capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian: chromium)")
def test_report_renders_with_the_verdict_in_the_first_viewport(tmp_path):
    tests = [(f"harness.conformance.test_area{i % 7}::test_case_{i}", "passed", "") for i in range(300)]
    tests[5] = (tests[5][0], "failed", "boom \x07")
    res = {"run_id": "r-browser", "mode": "gate", "guests": [
        guest("g1", tests, status="failed", classification="product", reason="tests_failed", cause="1 failed"),
        guest("g2", tests[:200], verifier_on=None)]}
    files = write_reports(res, tmp_path / "run", verdict=compute_verdict(res, None, driver=DRV))
    url = files["html"].resolve().as_uri()
    shot = tmp_path / "shot.png"
    r = _chromium(f"--screenshot={shot}", url, tmp_path=tmp_path)
    assert shot.is_file(), r.stderr[-2000:]
    assert _png_size(shot.read_bytes()) == (WIDTH, HEIGHT)
    # The DOM Chromium built: the verdict element exists, and its box ends inside the first viewport.
    probe = tmp_path / "probe.html"
    probe.write_text(files["html"].read_text().replace(
        "</body>", "<script>const r=document.getElementById('verdict').getBoundingClientRect();"
        "document.title='VERDICT-BOTTOM:'+Math.round(r.bottom)+':'+document.getElementById('verdict').textContent;"
        "</script></body>"))
    r = _chromium("--dump-dom", probe.resolve().as_uri(), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    import re
    m = re.search(r"<title>VERDICT-BOTTOM:(\d+):([^<]*)</title>", r.stdout)
    assert m, r.stdout[:2000]
    assert 0 < int(m.group(1)) <= HEIGHT and m.group(2) == "Verdict: FAIL"
