"""The analyzer against the simulator's own scenarios (docs/decisions.md §6), through their CLI contract.

`python -m sim scenario run NAME --json --pcap FILE` reports each connection's
hops and verdict from the simulator's side; the capture, read back by
harness.capture, must tell the same story from the packets alone: the same
proxies in the same order, the same final destination, bytes intact; and a
scenario the simulator calls a loop or an error must show up as a problem.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.capture import Endpoint, analyze_file

pytestmark = pytest.mark.slow

pytest.importorskip("sim.worlds.scenarios", reason="the simulator's scenarios are not built yet")


def run_scenario(name, tmp_path):
    path = tmp_path / f"{name}.pcapng"
    run = subprocess.run([sys.executable, "-m", "sim", "scenario", "run", name, "--json", "--pcap", str(path)],
                         capture_output=True, text=True, timeout=300, check=False)
    if run.returncode not in (0, 1) or not run.stdout.strip():
        pytest.fail(f"scenario {name} did not run: rc={run.returncode} {run.stderr[-2000:]}")
    return json.loads(run.stdout), analyze_file(path)


@pytest.mark.parametrize("name", ["single-proxy", "two-vendors", "dual-stack", "udp-single-proxy",
                                  "udp-two-vendors"])
def test_capture_agrees_with_the_scenario(tmp_path, name):
    report, result = run_scenario(name, tmp_path)
    ok = [c for c in report["connections"] if c["verdict"] == "ok"]
    assert ok, report
    for conn in ok:
        proxies = [Endpoint.parse(h["redirected_to"]) for h in conn["hops"] if h.get("redirected_to")]
        final = Endpoint.parse(conn["final_destination"])
        matches = [f for f in result.flows if f.proxies == proxies and f.final_destination == final]
        assert matches, (conn, [f.to_dict() for f in result.flows])
        flow = matches[0]
        assert flow.proto == conn["protocol"] and flow.reached and flow.intact and flow.verdict == "ok"
        assert [h.redirected_by for h in flow.hops[:-1]] == [h["vendor"] for h in conn["hops"] if h.get("vendor")]
    assert not result.problems


@pytest.mark.parametrize("name", ["missing-set-loop", "non-elevated-set", "query-listening-socket"])
def test_scenario_failures_are_problems_in_the_capture(tmp_path, name):
    report, result = run_scenario(name, tmp_path)
    bad = [c for c in report["connections"] if c["verdict"] != "ok"]
    assert bad and result.problems
    for flow in result.problems:
        # the client's connection went to the proxy and no onward connection reached the destination
        assert flow.proxies == [] or flow.loop
        assert flow.original_destination == Endpoint.parse(bad[0]["original_destination"])
