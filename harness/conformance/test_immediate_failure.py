"""Completion on immediate failure: which notifications an overlapped call still gives when it
does not go pending.

The rule (WSARecv page, docs/facts.md §4.2): an error other than WSA_IO_PENDING means "the
overlapped operation was not successfully initiated and no completion indication will occur" —
no packet, no event, no routine — while a call that succeeds at once is indicated like a
pending one (a packet, unless FILE_SKIP_COMPLETION_PORT_ON_SUCCESS). Wine's tests, which run on
Windows, pin it down call by call: Wine dlls/ws2_32/tests/sock.c test_completion_port (a
pending receive and the peer's reset; a send and a receive after the reset; a receive on an
unconnected socket; immediate reads; AcceptEx), test_WSARecv (the reset through an event; a
routine on a socket bound to a port), test_connect_completion_port (connect, ConnectEx, the
low bit, FILE_SKIP_COMPLETION_PORT_ON_SUCCESS, a refused ConnectEx),
test_shutdown_completion_port (shutdown), test_ip_pktinfo (a short control buffer through a
routine) and test_WSAGetOverlappedResult (the status-to-error table).
"""
import struct

import pytest

from harness.conformance.support import (POISON, Guarded, RoutineLog, dequeue, dword, get_extension, internal,
                                         listener, make_iocp, overlapped, refusing_port, sockaddr, udp_socket, wsabuf)
from harness.winsock import constants as C
from harness.winsock.layouts import SOCKADDR_IN, WSABUF, WSAMSG

KEY = 125
SLOT = SOCKADDR_IN.size + 16



def _recv(api, s, ovl, routine=0, size=64):
    """WSARecv's (result, last error, *lpNumberOfBytesRecvd, buffer)."""
    arr, buf = wsabuf(api, size)
    n, flags = dword(api), dword(api, 0)
    api.WSASetLastError(POISON)
    rc = api.WSARecv(s, arr, 1, n.ptr, flags.ptr, ovl, routine)
    return rc, api.WSAGetLastError(), n.u32(), buf


def _send_ovl(api, s, ovl, data=b"abcd", routine=0):
    buf = api.memory.alloc(len(data))
    api.memory.write(buf, data)
    arr = api.memory.alloc(WSABUF.size)
    api.memory.write(arr, WSABUF.pack(len=len(data), buf=buf))
    n = dword(api)
    api.WSASetLastError(POISON)
    rc = api.WSASend(s, arr, 1, n.ptr, 0, ovl, routine)
    return rc, api.WSAGetLastError(), n.u32()


def _send(api, s, data):
    buf = api.memory.alloc(len(data))
    api.memory.write(buf, data)
    assert api.send(s, buf, len(data), 0) == len(data), api.WSAGetLastError()


def _nonblocking(api, s):
    assert api.ioctlsocket(s, C.FIONBIO, dword(api, 1).ptr) == 0


def _reset_by_peer(api, peer, s):
    """The peer closes abortively (SO_LINGER on, 0 s: Wine's close_with_rst); waits until `s` sees it."""
    linger = api.memory.alloc(4)
    api.memory.write(linger, struct.pack("<HH", 1, 0))
    assert api.setsockopt(peer, C.SOL_SOCKET, C.SO_LINGER, linger, 4) == 0
    assert api.closesocket(peer) == 0
    _readable(api, s)


def _reset_server_on_a_port(api, pair):
    """(server, its completion port, an event, an OVERLAPPED with that event): the server of `pair`,
    non-blocking and on a port, once its peer has reset the connection."""
    client, server, _ = pair
    port = make_iocp(api, server, key=KEY)
    _nonblocking(api, server)
    _reset_by_peer(api, client, server)
    event = api.WSACreateEvent()
    return server, port, event, overlapped(api, event)


def _readable(api, s):
    fds = api.memory.alloc(16)
    api.memory.write(fds, struct.pack("<QQ", 1, s))
    tv = api.memory.alloc(8)
    api.memory.write(tv, struct.pack("<ii", 5, 0))
    assert api.select(0, fds, 0, 0, tv) == 1


def _signalled(api, event):
    arr = api.memory.alloc(8)
    api.memory.write_u64(arr, event)
    return api.WSAWaitForMultipleEvents(1, arr, False, 0, False) == C.WSA_WAIT_EVENT_0


