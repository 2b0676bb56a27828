"""AcceptEx, ConnectEx and GetAcceptExSockaddrs, fetched with SIO_GET_EXTENSION_FUNCTION_POINTER.

Sources: learn.microsoft.com "AcceptEx function (mswsock.h)", "LPFN_CONNECTEX callback
function (mswsock.h)" (ConnectEx), "GetAcceptExSockaddrs function (mswsock.h)", and the
SO_UPDATE_ACCEPT_CONTEXT / SO_UPDATE_CONNECT_CONTEXT entries of "SOL_SOCKET socket
options". Where the pages are silent, Wine's dlls/ws2_32/tests/sock.c test_AcceptEx and
test_connect, which run on real Windows, give the answer (cited as "Wine test_...").
"""
import struct

import pytest

from harness.conformance.support import (
    POISON,
    Guarded,
    dequeue,
    dword,
    from_text,
    get_extension,
    internal,
    listener,
    local_name,
    loopback,
    make_iocp,
    overlapped,
    refusing_port,
    sockaddr,
    to_text,
)
from harness.winsock import constants as C
from harness.winsock.layouts import SOCKADDR_IN

SLOT = SOCKADDR_IN.size + 16        # AcceptEx page: "at least 16 bytes more than the maximum address length"


def _tcp(api):
    s = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    assert s != C.INVALID_SOCKET, api.WSAGetLastError()
    return s


def _bound(api):
    s = _tcp(api)
    ptr, n = sockaddr(api, "127.0.0.1", 0)
    assert api.bind(s, ptr, n) == 0, api.WSAGetLastError()
    return s


def _connect(api, port):
    s = _tcp(api)
    ptr, n = sockaddr(api, "127.0.0.1", port)
    assert api.connect(s, ptr, n) == 0, api.WSAGetLastError()
    return s


def _send(api, s, data):
    buf = api.memory.alloc(len(data))
    api.memory.write(buf, data)
    assert api.send(s, buf, len(data), 0) == len(data), api.WSAGetLastError()


def _wait(api, event, timeout=5000):
    arr = api.memory.alloc(8)
    api.memory.write_u64(arr, event)
    return api.WSAWaitForMultipleEvents(1, arr, False, timeout, False)


class _Accept:
    """One AcceptEx call's buffers, kept to decode them afterwards."""

    def __init__(self, api, lst, acc, receive=0, local=SLOT, remote=SLOT, event=0, out=True, ovl=True, via=None):
        self.api, self.receive, self.local, self.remote = api, receive, local, remote
        self.buf = Guarded(api, receive + local + remote)
        self.n = dword(api)
        self.ovl = overlapped(api, event) if ovl else 0
        api.WSASetLastError(POISON)
        fn = get_extension(api, via or lst, C.WSAID_ACCEPTEX)
        self.rc = api.call(fn, lst, acc, self.buf.ptr if out else 0, receive, local, remote, self.n.ptr, self.ovl)
        self.error = api.WSAGetLastError()

    def sockaddrs(self, lst):
        """GetAcceptExSockaddrs: ((local ptr, local len), (remote ptr, remote len)) written by it."""
        api = self.api
        fn = get_extension(api, lst, C.WSAID_GETACCEPTEXSOCKADDRS)
        lp, rp = Guarded(api, 8), Guarded(api, 8)
        ll, rl = dword(api), dword(api)
        assert api.call(fn, self.buf.ptr, self.receive, self.local, self.remote, lp.ptr, ll.ptr, rp.ptr,
                        rl.ptr) is None                            # void
        return ((struct.unpack("<Q", lp.read())[0], ll.u32()), (struct.unpack("<Q", rp.read())[0], rl.u32()))

    def decoded(self, lst):
        (lptr, llen), (rptr, rlen) = self.sockaddrs(lst)
        buf = self.buf
        for ptr, n in ((lptr, llen), (rptr, rlen)):      # pointers into lpOutputBuffer (page: [out] parameters)
            assert buf.ptr + self.receive <= ptr and ptr + n <= buf.ptr + buf.size
        mem = self.api.memory
        return to_text(mem.read(lptr, llen)), to_text(mem.read(rptr, rlen))


