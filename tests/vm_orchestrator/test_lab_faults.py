"""Every fault of the issue, each against real parts: vcsim, real sshd
stand-ins, the real conformance suite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


from harness.vm.orchestrator import Orchestrator
from lab_testlib import CANARY_PASSWORD, all_text, clones_of, make_driver, run_options, write_lab

REPO = Path(__file__).resolve().parents[2]


def _when_suite_runs(standin, action):
    """Run ``action`` once the stand-in's sshd runs the conformance suite."""
    from lab_testlib import _ssh

    def watch():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            proc = standin.sshd.proc
            for pid in _ssh.descendants(proc.pid) if proc else []:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"harness.conformance" in cmd and b"pytest" in cmd:
                    time.sleep(0.3)
                    action()
                    return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def _guest(out, name):
    return next(g for g in out.results["guests"] if g["guest"] == name)


def test_sshd_killed_mid_run_is_infrastructure_retried_then_passes(make_lab, standins, wheel, vcsim, tmp_path):
    (s,) = standins(1)
    boot = s.boot_id

    def kill_and_restart():
        s.sshd.kill_hard()          # SSH drops; the guest did not reboot (same boot id)
        time.sleep(0.5)
        s.sshd.start(port=s.sshd.port)

    w = _when_suite_runs(s, kill_and_restart)
    lab = make_lab([s])
    opts, _ = run_options(tmp_path, wheel, vcsim)
    out = Orchestrator(lab, opts).run()
    w.join(5)
    g = _guest(out, s.name)
    assert [a["classification"] for a in g["attempts"]] == ["infrastructure", None]
    assert g["attempts"][0]["phase"] == "run_suite" and "dropped" in g["attempts"][0]["cause"]
    assert g["status"] == "passed" and g["bugcheck"] is None and s.boot_id == boot
    assert out.exit_code == 0
    assert clones_of(lab, vcsim, out.run_id) == []
    # nothing of attempt 1 was deleted
    assert (out.run_dir / "guests" / s.name / "attempt-1" / "logs").is_dir()


def test_sshd_killed_for_good_exhausts_the_retry_budget(make_lab, standins, wheel, vcsim, tmp_path):
    (s,) = standins(1)
    w = _when_suite_runs(s, s.sshd.kill_hard)
    lab = make_lab([s], timeouts="ssh = 2\nreboot = 3\ncommand = 60\ntest_run = 300\n")
    opts, _ = run_options(tmp_path, wheel, vcsim)
    out = Orchestrator(lab, opts).run()
    w.join(5)
    g = _guest(out, s.name)
    assert g["status"] == "infrastructure" and g["classification"] == "infrastructure"
    assert len(g["attempts"]) == 2                      # retries = 1 in the test config
    assert g["attempts"][0]["phase"] == "run_suite"
    assert g["attempts"][1]["phase"] == "connect"       # the guest never answered again
    assert "after 2 attempts" in g["cause"]
    assert out.exit_code == 3
    assert clones_of(lab, vcsim, out.run_id) == []


def test_hanging_remote_command_is_a_product_hang_not_retried(make_lab, standins, wheel, vcsim, tmp_path):
    (s,) = standins(1)
    s.set_knob("hang_pnputil", 600)
    drv = make_driver(tmp_path)
    lab = make_lab([s], timeouts="ssh = 10\nreboot = 30\ncommand = 20\ntest_run = 300\n")
    opts, _ = run_options(tmp_path, wheel, vcsim, driver=drv)
    out = Orchestrator(lab, opts).run()
    g = _guest(out, s.name)
    assert g["status"] == "failed" and g["classification"] == "product" and g["reason"] == "hang", g
    assert "hung in install_driver" in g["cause"]
    assert len(g["attempts"]) == 1 and g["attempts"][0]["phase"] == "install_driver"
    assert out.exit_code == 1
    assert clones_of(lab, vcsim, out.run_id) == []


def test_guest_reboot_mid_run_is_a_bugcheck_with_dumps_and_analysis(make_lab, standins, wheel, vcsim, tmp_path):
    (s,) = standins(1)
    w = _when_suite_runs(s, s.crash)
    lab = make_lab([s])
    drv = make_driver(tmp_path)
    opts, _ = run_options(tmp_path, wheel, vcsim, driver=drv, mode="gate",
                          baseline=_baseline(tmp_path, [s.name]))
    out = Orchestrator(lab, opts).run()
    w.join(5)
    g = _guest(out, s.name)
    assert g["classification"] == "product" and g["reason"] == "bugcheck"
    assert len(g["attempts"]) == 1                       # never retried
    assert g["bugcheck"]["detected_by"].startswith("ssh dropped and boot id changed")
    names = sorted(Path(d).name for d in g["dumps"])
    assert names == ["a1-112626-01.dmp", "a1-MEMORY.DMP"]
    for d in g["dumps"]:
        assert (out.run_dir / d).read_bytes().startswith(b"PAGEDU64")
    assert "BUGCHECK_CODE: d1" in g["bugcheck"]["summary"]
    # cdb found the driver's PDB through the symbol path: a symbolic frame, not module+offset
    assert "SYMBOL_NAME: wfp_redirect_callout!ClassifyConnect+42" in g["bugcheck"]["summary"]
    cdb = [c["argv"] for c in s.commands() if c["tool"] == "cdb"]
    assert cdb and all(a[a.index("-y") + 1].split(";")[0].endswith("/in/driver") for a in cdb)
    assert "Loading Dump File" in (out.run_dir / g["analysis"]).read_text()
    assert "BUGCHECK_CODE: d1" in (out.run_dir / "report.md").read_text()
    assert "BUGCHECK_CODE: d1" in (out.run_dir / "report.html").read_text()
    v = json.loads((out.run_dir / "verdict.json").read_text())
    assert v["verdict"] == "fail" and any("bugcheck" in r for r in v["reasons"])
    assert out.exit_code == 1
    assert clones_of(lab, vcsim, out.run_id) == []


