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

__all__ = ["DriverPackage", "build_wheel", "build_wheelhouse", "check_wheelhouse", "project_root", "harness_version",
           "sha256_file", "GUEST_REQUIREMENTS"]

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

    @property
    def certificates(self) -> list[str]:
        """The package's test-signing certificates (imported into the guest's
        Root and TrustedPublisher stores before pnputil, or it refuses the package)."""
        return sorted(n for n in self.files if n.lower().endswith(".cer"))

    @property
    def pdbs(self) -> list[str]:
        """Symbol files shipped with the driver (cdb's symbol path starts with their folder)."""
        return sorted(n for n in self.files if n.lower().endswith(".pdb"))

    def to_dict(self) -> dict:
        return {"path": str(self.local), "service": self.service, "inf": self.inf, "sys": self.sys,
                "version": self.version, "sha256": self.sha256, "files": dict(self.files),
                "certificates": self.certificates, "pdbs": self.pdbs}


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


# What the conformance suite imports on a guest besides the project itself
# (harness.conformance, harness.pytest_plugin, harness.targets, sim: only
# pytest).  The project's other dependencies (paramiko, pyvmomi, scapy) serve
# the controller and are not installed on guests.
GUEST_REQUIREMENTS = ("pytest>=8",)
WHEELHOUSE_REQUIREMENTS = "requirements.txt"


def _pure(name: str) -> bool:
    # PEP 427 file name: {dist}-{version}(-{build})?-{python}-{abi}-{platform}.whl
    parts = name[:-4].split("-")
    return len(parts) >= 5 and parts[-2] == "none" and parts[-1] == "any"


def build_wheelhouse(out_dir: Path, *, project_wheel: Path | None = None, timeout: float = 600.0) -> Path:
    """A folder a guest installs from with ``pip install --no-index``: the
    project wheel, the wheels of :data:`GUEST_REQUIREMENTS` and their
    dependencies (``pip wheel`` on the controller, from its configured
    index), and ``requirements.txt``.

    Only pure-Python wheels (``*-none-any``) are platform independent; a
    requirement whose wheel has native parts is refused by name, because a
    Linux wheel would not install on a Windows guest.  Such a package would
    have to be fetched for the guest's platform (``pip download --platform
    win_amd64 --python-version 3.11 --only-binary=:all:``) into a folder
    passed as ``--wheelhouse``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if project_wheel is None:
        project_wheel = build_wheel(out_dir, timeout=timeout)
    elif project_wheel.parent.resolve() != out_dir.resolve():
        shutil.copy2(project_wheel, out_dir / project_wheel.name)
    cmd = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", "--only-binary=:all:",
           "-w", str(out_dir), *GUEST_REQUIREMENTS]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise HarnessError(f"building the guest wheelhouse failed (exit {r.returncode}): "
                           f"{(r.stderr or r.stdout).strip()[-2000:]}", phase="build_wheel")
    native = sorted(p.name for p in out_dir.glob("*.whl") if not _pure(p.name))
    if native:
        raise HarnessError("the guest wheelhouse would hold wheels with native parts, built for this machine, "
                           f"not for the guest: {', '.join(native)}", phase="build_wheel")
    (out_dir / WHEELHOUSE_REQUIREMENTS).write_text("".join(f"{r}\n" for r in GUEST_REQUIREMENTS), encoding="utf-8")
    return out_dir


def check_wheelhouse(path: Path) -> Path:
    """The project wheel inside a wheelhouse folder; ValueError if it is not one."""
    if not path.is_dir():
        raise ValueError(f"--wheelhouse {path}: not a directory")
    if not (path / WHEELHOUSE_REQUIREMENTS).is_file():
        raise ValueError(f"--wheelhouse {path}: no {WHEELHOUSE_REQUIREMENTS}")
    wheels = sorted(path.glob("wfp_redirect_harness-*.whl"))
    if len(wheels) != 1:
        raise ValueError(f"--wheelhouse {path}: expected one wfp_redirect_harness wheel, found {len(wheels)}")
    return wheels[0]
