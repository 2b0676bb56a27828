"""End to end: nightly against vcsim and stand-in guests that answer the
lab's Windows commands (harness/vm/winemu.py) and run the real conformance
suite (the lab's selection) on the guest, from the uploaded wheelhouse in a
fresh venv, against Wine's ws2_32 through the uploaded winsock-agent."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from harness.vm.orchestrator import Orchestrator
from lab_testlib import clones_of, make_driver, run_options


def test_nightly_two_guests_with_driver(make_lab, standins, wheel, vcsim, tmp_path):
    a, b = standins(2)
    b.set_locale("de-DE")                       # a German guest: nothing may read translated text
    boots = {s.name: s.boot_id for s in (a, b)}
    lab = make_lab([a, b])
    opts, stream = run_options(tmp_path, wheel, vcsim, driver=make_driver(tmp_path))
    out = Orchestrator(lab, opts).run()
    res = {g["guest"]: g for g in out.results["guests"]}
    assert out.exit_code == 0, json.dumps(out.results, indent=1)[:6000]
    for s in (a, b):
        g = res[s.name]
        assert g["status"] == "passed" and g["classification"] is None
        assert g["counts"]["passed"] > 20 and g["counts"]["failed"] == 0
        # the suite ran from the uploaded wheelhouse in a fresh venv, not from this checkout
        assert g["harness_path"].startswith(str(s.workdir)) and "/venv/" in g["harness_path"]
        assert g["verifier_on"] is True and g["crash_dumps"] is True and g["test_signing"] is True
        assert g["driver_loaded"] is True and g["install"]["pnputil_exit"] == 0
        assert s.boot_id != boots[s.name]           # the verifier reboot happened
        assert "stand-in" in g["os_build"] and "20348" in g["os_build"]
        assert [x["attempt"] for x in g["attempts"]] == [1]
        cmds = [c["argv"][:2] for c in s.commands()]
        # the Windows steps, in the order Windows needs them
        order = [["-addstore", "-f"], ["/add-driver"], ["start"], ["/standard", "/driver"], ["/r", "/t"],
                 ["start"], ["/query"]]
        it = iter([c for c in cmds])
        assert all(any(c[:len(o)] == o for c in it) for o in order), cmds
        # the certificate went into both stores before pnputil
        stores = s.json("certstores.json")
        assert set(stores) == {"Root", "TrustedPublisher"}
        # pktmon logs in multi-file mode with a size
        start = next(c["argv"] for c in s.commands() if c["tool"] == "pktmon" and c["argv"][0] == "start")
        assert start[start.index("--log-mode") + 1] == "multi-file" and "--file-size" in start
    d = out.run_dir
    for f in ("junit.xml", "report.md", "report.html", "results.json", "run.log", "progress.log"):
        assert (d / f).is_file(), f
    # the suite's calls ran in the uploaded agent under Wine on the guest
    junit = ET.parse(d / res[a.name]["junit"]).getroot()
    props = {p.get("name"): p.get("value") for p in junit.iter("property")}
    assert props["wfp.target"] == "agent" and "(Wine " in props["wfp.os_build"]
    merged = ET.parse(d / "junit.xml").getroot()
    assert sorted(s.get("name") for s in merged.iter("testsuite")) == [a.name, b.name]
    from scapy.utils import rdpcap
    assert len(rdpcap(str(d / res[a.name]["capture"]))) == 0  # a valid pcapng from the stand-in's pktmon
    md = (d / "report.md").read_text()
    assert f"{a.name}" in md and "guests/" in md
    progress = (d / "progress.log").read_text()
    assert "run_suite" in progress and "done in" in progress
    assert clones_of(lab, vcsim, out.run_id) == []
