"""The lockstep machinery and the known list, without Wine: two simulators whose profiles answer a
decision point differently diverge exactly there; ports and reused handles compare as symbols;
a malformed known list is one error naming file, line and field."""
import pytest

from harness.input_error import InputError
from harness.winsock import constants as C
from harness.winsock.layouts import WSABUF, WSAOVERLAPPED
from sim import SimulatedWinsock

from . import known
from .lockstep import Divergence, Pair


def _post_recv_with_routine(side):
    api, mem = side.api, side.api.memory
    client, server = side.v["client"], side.v["server"]
    api.CreateIoCompletionPort(server, 0, 1, 0)
    buf, arr = mem.alloc(8), mem.alloc(WSABUF.size)
    mem.write(arr, WSABUF.pack(len=8, buf=buf))
    ovl = mem.alloc(WSAOVERLAPPED.size)
    api.WSARecv(server, arr, 1, mem.alloc(4), mem.alloc(4), ovl, api.completion_routine(lambda *a: None))
    assert client


def _pair(side):
    from harness.conformance.support import tcp_pair
    side.v["client"], side.v["server"], _ = tcp_pair(side.api)


def test_profiles_that_answer_a_decision_point_differently_diverge_there():
    # Every built-in profile now refuses the routine (Wine test_WSARecv, on Windows): an override differs.
    pair = Pair(SimulatedWinsock("documented", overrides={"routine_on_port_socket": "accepted"}),
                SimulatedWinsock("wine-8.0"))
    assert pair.run("a connected pair", _pair) == []          # ephemeral ports and handles: symbols
    found = pair.run("WSARecv with a routine on a port-bound socket", _post_recv_with_routine)
    assert [(d.fn, d.field, d.sim, d.wine) for d in found] == [("WSARecv", "error", C.WSA_IO_PENDING, C.WSAEINVAL)]
    assert "WSARecv" in pair.transcript() and "wine: WSARecv" in pair.transcript()


def test_a_handle_value_used_again_after_close_is_a_new_symbol():
    pair = Pair(SimulatedWinsock("wine-8.0"), SimulatedWinsock("wine-8.0"))
    for side in pair.sides:
        side.v["s"] = side.api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    pair.run("close", lambda side: side.api.closesocket(side.v["s"]))
    sym = pair.wine.api.symbols
    assert sym.add_handle(pair.wine.v["s"]) == ["handle", 1]       # as when Wine hands the value out again


def test_known_entries_explain_only_what_they_name():
    entry = known.KNOWN.explain(Divergence("s", 0, "CancelIoEx", "ret", 0, 1, [["handle", 2], 0], 1168))
    assert entry is not None and entry.continues and "test_send_buffering" in entry.reason
    assert known.KNOWN.explain(Divergence("s", 0, "CancelIoEx", "ret", 0, 1, [["handle", 2], ["alloc", 3, 0]], 1168)) is None


@pytest.mark.parametrize("text,field", [
    ('[[divergence]]\nname = "x"\nfield = "ret"\n', "divergence[0].differs"),
    ('[[divergence]]\nname = "x"\nfield = "nope"\ndeviation = "a::b"\n', "divergence[0].field"),
    ('[[divergence]]\nname = "x"\nfield = "ret"\ndeviation = "test_nothing.py::x"\n', "divergence[0].deviation"),
    ('[[divergence]]\nname = "x"\nfield = "ret"\ndiffers = "d"\nwindows = "w"\nkind = "todo_wine"\n'
     'citation = "Wine says so"\n', "divergence[0].citation"),
])
def test_a_malformed_known_list_names_file_line_and_field(tmp_path, text, field):
    path = tmp_path / "known.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as exc:
        known.load(path)
    assert f"{path}:1: {field}" in str(exc.value)


def test_a_known_entry_never_explains_any_failing_call():
    """An entry's `sim` names the simulator's last error, whatever field differs: the last-WSACleanup
    entry (sim WSANOTINITIALISED) explains no other failure, nor a success whose writes differ."""
    other = Divergence("s", 0, "getsockname", "writes", {"alloc8+0": "a"}, {"alloc8+0": "b"}, [], None, None)
    failing = Divergence("s", 0, "WSAIoctl", "ret", -1, 0, [["handle", 2], 0x4004667F], C.WSAEFAULT, None)
    assert known.KNOWN.explain(other) is None and known.KNOWN.explain(failing) is None
    after_cleanup = Divergence("s", 0, "WSAIoctl", "error", C.WSANOTINITIALISED, C.WSAEFAULT,
                               [["handle", 2], 0x4004667F], C.WSANOTINITIALISED, C.WSAEFAULT)
    assert known.KNOWN.explain(after_cleanup).name == "calls-after-last-cleanup"


def test_ports_compare_by_order_of_appearance_per_space():
    """The simulator gives a TCP listener and a UDP socket the same number, Linux does not: each
    space numbers its own ports (harness.replay.ports), so both runs read the same."""
    from harness.replay.ports import PortOrdinals
    from harness.winsock.sockaddr import from_text
    sim, wine = PortOrdinals(), PortOrdinals()
    a = [sim.normalise(from_text("127.0.0.1", 49152), 0, space) for space in ("tcp", "udp", "udp")]
    b = [wine.normalise(from_text("127.0.0.1", p), 0, space) for p, space in ((40001, "tcp"), (51234, "udp"),
                                                                             (40001, "udp"))]
    assert a[0] == b[0] and a[1] == b[1] and a[2] == a[1] and b[2] != b[1]
