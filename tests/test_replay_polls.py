"""Polling loops in a replay (harness/replay/polls.py): a non-blocking call retried while it says
"not yet" compares where the loop ends, whichever side is quicker; another final answer, another
"not yet" error, a loop the target never ends stay divergences.

The sides differ in timing only: the simulator's loopback latency (sim/net.py) set longer on one."""
import pytest

import sim
from harness.conformance import support
from harness.conformance import test_sockets as cases
from harness.replay import recording, replay
from harness.replay.polls import find_loops
from harness.winsock import constants as C

SLOW_NS = 35_000_000        # 35 ms: a loop sleeping 10 ms between tries needs five


def _sim(latency_ns=None):
    api = sim.SimulatedWinsock("wine-8.0")
    if latency_ns is not None:
        api.world.network.loopback_latency_ns = latency_ns
    return api


def _zero_length_recv(api):
    cases.test_zero_length_recv_waits_for_data(api, support.tcp_pair(api))


def _record(fn, latency_ns=None):
    with recording(_sim(latency_ns)) as api:
        fn(api)
    return api.trace


def _loop_lengths(trace):
    return sorted({len(loop) for loop in find_loops(trace.steps).values()})


def test_a_quicker_target_ends_the_loop_earlier():
    trace = _record(_zero_length_recv, SLOW_NS)
    assert _loop_lengths(trace) == [5]
    result = replay(trace, _sim)
    assert result.identical, result.format()
    assert [(p["fn"], p["recorded"], p["replayed"]) for p in result.polls] == [("recv", 5, 2)]
    assert "1 polling loop ended at another try than recorded" in result.format()


def test_a_slower_target_is_polled_until_the_loop_ends():
    trace = _record(_zero_length_recv)
    assert _loop_lengths(trace) == [2]
    result = replay(trace, lambda: _sim(SLOW_NS))
    assert result.identical, result.format()
    assert [(p["fn"], p["recorded"], p["replayed"]) for p in result.polls] == [("recv", 2, 5)]


def test_the_same_timing_is_no_note():
    trace = _record(_zero_length_recv)
    result = replay(trace, _sim)
    assert result.identical and result.polls == []


def test_another_final_answer_is_a_divergence():
    trace = _record(_zero_length_recv, SLOW_NS)
    last = max(max(loop) for loop in find_loops(trace.steps).values())
    trace.steps[last].update(ret=C.SOCKET_ERROR, error=C.WSAECONNRESET)
    result = replay(trace, _sim)
    assert [(d.fn, d.field, d.recorded, d.replayed) for d in result.divergences][:2] == \
        [("recv", "ret", C.SOCKET_ERROR, 0), ("recv", "error", C.WSAECONNRESET, 0)]


def test_a_loop_the_target_never_ends_is_a_divergence_not_a_note():
    trace = _record(_zero_length_recv)
    result = replay(trace, lambda: _sim(10_000_000_000))       # 10 s of virtual time: beyond the retries
    assert [(d.fn, d.field, d.recorded, d.replayed) for d in result.divergences][:2] == \
        [("recv", "ret", 0, C.SOCKET_ERROR), ("recv", "error", 0, C.WSAEWOULDBLOCK)]
    assert result.polls == []


def test_the_nonblocking_connect_second_try_is_timing():
    """test_nonblocking_connect_completes: the connect right after the first says WSAEALREADY on a slow
    loopback and WSAEISCONN on a quick one (the case allows both); the one after the wait WSAEISCONN."""
    trace = _record(cases.test_nonblocking_connect_completes, SLOW_NS // 10)
    connects = [i for i, s in enumerate(trace.steps) if s["op"] == "call" and s["fn"] == "connect"]
    assert [trace.steps[i]["error"] for i in connects] == [C.WSAEWOULDBLOCK, C.WSAEALREADY, C.WSAEISCONN]
    # Two tries with no wait between them are two questions, not a poll: the loop is the last two.
    assert find_loops(trace.steps) == {connects[1]: tuple(connects[1:]), connects[2]: tuple(connects[1:])}


def _call(fn, args, ret=0, error=0, writes=(), **extra):
    return {"op": "call", "fn": fn, "args": args, "ret": ret, "error": error, "writes": list(writes), **extra}


WB = dict(ret=C.SOCKET_ERROR, error=C.WSAEWOULDBLOCK)
RECV = ["recv", [["handle", 0], ["alloc", 0, 0], 8, 0]]


@pytest.mark.parametrize("between, is_loop", [
    ([_call("WSAGetLastError", [], 10035), _call("SleepEx", [10, 0])], True),
    ([_call("SleepEx", [10, 0]), _call("GetLastError", [], 10035)], True),
    ([_call("WSAGetLastError", [], 10035)], False),                         # no wait: two questions
    ([_call("SleepEx", [10, 1])], False),                                   # alertable: APCs may run
    ([_call("SleepEx", [10, 0]), _call("send", [["handle", 1], ["alloc", 1, 0], 4, 0], 4)], False),
    ([{"op": "write", "ptr": ["alloc", 0, 0], "hex": "00"}, _call("SleepEx", [10, 0])], False),
])
def test_what_may_come_between_two_tries(between, is_loop):
    steps = [_call(*RECV, **WB), *between, _call(*RECV, ret=3)]
    assert bool(find_loops(steps)) is is_loop


def test_tries_must_be_the_same_quiet_not_yet_call():
    sleep = _call("SleepEx", [10, 0])
    other_args = _call("recv", [["handle", 0], ["alloc", 0, 0], 4, 0], ret=3)
    assert find_loops([_call(*RECV, **WB), sleep, other_args]) == {}
    wrote = _call(*RECV, **WB, writes=[{"alloc": 0, "offset": 0, "hex": "00" * 8, "syms": []}])
    assert find_loops([wrote, sleep, _call(*RECV, ret=3)]) == {}
    refused = _call(*RECV, ret=C.SOCKET_ERROR, error=C.WSAECONNRESET)
    assert find_loops([refused, sleep, _call(*RECV, ret=3)]) == {}
    # A loop ends at its first answer other than "not yet"; the same call after it starts no loop.
    steps = [_call(*RECV, **WB), sleep, _call(*RECV, ret=3), sleep, _call(*RECV, **WB)]
    assert find_loops(steps) == {0: (0, 2), 2: (0, 2)}
    assert find_loops([{"op": "session", "name": "x"}, _call(*RECV, **WB), {"op": "session", "name": "y"},
                       sleep, _call(*RECV, ret=3)]) == {}
