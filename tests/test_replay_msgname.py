"""WSAMSG.name in a replay (harness/replay/msgname.py): the address WSASendMsg sends to and the one
WSARecvMsg returns take part in the port ordinals and the masking beyond the returned length, like
sendto's and recvfrom's, at once and for a pending WSARecvMsg.

The other target is a simulator whose dynamic port range starts elsewhere (the system chooses other
ports, as Wine does), and a recording edited to zero the name buffer beyond the returned length
(as Wine's ntdll does)."""
import sim
from harness.conformance import support
from harness.conformance import test_sockets as cases
from harness.replay import recording, replay
from harness.replay.replayer import Replayer
from harness.winsock import constants as C
from harness.winsock.layouts import WSABUF, WSAMSG


def _record(fn):
    with recording(sim.SimulatedWinsock("wine-8.0")) as api:
        fn(api)
    return api.trace


def _other_ports():
    api = sim.SimulatedWinsock("wine-8.0")
    for host in api.world.network.hosts:
        for proto in ("tcp", "udp"):
            host.set_dynamic_ports(proto, 40000, 1000)
    return api


def _calls(trace, fn):
    return [s for s in trace.steps if s["op"] == "call" and s["fn"] == fn]


def _zero_beyond_the_name(trace, fn, name_size=28, returned=16):
    """Edit the recording as if its target zeroed the name buffer beyond the returned length: the step
    that wrote the name (a write run of 16 bytes starting with AF_INET) also writes zeros up to
    name_size."""
    for step in (s for s in trace.steps if s["op"] == "call"):
        for run in list(step.get("writes", [])):
            if run["hex"].startswith("0200") and len(run["hex"]) == 2 * returned and \
                    (fn is None or step["fn"] == fn):
                step["writes"].append({"alloc": run["alloc"], "offset": run["offset"] + returned,
                                       "hex": "00" * (name_size - returned) + "a5" * 4, "syms": []})
                return step
    raise AssertionError("no name written")


def test_wsasendmsg_sends_to_this_targets_port_of_the_recorded_one(monkeypatch):
    trace = _record(cases.test_sendmsg_to_name)
    assert replay(trace, _other_ports).identical
    # Without translating WSAMSG.name the datagram goes to the recorded port, where nobody listens:
    # the recv then blocks for ever (the replay on Wine timed out in the agent; here a deadlock).
    monkeypatch.setattr(Replayer, "_MSG_INPUTS", frozenset())
    result = replay(trace, _other_ports)
    assert [(d.fn, d.field) for d in result.divergences] == [("recv", "raised")]


def test_wsarecvmsg_name_compares_by_port_ordinal_and_up_to_namelen():
    trace = _record(cases.test_recvmsg_pktinfo_and_ctrunc)
    for step in _calls(trace, "WSARecvMsg"):        # the failing (WSAEMSGSIZE) one returns the name too
        _zero_beyond_the_name(trace, None)
    result = replay(trace, _other_ports)
    assert result.identical, result.format()


def test_a_difference_within_the_returned_name_is_still_reported():
    trace = _record(cases.test_recvmsg_pktinfo_and_ctrunc)
    step = _zero_beyond_the_name(trace, "WSARecvMsg")
    run = next(r for r in step["writes"] if r["hex"].startswith("0200"))
    run["hex"] = run["hex"][:8] + "0a000001" + run["hex"][16:]        # another sender address
    result = replay(trace, _other_ports)
    assert [(d.fn, d.field) for d in result.divergences] == [("WSARecvMsg", "writes")]
    assert list(result.divergences[0].recorded) == [f"alloc{run['alloc']}+{run['offset']}"]


def _pending_recvmsg(api, name_size=28):
    """An overlapped WSARecvMsg with a name buffer of `name_size` bytes, pending until a datagram comes."""
    a, _ = support.udp_socket(api)
    b, pb = support.udp_socket(api)
    recvmsg = support.get_extension(api, b, C.WSAID_WSARECVMSG)
    data, name = support.Guarded(api, 16), support.Guarded(api, name_size)
    arr = api.memory.alloc(WSABUF.size)
    api.memory.write(arr, WSABUF.pack(len=16, buf=data.ptr))
    msg = api.memory.alloc(WSAMSG.size)
    api.memory.write(msg, WSAMSG.pack(name=name.ptr, namelen=name_size, lpBuffers=arr, dwBufferCount=1,
                                      Control_len=0, Control_buf=0, dwFlags=0))
    event = api.WSACreateEvent()
    ovl = support.overlapped(api, event)
    assert api.call(recvmsg, b, msg, 0, ovl, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSA_IO_PENDING
    to, tolen = support.sockaddr(api, "127.0.0.1", pb)
    payload = api.memory.alloc(3)
    api.memory.write(payload, b"abc")
    assert api.sendto(a, payload, 3, 0, to, tolen) == 3
    n, flags = support.dword(api), support.dword(api)
    assert api.WSAGetOverlappedResult(b, ovl, n.ptr, True, flags.ptr) == 1 and n.u32() == 3
    assert WSAMSG.unpack(api.memory.read(msg, WSAMSG.size))["namelen"] == 16


def test_a_pending_wsarecvmsg_name_compares_once_complete_by_ordinal_and_up_to_namelen():
    trace = _record(_pending_recvmsg)
    issue = _calls(trace, "WSARecvMsg")[0]
    assert issue["error"] == C.WSA_IO_PENDING
    completing = _zero_beyond_the_name(trace, None)
    assert completing["fn"] != "WSARecvMsg"     # the name arrived in a later call: carried, then masked
    result = replay(trace, _other_ports)
    assert result.identical, result.format()


def test_a_pending_wsarecvmsg_filling_its_name_buffer_masks_nothing():
    """namelen returned = the buffer's size: nothing is beyond it, and what the operation wrote
    elsewhere (its data) is still compared."""
    trace = _record(lambda api: _pending_recvmsg(api, 16))
    completing = next(s for s in _calls(trace, "WSAGetOverlappedResult"))
    run = next(r for r in completing["writes"] if r["hex"].startswith("616263"))
    run["hex"] = "616264" + run["hex"][6:]
    result = replay(trace, _other_ports)
    assert [(d.fn, d.field, list(d.recorded)) for d in result.divergences] == \
        [("WSAGetOverlappedResult", "writes", [f"alloc{run['alloc']}+{run['offset']}"])]