def _nothing_queued(api, port):
    ok, err, n, key, ovl = dequeue(api, port, 0)
    return (ok, err, ovl) == (C.FALSE, C.WAIT_TIMEOUT, 0) and (n, key) == (POISON, POISON)


# --- receives and sends ----------------------------------------------------------------------------


class TestReceiveAndSend:
    def test_pending_receive_completes_with_the_reset(self, api, pair):
        """Wine test_completion_port (first section) and test_WSARecv: a WSARecv pending when the
        peer resets completes: one packet, FALSE with ERROR_NETNAME_DELETED, 0 bytes, the key and
        the OVERLAPPED; its event is set. Internal is STATUS_CONNECTION_RESET, which
        WSAGetOverlappedResult reports as WSAECONNRESET (Wine test_WSAGetOverlappedResult)."""
        client, server, _ = pair
        port = make_iocp(api, server, key=KEY)
        event = api.WSACreateEvent()
        ovl = overlapped(api, event)
        rc, err, _n, _buf = _recv(api, server, ovl)
        assert (rc, err) == (C.SOCKET_ERROR, C.WSA_IO_PENDING)
        _reset_by_peer(api, client, server)
        assert dequeue(api, port, 1000)[:5] == (C.FALSE, C.ERROR_NETNAME_DELETED, 0, KEY, ovl)
        assert _nothing_queued(api, port)
        assert _signalled(api, event)
        assert internal(api, ovl) == (C.STATUS_CONNECTION_RESET, 0)
        n, flags = dword(api), dword(api)
        assert api.WSAGetOverlappedResult(server, ovl, n.ptr, False, flags.ptr) == C.FALSE
        assert api.WSAGetLastError() == C.WSAECONNRESET and n.u32() == 0

    def test_receive_after_the_reset_fails_at_once_unindicated(self, api, pair):
        """Wine test_completion_port ("IOCP response on hard shutdown"): a WSARecv on a socket
        whose connection was reset fails at once with WSAECONNRESET (not pending), leaves
        *lpNumberOfBytesRecvd alone, and queues no packet."""
        server, port, event, ovl = _reset_server_on_a_port(api, pair)
        rc, err, n, _buf = _recv(api, server, ovl)
        assert (rc, err, n) == (C.SOCKET_ERROR, C.WSAECONNRESET, POISON)
        assert _nothing_queued(api, port)
        assert not _signalled(api, event)

    def test_send_after_the_reset_fails_at_once_unindicated(self, api, pair):
        """Wine test_completion_port (second section): a WSASend on a socket whose connection was
        reset fails at once with WSAECONNRESET, leaves *lpNumberOfBytesSent alone, and queues no
        packet."""
        server, port, event, ovl = _reset_server_on_a_port(api, pair)
        assert _send_ovl(api, server, ovl) == (C.SOCKET_ERROR, C.WSAECONNRESET, POISON)
        assert _nothing_queued(api, port)
        assert not _signalled(api, event)

    def test_receive_on_an_unconnected_socket_fails_at_once_unindicated(self, api, tcp):
        """Wine test_completion_port ("reading from a non-connected socket"): WSAENOTCONN at once,
        *lpNumberOfBytesRecvd untouched, no packet. The transport refused an issued request:
        Internal keeps STATUS_PENDING (docs/windows-observed.md items 10 and 49, inferred)."""
        port = make_iocp(api, tcp, key=KEY)
        _nonblocking(api, tcp)
        ovl = overlapped(api)
        rc, err, n, _buf = _recv(api, tcp, ovl)
        assert (rc, err, n) == (C.SOCKET_ERROR, C.WSAENOTCONN, POISON)
        assert internal(api, ovl) == (C.STATUS_PENDING, POISON)
        assert _nothing_queued(api, port)

    def test_immediate_failures_call_no_routine(self, api, pair, tcp):
        """WSARecv and WSASend pages: an error other than WSA_IO_PENDING means no completion
        indication, a routine included (docs/facts.md §4.2): the reset and the unconnected socket
        of the cases above, with a routine on a socket bound to no port."""
        client, server, _ = pair
        _reset_by_peer(api, client, server)
        log = RoutineLog(api)
        assert _recv(api, server, overlapped(api), log.ptr)[:2] == (C.SOCKET_ERROR, C.WSAECONNRESET)
        assert _send_ovl(api, server, overlapped(api), routine=log.ptr)[:2] == (C.SOCKET_ERROR, C.WSAECONNRESET)
        assert _recv(api, tcp, overlapped(api), log.ptr)[:2] == (C.SOCKET_ERROR, C.WSAENOTCONN)
        assert api.SleepEx(0, True) == 0 and log.calls == []

    def test_immediate_read_is_indicated(self, api, pair):
        """Wine test_completion_port ("IOCP response on successful immediate read"): data already
        there, the WSARecv returns 0 with the count and still queues a packet: TRUE, the count,
        the key, the OVERLAPPED, the last error left alone."""
        client, server, _ = pair
        _send(api, client, b"x" * 40)
        port = make_iocp(api, server, key=KEY)
        _nonblocking(api, server)
        _readable(api, server)
        ovl = overlapped(api)
        rc, _err, n, buf = _recv(api, server, ovl)
        assert (rc, n) == (0, 40) and buf.read(40) == b"x" * 40
        assert dequeue(api, port, 1000)[:5] == (C.TRUE, POISON, 40, KEY, ovl)
        assert _nothing_queued(api, port)

    def test_immediate_end_of_stream_is_indicated(self, api, pair):
        """Wine test_completion_port ("IOCP response on graceful shutdown"): after the peer's
        closesocket a WSARecv returns 0 with 0 bytes at once and queues a packet with 0 bytes."""
        client, server, _ = pair
        port = make_iocp(api, server, key=KEY)
        _nonblocking(api, server)
        assert api.closesocket(client) == 0
        _readable(api, server)
        ovl = overlapped(api)
        rc, _err, n, _buf = _recv(api, server, ovl)
        assert (rc, n) == (0, 0)
        assert dequeue(api, port, 1000)[:5] == (C.TRUE, POISON, 0, KEY, ovl)