# --- AcceptEx ----------------------------------------------------------------------------------------


def test_acceptex_pends_then_completes_through_the_port(api):
    """AcceptEx page: FALSE with ERROR_IO_PENDING while no connection is there; the completion
    carries 0 bytes when dwReceiveDataLength is 0 (Wine test_AcceptEx: "bytesReturned == 0");
    GetAcceptExSockaddrs page: the local and remote addresses are those getsockname and
    getpeername would give, as pointers into the buffer."""
    lst, port = listener(api)
    acc = _tcp(api)
    iocp = make_iocp(api, lst, key=123)
    a = _Accept(api, lst, acc)
    assert (a.rc, a.error) == (C.FALSE, C.WSA_IO_PENDING)
    assert internal(api, a.ovl)[0] == C.STATUS_PENDING and a.n.u32() == POISON
    assert dequeue(api, iocp, 0)[:2] == (C.FALSE, C.WAIT_TIMEOUT)
    client = _connect(api, port)
    ok, _err, nbytes, key, ovl = dequeue(api, iocp, 5000)
    assert (ok, nbytes, key, ovl) == (C.TRUE, 0, 123, a.ovl)
    assert internal(api, a.ovl) == (C.STATUS_SUCCESS, 0)
    local, remote = a.decoded(lst)
    assert local == ("127.0.0.1", port)
    assert remote == local_name(api, client)
    assert a.buf.guards_intact()


def test_acceptex_waits_for_the_first_data(api):
    """AcceptEx page: with dwReceiveDataLength > 0 it completes after the first block of data;
    the bytes transferred are the received data's length, written at offset zero, and the
    addresses follow at dwReceiveDataLength (Wine test_AcceptEx, "short reads")."""
    lst, port = listener(api)
    acc = _tcp(api)
    iocp = make_iocp(api, lst)
    a = _Accept(api, lst, acc, receive=64)
    assert (a.rc, a.error) == (C.FALSE, C.WSA_IO_PENDING)
    client = _connect(api, port)
    assert dequeue(api, iocp, 0)[:2] == (C.FALSE, C.WAIT_TIMEOUT)      # connected, but no data yet
    assert internal(api, a.ovl)[0] == C.STATUS_PENDING
    _send(api, client, b"hello")
    ok, _err, nbytes, _key, ovl = dequeue(api, iocp, 5000)
    assert (ok, nbytes, ovl) == (C.TRUE, 5, a.ovl)
    assert internal(api, a.ovl) == (C.STATUS_SUCCESS, 5)
    assert a.buf.read(5) == b"hello"
    local, remote = a.decoded(lst)
    assert local == ("127.0.0.1", port) and remote == local_name(api, client)
    assert a.buf.guards_intact()


def _accept_completed_by_the_peers_close(api):
    """A receiving AcceptEx, then a client that connects and closes before sending: (the AcceptEx,
    the listener, its port, the client's address), once the AcceptEx's event is signalled."""
    lst, port = listener(api)
    acc = _tcp(api)
    event = api.WSACreateEvent()
    a = _Accept(api, lst, acc, receive=64, event=event)
    assert (a.rc, a.error) == (C.FALSE, C.WSA_IO_PENDING)
    client = _connect(api, port)
    client_name = local_name(api, client)
    assert api.closesocket(client) == 0
    assert _wait(api, event) == C.WSA_WAIT_EVENT_0
    return a, lst, port, client_name


def test_acceptex_completes_when_the_peer_closes_before_sending(api):
    """Wine test_AcceptEx ("Disconnect during receive?"): the peer's graceful close completes
    a receiving AcceptEx successfully with 0 bytes."""
    a, lst, _port, _client = _accept_completed_by_the_peers_close(api)
    n, flags = dword(api), dword(api)
    assert api.WSAGetOverlappedResult(lst, a.ovl, n.ptr, False, flags.ptr) == C.TRUE
    assert n.u32() == 0


