"""The layers of docs/decisions.md §2, as import-linter contracts in pyproject.toml.

The contract imports nothing else of the project; the clients (proxy, sample
driver) import only the contract; the simulator's model imports only the
contract, and only sim.worlds builds worlds with the clients' actors.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(tree))
    return subprocess.run([str(LINT), "--config", str(tree / "pyproject.toml"), "--no-cache"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def test_the_layers_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_model_module_importing_a_client_breaks_the_check(tmp_path):
    for part in ("sim", "harness"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    kernel = tmp_path / "sim" / "kernel.py"
    kernel.write_text(kernel.read_text() + "\nfrom harness.proxy import reference  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "sim.kernel -> harness.proxy.reference" in result.stdout


def test_every_model_module_is_under_the_no_actors_contract():
    import tomllib
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    listed = set(next(c for c in config if c["name"] == "The model does not build worlds with actors")["source_modules"])
    sim = ROOT / "sim"
    modules = {f"sim.{p.stem}" for p in sim.glob("*.py") if p.stem not in ("__init__", "__main__")}
    modules |= {f"sim.{p.name}" for p in sim.iterdir() if (p / "__init__.py").exists() and p.name != "worlds"}
    assert modules - listed == set(), "add the new model modules to pyproject.toml's contract"