# --- FILE_SKIP_COMPLETION_PORT_ON_SUCCESS and FILE_SKIP_SET_EVENT_ON_HANDLE -------------------------


class TestSkipModes:
    """SetFileCompletionNotificationModes page: with FILE_SKIP_COMPLETION_PORT_ON_SUCCESS a request
    that "returns success immediately" queues no packet; FILE_SKIP_SET_EVENT_ON_HANDLE spares the
    file object's own event, but "if an explicit event is provided for the request, it is still
    signaled". A request that goes pending is indicated as ever (Wine test_connect_completion_port,
    "Skip completion on success"), and one that fails at once is never indicated."""

    MODES = C.FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | C.FILE_SKIP_SET_EVENT_ON_HANDLE

    def test_immediate_success_sets_the_event_and_skips_the_packet(self, api, pair):
        client, server, _ = pair
        port = make_iocp(api, server, key=KEY)
        assert api.SetFileCompletionNotificationModes(server, self.MODES) == C.TRUE
        _send(api, client, b"hello")
        _readable(api, server)
        event = api.WSACreateEvent()
        ovl = overlapped(api, event)
        rc, _err, n, _buf = _recv(api, server, ovl)
        assert (rc, n) == (0, 5) and internal(api, ovl) == (0, 5)
        assert _signalled(api, event)
        assert _nothing_queued(api, port)

    def test_immediate_failure_is_still_unindicated(self, api, pair):
        client, server, _ = pair
        port = make_iocp(api, server, key=KEY)
        assert api.SetFileCompletionNotificationModes(server, self.MODES) == C.TRUE
        _nonblocking(api, server)
        _reset_by_peer(api, client, server)
        event = api.WSACreateEvent()
        assert _recv(api, server, overlapped(api, event))[:3] == (C.SOCKET_ERROR, C.WSAECONNRESET, POISON)
        assert _send_ovl(api, server, overlapped(api, event)) == (C.SOCKET_ERROR, C.WSAECONNRESET, POISON)
        assert _nothing_queued(api, port) and not _signalled(api, event)

    def test_pending_completion_is_still_queued(self, api, pair):
        client, server, _ = pair
        port = make_iocp(api, server, key=KEY)
        assert api.SetFileCompletionNotificationModes(server, self.MODES) == C.TRUE
        event = api.WSACreateEvent()
        ovl = overlapped(api, event)
        assert _recv(api, server, ovl)[:2] == (C.SOCKET_ERROR, C.WSA_IO_PENDING)
        _send(api, client, b"late")
        assert dequeue(api, port, 1000)[:5] == (C.TRUE, POISON, 4, KEY, ovl)
        assert _signalled(api, event)

    def test_immediate_ioctl_success_skips_the_packet(self, api, tcp):
        """The same for an IOCTL served inline (docs/windows-observed.md item 47 without the mode:
        a packet with 0 bytes)."""
        port = make_iocp(api, tcp, key=KEY)
        assert api.SetFileCompletionNotificationModes(tcp, self.MODES) == C.TRUE
        event = api.WSACreateEvent()
        ovl = overlapped(api, event)
        out = Guarded(api, 4)
        assert api.WSAIoctl(tcp, C.FIONREAD, 0, 0, out.ptr, 4, dword(api).ptr, ovl, 0) == 0
        assert _signalled(api, event) and _nothing_queued(api, port)


# --- IOCTLs ------------------------------------------------------------------------------------------


class TestIoctl:
    def test_ioctl_failing_at_once_is_unindicated(self, api, tcp):
        """docs/windows-observed.md items 49-51 (Wine test_keepalive_vals, test_address_list_query,
        test_get_extension_func): an overlapped WSAIoctl that fails at once queues no packet, sets
        no event and calls no routine."""
        port = make_iocp(api, tcp, key=KEY)
        event = api.WSACreateEvent()
        guid = api.memory.alloc(16)
        api.memory.write(guid, b"\x11" * 16)
        out = Guarded(api, 8)
        rc = api.WSAIoctl(tcp, C.SIO_GET_EXTENSION_FUNCTION_POINTER, guid, 16, out.ptr, 8, dword(api).ptr,
                          overlapped(api, event), 0)
        assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEINVAL
        assert _nothing_queued(api, port) and not _signalled(api, event)
        other = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
        log = RoutineLog(api)
        rc = api.WSAIoctl(other, C.SIO_GET_EXTENSION_FUNCTION_POINTER, guid, 16, out.ptr, 8, dword(api).ptr,
                          overlapped(api), log.ptr)
        assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEINVAL
        assert api.SleepEx(0, True) == 0 and log.calls == []


# --- connect, ConnectEx, AcceptEx, shutdown ------------------------------------------------------------


def _bound(api):
    s = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    ptr, n = sockaddr(api, "127.0.0.1", 0)
    assert api.bind(s, ptr, n) == 0, api.WSAGetLastError()
    return s


def _connectex(api, s, port, ovl):
    fn = get_extension(api, s, C.WSAID_CONNECTEX)
    name, namelen = sockaddr(api, "127.0.0.1", port)
    api.WSASetLastError(POISON)
    rc = api.call(fn, s, name, namelen, 0, 0, dword(api).ptr, ovl)
    return rc, api.WSAGetLastError()


def _wait(api, event, timeout=5000):
    arr = api.memory.alloc(8)
    api.memory.write_u64(arr, event)
    return api.WSAWaitForMultipleEvents(1, arr, False, timeout, False)


