"""The named end-to-end stories of docs/decisions.md §6, run in the simulator."""
import json
import subprocess
import sys

import pytest

from sim.profiles import BUILTIN
from sim.worlds.scenarios import PAYLOAD, SCENARIOS, run

EXPECTED = {
    "single-proxy": "ok", "two-vendors": "ok", "missing-set-loop": "loop", "dual-stack": "ok",
    "udp-single-proxy": "ok", "udp-two-vendors": "ok", "query-listening-socket": "error",
    "non-elevated-set": "loop", "udp-missing-records-loop": "loop",
}


def test_every_required_scenario_exists():
    assert set(EXPECTED) <= set(SCENARIOS)


@pytest.mark.parametrize("profile", BUILTIN)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_verdicts(name, profile):
    report, _ = run(name, profile)
    assert report["verdict"] == EXPECTED[name], json.dumps(report, indent=1)[:3000]


def test_two_vendors_each_inspect_the_stream_exactly_once():
    """docs/facts.md §5.7: X then Y proxy the stream once each; the bytes arrive intact."""
    report, _ = run("two-vendors")
    (conn,) = report["connections"]
    assert conn["intact"] and conn["final_destination"] == "192.0.2.20:80"
    assert report["inspected_bytes"] == {"VendorX/up": len(PAYLOAD), "VendorX/down": len(PAYLOAD),
                                         "VendorY/up": len(PAYLOAD), "VendorY/down": len(PAYLOAD)}
    hops = conn["hops"]
    assert [h["vendor"] for h in hops] == ["VendorX", "VendorY", ""]
    assert [h["from_process"] for h in hops] == ["app", "vendorx-proxy", "vendory-proxy"]
    seen = [{s["callout"]: s["state"] for s in h["states_seen"]} for h in hops]
    # The proxy X's outbound connect: X sees its own records, Y someone else's (docs/facts.md §5.7 step 4).
    assert seen[1] == {"VendorX": "REDIRECTED_BY_SELF", "VendorY": "REDIRECTED_BY_OTHER"}
    # The proxy Y's outbound connect: Y by self, X previously by self: nobody redirects (step 6).
    assert seen[2] == {"VendorX": "PREVIOUSLY_REDIRECTED_BY_SELF", "VendorY": "REDIRECTED_BY_SELF"}
    assert hops[1]["records_forwarded"] and hops[2]["records_forwarded"]
    assert report["diagnostics"] == []


def test_missing_set_loop_is_reported_with_its_chain():
    report, world = run("missing-set-loop")
    (conn,) = report["connections"]
    # The world lets the loop go round twice more (so captures show it), then refuses it.
    assert conn["loop_chain"] == ["192.0.2.20:80"] + ["127.0.0.1:9000"] * 4
    assert not any(h["records_forwarded"] for h in conn["hops"])
    assert [d["kind"] for d in report["diagnostics"]] == ["redirect-loop", "redirect-loop-stopped"]
    assert world.now_ns < 10_000_000_000           # stopped, not spun: virtual time stayed small


def test_udp_missing_records_loop_is_caught_with_its_chain():
    """A UDP proxy that drops the records cmsg: the world finds the loop, reports it with its chain and
    stops it (before: the flow went round until the ephemeral ports ran out)."""
    report, world = run("udp-missing-records-loop")
    (conn,) = report["connections"]
    assert conn["verdict"] == "loop" and conn["protocol"] == "udp"
    assert conn["loop_chain"] == ["192.0.2.20:53"] + ["127.0.0.1:9053"] * 4
    assert [d["kind"] for d in report["diagnostics"]] == ["redirect-loop", "redirect-loop-stopped"]
    assert "(udp)" in report["diagnostics"][0]["message"]
    assert conn["hops"][-1]["refused"] == "redirect loop stopped by the world"
    assert any("WSAEACCES" in e for e in report["proxy_errors"])
    assert world.now_ns < 10_000_000_000


def test_states_seen_are_the_queries_callouts_made():
    """The sample callout, like classify.c, asks FwpsQueryConnectionRedirectState0 nothing without a records
    handle: the app's connect shows no states; each entry names the callout and the vendor of the handle."""
    report, _ = run("two-vendors")
    hops = report["connections"][0]["hops"]
    assert hops[0]["states_seen"] == []
    assert all(s["callout"] == s["vendor"] for h in hops for s in h["states_seen"])


def test_non_elevated_set_fails_with_eacces_then_loops():
    report, _ = run("non-elevated-set")
    assert any("WSAEACCES" in e for e in report["proxy_errors"])
    assert report["connections"][0]["verdict"] == "loop"


