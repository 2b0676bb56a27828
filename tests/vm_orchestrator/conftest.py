"""Fixtures for the orchestrator tests: vcsim (from tests/vm_vsphere), stand-in
guests (real sshd per guest), the project wheel (built once per worker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab_testlib import make_standin, write_lab
from vsphere_testlib import vcsim, vcsim_binary  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The guest wheelhouse (project wheel + pytest's wheels), built once."""
    from harness.vm.package import build_wheelhouse
    return build_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))


@pytest.fixture
def standins(tmp_path: Path, wine_available):
    """Stand-in guests; their Winsock is Wine's (wine64 and mingw-w64, else a skip naming the package)."""
    made = []

    def make(n: int = 1, prefix: str = "g"):
        new = [make_standin(tmp_path / "standins", f"{prefix}{len(made) + i + 1}") for i in range(n)]
        made.extend(new)
        return new

    yield make
    for s in made:
        s.sshd.stop()


@pytest.fixture
def make_lab(vcsim, tmp_path: Path):
    from harness.vm.config import load_config

    def make(guests, *, extra_guests: str = "", **kw):
        text = "".join(g.guest_toml() if hasattr(g, "guest_toml") else g for g in guests) + extra_guests
        p = write_lab(tmp_path / f"lab-{len(list(tmp_path.glob('lab-*.toml')))}.toml", vcsim, text, **kw)
        return load_config(p)

    return make