def _baseline(tmp_path: Path, guests: list[str]) -> Path:
    p = tmp_path / "baseline.json"
    p.write_text(json.dumps({"run_id": "base", "guests": [{"guest": g, "tests": []} for g in guests]}))
    return p


def test_clone_failure_in_vcsim_is_retried_with_backoff_other_guests_pass(make_lab, standins, wheel, vcsim, tmp_path):
    (s,) = standins(1)
    broken = s.guest_toml(name="broken", template="wfp-broken")
    lab = make_lab([s], extra_guests=broken)
    opts, stream = run_options(tmp_path, wheel, vcsim)
    out = Orchestrator(lab, opts).run()
    g = _guest(out, "broken")
    assert g["status"] == "infrastructure" and len(g["attempts"]) == 2
    assert all(a["phase"] == "clone" and "NoDiskSpace" in a["cause"] for a in g["attempts"])
    assert "retry in 0.2 s" in stream.getvalue()
    assert _guest(out, s.name)["status"] == "passed"
    assert out.exit_code == 3


def test_wrong_host_key_is_refused_and_never_retried(make_lab, standins, wheel, vcsim, tmp_path):
    a, b = standins(2)
    # guest a pins b's host key: a's sshd offers another key
    lab = make_lab([a.guest_toml(host_key_file=f"{b.sshd.host_key}.pub")])
    opts, _ = run_options(tmp_path, wheel, vcsim)
    out = Orchestrator(lab, opts).run()
    g = _guest(out, a.name)
    assert g["status"] == "infrastructure" and len(g["attempts"]) == 1
    assert g["attempts"][0]["phase"] == "connect" and "does not match the pinned key" in g["cause"]
    assert not any(a.workdir.glob(f"{out.run_id}*"))     # nothing was uploaded or run
    assert out.exit_code == 3
    assert clones_of(lab, vcsim, out.run_id) == []


def test_vcenter_cert_from_wrong_ca_stops_the_run_early(make_lab, standins, wheel, vcsim, tmp_path):
    a, b = standins(2)
    lab = make_lab([a, b], vcenter=f'ca_bundle = "{vcsim.pki.wrong_ca_pem}"')
    opts, _ = run_options(tmp_path, wheel, vcsim)
    out = Orchestrator(lab, opts).run()
    assert out.exit_code == 3
    assert "certificate rejected" in out.results["stopped_early"]
    for g in out.results["guests"]:
        assert g["attempts"] == [] and g["classification"] == "infrastructure"
        assert "lab broken" in g["cause"] and "certificate rejected" in g["cause"]
    assert "Run stopped early" in (out.run_dir / "report.md").read_text()


def test_canary_secret_never_reaches_logs_reports_or_junit(make_lab, standins, wheel, vcsim, tmp_path):
    (s,) = standins(1)
    # The guest's environment leaks the secret into pytest's JUnit and into
    # the driver's install output; the vCenter password is the same canary.
    s.set_file("environment", f"PYTEST_ADDOPTS='-o junit_suite_name={CANARY_PASSWORD}'\n")
    s.set_knob("print_pnputil", f"token={CANARY_PASSWORD}")
    drv = make_driver(tmp_path)
    lab = make_lab([s])
    opts, stream = run_options(tmp_path, wheel, vcsim, driver=drv)
    out = Orchestrator(lab, opts).run()
    assert out.exit_code == 0, out.results["guests"][0]["cause"]
    junit = out.run_dir / _guest(out, s.name)["junit"]
    assert "********" in junit.read_text()                 # it was there, and was scrubbed
    leaks = [str(p) for p, data in all_text(out.run_dir)
             if CANARY_PASSWORD.encode() in data or CANARY_PASSWORD.encode("utf-16-le") in data]
    assert leaks == []
    assert CANARY_PASSWORD not in stream.getvalue()


def test_ctrl_c_destroys_clones_and_keeps_artifacts(vcsim, standins, wheel, tmp_path):
    (s,) = standins(1)
    s.set_file("environment", "sleep 20\n")   # a slow guest: Ctrl-C lands while the suite's command runs
    cfg = write_lab(tmp_path / "lab.toml", vcsim, s.guest_toml())
    env = dict(os.environ, **vcsim.env(), PYTHONUNBUFFERED="1")
    run_id = f"ctrlc-{os.getpid()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.vm.cli", "lab", "nightly", "--config", str(cfg), "--wheelhouse", str(wheel),
         "--run-id", run_id, "--progress-interval", "0"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # A user's Ctrl-C reaches a process whose SIGINT is at its default, even when this test
        # runs in a background job (a non-interactive shell starts those with SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _when_suite_runs(s, lambda: proc.send_signal(signal.SIGINT)).join(120)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    from harness.vm.config import load_config
    lab = load_config(cfg)
    assert clones_of(lab, vcsim, run_id) == []
    d = tmp_path / "artifacts" / run_id
    res = json.loads((d / "results.json").read_text())
    assert res["interrupted"] is True and res["guests"][0]["status"] == "interrupted"
    logs = d / "guests" / s.name / "attempt-1" / "logs"
    assert any(logs.glob("*-run_suite.log")) and any(logs.glob("*-install_harness-*.out"))
    assert (d / "run.log").stat().st_size > 0 and (d / "report.html").is_file()
    assert "interrupted" in output