def test_acceptex_completed_by_the_peers_close_holds_the_addresses(api):
    """The same completion, read with GetAcceptExSockaddrs: a successful AcceptEx has written the
    local address of the server and the remote address of the client into lpOutputBuffer (the
    AcceptEx page, lpOutputBuffer; the GetAcceptExSockaddrs page: the addresses getsockname and
    getpeername would give), whether or not data came."""
    a, lst, port, client_name = _accept_completed_by_the_peers_close(api)
    assert internal(api, a.ovl) == (C.STATUS_SUCCESS, 0)
    assert a.decoded(lst) == (("127.0.0.1", port), client_name)


def test_so_update_accept_context(api):
    """AcceptEx page Remarks and SOL_SOCKET options (SO_UPDATE_ACCEPT_CONTEXT): the accepted
    socket is connected, but getpeername, getsockname and shutdown work only once the option
    is set with the listening socket as its value (before: WSAENOTCONN)."""
    lst, port = listener(api)
    acc = _tcp(api)
    event = api.WSACreateEvent()
    a = _Accept(api, lst, acc, event=event)
    client = _connect(api, port)
    assert _wait(api, event) == C.WSA_WAIT_EVENT_0
    name, namelen = Guarded(api, 64), dword(api, 64)
    assert api.getpeername(acc, name.ptr, namelen.ptr) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAENOTCONN
    assert api.getsockname(acc, name.ptr, namelen.ptr) == C.SOCKET_ERROR
    assert api.shutdown(acc, C.SD_SEND) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAENOTCONN
    _send(api, client, b"ping")                                 # the connection itself works
    value = api.memory.alloc(8)
    api.memory.write_u64(value, lst)
    assert api.setsockopt(acc, C.SOL_SOCKET, C.SO_UPDATE_ACCEPT_CONTEXT, value, 8) == 0, api.WSAGetLastError()
    assert api.getpeername(acc, name.ptr, namelen.ptr) == 0
    assert to_text(name.read(namelen.u32())) == local_name(api, client)
    assert local_name(api, acc) == ("127.0.0.1", port)
    assert a.decoded(lst)[1] == local_name(api, client)
    buf = Guarded(api, 16)
    assert api.recv(acc, buf.ptr, 16, 0) == 4 and buf.read(4) == b"ping"
    assert api.shutdown(acc, C.SD_SEND) == 0


def _bad_call(api, case):
    """(AcceptEx result, the listener) for one bad argument set."""
    lst, _port = listener(api)
    acc = _tcp(api)
    kw = {}
    if case == "listen-not-socket":
        lst_arg = acc + 0x10000
    elif case == "listen-not-listening":
        lst_arg = _bound(api)
    else:
        lst_arg = lst
    if case == "accept-not-socket":
        acc = lst + 0x10000
    elif case == "accept-bound":
        acc = _bound(api)
    elif case == "accept-connected":
        acc = _connect(api, _port)
    elif case == "accept-udp":
        acc = api.socket(C.AF_INET, C.SOCK_DGRAM, C.IPPROTO_UDP)
    elif case == "remote-length-0":
        kw["remote"] = 0
    elif case == "null-buffer":
        kw["out"] = False
    elif case == "null-overlapped":
        kw["ovl"] = False
    elif case == "accept-socket-twice":
        first = _Accept(api, lst, acc)
        assert first.error == C.WSA_IO_PENDING
    elif case == "accept-socket-used":
        event = api.WSACreateEvent()
        first = _Accept(api, lst, acc, event=event)
        assert first.error == C.WSA_IO_PENDING
        _connect(api, _port)
        assert _wait(api, event) == C.WSA_WAIT_EVENT_0
        assert internal(api, first.ovl)[0] == C.STATUS_SUCCESS
    return _Accept(api, lst_arg, acc, via=lst, **kw), lst


@pytest.mark.parametrize("case,error", [
    ("listen-not-socket", C.WSAENOTSOCK),         # AcceptEx page; Wine test_AcceptEx
    ("accept-not-socket", C.WSAENOTSOCK),         # AcceptEx page; Wine test_AcceptEx
    ("listen-not-listening", C.WSAEINVAL),        # AcceptEx page: "listen function was not invoked"
    ("accept-bound", C.WSAEINVAL),                # page: sAcceptSocket "must not be bound or connected"
    ("accept-connected", C.WSAEINVAL),            # same
    ("accept-udp", C.WSAEINVAL),                  # Wine test_AcceptEx: a UDP socket cannot be accepted into
    ("accept-socket-twice", C.WSAEINVAL),         # Wine test_AcceptEx: "already pending socket"
    ("accept-socket-used", C.WSAEINVAL),          # page: "must not be bound or connected": one AcceptEx connected
    ("remote-length-0", C.WSAEFAULT),             # page: address lengths; Wine test_AcceptEx (remote size 0)
    ("null-buffer", C.WSAEFAULT),                 # page: lpOutputBuffer "must be specified"
    ("null-overlapped", C.ERROR_INVALID_PARAMETER),  # page: lpOverlapped "cannot be NULL"; Wine test_AcceptEx
])
def test_acceptex_argument_errors(api, case, error):
    """AcceptEx page, error table: parameter errors fail at once with FALSE and the error;
    nothing is posted. Internal is STATUS_PENDING already (Wine test_AcceptEx)."""
    a, lst = _bad_call(api, case)
    assert (a.rc, a.error) == (C.FALSE, error)
    assert a.n.u32() == POISON and a.buf.guards_intact()
    if a.ovl:
        assert internal(api, a.ovl)[0] == C.STATUS_PENDING
        if case not in ("listen-not-socket", "listen-not-listening", "accept-socket-twice", "accept-socket-used"):
            iocp = make_iocp(api, lst)
            assert dequeue(api, iocp, 0)[:2] == (C.FALSE, C.WAIT_TIMEOUT)


@pytest.mark.parametrize("case,error", [("remote-length-0", C.WSAEFAULT), ("accept-not-socket", C.WSAENOTSOCK)])
def test_acceptex_failing_at_once_leaves_internalhigh(api, case, error):
    """An AcceptEx that fails at once sets Internal to STATUS_PENDING (Wine test_AcceptEx, on Windows)
    and leaves InternalHigh as it was: the OVERLAPPED page says the system sets InternalHigh when the
    request completes without errors, and a ConnectEx failing at once leaves it (Wine test_connect
    and test_connecting_socket, on Windows: InternalHigh still 0xdeadbeef)."""
    a, _lst = _bad_call(api, case)
    assert (a.rc, a.error) == (C.FALSE, error)
    assert internal(api, a.ovl) == (C.STATUS_PENDING, POISON)


@pytest.mark.parametrize("local,remote", [(SLOT - 1, SLOT), (SLOT, SLOT - 1), (0, SLOT)])
def test_acceptex_address_lengths_below_the_documented_minimum(api, decide, local, remote):
    """AcceptEx page: each address length "must be at least 16 bytes more than the maximum
    address length"; Windows (Wine test_AcceptEx) instead goes pending and fails the
    completion with STATUS_BUFFER_TOO_SMALL, except for a local length of 0, which asks for no
    local address and succeeds: ledger `acceptex_short_address`."""
    lst, port = listener(api)
    iocp = make_iocp(api, lst, key=5)
    a = _Accept(api, lst, _tcp(api), local=local, remote=remote)
    if decide("acceptex_short_address") == "WSAEFAULT":
        assert (a.rc, a.error) == (C.FALSE, C.WSAEFAULT)
        return
    assert (a.rc, a.error) == (C.FALSE, C.WSA_IO_PENDING)
    _connect(api, port)
    ok, err, nbytes, key, ovl = dequeue(api, iocp, 5000)
    if local == 0:
        # Wine test_AcceptEx on Windows: a local length of 0 asks for no local address and succeeds
        assert (ok, nbytes, key, ovl) == (C.TRUE, 0, 5, a.ovl) and internal(api, a.ovl) == (C.STATUS_SUCCESS, 0)
        return
    assert (ok, err, key, ovl) == (C.FALSE, C.ERROR_INSUFFICIENT_BUFFER, 5, a.ovl)
    assert internal(api, a.ovl)[0] == C.STATUS_BUFFER_TOO_SMALL


