"""Stateful property test: binds, listens, connects and closes of sockets sharing a few ports.

Every bind is checked against an oracle written independently of sim/addresses.py: the sharing
table of learn.microsoft.com "Sharing Transport Addresses" (the copy in
harness/conformance/test_address_reservation.py) applied pairwise to every socket still bound,
by a plain scan, with the address rules Wine dlls/ws2_32/tests/sock.c test_reuseaddr shows on
Windows (a dual-stack :: is wider than 0.0.0.0, a v4-mapped address is its IPv4 address, IPv4 and
IPv6 never meet). The simulator keeps counts per port and address instead; the two must agree:
a bind fails exactly when some pair fails, with one of the pairs' errors. After every step the
host's reservations are exactly the live bindings; once all is closed nothing is left. A
connection to an address several listeners share goes to the one that listened first (Wine
test_reuseaddr on Windows).
The profile is chosen with HYPOTHESIS_PROFILE (ci: fast; deep: nightly).
"""
from __future__ import annotations

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from harness.conformance.support import dword, local_name, sockaddr
from harness.conformance.test_address_reservation import SHARING_TABLE
from harness.winsock import constants as C
from sim import SimulatedWinsock
from sim.net import ip_bytes

PORTS = (40001, 40002)
ADDRESSES = ("0.0.0.0", "127.0.0.1", "127.0.0.2", "::", "::1", "::ffff:127.0.0.1", "::ffff:0.0.0.0")
OPTIONS = ("none", "SO_REUSEADDR", "SO_EXCLUSIVEADDRUSE")
_ERRORS = {"SUCCESS": 0, "CHECK": 0, "INUSE": C.WSAEADDRINUSE, "DENIED": C.WSAEACCES}
_COLUMN = [("none", "wildcard"), ("none", "specific"), ("SO_REUSEADDR", "wildcard"),
           ("SO_REUSEADDR", "specific"), ("SO_EXCLUSIVEADDRUSE", "wildcard"), ("SO_EXCLUSIVEADDRUSE", "specific")]


def _ipv4_view(ip: str, dual: bool):
    """How a binding reaches IPv4: (rank, address) with rank 0 specific, 1 0.0.0.0, 2 dual-stack ::."""
    if ":" not in ip:
        return (1, None) if ip == "0.0.0.0" else (0, ip)
    if ip.startswith("::ffff:"):
        v4 = ip[7:]
        return (1, None) if v4 == "0.0.0.0" else (0, v4)
    return (2, None) if ip == "::" and dual else None


def _ipv6_view(ip: str):
    if ":" not in ip or ip.startswith("::ffff:"):
        return None
    return (1, None) if ip == "::" else (0, ip)


def _pair(first, second) -> int:
    """The oracle's result of `second` binding beside `first` (dicts: ip, dual, option)."""
    worst = 0
    for view in (lambda b: _ipv4_view(b["ip"], b["dual"]), lambda b: _ipv6_view(b["ip"])):
        a, b = view(first), view(second)
        if a is None or b is None:
            continue
        if a[0] == b[0]:
            if a[0] == 0 and a[1] != b[1]:
                continue
            kinds = ("wildcard", "wildcard") if a[0] else ("specific", "specific")
        else:
            kinds = ("wildcard", "specific") if a[0] > b[0] else ("specific", "wildcard")
        row = SHARING_TABLE[(second["option"], kinds[1])].split()
        error = _ERRORS[row[_COLUMN.index((first["option"], kinds[0]))]]
        worst = worst or error
    return worst


class BindMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.api = SimulatedWinsock("windows-observed")
        self.sockets = {}           # handle -> {ip, dual, option, proto, port, bound, listening}
        self.listen_order = []

    @rule(ip=st.sampled_from(ADDRESSES), option=st.sampled_from(OPTIONS), proto=st.sampled_from(("tcp", "udp")),
          dual=st.booleans())
    def create(self, ip, option, proto, dual):
        api = self.api
        family = C.AF_INET6 if ":" in ip else C.AF_INET
        s = api.socket(family, C.SOCK_STREAM if proto == "tcp" else C.SOCK_DGRAM, 0)
        if option != "none":
            assert api.setsockopt(s, C.SOL_SOCKET, getattr(C, option), dword(api, 1).ptr, 4) == 0
        dual = dual and family == C.AF_INET6
        if dual:
            assert api.setsockopt(s, C.IPPROTO_IPV6, C.IPV6_V6ONLY, dword(api, 0).ptr, 4) == 0
        self.sockets[s] = {"ip": ip, "dual": dual, "option": option, "proto": proto, "port": None,
                           "bound": False, "listening": False}

    @precondition(lambda self: self.sockets)
    @rule(index=st.integers(0, 1000), port=st.sampled_from(PORTS))
    def bind(self, index, port):
        s, me = self._pick(index)
        ptr, n = sockaddr(self.api, me["ip"], port)
        rc = self.api.bind(s, ptr, n)
        err = 0 if rc == 0 else self.api.WSAGetLastError()
        if me["bound"]:
            assert err == C.WSAEINVAL               # the bind page: already bound
            return
        if me["ip"].startswith("::ffff:") and not me["dual"]:
            assert err == C.WSAEADDRNOTAVAIL        # a v4-mapped address needs IPV6_V6ONLY off
            return
        errors = {_pair(other, me) for other in self.sockets.values()
                  if other["bound"] and other["port"] == port and other["proto"] == me["proto"]} - {0}
        event(f"bind: {C.error_name(err) if err else 'ok'}")
        if errors:
            assert err in errors, (me, err, errors)
        else:
            assert err == 0, (me, err)
            me["bound"], me["port"] = True, port

    @precondition(lambda self: self.sockets)
    @rule(index=st.integers(0, 1000))
    def listen(self, index):
        s, me = self._pick(index)
        rc = self.api.listen(s, 4)
        if me["proto"] == "tcp" and me["bound"]:
            assert rc == 0, self.api.WSAGetLastError()      # sharing the address or not
            if not me["listening"]:
                me["listening"] = True
                self.listen_order.append(s)
        else:
            assert rc == C.SOCKET_ERROR

    @precondition(lambda self: any(m["listening"] for m in self.sockets.values()))
    @rule(index=st.integers(0, 1000))
    def connect(self, index):
        """A connection to a listener's address goes to the listener that serves it first."""
        listening = [s for s in self.listen_order if self.sockets[s]["listening"]]
        me = self.sockets[listening[index % len(listening)]]
        ip, port = me["ip"], me["port"]
        if ip in ("0.0.0.0", "::ffff:0.0.0.0") or (ip == "::" and me["dual"]):
            target = "127.0.0.1"
        else:
            target = {"::": "::1", "::ffff:127.0.0.1": "127.0.0.1"}.get(ip, ip)
        expected = min((rank, i, x) for i, x in enumerate(listening)
                       if self.sockets[x]["port"] == port
                       and (rank := self._rank(self.sockets[x], target)) is not None)[2]
        client = self.api.socket(C.AF_INET6 if ":" in target else C.AF_INET, C.SOCK_STREAM, 0)
        ptr, n = sockaddr(self.api, target, port)
        assert self.api.connect(client, ptr, n) == 0, (me, target, self.api.WSAGetLastError())
        accepted = self.api.accept(expected, 0, 0)      # blocking: the wrong listener would never return
        assert accepted != C.INVALID_SOCKET, (self.sockets[expected], target)
        for s in (accepted, client):
            assert self.api.closesocket(s) == 0

    @staticmethod
    def _rank(m, target):
        """How early listener `m` serves a connection to `target`: the exact address first (plain or
        v4-mapped; Wine test_reuseaddr: loopback before the wildcard), then the wildcards in the order
        the simulator looks them up (0.0.0.0, ::ffff:0.0.0.0, dual-stack ::; assumed, not observed);
        among equals the first to listen (Wine test_reuseaddr). None: it does not serve it."""
        ip = m["ip"]
        if ":" in target:
            return 0 if ip == target else 1 if ip == "::" else None
        return {target: 0, "::ffff:" + target: 0, "0.0.0.0": 1, "::ffff:0.0.0.0": 2}.get(
            ip, 3 if ip == "::" and m["dual"] else None)

    @precondition(lambda self: self.sockets)
    @rule(index=st.integers(0, 1000))
    def close(self, index):
        s, _ = self._pick(index)
        assert self.api.closesocket(s) == 0
        del self.sockets[s]
        if s in self.listen_order:
            self.listen_order.remove(s)

    def _pick(self, index):
        handles = sorted(self.sockets)
        s = handles[index % len(handles)]
        return s, self.sockets[s]

    @invariant()
    def reservations_are_the_live_bindings(self):
        host = self.api.process.host
        for proto in ("tcp", "udp"):
            held = host.ports[proto].reserved
            live = sum(1 for m in self.sockets.values() if m["bound"] and m["proto"] == proto)
            counted = {(port, claim): sum(c) for port, claims in held.items() for claim, c in claims.items()}
            assert all(counted.values())            # no empty groups left behind
            if not live:
                assert held == {}

    def teardown(self):
        for s in list(self.sockets):
            assert self.api.closesocket(s) == 0
        self.api.SleepEx(100, False)         # the closed connections' FINs cross the loopback
        host = self.api.process.host
        for proto in ("tcp", "udp"):
            assert host.ports[proto].reserved == {}
            assert host.ports[proto].users == {}
        assert host.waiting == {} and not host.tcp_listeners and not host.udp


BindMachine.TestCase.settings = settings(BindMachine.TestCase.settings, stateful_step_count=40)
TestBindMachine = BindMachine.TestCase


def test_the_oracle_agrees_with_wine_test_reuseaddr_on_windows():
    """The oracle itself, on test_reuseaddr's list (ok() outside todo_wine: Windows behaviour)."""
    from harness.conformance.test_address_reservation import EXCLUSIVE_LIST
    for (a, ax), (b, bx), error in EXCLUSIVE_LIST:
        first = {"ip": a, "dual": ":" in a, "option": "SO_EXCLUSIVEADDRUSE" if ax else "none"}
        second = {"ip": b, "dual": ":" in b, "option": "SO_EXCLUSIVEADDRUSE" if bx else "none"}
        assert _pair(first, second) == error, (a, ax, b, bx)
    assert ip_bytes("::1")          # the simulator's host owns the loopback addresses used here
