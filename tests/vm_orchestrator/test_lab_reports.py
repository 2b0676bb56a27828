"""Reports, verdicts, sharding and merging; the new lab-config keys; the CI
workflow file; the `wfp-harness lab` commands against vcsim."""

from __future__ import annotations

import html
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.vm.config import ConfigError, load_config
from harness.vm.report import compute_verdict, merge_runs, parse_shard, shard_guests, write_reports
from lab_testlib import lab_toml, run_options, write_lab

REPO = Path(__file__).resolve().parents[2]


def guest(name, tests=(), **kw):
    from harness.vm.report import counts
    t = [{"id": i, "outcome": o, "time": 0.1, "message": m} for i, o, m in tests]
    g = {"guest": name, "status": "passed", "classification": None, "tests": t, "counts": counts(t),
         "verifier_on": True, "bugcheck": None, "attempts": [{"attempt": 1}], "dumps": [],
         "os_build": "10.0.20348", "logs": f"guests/{name}/attempt-1/logs"}
    g.update(kw)
    return g


def test_shards_are_a_deterministic_partition():
    names = [f"g{i:02d}" for i in range(11)]
    shards = [shard_guests(reversed(names), (i, 3)) for i in (1, 2, 3)]
    assert sorted(sum(shards, [])) == sorted(names)                      # each guest exactly once
    assert shards == [shard_guests(names, (i, 3)) for i in (1, 2, 3)]   # order of input irrelevant
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_verdict_new_failures_bugcheck_verifier_and_inconclusive():
    base = {"run_id": "base", "guests": [guest("a", [("t::old", "failed", "")])]}
    res = {"run_id": "r", "harness_version": "0.1.0", "guests": [
        guest("a", [("t::old", "failed", ""), ("t::ok", "passed", "")])]}
    drv = {"sha256": "ab" * 32, "version": "1.0", "service": "S", "files": {}}
    v = compute_verdict(res, base, driver=drv)
    assert v["verdict"] == "pass" and v["new_failures"] == {} and v["driver"]["sha256"] == "ab" * 32
    assert v["guests"][0]["os_build"] == "10.0.20348" and v["harness_version"] == "0.1.0"
    res["guests"][0]["tests"].append({"id": "t::new", "outcome": "error", "time": 0, "message": ""})
    v = compute_verdict(res, base, driver=drv)
    assert v["verdict"] == "fail" and v["new_failures"] == {"a": ["t::new"]}
    assert compute_verdict({"guests": [guest("a", [("t::ok", "passed", "")], bugcheck={"summary": ""})]}, None,
                           driver=drv)["verdict"] == "fail"
    infra = guest("a", status="infrastructure", classification="infrastructure", cause="clone failed")
    assert compute_verdict({"guests": [infra]}, None, driver=drv)["verdict"] == "inconclusive"
    assert compute_verdict({"guests": []}, None, driver=drv)["verdict"] == "inconclusive"


DRV = {"sha256": "ab" * 32, "version": "1.0", "service": "S", "files": {}}
RED = "harness.conformance.test_wfp_redirect::test_context_carries_the_original_destination"


