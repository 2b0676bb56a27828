"""The analyzer against every simulator scenario (docs/decisions.md §6), through both CLIs.

`python -m sim scenario run NAME --json --pcap FILE` reports each connection
from the simulator's side; `wfp-harness capture analyze FILE --json`, from
the packets alone, must tell the same story: original destination, hop
chain, final destination, verdict and whether the bytes arrived intact.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.capture import HostPort
from harness.cli import main

pytestmark = pytest.mark.slow

scenarios = pytest.importorskip("sim.worlds.scenarios", reason="the simulator's scenarios are not built yet")

# The simulator's verdicts are ok / loop / error; the capture names the error.
VERDICT = {"ok": "ok", "loop": "loop", "unreached": "error", "reset": "error", "altered": "error"}


def run_scenario(name, tmp_path):
    path = tmp_path / f"{name}.pcapng"
    run = subprocess.run([sys.executable, "-m", "sim", "scenario", "run", name, "--json", "--pcap", str(path)],
                         capture_output=True, text=True, timeout=300, check=False)
    if run.returncode not in (0, 1) or not run.stdout.strip():
        pytest.fail(f"scenario {name} did not run: rc={run.returncode} {run.stderr[-2000:]}")
    report = json.loads(run.stdout)
    assert run.returncode == (0 if report["verdict"] == "ok" else 1)       # as capture analyze
    return report, path


def analyze(path, capsys, *args):
    capsys.readouterr()
    rc = main(["capture", "analyze", str(path), *args])
    return rc, capsys.readouterr().out


def ep(text):
    return str(HostPort.parse(text)) if text else None


def wire_chain(report, conn):
    """Where each of the connection's connects went, as the packets show it.

    When the world stops a loop it refuses the connect itself (sim/wfp/hops.py),
    so that last hop never reaches the wire.
    """
    hops = conn["hops"] or [{"destination": conn["original_destination"], "redirected_to": "", "vendor": ""}]
    if conn["verdict"] == "loop" and any(d["kind"] == "redirect-loop-stopped" for d in report["diagnostics"]):
        hops = hops[:-1]
    return [(ep(h["redirected_to"] or h["destination"]), h["vendor"] or None) for h in hops]


def test_every_listed_scenario_is_covered():
    run = subprocess.run([sys.executable, "-m", "sim", "scenario", "list"], capture_output=True, text=True,
                         timeout=120, check=True)
    assert [line.split()[0] for line in run.stdout.splitlines()] == list(scenarios.SCENARIOS)


@pytest.mark.parametrize("name", list(scenarios.SCENARIOS))
def test_capture_agrees_with_the_scenario(tmp_path, capsys, name):
    report, path = run_scenario(name, tmp_path)
    rc, out = analyze(path, capsys, "--json")
    result = json.loads(out)
    assert len(result["flows"]) == len(report["connections"]), result["flows"]
    for conn, flow in zip(report["connections"], result["flows"]):
        assert flow["proto"] == conn["protocol"]
        assert flow["original_destination"] == ep(conn["original_destination"])
        assert [(h["dst"], h["redirected_by"]) for h in flow["hops"]] == wire_chain(report, conn)
        assert flow["final_destination"] == ep(conn["final_destination"])
        assert VERDICT[flow["verdict"]] == conn["verdict"]
        assert flow["intact"] == conn["intact"]
        assert flow["reached"] == bool(conn["final_destination"])
    assert rc == (0 if report["verdict"] == "ok" else 1)


@pytest.mark.parametrize("name", ["missing-set-loop", "non-elevated-set"])
def test_loop_summary_counts_one_proxy_and_an_unreached_destination(tmp_path, capsys, name):
    _report, path = run_scenario(name, tmp_path)
    rc, out = analyze(path, capsys)
    assert rc == 1
    head = next(line for line in out.splitlines() if line.startswith("flow 1 "))
    assert "-> 192.0.2.20:80 via 1 proxy (3 visits): LOOP, never reached" in head, out
    assert "bytes intact" not in out and "end to end: 192.0.2.20:80 never reached" in out
    assert out.splitlines()[-1] == "summary: 1 flow, 1 proxied, 1 loop, 1 unreached"
