"""WSAPoll in the simulator: virtual time, deadlocks, other threads and processes, sim-only cases.

The behaviour itself is checked against the pages in
harness/conformance/test_wsapoll.py (both profiles); here what only the
simulator can show: the clock, the wait machinery, and states a real
target cannot be put in on demand.
"""
import struct
import threading

import pytest

from harness.conformance.support import Guarded, dword, listener, sockaddr, tcp_pair, udp_socket
from harness.winsock import constants as C
from harness.winsock.layouts import WSAPOLLFD
from sim import SimulatedWinsock, SimulationDeadlock, World
from sim import poll as sim_poll

MS = 1_000_000
REQ = C.POLLRDNORM | C.POLLRDBAND | C.POLLWRNORM


def _array(api, entries):
    arr = api.memory.alloc(WSAPOLLFD.size * len(entries))
    api.memory.write(arr, b"".join(WSAPOLLFD.pack(fd=fd, events=ev, revents=0x5A5A) for fd, ev in entries))
    return arr


def _revents(api, arr, n):
    data = api.memory.read(arr, WSAPOLLFD.size * n)
    return [WSAPOLLFD.get(data[i * 16:(i + 1) * 16], "revents") for i in range(n)]


def test_timeout_advances_virtual_time_exactly():
    api = SimulatedWinsock()
    client, server, _ = tcp_pair(api)
    arr = _array(api, [(server, C.POLLRDNORM)])
    start = api.world.now_ns
    assert api.WSAPoll(arr, 1, 250) == 0
    assert api.world.now_ns - start == 250 * MS
    start = api.world.now_ns
    assert api.WSAPoll(arr, 1, 0) == 0 and api.world.now_ns == start


def test_data_arrives_on_virtual_time():
    """The poll ends when a segment scheduled 30 ms ahead is delivered, not before and not at the timeout."""
    api = SimulatedWinsock()
    client, server, _ = tcp_pair(api)
    data = api.memory.alloc(3)
    api.memory.write(data, b"abc")
    start = api.world.now_ns
    api.world.kernel.scheduler.call_later(30 * MS, lambda: api.send(client, data, 3, 0), "peer sends")
    arr = _array(api, [(server, C.POLLRDNORM)])
    assert api.WSAPoll(arr, 1, 10_000) == 1
    assert _revents(api, arr, 1) == [C.POLLRDNORM]
    elapsed = api.world.now_ns - start
    assert 30 * MS < elapsed < 31 * MS          # plus one loopback hop


def test_infinite_poll_that_nothing_can_end_is_a_deadlock():
    api = SimulatedWinsock()
    client, server, _ = tcp_pair(api)
    arr = _array(api, [(server, C.POLLRDNORM)])
    with pytest.raises(SimulationDeadlock, match="WSAPoll"):
        api.WSAPoll(arr, 1, -1)
    assert _revents(api, arr, 1) == [0x5A5A]        # nothing written: the call never returned


def test_negative_timeout_waits_for_another_process():
    """An infinite poll lets the world's other processes (services) run: an echo server on another
    host answers, and the poll returns when the echo is back, two link hops later."""
    world = World("windows-observed")
    client_host = world.add_host("client", ["192.0.2.10"])
    server_host = world.add_host("server", ["192.0.2.20"])
    app = world.start_process(client_host, "app")
    echo = world.start_process(server_host, "echo")
    lst = echo.socket(C.AF_INET, C.SOCK_STREAM, 0)
    ptr, n = sockaddr(echo, "192.0.2.20", 7)
    assert echo.bind(lst, ptr, n) == 0 and echo.listen(lst, 4) == 0
    echo.ioctlsocket(lst, C.FIONBIO, dword(echo, 1).ptr)
    conns, buf = [], echo.memory.alloc(64)

    def serve():
        progress = False
        s = echo.accept(lst, 0, 0)
        if s != C.INVALID_SOCKET:
            echo.ioctlsocket(s, C.FIONBIO, dword(echo, 1).ptr)
            conns.append(s)
            progress = True
        for s in conns:
            got = echo.recv(s, buf, 64, 0)
            if got > 0:
                echo.send(s, buf, got, 0)
                progress = True
        return progress

    world.add_service(serve, echo)
    s = app.socket(C.AF_INET, C.SOCK_STREAM, 0)
    ptr, n = sockaddr(app, "192.0.2.20", 7)
    assert app.connect(s, ptr, n) == 0
    data = app.memory.alloc(4)
    app.memory.write(data, b"ping")
    assert app.send(s, data, 4, 0) == 4
    start = world.now_ns
    arr = _array(app, [(s, C.POLLRDNORM)])
    assert app.WSAPoll(arr, 1, -1) == 1
    assert _revents(app, arr, 1) == [C.POLLRDNORM]
    assert world.now_ns - start >= 2 * world.network.link_latency_ns
    out = Guarded(app, 4)
    assert app.recv(s, out.ptr, 4, 0) == 4 and out.read() == b"ping"


def test_socket_closed_by_another_thread_ends_the_poll_with_pollnval():
    """Wine test_WSAPoll (Windows): closesocket from another thread during the poll: 1, POLLNVAL."""
    api = SimulatedWinsock("windows-observed")
    client, server, _ = tcp_pair(api)
    arr = _array(api, [(client, C.POLLRDNORM | C.POLLRDBAND)])
    result = {}

    def blocked():
        result["rc"] = api.WSAPoll(arr, 1, 2000)

    t = threading.Thread(target=blocked)
    t.start()
    while not any(th.waiting for th in api.process.threads):
        threading.Event().wait(0.001)
    assert api.closesocket(client) == 0
    t.join(timeout=10)
    assert not t.is_alive()
    assert result == {"rc": 1} and _revents(api, arr, 1) == [C.POLLNVAL]


