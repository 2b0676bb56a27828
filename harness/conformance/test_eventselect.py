"""WSAEventSelect and WSAEnumNetworkEvents: the network-event record, and what it does to FIONBIO.

Sources: the WSAEventSelect, WSAEnumNetworkEvents and ioctlsocket pages on
learn.microsoft.com; Wine dlls/ws2_32/tests/sock.c test_events (through its helpers
test_read_events, test_connect_events, test_accept_events, test_close_events,
test_write_events), test_WSAEnumNetworkEvents and test_fionbio, which run on real
Windows. `_check` is Wine's check_events: wait for the event (200 ms when an event is
expected, not at all otherwise), then WSAEnumNetworkEvents.
"""
import struct

from harness.conformance.support import Guarded, dword, listener, loopback, overlapped, sockaddr, tcp_pair, udp_socket
from harness.winsock import constants as C
from harness.winsock.layouts import WSABUF, WSANETWORKEVENTS

ALL = C.FD_ACCEPT | C.FD_CLOSE | C.FD_CONNECT | C.FD_OOB | C.FD_READ | C.FD_WRITE


def _events(api, event):
    ptr = api.memory.alloc(8)
    api.memory.write(ptr, struct.pack("<Q", event))
    return ptr


def _select(api, s, event, mask):
    assert api.WSAEventSelect(s, event, mask) == 0, api.WSAGetLastError()


def _check(api, s, event, expected, errors=None):
    """Wine's check_events: the event is set iff something is expected; the record reports it."""
    timeout = 200 if expected else 0
    waited = api.WSAWaitForMultipleEvents(1, _events(api, event), 0, timeout, 0)
    assert waited == (C.WSA_WAIT_EVENT_0 if expected else C.WSA_WAIT_TIMEOUT), (hex(expected), waited)
    record = Guarded(api, WSANETWORKEVENTS.size, fill=0xCC)
    assert api.WSAEnumNetworkEvents(s, event, record.ptr) == 0, api.WSAGetLastError()
    got = struct.unpack("<i10i", record.read())
    assert got[0] == expected, (hex(got[0]), hex(expected))
    for bit in range(10):
        if expected & (1 << bit):
            assert got[1 + bit] == (errors or {}).get(bit, 0), (bit, got[1 + bit])


def _send(api, s, data):
    ptr = api.memory.alloc(len(data))
    api.memory.write(ptr, data)
    assert api.send(s, ptr, len(data), 0) == len(data), api.WSAGetLastError()


def _recv(api, s, n):
    buf = Guarded(api, n)
    return api.recv(s, buf.ptr, n, 0)


def _wait_readable(api, s):
    """Block until `s` has data (the sockets here are non-blocking after WSAEventSelect)."""
    fds = api.memory.alloc(16)
    for _ in range(100):
        api.memory.write(fds, struct.pack("<IIQ", 1, 0, s))
        tv = api.memory.alloc(8)
        api.memory.write(tv, struct.pack("<ii", 0, 10000))
        if api.select(0, fds, 0, 0, tv) == 1:
            return
    raise AssertionError("no data")


def test_eventselect_makes_the_socket_nonblocking(api):
    """WSAEventSelect page: the socket becomes non-blocking "regardless of the value of
    lNetworkEvents"; the ioctlsocket page and Wine test_fionbio: FIONBIO back to blocking
    then fails with WSAEINVAL, until WSAEventSelect is called with no events."""
    _client, server, _ = tcp_pair(api)
    event = api.WSACreateEvent()
    _select(api, server, event, C.FD_READ)
    assert _recv(api, server, 4) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEWOULDBLOCK
    assert api.ioctlsocket(server, C.FIONBIO, dword(api, 1).ptr) == 0
    assert api.ioctlsocket(server, C.FIONBIO, dword(api, 0).ptr) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEINVAL
    _select(api, server, 0, 0)
    assert api.ioctlsocket(server, C.FIONBIO, dword(api, 0).ptr) == 0, api.WSAGetLastError()


