"""The analyzer on a large loop capture: correct, linear work, bounded memory.

The capture is the simulator's (tests/capture/simworlds.py looping_proxy)
written as pcapng and read back. No assertion here is about time: the work
is counted (how many pairs of connections had their bytes compared) and
the analysis' peak memory is traced. bench/bench_capture.py prints times.
"""
from __future__ import annotations

import importlib.util
import tracemalloc
from pathlib import Path

import pytest

from harness.capture import HostPort, analyze_records, flows, read_capture
from sim import pcap

pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location("capture_simworlds_scale", Path(__file__).parent / "simworlds.py")
W = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(W)

PROXY = HostPort("127.0.0.1", 5000)
TIMES = 680                    # 681 connections, 4,087 frames


@pytest.fixture(scope="module")
def loop_records(tmp_path_factory):
    path = tmp_path_factory.mktemp("scale") / "loop.pcapng"
    frames = pcap.write(W.looping_proxy(times=TIMES).network.packets, path, fmt="pcapng")
    records, warnings = read_capture(path)
    assert frames > 4000 and len(records) == frames and not warnings
    return records


def test_large_loop_is_one_flow_with_every_hop(loop_records):
    result = analyze_records(loop_records)
    flow, = result.flows
    assert len(result.connections) == TIMES + 1 and len(flow.hops) == TIMES + 1
    assert [h.dst for h in flow.hops] == [PROXY] * (TIMES + 1)
    assert [h.evidence for h in flow.hops] == ["first"] + ["bytes"] * TIMES
    assert [h.src for h in flow.hops[1:]] == [c.client for c in result.connections[1:]]
    assert flow.loop and flow.verdict == "loop" and flow.distinct_proxies == [PROXY]
    assert not flow.reached and flow.final_destination is None and not flow.intact
    assert result.loops == result.unreached == [flow]


def test_large_loop_work_is_linear(loop_records, monkeypatch):
    compared = 0
    real = flows._prefix_match

    def counting(a, b):
        nonlocal compared
        compared += 1
        return real(a, b)

    monkeypatch.setattr(flows, "_prefix_match", counting)
    result = analyze_records(loop_records)
    legs = len(result.connections)
    # Comparing every pair would be legs**2 / 2 (231,540 here); a linear chainer
    # compares each connection with a bounded number of others.
    assert compared <= 8 * legs, (compared, legs)


def test_large_loop_memory_is_bounded(loop_records):
    payload = sum(len(r.payload) for r in loop_records)
    tracemalloc.start()
    try:
        analyze_records(loop_records)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The connections keep their reassembled bytes (about the payload once
    # more) plus a few hundred bytes of bookkeeping per frame; a list of
    # every candidate pair would be tens of MB here.
    assert peak < 2 * payload + 2_000 * len(loop_records), (peak, payload, len(loop_records))


@pytest.mark.parametrize("kind", ["proxy", "wfp"])
def test_bench_prints_a_whole_table(kind, capsys):
    path = Path(__file__).parents[2] / "bench" / "bench_capture.py"
    spec = importlib.util.spec_from_file_location("bench_capture", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--frames", "120,240", "--kind", kind]) == 0
    rows = dict(line.split("  ", 1) for line in capsys.readouterr().out.splitlines())
    assert list(rows) == ["frames", "this tree: time", "this tree: peak RSS"]
    frames = [int(n.replace(",", "")) for n in rows["frames"].split()]
    assert all(abs(got - want) <= 30 for got, want in zip(frames, (120, 240))), frames
    assert "exit" not in rows["this tree: time"] and rows["this tree: time"].count(" s") == 2