@pytest.mark.parametrize("receive", [0, 2])
@pytest.mark.parametrize("local", [0, 3, SLOT - 1, SLOT])
@pytest.mark.parametrize("remote", [0, SLOT - 1, SLOT])
def test_acceptex_address_length_matrix(api, decide, receive, local, remote):
    """Every combination of receive length (0, 2) and address lengths (0; 3, below the sockaddr
    (local only: Wine test_AcceptEx has no remote length below it but 0); sizeof(sockaddr_in) + 15;
    + 16, the page's minimum). A remote length of 0 fails at once with
    WSAEFAULT; on Windows (Wine test_AcceptEx) everything else goes pending, and the completion
    fails with STATUS_BUFFER_TOO_SMALL (ERROR_INSUFFICIENT_BUFFER, 0 bytes) when a slot is too
    small, a local length of 0 asking for no local address; the documented reading fails every
    short length at once (ledger `acceptex_short_address`). The peer sends 2 bytes at once, so
    a receive length of 2 completes with them."""
    lst, port = listener(api)
    iocp = make_iocp(api, lst, key=9)
    a = _Accept(api, lst, _tcp(api), receive=receive, local=local, remote=remote)
    strict = decide("acceptex_short_address") == "WSAEFAULT"
    short_local = local < SLOT and (local != 0 or strict)
    if remote == 0 or (strict and (short_local or remote < SLOT)):
        assert (a.rc, a.error) == (C.FALSE, C.WSAEFAULT)
        assert internal(api, a.ovl)[0] == C.STATUS_PENDING and a.buf.guards_intact()
        return
    assert (a.rc, a.error) == (C.FALSE, C.WSA_IO_PENDING)
    client = _connect(api, port)
    _send(api, client, b"hi")
    ok, err, nbytes, key, ovl = dequeue(api, iocp, 5000)
    assert (key, ovl) == (9, a.ovl) and a.buf.guards_intact()
    if short_local or remote < SLOT:
        assert (ok, err, nbytes) == (C.FALSE, C.ERROR_INSUFFICIENT_BUFFER, 0)
        assert internal(api, a.ovl) == (C.STATUS_BUFFER_TOO_SMALL, 0)
        return
    assert (ok, nbytes) == (C.TRUE, receive) and internal(api, a.ovl) == (C.STATUS_SUCCESS, receive)
    assert a.buf.read(receive) == b"hi"[:receive]


@pytest.mark.parametrize("local", [3, SLOT - 1])
def test_a_failed_acceptex_leaves_the_connection_queued(api, decide, local):
    """Wine test_AcceptEx ("The above connection request is not accepted"): after an AcceptEx
    whose local slot is too small completes with STATUS_BUFFER_TOO_SMALL, the connection is still
    waiting on the listener, and accept() takes it."""
    if decide("acceptex_short_address") == "WSAEFAULT":
        pytest.skip("the documented reading fails the call at once: no connection is involved")
    lst, port = listener(api)
    event = api.WSACreateEvent()
    a = _Accept(api, lst, _tcp(api), local=local, event=event)
    assert a.error == C.WSA_IO_PENDING
    client = _connect(api, port)
    assert _wait(api, event) == C.WSA_WAIT_EVENT_0
    assert internal(api, a.ovl)[0] == C.STATUS_BUFFER_TOO_SMALL
    assert api.ioctlsocket(lst, C.FIONBIO, dword(api, 1).ptr) == 0      # a consumed connection: no hang
    name, namelen = Guarded(api, 64), dword(api, 64)
    server = api.accept(lst, name.ptr, namelen.ptr)
    assert server != C.INVALID_SOCKET, api.WSAGetLastError()
    assert to_text(name.read(namelen.u32())) == local_name(api, client)


@pytest.mark.parametrize("closed", ["listener", "accept-socket"])
def test_closing_cancels_a_pending_acceptex(api, closed):
    """closesocket page (pending overlapped operations are cancelled) and Wine test_AcceptEx
    ("Test closing with pending requests"): closing the listening or the accept socket
    completes a pending AcceptEx with ERROR_OPERATION_ABORTED (STATUS_CANCELLED)."""
    lst, _port = listener(api)
    acc = _tcp(api)
    iocp = make_iocp(api, lst, key=7)
    a = _Accept(api, lst, acc)
    assert a.error == C.WSA_IO_PENDING
    assert api.closesocket(lst if closed == "listener" else acc) == 0
    ok, err, nbytes, key, ovl = dequeue(api, iocp, 5000)
    assert (ok, err, nbytes, key, ovl) == (C.FALSE, C.ERROR_OPERATION_ABORTED, 0, 7, a.ovl)
    assert internal(api, a.ovl) == (C.STATUS_CANCELLED, 0)


