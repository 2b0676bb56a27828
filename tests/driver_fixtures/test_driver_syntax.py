"""Syntax-only compile of the sample driver's C sources (no WDK here).

clang targets x86_64-pc-windows-msvc against mingw-w64's DDK headers plus
include/fwps_prototypes.h (README "CI syntax check"). This proves the C is
well-formed against the documented prototypes, not that it links or runs.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "driver-fixtures" / "wfp-redirect-callout"
MINGW_INCLUDE = Path("/usr/share/mingw-w64/include")
SOURCES = sorted((DRIVER / "src").glob("*.c"))


def clang() -> str | None:
    return shutil.which("clang") or shutil.which("clang-14")


def kernel_syntax_cmd(source: Path, *extra: str) -> list[str]:
    return [clang(), "--target=x86_64-pc-windows-msvc", "-fgnuc-version=4.2.1", "-fsyntax-only",
            "-nostdlibinc", "-isystem", str(MINGW_INCLUDE), "-isystem", str(MINGW_INCLUDE / "ddk"),
            "-I", str(DRIVER / "include"), "-Wall", "-Wextra", "-Werror", *extra, str(source)]


def require_toolchain():
    if clang() is None:
        pytest.skip("clang is not installed (Debian package 'clang'); cannot syntax-check the driver")
    if not (MINGW_INCLUDE / "ddk" / "wdm.h").exists():
        pytest.skip("mingw-w64 headers missing (Debian package 'mingw-w64-x86-64-dev')")


def test_sources_are_the_ones_the_project_builds():
    # The CI check must cover exactly what the WDK build compiles.
    vcxproj = (DRIVER / "wfp_redirect_callout.vcxproj").read_text()
    built = sorted(Path(p.replace("\\", "/")).name for p in re.findall(r'<ClCompile Include="([^"]+)"', vcxproj))
    assert built == [p.name for p in SOURCES]
    assert len(SOURCES) >= 4


@pytest.mark.parametrize("pool", ["pool2", "pool-with-tag"])
@pytest.mark.parametrize("source", SOURCES, ids=[p.name for p in SOURCES])
def test_driver_source_compiles_syntax_only(source, pool):
    require_toolchain()
    extra = ("-DWFPRC_USE_POOL2=0",) if pool == "pool-with-tag" else ()
    result = subprocess.run(kernel_syntax_cmd(source, *extra), capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"clang -fsyntax-only failed for {source.name} ({pool}):\n{result.stderr}{result.stdout}")
    assert result.stderr == ""


def test_syntax_check_catches_a_broken_source(tmp_path):
    # Guard against a check that passes vacuously (e.g. headers not found).
    require_toolchain()
    broken = tmp_path / "broken.c"
    broken.write_text('#include "wfprc_kernel.h"\n'
                      "VOID f(void) { FWPS_CONNECT_REQUEST0 r; r.noSuchMember = 1; }\n")
    result = subprocess.run(kernel_syntax_cmd(broken), capture_output=True, text=True)
    assert result.returncode != 0
    assert "noSuchMember" in result.stderr


def test_fallback_header_is_inert_when_the_real_fwpsk_h_was_seen(tmp_path):
    # With FWPSX_H defined (the real fwpsk.h's guard) the fallback declares
    # nothing, so a WDK build can never mix the two.
    require_toolchain()
    probe = tmp_path / "probe.c"
    probe.write_text("#include <ntddk.h>\n#define FWPSX_H\n#include \"fwps_prototypes.h\"\n"
                     "FWPS_CONNECT_REQUEST0 *p;\n")
    result = subprocess.run(kernel_syntax_cmd(probe), capture_output=True, text=True)
    assert result.returncode != 0
    assert "FWPS_CONNECT_REQUEST0" in result.stderr
