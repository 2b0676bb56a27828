"""Issue "Windows day one": each fault, against a stand-in that answers the
lab's Windows commands with Windows' documented exit codes (harness/vm/winemu.py),
vcsim and the real conformance suite.  Each test would have caught its fault."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.vm.orchestrator import Orchestrator
from lab_testlib import clones_of, make_driver, run_options

from harness.vm import wincmd


def _one(out):
    (g,) = out.results["guests"]
    return g


def _baseline(tmp_path: Path, name: str) -> Path:
    p = tmp_path / "baseline.json"
    p.write_text(json.dumps({"run_id": "base", "guests": [{"guest": name, "tests": []}]}))
    return p


def _run(make_lab, s, wheel, vcsim, tmp_path, *, gate=False, **kw):
    lab = make_lab([s], **{k: kw.pop(k) for k in ("timeouts", "run_extra") if k in kw})
    extra = dict(mode="gate", baseline=_baseline(tmp_path, s.name)) if gate else {}
    opts, stream = run_options(tmp_path, wheel, vcsim, **extra, **kw)
    out = Orchestrator(lab, opts).run()
    assert clones_of(lab, vcsim, out.run_id) == []
    return out


def test_1_fresh_guest_python_has_no_pytest_so_a_no_deps_install_fails(make_lab, standins, wheel, vcsim, tmp_path):
    """The guest's Python starts without pytest: installing only the project
    wheel (--no-deps, the old install_harness) cannot run the suite."""
    (s,) = standins(1)
    bare = tmp_path / "bare-wheelhouse"
    bare.mkdir()
    for w in wheel.glob("wfp_redirect_harness-*.whl"):
        shutil.copy2(w, bare / w.name)
    (bare / "requirements.txt").write_text("")          # what the old lab shipped: the project wheel only
    out = _run(make_lab, s, bare, vcsim, tmp_path)
    g = _one(out)
    assert g["classification"] == "harness" and g["phase"] == "install_harness", g["cause"]
    assert "No module named 'pytest'" in g["cause"] and out.exit_code == 4


def test_2_verifier_refused_by_the_template_is_inconclusive(make_lab, standins, wheel, vcsim, tmp_path):
    (s,) = standins(1)
    s.set_knob("verifier_refuse", True)                 # verifier.exe exits 1 (EXIT_CODE_ERROR)
    out = _run(make_lab, s, wheel, vcsim, tmp_path, gate=True, driver=make_driver(tmp_path))
    g = _one(out)
    assert g["classification"] == "infrastructure" and g["phase"] == "configure_debug"
    assert "Driver Verifier refused" in g["cause"] and len(g["attempts"]) == 1
    assert out.verdict["verdict"] == "inconclusive" and out.exit_code == 3


def test_2_verifier_accepted_but_not_active_after_the_reboot_is_inconclusive(make_lab, standins, wheel, vcsim,
                                                                            tmp_path):
    """/querysettings lists the driver (next boot); only /query says what is active."""
    (s,) = standins(1)
    s.set_knob("verifier_ignore", True)
    out = _run(make_lab, s, wheel, vcsim, tmp_path, gate=True, driver=make_driver(tmp_path))
    g = _one(out)
    assert g["verifier_on"] is False and "does not list wfp_redirect_callout.sys" in g["verifier_problem"]
    assert g["counts"]["passed"] > 20                   # the suite (the lab tests' selection) still ran
    assert out.verdict["verdict"] == "inconclusive"
    assert any("Driver Verifier off" in r for r in out.verdict["reasons"])
    tools = [(c["tool"], c["argv"][0]) for c in s.commands()]
    assert ("verifier", "/querysettings") in tools and ("verifier", "/query") in tools


def test_3_a_driver_that_does_not_start_after_the_reboot_is_a_product_failure(make_lab, standins, wheel, vcsim,
                                                                              tmp_path):
    (s,) = standins(1)
    s.set_knob("driver_start_error", 577)               # ERROR_INVALID_IMAGE_HASH
    out = _run(make_lab, s, wheel, vcsim, tmp_path, driver=make_driver(tmp_path))
    g = _one(out)
    assert g["classification"] == "product" and g["reason"] == "driver_load", g["cause"]
    assert "577 (0x241)" in g["cause"] and out.exit_code == 1


def test_5_without_its_certificate_pnputil_refuses_the_package(make_lab, standins, wheel, vcsim, tmp_path):
    (s,) = standins(1)
    out = _run(make_lab, s, wheel, vcsim, tmp_path, driver=make_driver(tmp_path, cert=False))
    g = _one(out)
    assert g["classification"] == "product" and g["reason"] == "driver_install"
    assert "0x800B0109" in g["cause"] and "no .cer" in " ".join(g["notes"])


@pytest.mark.parametrize("code", [3010, 259])
def test_6_pnputil_success_codes_reboot_or_continue(make_lab, standins, wheel, vcsim, tmp_path, code):
    (s,) = standins(1)
    s.set_knob("pnputil_exit", code)
    out = _run(make_lab, s, wheel, vcsim, tmp_path, driver=make_driver(tmp_path))
    g = _one(out)
    assert g["status"] == "passed" and out.exit_code == 0, g["cause"]
    assert g["install"]["pnputil_exit"] == code and g["driver_loaded"] is True
    reboots = [c for c in s.commands() if c["tool"] == "shutdown"]
    assert len(reboots) == (2 if code == 3010 else 1)   # 3010: restart before starting the driver
    if code == 3010:
        assert any("3010" in n for n in g["notes"])


def test_7_test_signing_read_from_the_running_boot_not_from_bcdedit_text(make_lab, standins, wheel, vcsim, tmp_path):
    (s,) = standins(1)
    s.set_locale("de-DE")
    s.set_registry(wincmd.CONTROL_KEY, "SystemStartOptions", "REG_SZ", " NOEXECUTE=OPTIN")
    out = _run(make_lab, s, wheel, vcsim, tmp_path, driver=make_driver(tmp_path))
    g = _one(out)
    assert g["classification"] == "infrastructure" and g["phase"] == "check_guest" and g["test_signing"] is False


def test_9_pktmon_multi_file_keeps_every_packet_of_a_long_run(make_lab, standins, wheel, vcsim, tmp_path):
    (s,) = standins(1)
    s.set_knob("pktmon_volume_mb", 1200)                # more than one 512 MB file
    out = _run(make_lab, s, wheel, vcsim, tmp_path)
    g = _one(out)
    assert g["status"] == "passed"
    assert [Path(c).name for c in g["captures"]] == ["capture1.pcapng", "capture2.pcapng", "capture3.pcapng"]
    etls = sorted((out.run_dir / g["logs"]).parent.glob("results/capture*.etl"))
    assert etls and not any(json.loads(e.read_text())["first_packets_overwritten"] for e in etls)


def test_hostile_guest_results_are_bounded_and_reported(make_lab, standins, wheel, vcsim, tmp_path):
    """A guest that writes a tree deeper than run.max_depth into its results."""
    (s,) = standins(1)
    s.set_file("environment", f"for d in {s.workdir}/*/results; do mkdir -p \"$d/a/b/c/d/e/f/g/h/i/j\"; done\n")
    out = _run(make_lab, s, wheel, vcsim, tmp_path)
    g = _one(out)
    assert g["classification"] == "infrastructure" and "deeper than 8 levels" in g["cause"], g["cause"]
    assert len(g["attempts"]) == 1 and out.exit_code == 3   # never retried


def test_8_dump_over_the_size_cap_is_analysed_on_the_guest_not_downloaded(make_lab, standins, wheel, vcsim, tmp_path):
    (s,) = standins(1)
    from test_lab_faults import _when_suite_runs
    w = _when_suite_runs(s, s.crash)
    out = _run(make_lab, s, wheel, vcsim, tmp_path, driver=make_driver(tmp_path), run_extra=(
        "retries = 1\nretry_backoff = 0.2\nretry_backoff_max = 1\nparallelism = 8\nmax_dump_mb = 0.002\n"))
    w.join(5)
    g = _one(out)
    assert g["reason"] == "bugcheck"
    assert [Path(d).name for d in g["dumps"]] == ["a1-112626-01.dmp"]          # 512 B minidump kept
    assert any("MEMORY.DMP not downloaded" in n and "over the limit" in n for n in g["notes"])
    assert "MEMORY.DMP:\nBUGCHECK_CODE: d1" in g["bugcheck"]["summary"]        # analysed where it lies