def test_gate_never_passes_what_it_did_not_see():
    """The gate: a baseline pass that is skipped, missing or not run now; a run
    without tests; redirect cases skipped with the driver; Verifier refused
    or inactive because of the template; a retried fault."""
    base = {"run_id": "b", "guests": [guest("a", [("t::x", "passed", ""), ("t::y", "passed", ""), (RED, "passed", "")])]}
    ok = [("t::x", "passed", ""), ("t::y", "passed", ""), (RED, "passed", "")]
    assert compute_verdict({"guests": [guest("a", ok)]}, base, driver=DRV)["verdict"] == "pass"
    skipped = compute_verdict({"guests": [guest("a", [("t::x", "passed", ""), ("t::y", "skipped", "s"),
                                                      (RED, "passed", "")])]}, base, driver=DRV)
    assert skipped["verdict"] == "fail" and "skipped now: t::y" in " ".join(skipped["reasons"])
    missing = compute_verdict({"guests": [guest("a", [("t::x", "passed", ""), (RED, "passed", "")])]}, base, driver=DRV)
    assert missing["verdict"] == "inconclusive" and "did not run now: t::y" in " ".join(missing["reasons"])
    empty = compute_verdict({"guests": [guest("a", [])]}, None, driver=DRV)
    assert empty["verdict"] == "inconclusive" and "no tests ran" in " ".join(empty["reasons"])
    red = compute_verdict({"guests": [guest("a", [("t::x", "passed", ""), (RED, "skipped", "no policy")])]}, None,
                          driver=DRV)
    assert red["verdict"] == "fail" and "redirect case(s) skipped" in " ".join(red["reasons"])
    # ... except on a guest without WFP under its Winsock (a stand-in's Wine): nothing there can redirect
    nowfp = compute_verdict({"guests": [guest("a", [("t::x", "passed", ""), (RED, "skipped", "no policy")],
                                              wfp=False)]}, None, driver=DRV)
    assert nowfp["verdict"] == "pass", nowfp["reasons"]
    # a guest fault names the call the guest went away under; the gate fails on it
    down = guest("a", [("t::x", "failed", "AgentDied")], status="failed", classification="guest",
                 reason="bugcheck", bugcheck={"phase": "run_suite"}, in_flight={"call": "recv(s=0x4c)", "test": "t::x"})
    v = compute_verdict({"guests": [down]}, None, driver=DRV)
    assert v["verdict"] == "fail" and "a: bugcheck while the agent ran recv(s=0x4c)" in v["reasons"]
    off = compute_verdict({"guests": [guest("a", ok, verifier_on=False, verifier_problem="HVCI")]}, base, driver=DRV)
    assert off["verdict"] == "inconclusive" and "infrastructure: HVCI" in " ".join(off["reasons"])
    unknown = compute_verdict({"guests": [guest("a", ok, verifier_on=None)]}, base, driver=DRV)
    assert unknown["verdict"] == "inconclusive"
    refused = guest("a", [], status="infrastructure", classification="infrastructure", phase="configure_debug",
                    cause="Driver Verifier refused /standard /driver x.sys")
    assert compute_verdict({"guests": [refused]}, base, driver=DRV)["verdict"] == "inconclusive"
    again = guest("a", ok, attempts=[{"attempt": 1, "classification": "infrastructure", "phase": "run_suite",
                                      "cause": "SSH dropped"}, {"attempt": 2, "classification": None}])
    v = compute_verdict({"guests": [again]}, base, driver=DRV)
    assert v["verdict"] == "pass" and v["retried"] == ["a: attempt 1: infrastructure in run_suite: SSH dropped"]


def test_reports_lead_with_the_verdict_and_stay_well_formed_whatever_the_guest_printed(tmp_path):
    junk = "bell\x07 nul\x00 esc\x1b surrogate\udcff end"
    res = {"run_id": "r1", "mode": "gate", "guests": [
        guest("g1", [("mod.test_a::t1", "failed", junk), ("mod.test_a::t2", "passed", ""),
                     ("mod.test_b::t3", "passed", "")], status="failed", classification="product",
              reason="tests_failed", cause=junk, notes=[junk],
              attempts=[{"attempt": 1, "classification": "infrastructure", "phase": "connect", "cause": "refused"},
                        {"attempt": 2, "classification": "product"}]),
        guest("g2", [("mod.test_b::t3", "passed", "")], verifier_on=None)]}
    v = compute_verdict(res, None, driver=DRV)
    files = write_reports(res, tmp_path, verdict=v)
    ET.parse(files["junit"])                                    # well-formed
    page = files["html"].read_text()
    assert page.index('id="verdict"') < page.index("<h1>") and "Verdict: FAIL" in page
    assert "\x07" not in page and "\x00" not in page
    md = files["markdown"].read_text()
    lines = md.splitlines()
    assert lines[2] == "## Verdict: FAIL"
    assert md.index("## Failures and problems") < md.index("## Guests") < md.index("## Matrix by area")
    assert "retried, attempt 1: infrastructure in connect: refused" in md
    assert "| unknown |" in md and "| off |" not in md        # the verifier column: on/off/unknown
    assert "### test_a: 0 of 2 passed on every guest" in md and "| `mod.test_a::t2` | ✔ | not run |" in md
    assert "| `mod.test_a::t1` | ✘ | not run |" in md          # g2 never ran it
    assert "mod.test_b::t3" not in md.split("## Matrix by area")[1]   # passing rows collapsed
    junit = files["junit"].read_text()
    assert 'name="wfp.retried.1"' in junit