def test_connect_in_progress_shows_nothing_until_the_handshake():
    """Wine afd.c test_poll: no event while the SYN is out (deterministic only on the simulator)."""
    api = SimulatedWinsock()
    lst, port = listener(api)
    s = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    api.ioctlsocket(s, C.FIONBIO, dword(api, 1).ptr)
    ptr, n = sockaddr(api, "127.0.0.1", port)
    assert api.connect(s, ptr, n) == C.SOCKET_ERROR
    arr = _array(api, [(s, REQ)])
    assert api.WSAPoll(arr, 1, 0) == 0 and _revents(api, arr, 1) == [0]
    assert api.process.sockets[s].state == "connecting"        # polling settled nothing
    assert api.WSAPoll(arr, 1, 1000) == 1 and _revents(api, arr, 1) == [C.POLLWRNORM]


def test_unconnected_tcp_socket_shows_nothing():
    """Wine afd.c test_poll: a poll on a never-connected stream socket pends (assumed for WSAPoll)."""
    api = SimulatedWinsock()
    s = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    arr = _array(api, [(s, REQ)])
    assert api.WSAPoll(arr, 1, 10) == 0 and _revents(api, arr, 1) == [0]


def test_read_only_array_is_efault_and_untouched():
    """Assumed: the array is written (revents), so a read-only one is refused before anything is done."""
    api = SimulatedWinsock()
    client, _, _ = tcp_pair(api)
    arr = api.memory.alloc_bytes(WSAPOLLFD.pack(fd=client, events=REQ, revents=0x5A5A), prot="r")
    assert api.WSAPoll(arr, 1, 0) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEFAULT
    assert _revents(api, arr, 1) == [0x5A5A]


def test_pending_port_unreachable_is_readable():
    """Assumed: a UDP socket whose next receive fails at once with WSAECONNRESET is POLLRDNORM; with
    SIO_UDP_CONNRESET off it is not, and polling does not clear the pending error."""
    api = SimulatedWinsock()
    a, _ = udp_socket(api)
    b, pb = udp_socket(api)
    api.closesocket(b)
    to, tolen = sockaddr(api, "127.0.0.1", pb)
    data = api.memory.alloc(1)
    assert api.sendto(a, data, 1, 0, to, tolen) == 1
    arr = _array(api, [(a, C.POLLRDNORM)])
    assert api.WSAPoll(arr, 1, 1000) == 1 and _revents(api, arr, 1) == [C.POLLRDNORM]
    assert api.WSAPoll(arr, 1, 0) == 1
    buf = Guarded(api, 4)
    assert api.recv(a, buf.ptr, 4, 0) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAECONNRESET
    assert api.WSAPoll(arr, 1, 0) == 0
    off = dword(api, 0)
    assert api.WSAIoctl(a, C.SIO_UDP_CONNRESET, off.ptr, 4, 0, 0, dword(api).ptr, 0, 0) == 0
    assert api.sendto(a, data, 1, 0, to, tolen) == 1
    assert api.WSAPoll(arr, 1, 1000) == 0


def test_network_down_is_enetdown():
    """The page lists WSAENETDOWN; the simulator reports it once the arguments are good."""
    api = SimulatedWinsock()
    client, _, _ = tcp_pair(api)
    arr = _array(api, [(client, REQ)])
    api.process.host.up = False
    assert api.WSAPoll(arr, 1, 0) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAENETDOWN
    assert _revents(api, arr, 1) == [0x5A5A]


@pytest.mark.parametrize("profile,rc,err", [("documented", C.SOCKET_ERROR, C.WSAEINVAL),
                                            ("windows-observed", C.SOCKET_ERROR, C.WSAENOTSOCK)])
def test_decision_points_change_only_what_they_name(profile, rc, err):
    api = SimulatedWinsock(profile)
    arr = _array(api, [(C.INVALID_SOCKET, C.POLLRDNORM)])
    assert api.WSAPoll(arr, 1, 0) == rc and api.WSAGetLastError() == err
    assert _revents(api, arr, 1) == [C.POLLNVAL]
    lst, _ = listener(api)
    arr = _array(api, [(C.INVALID_SOCKET, C.POLLRDNORM), (lst, C.POLLRDNORM)])
    assert api.WSAPoll(arr, 2, 0) == (1 if profile == "documented" else 0)
    assert _revents(api, arr, 2) == [C.POLLNVAL, 0]


def test_readiness_is_read_only():
    """sim.poll.readiness leaves every socket as it found it (no settling, no consuming)."""
    api = SimulatedWinsock()
    client, server, lst = tcp_pair(api)
    data = api.memory.alloc(2)
    api.send(client, data, 2, 0)
    api.run(1)
    socks = [api.process.sockets[h] for h in (client, server, lst)]
    before = [(s.state, s.so_error, bytes(s.conn.rx) if s.conn else None) for s in socks]
    assert [sim_poll.readiness(s) for s in socks] == [C.POLLWRNORM, C.POLLWRNORM | C.POLLRDNORM, 0]
    assert [(s.state, s.so_error, bytes(s.conn.rx) if s.conn else None) for s in socks] == before


def test_layout_matches_the_parser():
    assert sim_poll.ENTRY.unpack(WSAPOLLFD.pack(fd=7, events=-1, revents=3)) == (7, -1)
    assert struct.calcsize("<Qhh4x") == WSAPOLLFD.size == 16
