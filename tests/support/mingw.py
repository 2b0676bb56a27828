"""The mingw-w64 cross compiler, for the tests that check C declarations against its headers."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

CC = shutil.which("x86_64-w64-mingw32-gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="x86_64-w64-mingw32-gcc not installed "
                                                  "(Debian: apt-get install gcc-mingw-w64-x86-64)")
# A syntax check that fails on the mistakes a wrong prototype makes (not only warns).
SYNTAX_FLAGS = ["-std=gnu11", "-fsyntax-only", "-fdiagnostics-color=never", "-fmax-errors=0",
                "-Werror=incompatible-pointer-types", "-Werror=int-conversion"]


def syntax_check(tmp_path, filename: str, source: str) -> subprocess.CompletedProcess:
    """Write `source` to tmp_path/filename and syntax-check it with mingw-w64 (English diagnostics)."""
    (tmp_path / filename).write_text(source)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "LANGUAGE": ""}
    return subprocess.run([CC, *SYNTAX_FLAGS, filename], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