def test_html_and_markdown_escape_hostile_names(tmp_path):
    evil = "<script>alert(1)</script>|`x`"
    res = {"run_id": "r1", "mode": "nightly", "guests": [
        guest("g1", [(f"mod::{evil}", "failed", evil)], status="failed", classification="product",
              cause=evil, reason="tests_failed", dumps=["guests/g1/dumps/a1-MEMORY.DMP"])]}
    files = write_reports(res, tmp_path)
    page = files["html"].read_text()
    assert "<script>" not in page and html.escape("<script>") in page
    assert 'href="guests/g1/dumps/a1-MEMORY.DMP"' in page and 'href="guests/g1/attempt-1/logs"' in page
    assert "<link" not in page and "src=" not in page          # self-contained
    md = files["markdown"].read_text()
    assert "\\|" in md and "[a1-MEMORY.DMP](guests/g1/dumps/a1-MEMORY.DMP)" in md
    suites = ET.parse(files["junit"]).getroot()
    cases = list(suites.iter("testcase"))
    assert [c.get("name") for c in cases] == [evil, "lifecycle"]
    assert cases[1].find("failure") is None  # a plain test failure is reported by the test, once


def test_merge_combines_shards_into_the_same_reports(tmp_path):
    for i, names in ((1, ["a", "c"]), (2, ["b"])):
        d = tmp_path / f"shard{i}"
        res = {"run_id": f"r-s{i}of2", "mode": "nightly", "shard": [i, 2], "started": f"2026-01-0{i}",
               "finished": f"2026-01-0{i}", "guests": [guest(n, [(f"t::{n}", "passed", "")]) for n in names]}
        write_reports(res, d)
    out = tmp_path / "merged"
    merged = merge_runs([tmp_path / "shard1", tmp_path / "shard2" / "results.json"], out)
    assert [g["guest"] for g in merged["guests"]] == ["a", "b", "c"]
    suites = ET.parse(out / "junit.xml").getroot()
    assert [s.get("name") for s in suites.iter("testsuite")] == ["a", "b", "c"]
    assert "../shard2/guests/b/attempt-1/logs" in (out / "report.md").read_text()
    assert merged["started"] == "2026-01-01" and merged["finished"] == "2026-01-02"
    with pytest.raises(ValueError):
        merge_runs([tmp_path / "shard1", tmp_path / "shard1"], tmp_path / "twice")


def test_new_config_keys_are_validated_by_name(vcsim, tmp_path):
    def load(guests_toml, run_extra=""):
        p = tmp_path / "lab.toml"
        p.write_text(lab_toml(vcsim, guests_toml=guests_toml, run_extra=run_extra))
        return load_config(p)

    g = ('[[guests]]\nname="a"\ntemplate="t"\nsnapshot="s"\nos_build="b"\naccount="u"\n'
         'ssh_key_env="K"\nhost_key_guestinfo="guestinfo.k"\n')
    lab = load(g + 'os = "posix"\nworkdir = "/w"\nstate_dir = "/s"\n', "retries = 0\nretry_backoff = 1\n")
    assert lab.guests[0].os == "posix" and lab.run.retries == 0 and lab.timeouts.reboot > 0
    for extra, run, key in ((g + 'os = "vms"\n', "", "guests[0].os"),
                            (g + 'os = "posix"\n', "", "guests[0].workdir"),
                            (g + 'state_dir = "/s"\n', "", "guests[0].state_dir"),
                            (g, "retries = -1\n", "run.retries"),
                            (g, "retry_backoff = 10\nretry_backoff_max = 1\n", "run.retry_backoff_max")):
        with pytest.raises(ConfigError) as e:
            load(extra, run)
        assert e.value.key == key


def test_nightly_workflow_is_valid_yaml_for_a_self_hosted_runner():
    yaml = pytest.importorskip("yaml")
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "nightly-lab.yml").read_text())
    on = wf.get("on", wf.get(True))           # YAML 1.1 reads a bare `on` as True
    assert "schedule" in on and "workflow_dispatch" in on
    lab = wf["jobs"]["lab"]
    assert "self-hosted" in lab["runs-on"]
    assert lab["strategy"]["matrix"]["shard"]
    steps = " ".join(json.dumps(s) for s in lab["steps"])
    assert "wfp-harness lab nightly" in steps and "--shard" in steps and "actions/upload-artifact" in steps
    # fault 10: the scheduled run (no inputs) must install a driver too: the
    # nightly command always passes --driver, from the input or the runner's env
    nightly = next(st["run"] for st in lab["steps"] if "lab nightly" in st.get("run", ""))
    assert '--driver "$DRIVER"' in nightly and "WFP_NIGHTLY_DRIVER" in nightly and "exit 2" in nightly
    assert "if [ -n \"$DRIVER\" ]" not in nightly
    assert "if-no-files-found" in steps and "always()" in steps
    merge = wf["jobs"]["merge"]
    assert "wfp-harness lab merge" in json.dumps(merge["steps"]) and merge["needs"] == "lab"
    text = (REPO / ".github" / "workflows" / "nightly-lab.yml").read_text()
    # secrets come from the runner's environment: none in the file, none from GitHub
    import re
    assert "secrets." not in text and re.search(r"password\s*[:=]", text, re.I) is None


