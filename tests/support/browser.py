"""Headless Chromium for tests that check a page in a real browser (Debian package `chromium`,
listed in tools/apt-packages.txt). Installs nothing: tests skip with `needs_chromium` when it is absent."""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH, HEIGHT = 1280, 720
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian: chromium)")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run headless Chromium with a throwaway profile, no network services, a 1280x720 window."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WIDTH},{HEIGHT}", *args],
        capture_output=True, text=True, timeout=120)


def screenshot(page: Path, tmp_path: Path) -> Path:
    """A first-viewport screenshot of `page`, checked to be a PNG of the window's size."""
    shot = tmp_path / "shot.png"
    r = chromium(f"--screenshot={shot}", page.resolve().as_uri(), tmp_path=tmp_path)
    assert shot.is_file(), r.stderr[-2000:]
    assert png_size(shot.read_bytes()) == (WIDTH, HEIGHT)
    return shot


def element_box(html_text: str, element_id: str, tmp_path: Path) -> tuple[int, int, str]:
    """(top, bottom, text) of the element with `element_id` as Chromium laid the page out: a small
    inline script writes its bounding box into the title, read back from --dump-dom."""
    probe = tmp_path / "probe.html"
    probe.write_text(html_text.replace(
        "</body>", f"<script>const e=document.getElementById('{element_id}');const r=e.getBoundingClientRect();"
        "document.title='BOX:'+Math.round(r.top)+':'+Math.round(r.bottom)+':'+e.textContent;</script></body>"),
        encoding="utf-8")
    r = chromium("--dump-dom", probe.resolve().as_uri(), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r"<title>BOX:(-?\d+):(-?\d+):([^<]*)</title>", r.stdout)
    assert m, r.stdout[:2000]
    return int(m.group(1)), int(m.group(2)), m.group(3)