class TestConnectAndAccept:
    @pytest.mark.parametrize("blocking", [True, False])
    def test_connect_queues_nothing(self, api, blocking):
        """Wine test_connect_completion_port ("connect() does not queue completion"), blocking and
        non-blocking."""
        lst, port = listener(api)
        s = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
        iocp = make_iocp(api, s, key=0)
        if not blocking:
            _nonblocking(api, s)
        name, namelen = sockaddr(api, "127.0.0.1", port)
        rc = api.connect(s, name, namelen)
        assert rc == 0 if blocking else api.WSAGetLastError() == C.WSAEWOULDBLOCK
        assert api.accept(lst, 0, 0) != C.INVALID_SOCKET
        assert _nothing_queued(api, iocp)

    def test_shutdown_queues_nothing(self, api, pair):
        """Wine test_shutdown_completion_port ("shutdown() does not queue completion")."""
        client, _server, _ = pair
        iocp = make_iocp(api, client, key=0)
        assert api.shutdown(client, C.SD_BOTH) == 0
        assert _nothing_queued(api, iocp)

    @pytest.mark.parametrize("how", ["plain", "skip-on-success", "low-bit"])
    def test_pending_connectex_is_queued(self, api, how):
        """Wine test_connect_completion_port: a ConnectEx returns ERROR_IO_PENDING, sets its event
        and queues a packet (key, 0 bytes, the OVERLAPPED), also with
        FILE_SKIP_COMPLETION_PORT_ON_SUCCESS (it went pending); hEvent's low bit suppresses the
        packet, not the event."""
        lst, port = listener(api)
        s = _bound(api)
        iocp = make_iocp(api, s, key=0)
        if how == "skip-on-success":
            assert api.SetFileCompletionNotificationModes(s, C.FILE_SKIP_COMPLETION_PORT_ON_SUCCESS) == C.TRUE
        event = api.WSACreateEvent()
        ovl = overlapped(api, event | 1 if how == "low-bit" else event)
        assert _connectex(api, s, port, ovl) == (C.FALSE, C.WSA_IO_PENDING)
        assert _wait(api, event) == C.WSA_WAIT_EVENT_0
        assert api.accept(lst, 0, 0) != C.INVALID_SOCKET
        if how == "low-bit":
            assert _nothing_queued(api, iocp)
        else:
            assert dequeue(api, iocp, 1000)[:5] == (C.TRUE, POISON, 0, 0, ovl)

    def test_refused_connectex_is_queued_even_with_skip(self, api):
        """Wine test_connect_completion_port ("Connect to an invalid address"): with
        FILE_SKIP_COMPLETION_PORT_ON_SUCCESS, a refused ConnectEx goes pending and its failure is
        queued: FALSE with ERROR_CONNECTION_REFUSED, key, 0 bytes, the OVERLAPPED."""
        _held, port = refusing_port(api)
        s = _bound(api)
        iocp = make_iocp(api, s, key=0)
        assert api.SetFileCompletionNotificationModes(s, C.FILE_SKIP_COMPLETION_PORT_ON_SUCCESS) == C.TRUE
        event = api.WSACreateEvent()
        ovl = overlapped(api, event)
        assert _connectex(api, s, port, ovl) == (C.FALSE, C.WSA_IO_PENDING)
        assert _wait(api, event, 30000) == C.WSA_WAIT_EVENT_0
        assert dequeue(api, iocp, 1000)[:5] == (C.FALSE, C.ERROR_CONNECTION_REFUSED, 0, 0, ovl)

    def test_connectex_failing_at_once_is_unindicated(self, api):
        """LPFN_CONNECTEX page: an unbound socket is WSAEINVAL at once (Wine test_connect); nothing
        is queued and the event stays unset."""
        _lst, port = listener(api)
        s = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
        iocp = make_iocp(api, s, key=0)
        event = api.WSACreateEvent()
        assert _connectex(api, s, port, overlapped(api, event)) == (C.FALSE, C.WSAEINVAL)
        assert _nothing_queued(api, iocp) and not _signalled(api, event)

    def test_acceptex_failing_at_once_is_unindicated(self, api):
        """AcceptEx page (address lengths) and Wine test_AcceptEx: a remote address length of 0 is
        WSAEFAULT at once; nothing is queued on the listener's port and the event stays unset."""
        lst, _port = listener(api)
        iocp = make_iocp(api, lst, key=KEY)
        acc = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
        event = api.WSACreateEvent()
        fn = get_extension(api, lst, C.WSAID_ACCEPTEX)
        buf = Guarded(api, 2 * SLOT)
        api.WSASetLastError(POISON)
        rc = api.call(fn, lst, acc, buf.ptr, 0, SLOT, 0, dword(api).ptr, overlapped(api, event))
        assert (rc, api.WSAGetLastError()) == (C.FALSE, C.WSAEFAULT)
        assert _nothing_queued(api, iocp) and not _signalled(api, event)

    @pytest.mark.parametrize("when", ["before", "after"])
    def test_listener_closed_under_pending_acceptex(self, api, when):
        """Wine test_completion_port ("IOCP response on socket close", port associated after or
        before AcceptEx): closing the listener queues FALSE with ERROR_OPERATION_ABORTED, 0 bytes,
        the key, the OVERLAPPED; Internal STATUS_CANCELLED; then nothing more."""
        lst, _port = listener(api)
        acc = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
        iocp = make_iocp(api, lst, key=KEY) if when == "before" else None
        fn = get_extension(api, lst, C.WSAID_ACCEPTEX)
        buf = Guarded(api, 64 + 2 * SLOT)
        ovl = overlapped(api)
        api.WSASetLastError(POISON)
        assert api.call(fn, lst, acc, buf.ptr, 64, SLOT, SLOT, dword(api).ptr, ovl) == C.FALSE
        assert api.WSAGetLastError() == C.WSA_IO_PENDING
        if iocp is None:
            iocp = make_iocp(api, lst, key=KEY)
        assert api.closesocket(lst) == 0
        assert dequeue(api, iocp, 1000)[:5] == (C.FALSE, C.ERROR_OPERATION_ABORTED, 0, KEY, ovl)
        assert internal(api, ovl)[0] == C.STATUS_CANCELLED
        assert _nothing_queued(api, iocp)

    def test_accept_socket_closed_under_a_connected_acceptex(self, api):
        """Wine test_completion_port (last section): the connection arrived, AcceptEx waits for
        data, then the accept socket is closed: the listener's port gets FALSE with
        ERROR_OPERATION_ABORTED or ERROR_CONNECTION_ABORTED (both seen on Windows), 0 bytes, the
        listener's key."""
        lst, port = listener(api)
        acc = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
        iocp = make_iocp(api, lst, key=KEY)
        make_iocp(api, acc, key=236)
        fn = get_extension(api, lst, C.WSAID_ACCEPTEX)
        buf = Guarded(api, 64 + 2 * SLOT)
        ovl = overlapped(api)
        assert api.call(fn, lst, acc, buf.ptr, 64, SLOT, SLOT, dword(api).ptr, ovl) == C.FALSE
        name, namelen = sockaddr(api, "127.0.0.1", port)
        connector = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
        assert api.connect(connector, name, namelen) == 0
        assert api.closesocket(acc) == 0
        ok, err, n, key, got = dequeue(api, iocp, 1000)
        assert (ok, n, key, got) == (C.FALSE, 0, KEY, ovl)
        assert err in (C.ERROR_OPERATION_ABORTED, C.ERROR_CONNECTION_ABORTED)
        assert internal(api, ovl)[0] in (C.STATUS_CANCELLED, C.STATUS_CONNECTION_ABORTED)


