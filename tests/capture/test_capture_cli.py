"""What `wfp-harness capture analyze` prints: words and addresses, never Python.

No reprs (True, None, tuples, quotes from repr), counts with the right
plural, bad options as one usage line, and a reader that leaves early
(`--json | head`) ends the output quietly.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from sim import pcap

_spec = importlib.util.spec_from_file_location("capture_simworlds_cli", Path(__file__).parent / "simworlds.py")
W = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(W)

PYTHON_REPR = re.compile(r"\bTrue\b|\bFalse\b|\bNone\b|\('|HostPort\(|\[\d+, ")


def run(capsys, *args):
    capsys.readouterr()
    rc = main(["capture", "analyze", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    worlds = {"direct": W.direct_tcp(), "ipv6": W.proxied_tcp(("::1",), dest=("2001:db8:1::7", 443)),
              "loop": W.looping_proxy(times=3), "udp-closed": W.udp_to_closed_port()}
    out = {}
    for name, world in worlds.items():
        out[name] = tmp / f"{name}.pcapng"
        pcap.write(world.network.packets, out[name], fmt="pcapng")
    return out


@pytest.mark.parametrize("name", ["direct", "ipv6", "loop", "udp-closed"])
def test_text_has_no_python_reprs(captures, capsys, name):
    _rc, out, err = run(capsys, captures[name], "--all")
    assert out and not PYTHON_REPR.search(out), out
    assert err == ""


def test_addresses_print_as_address_and_port(captures, capsys):
    _rc, out, _err = run(capsys, captures["ipv6"], "--all")
    assert "-> [2001:db8:1::7]:443 via 1 proxy: ok" in out
    assert re.search(r"hop 1: \[::1\]:\d+ -> \[::1\]:5000 \(proxy\)", out), out


def test_counts_have_the_right_plural(captures, capsys):
    _rc, out, _err = run(capsys, captures["direct"])
    assert ", 1 TCP connection, 0 UDP flows\n" in out and out.endswith("summary: 1 flow, 0 proxied, 0 loops, "
                                                                       "0 unreached\n")
    _rc, out, _err = run(capsys, captures["udp-closed"])
    assert ", 0 TCP connections, 1 UDP flow\n" in out and "summary: 1 flow," in out
    _rc, out, _err = run(capsys, captures["loop"])
    assert out.startswith(f"capture {captures['loop']}: 25 packets,") and "1 loop, 1 unreached" in out


def test_a_syn_sent_once_says_once(tmp_path):
    from harness.capture import analyze_file
    world, ch, _sh = W.new_world()
    client = world.start_process(ch, "client")
    W.try_connect(client, "203.0.113.9", 443)          # nobody there: SYN, retries, time out
    world.run_until_idle()
    path = tmp_path / "silent.pcapng"
    pcap.write(world.network.packets, path, fmt="pcapng")
    flow, = analyze_file(path).flows
    syns = sum(1 for p in world.network.packets if p.flags == 0x02)
    assert f"SYN sent {'once' if syns == 1 else f'{syns} times'}, no SYN-ACK" in flow.reasons[0]
    assert "1 times" not in flow.reasons[0]


@pytest.mark.parametrize("args, fragment", [
    (["--proxy", "foo"], "argument --proxy: not an address:port: foo "),
    (["--proxy", "[::1]:70000"], "argument --proxy: not an address:port: [::1]:70000 "),
    (["--local-address", "bar"], "argument --local-address: not an IP address: bar "),
    (["--udp-timeout", "-1"], "argument --udp-timeout: not a positive number: -1 "),
    (["--dedupe-us", "nan"], "argument --dedupe-us: not a non-negative number: nan "),
])
def test_bad_options_are_one_usage_line(captures, capsys, args, fragment):
    with pytest.raises(SystemExit) as info:
        main(["capture", "analyze", str(captures["direct"]), *args])
    err = capsys.readouterr().err
    assert info.value.code == 2 and fragment in err and "'" not in err.splitlines()[-1]


def test_json_into_a_reader_that_leaves_early_is_quiet(captures):
    # The reader is gone before the analysis writes a byte (`| head` that already
    # exited), so the first write meets a closed pipe.
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "capture", "analyze", str(captures["loop"]),
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1 and err == ""


def test_json_is_whole_when_read_to_the_end(captures, capsys):
    rc, out, _err = run(capsys, captures["loop"], "--json")
    flow, = json.loads(out)["flows"]
    assert rc == 1 and flow["distinct_proxies"] == ["127.0.0.1:5000"] and flow["final_destination"] is None