# --- ConnectEx -----------------------------------------------------------------------------------------


def _connectex(api, s, port, data=b"", event=0, ovl=True, via=None):
    """ConnectEx's (result, last error, lpdwBytesSent, OVERLAPPED). The page defines *lpdwBytesSent
    only "on successful return", so the cases read it only after a completion."""
    fn = get_extension(api, via or s, C.WSAID_CONNECTEX)
    name, namelen = sockaddr(api, "127.0.0.1", port)
    send = 0
    if data:
        send = api.memory.alloc(len(data))
        api.memory.write(send, data)
    sent = dword(api)
    lpovl = overlapped(api, event) if ovl else 0
    api.WSASetLastError(POISON)
    rc = api.call(fn, s, name, namelen, send, len(data), sent.ptr, lpovl)
    return rc, api.WSAGetLastError(), sent, lpovl


def test_connectex_needs_a_bound_socket(api):
    """LPFN_CONNECTEX page: s is "an unconnected, previously bound socket"; unbound is WSAEINVAL
    (error table; Wine test_connect "ConnectEx on a unbound socket")."""
    _lst, port = listener(api)
    rc, err, sent, ovl = _connectex(api, _tcp(api), port)
    assert (rc, err) == (C.FALSE, C.WSAEINVAL)
    assert internal(api, ovl)[0] == C.STATUS_PENDING


@pytest.mark.parametrize("case,error", [
    ("listening", C.WSAEINVAL),                 # page: "an unbound or a listening socket"; Wine test_connect
    ("connected", C.WSAEISCONN),                # page error table; Wine test_connect
    ("not-socket", C.WSAENOTSOCK),              # page error table; Wine test_connect
    ("null-overlapped", C.ERROR_INVALID_PARAMETER),  # page: lpOverlapped "cannot be NULL"; Wine test_connect
])
def test_connectex_argument_errors(api, case, error):
    """LPFN_CONNECTEX page, error table: failures found up front return FALSE at once."""
    lst, port = listener(api)
    if case == "listening":
        s = lst
    elif case == "connected":
        s = _connect(api, port)
    elif case == "not-socket":
        s = lst + 0x10000
    else:
        s = _bound(api)
    rc, err, _sent, ovl = _connectex(api, s, port, ovl=case != "null-overlapped", via=lst)
    assert (rc, err) == (C.FALSE, error)
    if case == "listening":
        # Wine test_connect (on Windows): Internal becomes STATUS_PENDING, InternalHigh is left as it was.
        assert internal(api, ovl) == (C.STATUS_PENDING, POISON)
    elif case == "not-socket":
        # docs/windows-observed.md item 10: the OVERLAPPED before the socket, as AcceptEx's.
        assert internal(api, ovl)[0] == C.STATUS_PENDING


UNREACHABLE = ("192.0.2.0", 255)       # Wine test_connecting_socket: a connect that stays in progress


def _connecting(api, with_connectex):
    """A bound non-blocking socket whose connect() or ConnectEx to an unreachable address is in progress."""
    s = _tcp(api)
    assert api.ioctlsocket(s, C.FIONBIO, dword(api, 1).ptr) == 0
    ptr, n = sockaddr(api, "0.0.0.0", 0)
    assert api.bind(s, ptr, n) == 0
    to, tolen = sockaddr(api, *UNREACHABLE)
    if with_connectex:
        fn = get_extension(api, s, C.WSAID_CONNECTEX)
        assert api.call(fn, s, to, tolen, 0, 0, dword(api).ptr, overlapped(api)) == C.FALSE
        assert api.WSAGetLastError() == C.WSA_IO_PENDING
    else:
        assert api.connect(s, to, tolen) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEWOULDBLOCK
    return s, to, tolen