# --- completion routines --------------------------------------------------------------------------------


class TestRoutines:
    @pytest.mark.parametrize("call", ["WSARecv", "WSASend"])
    def test_routine_on_a_port_bound_socket(self, api, pair, decide, call):
        """Wine test_WSARecv ("Using completion function on socket associated with completion port
        is not allowed", on Windows): WSAEINVAL and the routine is never called; nothing is queued.
        Decision point routine_on_port_socket."""
        client, server, _ = pair
        port = make_iocp(api, server, key=KEY)
        log = RoutineLog(api)
        ovl = overlapped(api)
        if call == "WSARecv":
            rc, err = _recv(api, server, ovl, log.ptr)[:2]
        else:
            rc, err = _send_ovl(api, server, ovl, routine=log.ptr)[:2]
        if decide("routine_on_port_socket") != "WSAEINVAL":
            pytest.skip("the profile lets the request proceed (test_overlapped.py covers it)")
        assert (rc, err) == (C.SOCKET_ERROR, C.WSAEINVAL)
        _send(api, client, b"abc")
        assert api.SleepEx(50, True) == 0 and log.calls == []
        assert _nothing_queued(api, port)

    @pytest.mark.udp
    def test_short_control_buffer_at_issue_with_a_routine(self, api):
        """Wine test_ip_pktinfo ("And with an APC", on Windows): the datagram is there when an
        overlapped WSARecvMsg with a routine and Control.len 1 is made: -1 with WSA_IO_PENDING,
        then the routine runs once with WSAEMSGSIZE, the datagram's size and flags 0; dwFlags
        MSG_CTRUNC."""
        a, _ = udp_socket(api)
        b, pb = udp_socket(api)
        assert api.setsockopt(b, C.IPPROTO_IP, C.IP_PKTINFO, dword(api, 1).ptr, 4) == 0
        recvmsg = get_extension(api, b, C.WSAID_WSARECVMSG)
        to, tolen = sockaddr(api, "127.0.0.1", pb)
        payload = api.memory.alloc(6)
        api.memory.write(payload, b"HELLO\0")
        assert api.sendto(a, payload, 6, 0, to, tolen) == 6
        _readable(api, b)
        data, ctrl, name = Guarded(api, 10), Guarded(api, 1), Guarded(api, 16)
        arr = api.memory.alloc(WSABUF.size)
        api.memory.write(arr, WSABUF.pack(len=10, buf=data.ptr))
        msg = api.memory.alloc(WSAMSG.size)
        api.memory.write(msg, WSAMSG.pack(name=name.ptr, namelen=16, lpBuffers=arr, dwBufferCount=1,
                                          Control_len=1, Control_buf=ctrl.ptr, dwFlags=0))
        log = RoutineLog(api)
        ovl = overlapped(api)
        api.WSASetLastError(POISON)
        assert api.call(recvmsg, b, msg, 0, ovl, log.ptr) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSA_IO_PENDING
        assert api.SleepEx(1000, True) == C.WAIT_IO_COMPLETION
        assert log.calls == [(C.WSAEMSGSIZE, 6, ovl, 0)]
        assert WSAMSG.unpack(api.memory.read(msg, WSAMSG.size))["dwFlags"] == C.MSG_CTRUNC
        assert data.read(6) == b"HELLO\0"

    @pytest.mark.udp
    def test_short_control_buffer_at_issue_without_a_routine(self, api, decide):
        self._short_control_buffer_at_issue(api, decide)

    @staticmethod
    def _short_control_buffer_at_issue(api, decide):
        """Decision point overflow_at_issue: the same WSARecvMsg with an event on a port-bound socket
        returns -1 with WSAEMSGSIZE or WSA_IO_PENDING; either way the truncation is a warning that
        completes the request (Wine afd.c test_recv: STATUS_BUFFER_OVERFLOW written to the
        IO_STATUS_BLOCK at issue): Internal STATUS_BUFFER_OVERFLOW with the size, the event set, a
        packet FALSE with ERROR_MORE_DATA and the size; WSAGetOverlappedResult then gives
        WSAEMSGSIZE with the size (Wine test_ip_pktinfo, the overlapped case)."""
        a, _ = udp_socket(api)
        b, pb = udp_socket(api)
        assert api.setsockopt(b, C.IPPROTO_IP, C.IP_PKTINFO, dword(api, 1).ptr, 4) == 0
        port = make_iocp(api, b, key=KEY)
        recvmsg = get_extension(api, b, C.WSAID_WSARECVMSG)
        to, tolen = sockaddr(api, "127.0.0.1", pb)
        payload = api.memory.alloc(6)
        api.memory.write(payload, b"HELLO\0")
        assert api.sendto(a, payload, 6, 0, to, tolen) == 6
        _readable(api, b)
        data, ctrl = Guarded(api, 10), Guarded(api, 1)
        arr = api.memory.alloc(WSABUF.size)
        api.memory.write(arr, WSABUF.pack(len=10, buf=data.ptr))
        msg = api.memory.alloc(WSAMSG.size)
        api.memory.write(msg, WSAMSG.pack(name=0, namelen=0, lpBuffers=arr, dwBufferCount=1,
                                          Control_len=1, Control_buf=ctrl.ptr, dwFlags=0))
        event = api.WSACreateEvent()
        ovl = overlapped(api, event)
        n = dword(api)
        api.WSASetLastError(POISON)
        assert api.call(recvmsg, b, msg, n.ptr, ovl, 0) == C.SOCKET_ERROR
        expected = C.WSA_IO_PENDING if decide("overflow_at_issue") == "pending" else C.WSAEMSGSIZE
        assert api.WSAGetLastError() == expected
        assert internal(api, ovl) == (C.STATUS_BUFFER_OVERFLOW, 6)
        assert _signalled(api, event)
        assert dequeue(api, port, 1000)[:5] == (C.FALSE, C.ERROR_MORE_DATA, 6, KEY, ovl)
        assert _nothing_queued(api, port)
        got, flags = dword(api), dword(api)
        assert api.WSAGetOverlappedResult(b, ovl, got.ptr, False, flags.ptr) == C.FALSE
        assert api.WSAGetLastError() == C.WSAEMSGSIZE and got.u32() == 6
        assert WSAMSG.unpack(api.memory.read(msg, WSAMSG.size))["dwFlags"] == C.MSG_CTRUNC
        return b, ovl

    @pytest.mark.udp
    def test_failed_result_leaves_the_flags(self, api, decide):
        """Wine test_ip_pktinfo (the overlapped case, on Windows): WSAGetOverlappedResult of the
        truncated receive fails with WSAEMSGSIZE and the size, and leaves *lpdwFlags as it was."""
        b, ovl = self._short_control_buffer_at_issue(api, decide)
        got, flags = dword(api), dword(api, 0xDEADBEEF)
        assert api.WSAGetOverlappedResult(b, ovl, got.ptr, False, flags.ptr) == C.FALSE
        assert api.WSAGetLastError() == C.WSAEMSGSIZE and got.u32() == 6
        assert flags.u32() == 0xDEADBEEF
