"""ICMP port unreachable on UDP sockets: how a previous send's failure is reported.

Sources: the WSARecv and recvfrom pages (WSAECONNRESET: "For a UDP datagram socket,
this error would indicate that a previous send operation resulted in an ICMP Port
Unreachable message"); the Winsock IOCTLs page, SIO_UDP_CONNRESET ("Set to FALSE to
disable reporting"; on by default); support.microsoft.com KB 263823 ("WinSock
Recvfrom() now returns WSAECONNRESET instead of blocking or timing out": select marks
the socket readable and the receive fails). The ICMP arrives when it arrives: every
receive here is non-blocking and retried for up to a second, so a provider that never
reports it ends with WSAEWOULDBLOCK instead of blocking for ever.
"""
import struct

import pytest

from harness.conformance.support import (Guarded, dword, internal, overlapped, sockaddr, udp_socket, wsabuf)
from harness.winsock import constants as C

pytestmark = pytest.mark.udp


def _closed_port(api):
    """A loopback UDP port nobody is bound to (bound, then closed)."""
    s, port = udp_socket(api)
    assert api.closesocket(s) == 0
    return sockaddr(api, "127.0.0.1", port)


def _nonblocking(api, s):
    assert api.ioctlsocket(s, C.FIONBIO, dword(api, 1).ptr) == 0


def _until_not_wouldblock(api, receive):
    """The error of the first receive that does not say WSAEWOULDBLOCK within about a second."""
    for _ in range(100):
        assert receive() == C.SOCKET_ERROR
        error = api.WSAGetLastError()
        if error != C.WSAEWOULDBLOCK:
            return error
        api.SleepEx(10, False)
    return C.WSAEWOULDBLOCK



def test_wsarecv_reports_the_reset(api):
    """WSARecv page: a previous send's ICMP port unreachable is the receive's WSAECONNRESET,
    reported once (the next receive has nothing to report)."""
    s, _ = udp_socket(api)
    _nonblocking(api, s)
    to, tolen = _closed_port(api)
    assert api.sendto(s, Guarded(api, 1).ptr, 1, 0, to, tolen) == 1
    arr, _ = wsabuf(api, 16)
    n, flags = dword(api), dword(api, 0)
    assert _until_not_wouldblock(api, lambda: api.WSARecv(s, arr, 1, n.ptr, flags.ptr, 0, 0)) == C.WSAECONNRESET
    assert api.WSARecv(s, arr, 1, n.ptr, flags.ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEWOULDBLOCK


def test_pending_wsarecv_completes_with_the_reset(api):
    """A receive already pending when the ICMP arrives completes with it through its event:
    WSAGetOverlappedResult fails with WSAECONNRESET (WSARecv and WSAGetOverlappedResult pages)."""
    s, _ = udp_socket(api)
    arr, _ = wsabuf(api, 16)
    event = api.WSACreateEvent()
    ovl = overlapped(api, event)
    flags = dword(api, 0)
    assert api.WSARecv(s, arr, 1, 0, flags.ptr, ovl, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSA_IO_PENDING
    to, tolen = _closed_port(api)
    assert api.sendto(s, Guarded(api, 1).ptr, 1, 0, to, tolen) == 1
    events = api.memory.alloc(8)
    api.memory.write(events, struct.pack("<Q", event))
    assert api.WSAWaitForMultipleEvents(1, events, 0, 1000, 0) == C.WSA_WAIT_EVENT_0
    n, out_flags = dword(api), dword(api)
    assert api.WSAGetOverlappedResult(s, ovl, n.ptr, 0, out_flags.ptr) == 0
    assert api.WSAGetLastError() == C.WSAECONNRESET
    assert internal(api, ovl)[0] == C.STATUS_CONNECTION_RESET


@pytest.mark.parametrize("bound", ["wildcard", "implicit"])
def test_reset_reaches_a_wildcard_or_implicitly_bound_socket(api, bound):
    """The ICMP is matched to the socket that sent the datagram however it was bound: to
    0.0.0.0 explicitly, or implicitly by its first sendto (the sendto page: "the system
    assigns a unique local address and ... the socket is marked as bound" to the wildcard)."""
    s = api.socket(C.AF_INET, C.SOCK_DGRAM, C.IPPROTO_UDP)
    if bound == "wildcard":
        ptr, n = sockaddr(api, "0.0.0.0", 0)
        assert api.bind(s, ptr, n) == 0, api.WSAGetLastError()
    _nonblocking(api, s)
    to, tolen = _closed_port(api)
    assert api.sendto(s, Guarded(api, 1).ptr, 1, 0, to, tolen) == 1
    buf = Guarded(api, 4)
    assert _until_not_wouldblock(api, lambda: api.recv(s, buf.ptr, 4, 0)) == C.WSAECONNRESET


def test_connreset_off_is_not_reported(api):
    """SIO_UDP_CONNRESET FALSE (Winsock IOCTLs page: "Set to FALSE to disable reporting"):
    the ICMP is not reported; the next datagram is received as if nothing happened."""
    s, port = udp_socket(api)
    _nonblocking(api, s)
    off, n = dword(api, 0), dword(api)
    assert api.WSAIoctl(s, C.SIO_UDP_CONNRESET, off.ptr, 4, 0, 0, n.ptr, 0, 0) == 0, api.WSAGetLastError()
    to, tolen = _closed_port(api)
    assert api.sendto(s, Guarded(api, 1).ptr, 1, 0, to, tolen) == 1
    api.SleepEx(200, False)                      # time for the ICMP to arrive and be ignored
    peer, _ = udp_socket(api)
    me, melen = sockaddr(api, "127.0.0.1", port)
    assert api.sendto(peer, Guarded(api, 3).ptr, 3, 0, me, melen) == 3
    buf = Guarded(api, 8)
    got = C.SOCKET_ERROR
    for _ in range(100):
        got = api.recv(s, buf.ptr, 8, 0)
        if got != C.SOCKET_ERROR or api.WSAGetLastError() != C.WSAEWOULDBLOCK:
            break
        api.SleepEx(10, False)
    assert got == 3, api.WSAGetLastError()
    assert api.recv(s, buf.ptr, 8, 0) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEWOULDBLOCK
