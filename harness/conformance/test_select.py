"""select: argument errors, the three sets, duplicates and aliased sets.

Sources: the select page on learn.microsoft.com; Wine dlls/ws2_32/tests/sock.c
test_select and test_tcp_reset, which run on real Windows.
"""
import struct

import pytest

from harness.conformance.support import listener, loopback, sockaddr, tcp_pair, udp_socket
from harness.winsock import constants as C


def _fdset(api, *sockets, room=None):
    """An fd_set holding `sockets`, with room for `room` entries (default: exactly them)."""
    n = len(sockets) if room is None else room
    ptr = api.memory.alloc(8 + 8 * max(n, 1))
    api.memory.write(ptr, struct.pack(f"<II{len(sockets)}Q", len(sockets), 0, *sockets))
    return ptr


def _members(api, ptr):
    count = api.memory.read_u32(ptr)
    return list(struct.unpack(f"<{count}Q", api.memory.read(ptr + 8, 8 * count))) if count else []


def _timeval(api, sec=0, usec=0):
    ptr = api.memory.alloc(8)
    api.memory.write(ptr, struct.pack("<ii", sec, usec))
    return ptr


def test_no_sockets_is_einval(api):
    """The select page: WSAEINVAL when "all three descriptor parameters were null"; Wine
    test_select: three empty sets too."""
    tv = _timeval(api)
    assert api.select(0, 0, 0, 0, tv) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEINVAL
    r, w, e = _fdset(api), _fdset(api), _fdset(api)
    assert api.select(0, r, w, e, tv) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEINVAL


@pytest.mark.parametrize("which", [0, 1, 2], ids=["read", "write", "except"])
def test_invalid_socket_is_enotsock_and_sets_unchanged(api, which):
    """Wine test_select: INVALID_SOCKET, or a socket closed before the call, in any set is
    WSAENOTSOCK; the sets are left as they were."""
    closed = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    good = api.socket(C.AF_INET, C.SOCK_DGRAM, C.IPPROTO_UDP)
    assert api.closesocket(closed) == 0
    for bad in (C.INVALID_SOCKET, closed):
        sets = [_fdset(api, good), _fdset(api, good), _fdset(api, good)]
        sets[which] = _fdset(api, good, bad)
        before = [api.memory.read(p, 8 + 8 * api.memory.read_u32(p)) for p in sets]
        assert api.select(0, *sets, _timeval(api)) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAENOTSOCK
        assert [api.memory.read(p, len(b)) for p, b in zip(sets, before)] == before


def test_unconnected_tcp_socket_is_in_no_set(api):
    """Wine test_select: fresh TCP sockets are neither readable, writable nor exceptional."""
    a = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    b = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    r, w, e = _fdset(api, a, b), _fdset(api, a, b), _fdset(api, a, b)
    assert api.select(0, r, w, e, _timeval(api)) == 0
    assert _members(api, r) == _members(api, w) == _members(api, e) == []


def test_three_states(api):
    """Wine test_select "select() works in 3 distinct states": a pending connection makes the
    listener readable; both ends of the connection are writable; data, and then the peer's
    close, make the receiver readable; an unbound UDP socket is writable."""
    lst, port = listener(api)
    tv = _timeval(api, 1)
    client = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    to, tolen = sockaddr(api, loopback(C.AF_INET), port)
    assert api.connect(client, to, tolen) == 0, api.WSAGetLastError()
    r, w, e = _fdset(api, lst), _fdset(api, lst), _fdset(api, lst)
    assert api.select(0, r, w, e, tv) == 1 and _members(api, r) == [lst]
    server = api.accept(lst, 0, 0)
    r, w, e = _fdset(api, lst, server, client), _fdset(api, lst, server, client), _fdset(api, lst, server, client)
    assert api.select(0, r, w, e, tv) == 2
    assert sorted(_members(api, w)) == sorted([server, client]) and _members(api, r) == _members(api, e) == []
    data = api.memory.alloc(4)
    api.memory.write(data, b"1234")
    assert api.send(client, data, 4, 0) == 4
    r, e = _fdset(api, server), _fdset(api, server)
    assert api.select(0, r, 0, e, tv) == 1 and _members(api, r) == [server] and _members(api, e) == []
    r, w, e = _fdset(api, server), _fdset(api, server), _fdset(api, server)
    assert api.select(0, r, w, e, tv) == 2
    buf = api.memory.alloc(16)
    assert api.recv(server, buf, 16, 0) == 4
    assert api.closesocket(server) == 0
    r = _fdset(api, client)
    assert api.select(0, r, 0, 0, tv) == 1 and _members(api, r) == [client]
    assert api.recv(client, buf, 16, 0) == 0
    udp = api.socket(C.AF_INET, C.SOCK_DGRAM, C.IPPROTO_UDP)
    r, w, e = _fdset(api, udp), _fdset(api, udp), _fdset(api, udp)
    assert api.select(0, r, w, e, _timeval(api, 0, 250000)) == 1 and _members(api, w) == [udp]