def _cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "harness.vm.cli", "lab", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_cli_preflight_and_janitor_against_vcsim(vcsim, tmp_path):
    import os
    from harness.vm.vsphere import VSphere
    from vsphere_testlib import lab_toml as vs_lab
    cfg = tmp_path / "lab.toml"
    cfg.write_text(vs_lab(vcsim))
    env = dict(os.environ, **vcsim.env())
    r = _cli("preflight", "--config", str(cfg), env=env)
    assert r.returncode == 0, r.stderr
    assert "pre-flight OK" in r.stdout and "secure_boot=False" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(vs_lab(vcsim, guests=["wfp-secureboot", "wfp-nosnap"]))
    r = _cli("preflight", "--config", str(bad), "--json", env=env)
    assert r.returncode == 3 and not json.loads(r.stdout)["ok"]
    # a crashed run's clone: the janitor finds it by run id
    lab = load_config(cfg)
    with VSphere(lab, env=vcsim.env(), poll_interval=0.02, max_poll_interval=0.2) as vs:
        c = vs.clone(lab.guests[0], "crashed-run-1")
    r = _cli("janitor", "--config", str(cfg), "--run-id", "crashed-run-1", "--dry-run", env=env)
    assert r.returncode == 0 and f"would destroy {c.name}" in r.stdout
    r = _cli("janitor", "--config", str(cfg), "--run-id", "crashed-run-1", env=env)
    assert r.returncode == 0 and f"destroyed {c.name}" in r.stdout
    with VSphere(lab, env=vcsim.env()) as vs:
        assert vs.find_vm(c.name) is None
    r = _cli("preflight", "--config", str(cfg), env=dict(env, WFP_TEST_VCENTER_PASSWORD="wrong-password"))
    assert r.returncode == 3 and "login refused" in r.stderr and "wrong-password" not in r.stderr + r.stdout


def test_sharded_nightly_and_merge_via_cli(vcsim, standins, wheel, tmp_path):
    import os
    guests = standins(2)
    cfg = write_lab(tmp_path / "lab.toml", vcsim, "".join(g.guest_toml() for g in guests))
    env = dict(os.environ, **vcsim.env())
    dirs = []
    for i in (1, 2):
        r = _cli("nightly", "--config", str(cfg), "--wheelhouse", str(wheel), "--run-id", "nightly-7",
                 "--shard", f"{i}/2", "--progress-interval", "0", env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        dirs.append(tmp_path / "artifacts" / f"nightly-7-s{i}of2")
        assert [g["guest"] for g in json.loads((dirs[-1] / "results.json").read_text())["guests"]] == \
            [guests[i - 1].name]
    r = subprocess.run([sys.executable, "-m", "harness.vm.cli", "lab", "merge", "--out", str(tmp_path / "merged"),
                        *map(str, dirs)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    suites = ET.parse(tmp_path / "merged" / "junit.xml").getroot()
    assert sorted(s.get("name") for s in suites.iter("testsuite")) == sorted(g.name for g in guests)
    assert all(int(s.get("tests")) > 20 for s in suites.iter("testsuite"))     # the lab tests' selection


def test_top_level_cli_registers_the_lab_commands(capsys):
    # The other CLI tests run `python -m harness.vm.cli` so that another
    # package's command cannot break them; this one checks the wiring.
    from harness.cli import main
    with pytest.raises(SystemExit) as e:
        main(["lab", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("preflight", "nightly", "gate", "janitor", "merge"):
        assert cmd in out


def test_missing_driver_or_baseline_is_a_usage_error_before_anything_starts(vcsim, tmp_path):
    """Issue "command line": both used to start the run (clones queued) and exit 4."""
    import os
    from vsphere_testlib import lab_toml as vs_lab
    cfg = tmp_path / "lab.toml"
    cfg.write_text(vs_lab(vcsim))
    env = dict(os.environ, **vcsim.env())
    drv = tmp_path / "drv"
    drv.mkdir()
    (drv / "x.inf").write_text("[Version]\n")
    for args, word in ((["nightly", "--driver", str(tmp_path / "no-such-driver")], "no-such-driver"),
                       (["gate", "--driver", str(drv), "--baseline", str(tmp_path / "nope.json")], "nope.json")):
        r = _cli(*args, "--config", str(cfg), "--run-id", "usage-1", env=env, cwd=tmp_path)
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and word in lines[0] and "Traceback" not in r.stderr
        assert not (tmp_path / "artifacts").exists()          # nothing started
