"""The controller-side suite end to end: vcsim, a stand-in guest (real sshd, pinned host key)
whose only part of the harness is the uploaded winsock-agent, run under wine64 behind its
sshd; the suite runs here, its calls travel over the guest's SSH connection to Wine's ws2_32.
A guest that goes away while a call is in flight is a guest fault naming that call."""

from __future__ import annotations

import json
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.vm.orchestrator import Orchestrator
from lab_testlib import _ssh, clones_of, make_driver, run_options


def _guest(out, name):
    return next(g for g in out.results["guests"] if g["guest"] == name)


def test_controller_side_suite_reaches_wine_through_the_guests_ssh(make_lab, standins, vcsim, tmp_path):
    (s,) = standins(1)
    lab = make_lab([s.guest_toml(suite="controller")])
    opts, stream = run_options(tmp_path, None, vcsim, driver=make_driver(tmp_path))
    out = Orchestrator(lab, opts).run()
    g = _guest(out, s.name)
    assert out.exit_code == 0, json.dumps(g, indent=1)[:4000]
    assert g["status"] == "passed" and g["counts"]["passed"] > 20 and g["counts"]["failed"] == 0
    assert g["verifier_on"] is True and g["driver_loaded"] is True
    assert "install_harness" not in g["phase_times"] and g["harness_path"] is None
    # the same test ids as a suite run on a guest (the gate compares them across guests and runs)
    assert g["tests"] and all(t["id"].startswith("harness.conformance.test_") for t in g["tests"])
    # the guest got the agent and the driver, nothing of the harness
    run = next(s.workdir.glob(f"{out.run_id}-a1"))
    assert sorted(p.name for p in (run / "in").iterdir()) == ["driver", "run-config.json", "winsock-agent.exe"]
    assert not list(run.glob("venv*"))
    # the JUnit was written here, by a suite whose calls ran in Wine on the guest, through the agent target
    junit = out.run_dir / g["junit"]
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().iter("property")}
    assert props["wfp.target"] == "agent" and "(Wine " in props["wfp.os_build"]
    assert props["wfp.profile"] == "wine-8.0"
    endpoint = json.loads((junit.parent.parent / "agent-endpoint.json").read_text())
    assert endpoint["host_key"] == s.sshd.host_key_line and endpoint["command"].startswith("wine-exe ")
    assert "PRIVATE KEY" not in json.dumps(endpoint)            # names of secrets only
    assert not (junit.parent.parent / "guest-dropped.json").exists()
    assert clones_of(lab, vcsim, out.run_id) == []


def test_guest_going_down_mid_call_is_a_guest_fault_naming_the_call(make_lab, standins, vcsim, tmp_path):
    (s,) = standins(1)
    went_down = threading.Event()

    def bugcheck_mid_call():
        # Wait (bounded by count) until the suite has passed a test: its agent is up and in use.
        for _ in range(6000):
            if any(b" PASSED" in p.read_bytes() for p in tmp_path.rglob("*-run_suite-*-suite.out")):
                break
            threading.Event().wait(0.02)
        _ssh.freeze_with_a_call_in_flight(s.sshd.proc.pid)     # the guest hangs on its way down ...
        s.crash()                                      # ... and goes down: sshd and agent die, dumps, a reboot
        went_down.set()
    w = threading.Thread(target=bugcheck_mid_call, daemon=True)
    w.start()
    lab = make_lab([s.guest_toml(suite="controller")])
    opts, _ = run_options(tmp_path, None, vcsim, driver=make_driver(tmp_path))
    out = Orchestrator(lab, opts).run()
    w.join(60)
    assert went_down.is_set(), "the guest never went down with a call in flight (see the thread's warning)"
    g = _guest(out, s.name)
    assert g["status"] == "failed" and g["classification"] == "guest", json.dumps(g, indent=1)[:4000]
    assert g["reason"] == "bugcheck" and g["phase"] == "run_suite" and len(g["attempts"]) == 1
    call, test = g["in_flight"]["call"], g["in_flight"]["test"]
    assert call.split("(")[0] and call.endswith(")")
    assert f"in flight: {call} (test {test})" in g["cause"]
    # the test (and its phase: a fixture's cleanup may be what lost its answer) as pytest named it
    name, phase = test.split("::")[-1].rsplit(" ", 1)
    assert phase in ("(setup)", "(call)", "(teardown)") and any(t["id"].endswith("::" + name) for t in g["tests"])
    # every artifact kept: the suite's own output and JUnit, the guest's dumps and their analysis
    attempt = out.run_dir / "guests" / s.name / "attempt-1"
    assert (attempt / "results" / "junit.xml").is_file() and (attempt / "guest-dropped.json").is_file()
    assert call in (attempt / "agent-in-flight.jsonl").read_text()
    assert list((attempt / "logs").glob("*-run_suite-*-suite.out"))
    assert sorted(Path(d).name for d in g["dumps"]) == ["a1-112626-01.dmp", "a1-MEMORY.DMP"]
    md = (out.run_dir / "report.md").read_text()
    assert "(guest, run_suite)" in md and call in md
    assert out.exit_code == 1
    assert clones_of(lab, vcsim, out.run_id) == []