def test_duplicates_and_aliased_sets(api):
    """Wine test_select: a socket listed twice is reported once (fd_count 1, the second
    entry left as it was); the same fd_set passed as readfds and writefds counts each
    socket once."""
    client, server, _ = tcp_pair(api)
    tv = _timeval(api)
    w = _fdset(api, client, client)
    assert api.select(0, 0, w, 0, tv) == 1
    assert api.memory.read_u32(w) == 1 and struct.unpack("<2Q", api.memory.read(w + 8, 16)) == (client, client)
    both = _fdset(api, client)
    assert api.select(0, both, both, 0, tv) == 1 and _members(api, both) == [client]
    data = api.memory.alloc(4)
    api.memory.write(data, b"test")
    assert api.send(client, data, 4, 0) == 4
    for _ in range(100):                     # until the data is there
        r = _fdset(api, server)
        if api.select(0, r, 0, 0, _timeval(api, 0, 10000)) == 1:
            break
    both = _fdset(api, client, server)
    assert api.select(0, both, both, 0, tv) == 2
    assert sorted(_members(api, both)) == sorted([client, server])


def test_reads_only_fd_count_entries(api):
    """Wine test_select: a set whose unused entries lie past the end of the memory works
    (select reads fd_count entries, no more)."""
    client, _server, _ = tcp_pair(api)
    w = _fdset(api, client, room=1)
    assert api.select(0, 0, w, 0, _timeval(api)) == 1 and _members(api, w) == [client]


def test_reset_is_readable_and_writable(api):
    """Wine test_tcp_reset: after the peer's abortive close the socket is readable and
    writable, not exceptional."""
    client, server, _ = tcp_pair(api)
    linger = api.memory.alloc(4)
    api.memory.write(linger, struct.pack("<HH", 1, 0))
    assert api.setsockopt(server, C.SOL_SOCKET, C.SO_LINGER, linger, 4) == 0
    assert api.closesocket(server) == 0
    r = _fdset(api, client)
    assert api.select(0, r, 0, 0, _timeval(api, 1)) == 1
    r, w, e = _fdset(api, client), _fdset(api, client), _fdset(api, client)
    assert api.select(0, r, w, e, _timeval(api)) == 2
    assert _members(api, r) == _members(api, w) == [client] and _members(api, e) == []


@pytest.mark.udp
def test_udp_port_unreachable_is_readable(api):
    """support.microsoft.com KB 263823: after a send brings back an ICMP port unreachable,
    select reports the socket readable and the receive fails with WSAECONNRESET."""
    s, _ = udp_socket(api)
    closed, port = udp_socket(api)
    assert api.closesocket(closed) == 0
    to, tolen = sockaddr(api, "127.0.0.1", port)
    data = api.memory.alloc(1)
    assert api.sendto(s, data, 1, 0, to, tolen) == 1
    r = _fdset(api, s)
    assert api.select(0, r, 0, 0, _timeval(api, 1)) == 1 and _members(api, r) == [s]
    assert api.recv(s, api.memory.alloc(4), 4, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAECONNRESET
