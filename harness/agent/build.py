"""Build the winsock-agent with mingw-w64 into a cache outside the source tree.

    exe = agent_exe()      # WFP_AGENT_EXE if set, else the cached build, compiled if missing or stale

The executable is named after a hash of its sources, the compiler's identity
and the flags (`winsock-agent-<hash>.exe` in `cache_dir()`), so editing a
source makes a new build and a stale one is never used; the hash is also the
build id the agent reports in its HELLO. Builds go to a temporary file renamed
into place, so concurrent test processes never see a half-written exe.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.agent.protocol import AgentError, AgentUnavailable

COMPILER = "x86_64-w64-mingw32-gcc"
COMPILER_PACKAGE = "gcc-mingw-w64-x86-64"
CFLAGS = ("-static", "-O2", "-Wall", "-Wextra", "-Werror")
KEEP_BUILDS = 4           # older cached builds (other checkouts, earlier sources) beyond these are removed
LIBS = ("-lws2_32", "-lmswsock", "-ladvapi32")


class AgentBuildError(AgentError):
    """The compiler rejected the agent's sources."""


def source_dir() -> Path:
    """driver-fixtures/winsock-agent of this checkout (env WFP_AGENT_SOURCE overrides)."""
    override = os.environ.get("WFP_AGENT_SOURCE")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "driver-fixtures" / "winsock-agent"


def cache_dir() -> Path:
    """Env WFP_AGENT_CACHE, else $XDG_CACHE_HOME/wfp-harness, else ~/.cache/wfp-harness."""
    override = os.environ.get("WFP_AGENT_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wfp-harness"


def sources() -> list[Path]:
    src = source_dir() / "src"
    files = sorted(p for p in src.glob("*") if p.suffix in (".c", ".h"))
    if not any(p.suffix == ".c" for p in files):
        raise AgentError(f"no winsock-agent sources in {src} (set WFP_AGENT_SOURCE, or WFP_AGENT_EXE to a built agent)")
    return files


def find_compiler() -> str:
    path = shutil.which(COMPILER)
    if path is None:
        raise AgentUnavailable(f"{COMPILER} not found: install the Debian package {COMPILER_PACKAGE}",
                               COMPILER_PACKAGE)
    return path


def _compiler_id(compiler: str) -> str:
    out = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else compiler


def build_id(compiler: str) -> str:
    digest = hashlib.sha256()
    for part in (_compiler_id(compiler), *CFLAGS, *LIBS):
        digest.update(part.encode() + b"\0")
    for path in sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def agent_exe() -> Path:
    """The agent executable to run: WFP_AGENT_EXE, or the cached build (built now if needed)."""
    override = os.environ.get("WFP_AGENT_EXE")
    if override:
        path = Path(override)
        if not path.is_file():
            raise AgentError(f"WFP_AGENT_EXE={override}: no such file")
        return path
    compiler = find_compiler()
    ident = build_id(compiler)
    cache = cache_dir()
    exe = cache / f"winsock-agent-{ident}.exe"
    if exe.is_file():
        return exe
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".exe", dir=cache)
    os.close(fd)
    src = [str(p) for p in sources() if p.suffix == ".c"]
    cmd = [compiler, *CFLAGS, f'-DAGENT_BUILD_ID="{ident}"', "-o", tmp, *src, *LIBS]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise AgentBuildError(f"building the winsock-agent failed ({' '.join(cmd)}):\n{proc.stderr.strip()}")
        os.replace(tmp, exe)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _prune(cache, keep=exe)
    return exe


def _prune(cache: Path, keep: Path) -> None:
    builds = sorted(cache.glob("winsock-agent-*.exe"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in builds if p != keep][KEEP_BUILDS - 1:]:
        try:
            old.unlink()
        except OSError:
            pass                  # in use or already gone: harmless
