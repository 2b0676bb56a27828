"""End to end: nightly and gate against vcsim and real sshd stand-ins that run
the real conformance suite (``--target sim``) from the uploaded wheel."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from harness.vm.orchestrator import Orchestrator
from lab_testlib import clones_of, make_driver, run_options


def test_nightly_two_guests_with_driver(make_lab, standins, wheel, vcsim, tmp_path):
    a, b = standins(2)
    boots = {s.name: s.boot_id for s in (a, b)}
    lab = make_lab([a, b])
    opts, stream = run_options(tmp_path, wheel, vcsim, driver=make_driver(tmp_path))
    out = Orchestrator(lab, opts).run()
    res = {g["guest"]: g for g in out.results["guests"]}
    assert out.exit_code == 0, json.dumps(out.results, indent=1)[:4000]
    for s in (a, b):
        g = res[s.name]
        assert g["status"] == "passed" and g["classification"] is None
        assert g["counts"]["passed"] > 50 and g["counts"]["failed"] == 0
        # the suite ran from the uploaded wheel in the guest's venv, not from this checkout
        assert g["harness_path"].startswith(str(s.workdir)) and "/venv/" in g["harness_path"]
        assert g["verifier_on"] is True and g["crash_dumps"] is True and g["test_signing"] is True
        assert g["driver_loaded"] is True
        assert s.boot_id != boots[s.name]           # the verifier reboot happened
        assert (s.state / "installed" / "WfpRedirectCallout").is_file()
        assert [x["attempt"] for x in g["attempts"]] == [1]
    # reports
    d = out.run_dir
    for f in ("junit.xml", "report.md", "report.html", "results.json", "run.log", "progress.log"):
        assert (d / f).is_file(), f
    merged = ET.parse(d / "junit.xml").getroot()
    assert sorted(s.get("name") for s in merged.iter("testsuite")) == [a.name, b.name]
    assert (d / res[a.name]["junit"]).is_file()
    from scapy.utils import rdpcap
    assert len(rdpcap(str(d / res[a.name]["capture"]))) == 0  # a valid, empty pcapng from the stand-in
    md = (d / "report.md").read_text()
    assert f"| {a.name} |" in md and "guests/" in md
    assert "run_suite" in (d / "progress.log").read_text()
    assert clones_of(lab, vcsim, out.run_id) == []
    logs = list((d / "guests" / a.name / "attempt-1" / "logs").glob("*-run_suite.log"))
    assert logs and "phase run_suite" in logs[0].read_text()
