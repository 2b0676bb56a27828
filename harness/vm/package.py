"""What a run ships to a guest: the project wheel and the driver package.

The wheel is built once per run (``pip wheel --no-deps``) from a copy of the
source tree, so building never writes into the checkout and parallel builds
cannot race.  The driver package is a directory (INF, SYS, CAT, ...) or a
single file; its SHA-256 digests go into the verdict.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.vm.errors import HarnessError

__all__ = ["DriverPackage", "build_wheel", "project_root", "harness_version", "sha256_file"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def harness_version() -> str:
    try:
        from importlib.metadata import version
        return version("wfp-redirect-harness")
    except Exception:  # running from a bare checkout
        return "unknown"


@dataclass(frozen=True)
class DriverPackage:
    """A driver package on the orchestrator's disk.

    ``sha256`` is the digest of the driver binary (the one ``.sys``) when
    there is exactly one, else of the sorted manifest of every file's digest;
    ``files`` has every file's digest either way."""

    local: Path
    service: str
    inf: str | None
    sys: str | None
    version: str
    sha256: str
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path, *, service: str | None = None) -> "DriverPackage":
        p = Path(path).resolve()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.is_symlink())
        elif p.is_file():
            files = [p]
        else:
            raise FileNotFoundError(f"driver package not found: {p}")
        if not files:
            raise ValueError(f"driver package {p} is empty")
        base = p if p.is_dir() else p.parent
        digests = {f.relative_to(base).as_posix(): sha256_file(f) for f in files}
        infs = [f for f in files if f.suffix.lower() == ".inf"]
        syss = [f for f in files if f.suffix.lower() == ".sys"]
        version = "unknown"
        svc = service
        if len(infs) == 1:
            text = infs[0].read_text(encoding="utf-8", errors="replace")
            m = re.search(r"^\s*DriverVer\s*=\s*([^;\r\n]+)", text, re.M | re.I)
            if m:
                version = m.group(1).strip()
            if svc is None:
                m = re.search(r'^\s*ServiceName\s*=\s*"?([A-Za-z0-9_.-]+)"?', text, re.M | re.I)
                svc = m.group(1) if m else None
        if svc is None:
            svc = (syss[0].stem if len(syss) == 1 else infs[0].stem if len(infs) == 1 else p.stem)
        if not _SAFE_NAME.match(svc):
            raise ValueError(f"driver service name {svc!r}: letters, digits, '.', '_' and '-' only")
        if len(syss) == 1:
            digest = digests[syss[0].relative_to(base).as_posix()]
        else:
            manifest = "".join(f"{d}  {n}\n" for n, d in sorted(digests.items()))
            digest = hashlib.sha256(manifest.encode()).hexdigest()
        return cls(local=p, service=svc, inf=infs[0].name if len(infs) == 1 else None,
                   sys=syss[0].name if len(syss) == 1 else None, version=version, sha256=digest,
                   files=digests)

    def to_dict(self) -> dict:
        return {"path": str(self.local), "service": self.service, "inf": self.inf, "sys": self.sys,
                "version": self.version, "sha256": self.sha256, "files": dict(self.files)}


def project_root() -> Path | None:
    """The source checkout this ``harness`` was imported from, if any."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "harness").is_dir() else None


def build_wheel(out_dir: Path, *, source: Path | None = None, timeout: float = 600.0) -> Path:
    """Build the project wheel into ``out_dir`` and return its path."""
    src = source or project_root()
    if src is None:
        raise HarnessError("cannot find the project source to build a wheel; pass --wheel FILE",
                           phase="build_wheel")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wfph-wheel-") as tmp:
        tree = Path(tmp) / "src"
        tree.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
        for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "setup.py", "MANIFEST.in"):
            if (src / name).is_file():
                shutil.copy2(src / name, tree / name)
        for pkg in ("harness", "sim"):
            if (src / pkg).is_dir():
                shutil.copytree(src / pkg, tree / pkg, ignore=ignore)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
               "-q", "-w", str(out_dir), str(tree)]
        # Offline when the build backend is already here; else pip fetches it.
        if importlib.util.find_spec("wheel") is not None and importlib.util.find_spec("setuptools") is not None:
            cmd.insert(4, "--no-build-isolation")
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise HarnessError(f"building the project wheel failed (exit {r.returncode}): "
                               f"{(r.stderr or r.stdout).strip()[-2000:]}", phase="build_wheel")
    wheels = sorted(out_dir.glob("wfp_redirect_harness-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise HarnessError(f"pip wheel produced no wheel in {out_dir}", phase="build_wheel")
    return wheels[-1]
