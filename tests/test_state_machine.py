"""Stateful property tests: overlapped operations, waits, ports, cancels and closes in any order.

Invariants (issue "conformance suite", part 4):
- every operation completes exactly once, through exactly the mechanism it asked for
  (summary-of-overlapped-completion-indication-mechanisms): a routine only as an APC,
  an event-only request never as a port packet when hEvent has the low bit, a port
  request only as a packet, nothing else;
- nothing completes after WSACleanup;
- a call that fails at once (anything but WSA_IO_PENDING: a reset connection, a routine on a
  port-bound socket) is never indicated, and one that succeeds at once is indicated like a
  pending one unless FILE_SKIP_COMPLETION_PORT_ON_SUCCESS spares its packet (WSARecv page;
  SetFileCompletionNotificationModes page; Wine dlls/ws2_32/tests/sock.c test_completion_port);
- no state leaks once everything is closed.
A UDP socket shares the port: receives on it complete with datagrams or with the
WSAECONNRESET of an ICMP port unreachable (its sends to a closed port), through the
same mechanisms, never as an exception from whichever call runs the scheduler.
The profile is chosen with HYPOTHESIS_PROFILE (ci: fast; deep: nightly).
"""
from __future__ import annotations

import struct

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from harness.conformance.support import sockaddr, tcp_pair, udp_socket
from harness.winsock import constants as C
from harness.winsock.layouts import WSABUF, WSAOVERLAPPED
from sim import SimulatedWinsock
from sim.sockopt import OPTIONS

MECHANISMS = ("routine", "event", "event-lowbit", "port", "none")


class Op:
    def __init__(self, kind, mechanism, ovl, event):
        self.kind = kind
        self.mechanism = mechanism
        self.ovl = ovl
        self.event = event
        self.completions = []       # (via, status-or-error, bytes)
        self.skipped = False        # succeeded at once on a FILE_SKIP_COMPLETION_PORT_ON_SUCCESS socket


class OverlappedMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.api = SimulatedWinsock("windows-observed")
        self.client, self.server, self.listener = tcp_pair(self.api)
        self.port = self.api.CreateIoCompletionPort(self.server, 0, 7, 0)
        self.udp, udp_port = udp_socket(self.api)
        assert self.api.CreateIoCompletionPort(self.udp, self.port, 7, 0) == self.port
        self.udp_self = sockaddr(self.api, "127.0.0.1", udp_port)
        closed, closed_port = udp_socket(self.api)
        self.api.closesocket(closed)                 # nobody listens there: ICMP port unreachable
        self.udp_closed = sockaddr(self.api, "127.0.0.1", closed_port)
        self.ops: list[Op] = []
        self.failed: list[Op] = []          # failed at once: never indicated
        self.by_ovl = {}
        self.modes = {self.server: 0, self.udp: 0}
        self.reset = False
        self.closed = False
        self.cleaned = False
        self.routine = self.api.completion_routine(self._routine)
        mem = self.api.memory
        self.count, self.key, self.out = mem.alloc(4), mem.alloc(8), mem.alloc(8)

    def _routine(self, error, transferred, ovl, flags):
        self.by_ovl[ovl].completions.append(("routine", error, transferred))

    def _new_ovl(self, mechanism):
        api = self.api
        event = 0
        if mechanism.startswith("event"):
            event = api.WSACreateEvent()
        ovl = api.memory.alloc(WSAOVERLAPPED.size)
        api.memory.write(ovl, WSAOVERLAPPED.pack(hEvent=event | (1 if mechanism == "event-lowbit" else 0)))
        return ovl, event

    def _start(self, kind, mechanism, call, sock):
        ovl, event = self._new_ovl(mechanism)
        op = Op(kind, mechanism, ovl, event)
        self.by_ovl[ovl] = op
        rc = call(ovl, self.routine if mechanism == "routine" else 0)
        err = self.api.WSAGetLastError() if rc else 0
        if rc and err != C.WSA_IO_PENDING:
            self.failed.append(op)        # an immediate failure: nothing will be indicated
            return
        op.skipped = rc == 0 and bool(self.modes[sock] & C.FILE_SKIP_COMPLETION_PORT_ON_SUCCESS)
        self.ops.append(op)

    # -- rules ------------------------------------------------------------------
    @precondition(lambda self: not self.closed and not self.cleaned)
    @rule(mechanism=st.sampled_from(MECHANISMS), size=st.integers(1, 64), udp=st.booleans())
    def post_recv(self, mechanism, size, udp):
        api = self.api
        buf = api.memory.alloc(size)
        arr = api.memory.alloc(WSABUF.size)
        api.memory.write(arr, WSABUF.pack(len=size, buf=buf))
        flags = api.memory.alloc(4)
        s = self.udp if udp else self.server
        self._start("recv", mechanism, lambda ovl, r: api.WSARecv(s, arr, 1, 0, flags, ovl, r), s)

    @precondition(lambda self: not self.closed and not self.cleaned)
    @rule(mechanism=st.sampled_from(MECHANISMS), data=st.binary(min_size=1, max_size=64))
    def post_send(self, mechanism, data):
        """An overlapped WSASend from the server: at once, or WSAECONNRESET at once after the reset."""
        api = self.api
        buf = api.memory.alloc(len(data))
        api.memory.write(buf, data)
        arr = api.memory.alloc(WSABUF.size)
        api.memory.write(arr, WSABUF.pack(len=len(data), buf=buf))
        self._start("send", mechanism, lambda ovl, r: api.WSASend(self.server, arr, 1, 0, 0, ovl, r), self.server)

    @precondition(lambda self: not self.closed and not self.cleaned and not self.reset)
    @rule()
    def reset_peer(self):
        """The client closes abortively (SO_LINGER 0): pending receives complete with the reset,
        later receives and sends fail at once (Wine test_completion_port)."""
        api = self.api
        linger = api.memory.alloc(4)
        api.memory.write(linger, struct.pack("<HH", 1, 0))
        assert api.setsockopt(self.client, C.SOL_SOCKET, C.SO_LINGER, linger, 4) == 0
        assert api.closesocket(self.client) == 0
        self.reset = True

    @precondition(lambda self: not self.closed and not self.cleaned)
    @rule(udp=st.booleans(), flags=st.sampled_from([C.FILE_SKIP_COMPLETION_PORT_ON_SUCCESS,
                                                    C.FILE_SKIP_SET_EVENT_ON_HANDLE,
                                                    C.FILE_SKIP_COMPLETION_PORT_ON_SUCCESS
                                                    | C.FILE_SKIP_SET_EVENT_ON_HANDLE]))
    def skip_modes(self, udp, flags):
        s = self.udp if udp else self.server
        assert self.api.SetFileCompletionNotificationModes(s, flags) == C.TRUE
        self.modes[s] |= flags

    @precondition(lambda self: not self.closed and not self.cleaned)
    @rule(to_closed_port=st.booleans())
    def udp_send(self, to_closed_port):
        """A datagram to itself, or one that brings back an ICMP port unreachable."""
        api = self.api
        to, tolen = self.udp_closed if to_closed_port else self.udp_self
        buf = api.memory.alloc(1)
        assert api.sendto(self.udp, buf, 1, 0, to, tolen) == 1

    @precondition(lambda self: not self.closed and not self.cleaned)
    @rule(mechanism=st.sampled_from(MECHANISMS), code=st.sampled_from([C.FIONREAD, 0xDEADBEEF, C.SIO_BASE_HANDLE]))
    def post_ioctl(self, mechanism, code):
        api = self.api
        out, n = api.memory.alloc(8), api.memory.alloc(4)
        self._start("ioctl", mechanism, lambda ovl, r: api.WSAIoctl(self.server, code, 0, 0, out, 8, n, ovl, r),
                    self.server)

    @precondition(lambda self: not self.closed and not self.cleaned and not self.reset)
    @rule(data=st.binary(min_size=1, max_size=100))
    def send(self, data):
        api = self.api
        buf = api.memory.alloc(len(data))
        api.memory.write(buf, data)
        assert api.send(self.client, buf, len(data), 0) == len(data)

    @precondition(lambda self: not self.cleaned)
    @rule(which=st.sampled_from(["client", "server", "listener", "udp"]), key=st.sampled_from(sorted(OPTIONS)),
          length=st.sampled_from([-1, 0, 1, 2, 4, 8]), value=st.sampled_from([0, 1, 2, 0x100, 4096, 0xFFFFFFFF]))
    def sockopt(self, which, key, length, value):
        """Any option, length and value on any socket, open or closed (sim/sockopt.py): a set that
        succeeds with a 4-byte integer reads back as set; an accept then inherits it."""
        api, mem = self.api, self.api.memory
        s = getattr(self, which)
        val, out, n = mem.alloc(8), mem.alloc(8), mem.alloc(4)
        mem.write(val, struct.pack("<Q", value))
        ok = api.setsockopt(s, *key, val, length) == 0
        mem.write_u32(n, 4)
        spec = OPTIONS[key]
        if ok and length >= 4 and api.getsockopt(s, *key, out, n) == 0 and spec.width == 4 \
                and not spec.boolean and key not in ((C.SOL_SOCKET, C.SO_ERROR), (C.IPPROTO_IP, C.IP_OPTIONS)):
            assert mem.read_u32(out) == value

    @precondition(lambda self: not self.closed and not self.cleaned)
    @rule()
    def accept_inherits(self):
        """Wine test_accept_inheritance: a new connection's accepted socket has the listener's
        SOL_SOCKET and IPPROTO_TCP options."""
        api, mem = self.api, self.api.memory
        name, n = mem.alloc(16), mem.alloc(4)
        mem.write_u32(n, 16)
        assert api.getsockname(self.listener, name, n) == 0
        client = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
        assert api.connect(client, name, 16) == 0
        accepted = api.accept(self.listener, 0, 0)
        assert accepted != C.INVALID_SOCKET
        a, b = mem.alloc(4), mem.alloc(4)
        for key, spec in OPTIONS.items():
            if key[0] in (C.SOL_SOCKET, C.IPPROTO_TCP) and not spec.read_only and key != (C.SOL_SOCKET, C.SO_ERROR):
                mem.write_u32(n, 4)
                rc_l = api.getsockopt(self.listener, *key, a, n)
                mem.write_u32(n, 4)
                rc_a = api.getsockopt(accepted, *key, b, n)
                assert rc_l == rc_a and (rc_l or mem.read(a, spec.width) == mem.read(b, spec.width)), key
        api.closesocket(client)
        api.closesocket(accepted)

    @rule(ms=st.integers(0, 50), alertable=st.booleans())
    def sleep(self, ms, alertable):
        self.api.SleepEx(ms, alertable)

    @rule()
    def dequeue(self):
        api = self.api
        while True:
            ok = api.GetQueuedCompletionStatus(self.port, self.count, self.key, self.out, 0)
            ovl = api.memory.read_u64(self.out)
            if not ok and ovl == 0:
                return
            assert api.memory.read_u64(self.key) == 7
            op = self.by_ovl[ovl]
            op.completions.append(("port", 0 if ok else api.GetLastError(), api.memory.read_u32(self.count)))

    @precondition(lambda self: not self.closed and not self.cleaned)
    @rule(index=st.integers(0, 1000))
    def cancel_one(self, index):
        pending = [op for op in self.ops if not self._done(op)]
        if pending:
            ovl = pending[index % len(pending)].ovl
            for s in (self.server, self.udp):        # it is pending on one of them
                self.api.CancelIoEx(s, ovl)

    @precondition(lambda self: not self.closed and not self.cleaned)
    @rule()
    def close_server(self):
        assert self.api.closesocket(self.server) == 0
        assert self.api.closesocket(self.udp) == 0
        self.closed = True

    @precondition(lambda self: not self.cleaned)
    @rule()
    def cleanup(self):
        assert self.api.WSACleanup() == 0
        self.cleaned = True
        self.completions_at_cleanup = sum(len(op.completions) for op in self.ops)
        self._drain()
        self.after_drain = sum(len(op.completions) for op in self.ops)

    # -- helpers -------------------------------------------------------------
    def _done(self, op) -> bool:
        status = struct.unpack("<Q", self.api.memory.read(op.ovl, 8))[0]
        return status != C.STATUS_PENDING

    def _drain(self):
        while self.api.SleepEx(0, True) == C.WAIT_IO_COMPLETION:
            pass
        self.dequeue()

    # -- invariants ------------------------------------------------------------
    @invariant()
    def each_completion_uses_only_its_mechanism(self):
        for op in self.ops:
            vias = {via for via, _, _ in op.completions}
            if op.mechanism == "routine":
                assert vias <= {"routine"}
            elif op.mechanism in ("port", "none", "event"):
                assert vias <= {"port"}          # the socket is associated with the port
            else:                                 # event with the low bit: never a packet
                assert not vias
            assert len(op.completions) <= 1, (op.kind, op.mechanism, op.completions)

    @invariant()
    def immediate_failures_are_never_indicated(self):
        for op in self.failed:
            assert op.completions == [], (op.kind, op.mechanism, op.completions)
            if op.event:
                obj = self.api.process.handles.get(op.event)
                assert obj is None or not obj.signalled, (op.kind, op.mechanism)

    @invariant()
    def signalled_events_mean_completion(self):
        for op in self.ops:
            if op.event and op.mechanism.startswith("event"):
                obj = self.api.process.handles.get(op.event)
                if obj is not None and obj.signalled:
                    assert self._done(op)

    def teardown(self):
        api = self.api
        if not self.cleaned:
            if not self.closed:
                api.closesocket(self.server)
                api.closesocket(self.udp)
            self._drain()
            for op in self.ops:
                assert self._done(op), (op.kind, op.mechanism)
                if op.mechanism in ("port", "none", "event") and op.skipped:
                    assert op.completions == [], (op.kind, op.mechanism, op.completions)
                elif op.mechanism in ("routine", "port", "none", "event"):
                    assert len(op.completions) == 1, (op.kind, op.mechanism, op.completions)
            api.WSACleanup()
        else:
            api.SleepEx(100, True)
            self.dequeue()
            # Nothing completes after WSACleanup (beyond what the cleanup itself cancelled).
            assert sum(len(op.completions) for op in self.ops) == self.after_drain
            for op in self.ops:
                assert self._done(op)
        process = api.process
        assert not process.sockets and all(not getattr(o, "pending", None) for o in process.handles.values())


OverlappedMachine.TestCase.settings = settings(OverlappedMachine.TestCase.settings, stateful_step_count=30)
TestOverlappedMachine = OverlappedMachine.TestCase
