"""Values the host chose compare by order of appearance in a replay (harness/replay/hostvalues.py):
the local address routing picked and the defaults of host-valued socket options, while an address
or an option value the program named still compares as it is."""
import pytest

import sim
from harness.conformance import support
from harness.replay import recording, replay
from harness.replay.hostvalues import HostAddresses, HostOptionDefaults, HostValues
from harness.winsock import constants as C
from harness.winsock.sockaddr import from_text
from sim import sockopt
from sim.socket import DEFAULT_OPTIONS
from sim.world import World


def test_the_address_routing_picked_compares_by_order_of_appearance():
    """The simulator's 192.0.2.10 and Wine's 192.0.2.2 read alike where each side met it first; a
    second address stays a second one; loopback, the wildcard and named addresses stay as they are."""
    sim_side, wine_side = HostAddresses(), HostAddresses()
    a = [sim_side.normalise(from_text(h, 49152), 0) for h in ("192.0.2.10", "198.51.100.7", "192.0.2.10")]
    b = [wine_side.normalise(from_text(h, 40001), 0) for h in ("192.0.2.2", "198.51.100.9", "192.0.2.2")]
    assert [x[4:8] for x in a] == [x[4:8] for x in b] and a[0][4:8] != a[1][4:8] and a[0] == a[2]
    assert a[0][:4] == from_text("192.0.2.10", 49152)[:4]           # family and port: harness.replay.ports' part
    for host in ("127.0.0.1", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1"):
        assert sim_side.normalise(from_text(host, 1), 0) == from_text(host, 1), host
    sim_side.note_named(from_text("203.0.113.5", 80))
    assert sim_side.normalise(from_text("203.0.113.5", 80), 0) == from_text("203.0.113.5", 80)
    assert wine_side.normalise(from_text("203.0.113.5", 80), 0) != from_text("203.0.113.5", 80)


@pytest.mark.ipv6
def test_ipv6_addresses_are_numbered_apart_from_ipv4():
    side = HostAddresses()
    v6 = side.normalise(from_text("2001:db8::10", 5), 0)
    v4 = side.normalise(from_text("192.0.2.10", 5), 0)
    assert v6[8:24] != from_text("2001:db8::10", 5)[8:24] and v6[8:24].endswith(b"\xee\xee\x00\x00")
    assert v4[4:8] == b"\xee\xee\xee\x00"        # the first IPv4 address, whatever IPv6 came before


def test_option_defaults_compare_by_order_of_appearance_but_set_values_as_they_are():
    sim_side, wine_side = HostOptionDefaults(), HostOptionDefaults()
    key = (C.SOL_SOCKET, C.SO_RCVBUF)
    assert sim_side.token(key, 65536, 4) == wine_side.token(key, 131072, 4) is not None
    sim_side.note_set(key, (4096).to_bytes(4, "little"))
    wine_side.note_set(key, (4096).to_bytes(4, "little"))
    assert sim_side.token(key, 4096, 4) is None and wine_side.token(key, 4096, 4) is None
    assert wine_side.token(key, 8192, 4) != sim_side.token(key, 65536, 4)      # a second value stays a second
    assert sim_side.token((C.IPPROTO_IP, C.IP_TTL), 128, 1) == wine_side.token((C.IPPROTO_IP, C.IP_TTL), 64, 1)


def _program(api):
    """A connect in progress to TEST-NET from an unnamed address; the option defaults read, then set."""
    s = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    assert api.ioctlsocket(s, C.FIONBIO, support.dword(api, 1).ptr) == 0
    ptr, n = support.sockaddr(api, "0.0.0.0", 0)
    assert api.bind(s, ptr, n) == 0
    to, tolen = support.sockaddr(api, "192.0.2.0", 255)
    assert api.connect(s, to, tolen) == C.SOCKET_ERROR
    support.local_name(api, s)
    name, namelen = support.Guarded(api, 64), support.dword(api, 64)
    assert api.getpeername(s, name.ptr, namelen.ptr) == 0
    for level, opt in ((C.SOL_SOCKET, C.SO_RCVBUF), (C.IPPROTO_IP, C.IP_TTL)):
        value, size = support.dword(api, 0), support.dword(api, 4)
        assert api.getsockopt(s, level, opt, value.ptr, size.ptr) == 0
        assert api.setsockopt(s, level, opt, support.dword(api, 100).ptr, 4) == 0
        assert api.getsockopt(s, level, opt, value.ptr, size.ptr) == 0


def _other_host(monkeypatch):
    """A simulator whose machine has another address and Linux's option defaults."""
    monkeypatch.setitem(DEFAULT_OPTIONS, (C.SOL_SOCKET, C.SO_RCVBUF), 131072)
    monkeypatch.setitem(DEFAULT_OPTIONS, (C.IPPROTO_IP, C.IP_TTL), 64)
    world = World("documented")
    host = world.add_host("localhost", ("192.0.2.2", "2001:db8::2"))
    api = sim.SimulatedWinsock(process=world.start_process(host, "test", elevated=True, startup=False).process)
    api.startup()
    return api


def test_a_replay_on_another_host_meets_no_divergence(monkeypatch):
    with recording(sim.SimulatedWinsock("documented")) as api:
        _program(api)
    result = replay(api.trace, _other_host(monkeypatch))
    assert result.identical, result.format()


def test_a_value_the_program_set_still_diverges(monkeypatch):
    """What getsockopt reads after a setsockopt is the Winsock's answer, not the host's: a target that
    drops the value set is a divergence (here: one whose setsockopt of IP_TTL changes nothing)."""
    with recording(sim.SimulatedWinsock("documented")) as api:
        _program(api)
    other = _other_host(monkeypatch)
    real = sockopt._store
    monkeypatch.setattr(sockopt, "_store", lambda sock, key, value: None if key == (C.IPPROTO_IP, C.IP_TTL)
                        else real(sock, key, value))
    result = replay(api.trace, other)
    assert [(d.fn, d.field) for d in result.divergences] == [("getsockopt", "writes")], result.format()


def test_normalise_leaves_other_calls_alone():
    step = {"op": "call", "fn": "send", "args": [["handle", 0], ["alloc", 0, 0], 4, 0], "ret": 4, "error": 0,
            "writes": [{"alloc": 0, "offset": 0, "hex": "0200ee00c000020a", "syms": []}], "completions": []}
    assert HostValues().normalise(step, {0: bytearray(8)}) is step
    odd = {**step, "fn": "getsockopt", "args": [["handle", 0], ["alloc", 0, 0], C.SO_RCVBUF, ["alloc", 0, 0], 0],
           "ret": 0}
    assert HostValues().normalise(odd, {0: bytearray(8)}) is odd       # a level no C caller would pass