def test_fionbio_failure_after_eventselect_returns_size_zero(api):
    """Wine test_fionbio: the failing WSAIoctl(FIONBIO, 0) sets *lpcbBytesReturned to 0."""
    s = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    _select(api, s, api.WSACreateEvent(), C.FD_READ)
    size = dword(api)
    assert api.WSAIoctl(s, C.FIONBIO, dword(api, 0).ptr, 4, 0, 0, size.ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEINVAL and size.u32() == 0


def test_enum_reports_write_once_and_leaves_other_errors(api):
    """Wine test_WSAEnumNetworkEvents: a bound UDP socket and a connected TCP socket report
    FD_WRITE on the first call only, whether or not an event is passed; the iErrorCode
    entries of events not reported are left as they were."""
    udp, _ = udp_socket(api)
    _client, server, _ = tcp_pair(api)
    for s in (udp, server):
        for event in (api.WSACreateEvent(), 0):
            for attempt in range(3):
                _select(api, s, event or api.WSACreateEvent(), C.FD_READ | C.FD_WRITE)
                record = Guarded(api, WSANETWORKEVENTS.size, fill=0xAB)
                assert api.WSAEnumNetworkEvents(s, event, record.ptr) == 0
                got = struct.unpack("<i10I", record.read())
                first = attempt == 0 and event != 0
                assert got[0] == (C.FD_WRITE if first else 0), (s, event, attempt, got[0])
                assert got[1 + C.FD_WRITE_BIT] == (0 if first else 0xABABABAB)
                assert all(v == 0xABABABAB for i, v in enumerate(got[1:]) if i != C.FD_WRITE_BIT)


def test_read_events(api):
    """Wine test_read_events: data is FD_READ once; a receive that leaves data re-enables
    and reports it again; the last one leaves nothing; a failed receive does not re-enable."""
    client, server, _ = tcp_pair(api)
    event = api.WSACreateEvent()
    _select(api, server, event, ALL & ~C.FD_WRITE)
    _check(api, server, event, 0)
    _send(api, client, b"data!")
    _check(api, server, event, C.FD_READ)
    _check(api, server, event, 0)
    _select(api, server, event, ALL & ~C.FD_WRITE)
    _check(api, server, event, 0)
    assert _recv(api, server, 2) == 2
    _check(api, server, event, C.FD_READ)
    assert api.recv(server, Guarded(api, 1).ptr, -1, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEFAULT
    _check(api, server, event, 0)
    assert _recv(api, server, 2) == 2
    _check(api, server, event, C.FD_READ)
    assert _recv(api, server, 1) == 1
    _check(api, server, event, 0)


def test_reselect_with_unread_data_waits_for_data_not_other_events(api):
    """Wine test_read_events (event mode): after FD_READ was enumerated, a repeated
    WSAEventSelect, or one with no events and then the same, reports nothing while the data
    stays unread; what re-enabled FD_READ is the next arrival of data (the WSAEventSelect page:
    FD_READ is recorded when data arrives), so the peer's close that comes next is FD_CLOSE
    alone, as it is without the re-select (Wine test_close_events, "sending data before
    calling closesocket()": FD_CLOSE, not FD_READ)."""
    client, server, _ = tcp_pair(api)
    event = api.WSACreateEvent()
    mask = ALL & ~C.FD_WRITE
    _select(api, server, event, mask)
    _send(api, client, b"data")
    _check(api, server, event, C.FD_READ)
    _select(api, server, event, mask)
    _check(api, server, event, 0)
    _select(api, server, event, 0)
    _select(api, server, event, mask)
    _check(api, server, event, 0)
    assert api.shutdown(client, C.SD_SEND) == 0
    _check(api, server, event, C.FD_CLOSE)
    _check(api, server, event, 0)


def test_data_after_a_reselect_is_fd_read(api):
    """Wine test_read_events (event mode, check_events_todo: Windows reports it, Wine 8.0 not):
    a repeated WSAEventSelect re-enables FD_READ although data is unread, so the next data to
    arrive is FD_READ, once."""
    client, server, _ = tcp_pair(api)
    event = api.WSACreateEvent()
    mask = ALL & ~C.FD_WRITE
    _select(api, server, event, mask)
    _send(api, client, b"data")
    _check(api, server, event, C.FD_READ)
    _select(api, server, event, mask)
    _check(api, server, event, 0)
    _send(api, client, b"more")
    _check(api, server, event, C.FD_READ)
    _check(api, server, event, 0)
    assert _recv(api, server, 8) == 8
    _check(api, server, event, 0)


def test_connection_after_a_reselect_is_fd_accept(api):
    """Wine test_accept_events (event mode, check_events_todo: Windows reports it, Wine 8.0 not):
    with a connection waiting, a repeated WSAEventSelect reports nothing; the next connection
    is FD_ACCEPT; accept then re-enables it while one still waits, and the last accept leaves
    nothing."""
    lst, port = listener(api)
    to, tolen = sockaddr(api, loopback(C.AF_INET), port)
    event = api.WSACreateEvent()
    mask = C.FD_CONNECT | C.FD_READ | C.FD_OOB | C.FD_ACCEPT

    def connect():
        c = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
        assert api.connect(c, to, tolen) == 0, api.WSAGetLastError()
        return c

    _select(api, lst, event, mask)
    connect()
    _check(api, lst, event, C.FD_ACCEPT)
    _select(api, lst, event, mask)
    _check(api, lst, event, 0)
    _select(api, lst, event, 0)
    _select(api, lst, event, mask)
    _check(api, lst, event, 0)
    connect()
    _check(api, lst, event, C.FD_ACCEPT)
    _check(api, lst, event, 0)
    assert api.accept(lst, 0, 0) != C.INVALID_SOCKET
    _check(api, lst, event, C.FD_ACCEPT)
    assert api.accept(lst, 0, 0) != C.INVALID_SOCKET
    _check(api, lst, event, 0)


def test_data_taken_by_a_pending_receive_is_no_event(api):
    """Wine test_read_events "Send data while there is a pending WSARecv()": the receive takes
    the data and no FD_READ is reported; the next data is FD_READ."""
    client, server, _ = tcp_pair(api)
    event = api.WSACreateEvent()
    _select(api, server, event, ALL & ~C.FD_WRITE)
    buf = Guarded(api, 1)
    arr = api.memory.alloc(WSABUF.size)
    api.memory.write(arr, WSABUF.pack(len=1, buf=buf.ptr))
    ovl_event = api.WSACreateEvent()
    ovl = overlapped(api, ovl_event)
    assert api.WSARecv(server, arr, 1, 0, dword(api, 0).ptr, ovl, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSA_IO_PENDING
    _send(api, client, b"a")
    assert api.WSAWaitForMultipleEvents(1, _events(api, ovl_event), 0, 200, 0) == C.WSA_WAIT_EVENT_0
    _check(api, server, event, 0)
    _send(api, client, b"a")
    _check(api, server, event, C.FD_READ)


def test_connect_events(api):
    """Wine test_connect_events: FD_CONNECT and FD_WRITE after connect; an event not selected
    when it happened is reported once it is selected; the accepted socket reports FD_WRITE."""
    lst, port = listener(api)
    to, tolen = sockaddr(api, loopback(C.AF_INET), port)
    client = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    event = api.WSACreateEvent()
    _select(api, client, event, ALL)
    _check(api, client, event, 0)
    rc = api.connect(client, to, tolen)
    assert rc == 0 or api.WSAGetLastError() == C.WSAEWOULDBLOCK
    _check(api, client, event, C.FD_CONNECT | C.FD_WRITE)
    _check(api, client, event, 0)
    server = api.accept(lst, 0, 0)
    assert server != C.INVALID_SOCKET, api.WSAGetLastError()
    _select(api, server, event, ALL & ~C.FD_CLOSE)
    _check(api, server, event, C.FD_WRITE)
    # Select on a subset without FD_CONNECT first.
    client2 = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    _select(api, client2, event, ALL & ~C.FD_CONNECT)
    rc = api.connect(client2, to, tolen)
    assert rc == 0 or api.WSAGetLastError() == C.WSAEWOULDBLOCK
    assert api.accept(lst, 0, 0) != C.INVALID_SOCKET
    _check(api, client2, event, C.FD_WRITE)
    _select(api, client2, event, ALL & ~C.FD_CLOSE)
    _check(api, client2, event, C.FD_CONNECT)


def test_accept_events(api):
    """Wine test_accept_events: a connection is FD_ACCEPT once; accept re-enables it while
    connections remain; the accepted socket inherits the selection and reports FD_WRITE."""
    lst, port = listener(api)
    to, tolen = sockaddr(api, loopback(C.AF_INET), port)
    event = api.WSACreateEvent()
    mask = C.FD_CONNECT | C.FD_READ | C.FD_OOB | C.FD_ACCEPT
    _select(api, lst, event, mask)
    _check(api, lst, event, 0)

    def connect():
        c = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
        assert api.connect(c, to, tolen) == 0, api.WSAGetLastError()
        return c

    connect()
    _check(api, lst, event, C.FD_ACCEPT)
    connect()
    _wait_readable(api, lst)
    _check(api, lst, event, 0)                      # not re-enabled yet
    assert api.accept(lst, 0, 0) != C.INVALID_SOCKET
    _check(api, lst, event, C.FD_ACCEPT)            # one connection is still waiting
    assert api.accept(lst, 0, 0) != C.INVALID_SOCKET
    _check(api, lst, event, 0)
    _select(api, lst, event, mask | C.FD_WRITE)
    connect()
    _check(api, lst, event, C.FD_ACCEPT)
    server = api.accept(lst, 0, 0)
    assert server != C.INVALID_SOCKET
    _check(api, server, event, C.FD_WRITE)          # inherited: the same events, the same event
    _check(api, server, event, 0)


def test_close_events(api):
    """Wine test_close_events: the peer's close is FD_CLOSE with error 0, once; a close before
    any WSAEventSelect is reported once FD_CLOSE is selected."""
    event = api.WSACreateEvent()
    client, server, _ = tcp_pair(api)
    _select(api, server, event, ALL & ~C.FD_WRITE)
    assert api.closesocket(client) == 0
    _check(api, server, event, C.FD_CLOSE)
    _check(api, server, event, 0)
    _select(api, server, event, ALL & ~C.FD_WRITE)
    _check(api, server, event, 0)
    # Close, then select.
    client, server, _ = tcp_pair(api)
    assert api.closesocket(client) == 0
    _wait_readable(api, server)
    _select(api, server, event, ALL & ~C.FD_WRITE)
    _check(api, server, event, C.FD_CLOSE)


def test_reset_is_close_with_connaborted(api):
    """Wine test_close_events "Trigger RST": after the peer's abortive close (SO_LINGER 0)
    the record reports FD_CLOSE with WSAECONNABORTED, once."""
    event = api.WSACreateEvent()
    client, server, _ = tcp_pair(api)
    _select(api, server, event, ALL & ~C.FD_WRITE)
    linger = api.memory.alloc(4)
    api.memory.write(linger, struct.pack("<HH", 1, 0))
    assert api.setsockopt(client, C.SOL_SOCKET, C.SO_LINGER, linger, 4) == 0
    assert api.closesocket(client) == 0
    _check(api, server, event, C.FD_CLOSE, {C.FD_CLOSE_BIT: C.WSAECONNABORTED})
    _check(api, server, event, 0)
