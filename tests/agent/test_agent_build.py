"""The agent's sources: the mingw build is cached by content, and the MSVC branch is well-formed."""
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.agent import build
from harness.agent.protocol import AgentUnavailable

MINGW_INCLUDE = Path("/usr/share/mingw-w64/include")


def _compiler():
    try:
        return build.find_compiler()
    except AgentUnavailable as exc:
        pytest.skip(str(exc))


def test_build_is_cached_by_content(tmp_path, monkeypatch):
    _compiler()
    src = tmp_path / "agent"
    shutil.copytree(build.source_dir() / "src", src / "src")
    monkeypatch.setenv("WFP_AGENT_SOURCE", str(src))
    monkeypatch.setenv("WFP_AGENT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WFP_AGENT_EXE", raising=False)
    exe = build.agent_exe()
    assert exe.parent == tmp_path / "cache" and exe.read_bytes()[:2] == b"MZ"
    ident = exe.stem.removeprefix("winsock-agent-")
    assert ident.encode() in exe.read_bytes()                  # the build id is compiled in
    assert build.agent_exe() == exe                            # cached: same file, not rebuilt
    (src / "src" / "agent.c").write_text((src / "src" / "agent.c").read_text() + "\n/* changed */\n")
    stale = build.agent_exe()
    assert stale != exe and stale.is_file()                    # a changed source is a new build


def test_broken_source_names_the_compiler_error(tmp_path, monkeypatch):
    _compiler()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "agent.c").write_text("int main(void) { return undefined_thing; }\n")
    monkeypatch.setenv("WFP_AGENT_SOURCE", str(tmp_path))
    monkeypatch.setenv("WFP_AGENT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WFP_AGENT_EXE", raising=False)
    with pytest.raises(build.AgentBuildError, match="undefined_thing"):
        build.agent_exe()
    assert not list((tmp_path / "cache").glob("*.exe"))        # no half-built exe left behind


def test_msvc_branch_is_well_formed():
    clang = shutil.which("clang") or shutil.which("clang-14")
    if clang is None or not (MINGW_INCLUDE / "windows.h").exists():
        pytest.skip("needs clang and mingw-w64 headers (Debian packages clang, mingw-w64-x86-64-dev)")
    source = build.source_dir() / "src" / "agent.c"
    assert "__try" in source.read_text()
    result = subprocess.run([clang, "--target=x86_64-pc-windows-msvc", "-fgnuc-version=4.2.1", "-fsyntax-only",
                             "-nostdlibinc", "-isystem", str(MINGW_INCLUDE), "-Wall", "-Wextra", "-Werror",
                             str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