@pytest.mark.parametrize("first", ["connect", "ConnectEx"])
def test_second_connect_or_connectex_while_one_is_in_progress(api, first):
    """Wine test_connecting_socket: while connect() is in progress a second connect() is
    WSAEALREADY and ConnectEx WSAEINVAL; while a ConnectEx is, connect() and ConnectEx are both
    WSAEINVAL. The failing ConnectEx leaves Internal at STATUS_PENDING; getsockname gives the
    bound port either way."""
    s, to, tolen = _connecting(api, first == "ConnectEx")
    api.WSASetLastError(POISON)
    assert api.connect(s, to, tolen) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == (C.WSAEALREADY if first == "connect" else C.WSAEINVAL)
    ovl = overlapped(api)
    fn = get_extension(api, s, C.WSAID_CONNECTEX)
    assert api.call(fn, s, to, tolen, 0, 0, dword(api).ptr, ovl) == C.FALSE
    assert api.WSAGetLastError() == C.WSAEINVAL and internal(api, ovl)[0] == C.STATUS_PENDING
    assert local_name(api, s)[1] != 0


def test_a_failed_connectex_leaves_internalhigh(api):
    """Wine test_connecting_socket: ConnectEx refused at once (a connect is in progress) leaves
    InternalHigh as it was."""
    s, to, tolen = _connecting(api, False)
    ovl = overlapped(api)
    fn = get_extension(api, s, C.WSAID_CONNECTEX)
    assert api.call(fn, s, to, tolen, 0, 0, dword(api).ptr, ovl) == C.FALSE
    assert internal(api, ovl) == (C.STATUS_PENDING, POISON)


@pytest.mark.parametrize("first", ["connect", "ConnectEx"])
def test_peer_name_while_connecting(api, first):
    """Wine test_connecting_socket: while connect() is in progress getpeername succeeds (the
    address being connected to); while a ConnectEx is, it is WSAENOTCONN (the LPFN_CONNECTEX
    page: names need SO_UPDATE_CONNECT_CONTEXT after it)."""
    s, to, tolen = _connecting(api, first == "ConnectEx")
    name, namelen = Guarded(api, 64), dword(api, 64)
    if first == "connect":
        assert api.getpeername(s, name.ptr, namelen.ptr) == 0, api.WSAGetLastError()
        assert to_text(name.read(namelen.u32())) == UNREACHABLE
    else:
        assert api.getpeername(s, name.ptr, namelen.ptr) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAENOTCONN


@pytest.mark.parametrize("first", ["connect", "ConnectEx"])
def test_send_and_recv_while_connecting_are_enotconn(api, first):
    """Wine test_connecting_socket: recv and send on a socket whose connect() or ConnectEx is in
    progress fail with WSAENOTCONN."""
    s, _to, _tolen = _connecting(api, first == "ConnectEx")
    buf = Guarded(api, 4)
    assert api.recv(s, buf.ptr, 4, 0) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAENOTCONN
    assert api.send(s, buf.ptr, 4, 0) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAENOTCONN


def test_connectex_completes_through_the_event_and_sends_the_data(api):
    """LPFN_CONNECTEX page: FALSE with ERROR_IO_PENDING, then the connection is established and
    lpSendBuffer is sent; the completion's byte count is the data sent (Wine test_connect:
    "bytesReturned == 3"). Remarks: getpeername etc. need SO_UPDATE_CONNECT_CONTEXT."""
    lst, port = listener(api)
    s = _bound(api)
    event = api.WSACreateEvent()
    rc, err, sent, ovl = _connectex(api, s, port, b"123", event=event)
    assert (rc, err) == (C.FALSE, C.WSA_IO_PENDING)
    assert _wait(api, event) == C.WSA_WAIT_EVENT_0
    n, flags = dword(api), dword(api)
    assert api.WSAGetOverlappedResult(s, ovl, n.ptr, False, flags.ptr) == C.TRUE
    assert n.u32() == 3 and internal(api, ovl) == (C.STATUS_SUCCESS, 3)
    server = api.accept(lst, 0, 0)
    assert server != C.INVALID_SOCKET
    buf = Guarded(api, 16)
    assert api.recv(server, buf.ptr, 16, 0) == 3 and buf.read(3) == b"123"
    name, namelen = Guarded(api, 64), dword(api, 64)
    assert api.getpeername(s, name.ptr, namelen.ptr) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAENOTCONN
    assert api.setsockopt(s, C.SOL_SOCKET, C.SO_UPDATE_CONNECT_CONTEXT, 0, 0) == 0, api.WSAGetLastError()
    assert api.getpeername(s, name.ptr, namelen.ptr) == 0
    assert to_text(name.read(namelen.u32())) == (loopback(C.AF_INET), port)


def test_connectex_refused_through_the_completion(api):
    """LPFN_CONNECTEX page: WSAECONNREFUSED is reported when the overlapped operation completes
    (Wine test_connect: GetOverlappedResult gives ERROR_CONNECTION_REFUSED)."""
    _held, port = refusing_port(api)                       # nothing listens on `port`
    s = _bound(api)
    iocp = make_iocp(api, s, key=5)
    rc, err, _sent, ovl = _connectex(api, s, port)
    assert (rc, err) == (C.FALSE, C.WSA_IO_PENDING)
    ok, err, nbytes, key, got = dequeue(api, iocp, 30000)
    assert (ok, err, nbytes, key, got) == (C.FALSE, C.ERROR_CONNECTION_REFUSED, 0, 5, ovl)
    n, flags = dword(api), dword(api)
    assert api.WSAGetOverlappedResult(s, ovl, n.ptr, False, flags.ptr) == C.FALSE
    assert api.WSAGetLastError() == C.WSAECONNREFUSED


@pytest.mark.sim_only
@pytest.mark.requires_redirect
def test_connectex_is_redirected_like_connect(profile):
    """docs/facts.md §3 / docs/decisions.md §5: the ALE connect-redirect layer sees ConnectEx exactly as it sees
    connect: the sample driver sends the connection to its proxy, whose context query names the
    original destination and the application's process; ConnectEx's data reaches the proxy."""
    from harness.proxy import redirect as rd
    from harness.sample_driver import RedirectPolicy, unpack_context
    from sim.worlds.ready import CLIENT, PROXY_PORT, SERVER, _listen
    from sim.worlds.sample_callout import install_sample_driver
    from sim.world import World

    world = World(profile)
    client = world.add_host("client", CLIENT)
    world.add_host("server", SERVER)
    proxy = world.start_process(client, "proxy")
    lst = _listen(proxy, C.SOCK_STREAM, "127.0.0.1", PROXY_PORT)
    install_sample_driver(world, client, RedirectPolicy(
        tcp_ports=(80,), tcp_proxy_port=PROXY_PORT, proxy_process_id=proxy.GetCurrentProcessId()))
    app = world.start_process(client, "app", elevated=False)
    s = app.socket(C.AF_INET, C.SOCK_STREAM, 0)
    any_ptr, any_len = sockaddr(app, "0.0.0.0", 0)
    assert app.bind(s, any_ptr, any_len) == 0
    fn = get_extension(app, s, C.WSAID_CONNECTEX)
    name = from_text(SERVER[0], 80)
    ptr = app.memory.alloc(len(name) + 8)
    app.memory.write(ptr, name + b"GET /\r\n\r")
    event = app.WSACreateEvent()
    ovl = overlapped(app, event)
    assert app.call(fn, s, ptr, len(name), ptr + len(name), 8, dword(app).ptr, ovl) == C.FALSE
    assert app.WSAGetLastError() == C.WSA_IO_PENDING
    accepted = proxy.accept(lst, 0, 0)
    assert accepted != C.INVALID_SOCKET, proxy.WSAGetLastError()
    assert _wait(app, event) == C.WSA_WAIT_EVENT_0
    assert internal(app, ovl) == (C.STATUS_SUCCESS, 8)
    buf = Guarded(proxy, 16)
    assert proxy.recv(accepted, buf.ptr, 16, 0) == 8 and buf.read(8) == b"GET /\r\n\r"
    ctx = unpack_context(rd.query_context(proxy, accepted))
    assert (ctx.original_remote.host, ctx.original_remote.port) == (SERVER[0], 80)
    assert ctx.process_id == app.GetCurrentProcessId()