def test_query_listening_socket_reports_enotconn():
    report, _ = run("query-listening-socket")
    assert any("WSAENOTCONN" in e for e in report["proxy_errors"])
    assert report["connections"][0]["final_destination"] == ""


def test_dual_stack_all_three_reach_their_destination():
    report, _ = run("dual-stack")
    finals = [c["final_destination"] for c in report["connections"]]
    assert finals == ["192.0.2.20:80", "[2001:db8::20]:80", "192.0.2.20:80"]
    assert [c["hops"][0]["redirected_to"] for c in report["connections"]] == \
        ["127.0.0.1:9000", "[::1]:9000", "127.0.0.1:9000"]


@pytest.mark.parametrize("name", ["udp-single-proxy", "udp-two-vendors"])
def test_udp_stories_forward_records_on_the_first_datagram(name):
    report, _ = run(name)
    (conn,) = report["connections"]
    assert conn["intact"] and conn["final_destination"] == "192.0.2.20:53"
    assert all(h["records_forwarded"] for h in conn["hops"][1:])


def test_runs_are_deterministic():
    first, w1 = run("two-vendors")
    second, w2 = run("two-vendors")
    assert first == second
    assert [(p.time_ns, p.flags, p.seq, p.ack) for p in w1.network.packets] == \
        [(p.time_ns, p.flags, p.seq, p.ack) for p in w2.network.packets]


def test_cli_list_and_json(tmp_path):
    out = subprocess.run([sys.executable, "-m", "sim", "scenario", "list"], capture_output=True, text=True,
                         check=True).stdout
    assert all(name in out for name in EXPECTED)
    proc = subprocess.run([sys.executable, "-m", "sim", "scenario", "run", "two-vendors", "--json"],
                          capture_output=True, text=True, check=True)
    report = json.loads(proc.stdout)
    assert report["verdict"] == "ok" and report["connections"][0]["hops"][0]["vendor"] == "VendorX"


def test_cli_bad_profile_is_exit_2():
    proc = subprocess.run([sys.executable, "-m", "sim", "scenario", "run", "single-proxy", "--profile", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown profile" in proc.stderr


@pytest.mark.parametrize("name", ["missing-set-loop", "non-elevated-set"])
def test_the_capture_shows_the_loop(tmp_path, name):
    """Issue 'packet evidence': harness.capture finds the loop in the scenario's own capture."""
    from harness.capture import analyze_file
    from sim import pcap
    report, world = run(name)
    path = tmp_path / f"{name}.pcapng"
    pcap.write(world.network.packets, str(path), fmt="pcapng")
    result = analyze_file(str(path))
    assert len(result.loops) == 1
    (flow,) = result.loops
    assert len(flow.proxies) >= 2 and {str(p) for p in flow.proxies} == {"127.0.0.1:9000"}
    assert flow.loop and flow.verdict == "loop"
    assert str(flow.original_destination) == report["connections"][0]["original_destination"]


def test_scenario_exit_status_follows_the_verdict_and_bad_input_is_one_line(tmp_path):
    from harness.cli import main
    assert main(["scenario", "run", "two-vendors"]) == 0
    assert main(["scenario", "run", "missing-set-loop"]) == 1
    proc = subprocess.run([sys.executable, "-m", "sim", "scenario", "run", "single-proxy", "--pcap",
                           str(tmp_path / "no-such-dir" / "x.pcap")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"python -m sim: --pcap {tmp_path / 'no-such-dir' / 'x.pcap'}: "
                                                "cannot write: No such file or directory"]


@pytest.mark.parametrize("profile", BUILTIN)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_completion_port_and_wsapoll_proxies_tell_the_same_story(name, profile, monkeypatch):
    """Issue 16: the completion-port proxy and echo server behave as the WSAPoll ones: same verdicts, hops, bytes,
    errors and diagnostics. Only the wire may differ: a proxy that refuses a connection at
    AcceptEx's completion closes it before the data arrives (FIN), WSAPoll's after (RST)."""
    from harness.proxy.reference import IocpRedirectProxy, RedirectProxy
    from sim.worlds import scenarios
    from sim.worlds.services import CompletionEchoServer, EchoServer

    told = {}
    for proxy, echo in ((RedirectProxy, EchoServer), (IocpRedirectProxy, CompletionEchoServer)):
        monkeypatch.setattr(scenarios, "DEFAULT_PROXY", proxy)
        monkeypatch.setattr(scenarios, "DEFAULT_ECHO", echo)
        report, _ = run(name, profile)
        told[proxy.__name__] = {k: v for k, v in report.items() if k not in ("packets", "virtual_time_ns")}
    assert told["IocpRedirectProxy"] == told["RedirectProxy"]
