"""Long steps speak: the vCenter simulator's build (about 40 s the first time) says so with its elapsed
time, in `wfp-harness lab demo` and in pytest's output when the lab tests run."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.long_step import long_step

ROOT = Path(__file__).resolve().parents[2]


def test_a_long_step_says_it_started_is_still_going_and_how_long_it_took():
    lines, ticked = [], threading.Event()

    def say(line):
        lines.append(line)
        if "still" in line:
            ticked.set()

    with long_step(say, "building the thing", every=0.01):
        assert ticked.wait(30)              # a bound for a hung ticker, not a timing assertion
    assert lines[0] == "building the thing ..."
    assert re.fullmatch(r"  \.\.\. still building the thing \(\d+ s so far\)", lines[1])
    assert re.fullmatch(r"  done in \d+\.\d s", lines[-1])


def _go_and_govmomi():
    return os.path.isdir("/usr/share/gocode/src/github.com/vmware/govmomi/simulator") and \
        subprocess.run(["sh", "-c", "command -v go"], capture_output=True).returncode == 0


needs_go = pytest.mark.skipif(not _go_and_govmomi(), reason="vcsim needs golang-go and golang-github-vmware-govmomi-dev")


@needs_go
def test_the_demo_says_it_builds_the_vcenter_simulator(capsys):
    from harness.vm.demo import build_vcsim_saying
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wfp-harness" / "vcsim"
    assert build_vcsim_saying(cache).is_file()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("demo: building the vCenter simulator (tools/vcsim; about 40 s")
    assert re.fullmatch(r"demo:   done in \d+\.\d s", out[-1])


@needs_go
def test_pytest_says_it_builds_the_vcenter_simulator_before_the_lab_tests():
    lab = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider",
                          "tests/vm_vsphere/test_vm_lab_config.py"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert re.search(r"^(vCenter simulator for the lab tests: cached \(.*wfp-vcsim\)"
                     r"|building the vCenter simulator for the lab tests .*)$", lab.stdout, re.M), lab.stdout[-2000:]
    other = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider",
                            "tests/cli/test_cli_surface.py"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "vCenter simulator" not in other.stdout
