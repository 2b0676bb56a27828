"""WSAPoll: readiness of TCP and UDP sockets, waiting, and the checks on the WSAPOLLFD array.

Sources: the WSAPoll and WSAPOLLFD pages (learn.microsoft.com, winsock2.h);
Wine's dlls/ws2_32/tests/sock.c test_WSAPoll, which runs on Windows ("Wine
test_WSAPoll" below: a todo_wine line there is one Windows passes). Where the
page and Windows disagree the profile decides (poll_no_valid_socket,
poll_nval_counted). REQ is every request flag, as Wine's check_poll asks.
"""
import struct
import threading
import time

import pytest

from harness.conformance.support import POISON, Guarded, dword, listener, sockaddr, tcp_pair, udp_socket
from harness.winsock import constants as C
from harness.winsock.layouts import WSAPOLLFD

REQ = C.POLLRDNORM | C.POLLRDBAND | C.POLLWRNORM
BAD_FD = 0xABACAB                  # Wine's: no socket (not even a multiple of four)
POISONED = 0x5A5A                  # revents before the call: every entry must be rewritten
# Wine test_WSAPoll's list: each alone in `events` fails with WSAEINVAL on Windows.
INVALID_REQUEST_FLAGS = [C.POLLERR, C.POLLHUP, C.POLLNVAL, 0x8, C.POLLWRBAND, 0x40, 0x80, C.POLLPRI,
                         0x800, 0x1000, 0x2000, 0x4000, 0x8000]
_ENTRY = struct.Struct("<QHH4x")
assert _ENTRY.size == WSAPOLLFD.size


def _array(api, entries) -> Guarded:
    arr = Guarded(api, WSAPOLLFD.size * len(entries))
    api.memory.write(arr.ptr, b"".join(_ENTRY.pack(fd & (2**64 - 1), events & 0xFFFF, POISONED)
                                       for fd, events in entries))
    return arr


def _revents(arr: Guarded, n: int) -> list:
    data = arr.read()
    return [_ENTRY.unpack_from(data, i * WSAPOLLFD.size)[2] for i in range(n)]


def poll(api, entries, timeout=0):
    """WSAPoll over [(fd, events)] -> (return value, last error, [revents]); checks nothing else moved."""
    arr = _array(api, entries)
    before = arr.read()
    api.WSASetLastError(POISON)
    rc = api.WSAPoll(arr.ptr, len(entries), timeout)
    err = api.WSAGetLastError()
    after = arr.read()
    assert arr.guards_intact()
    for i in range(len(entries)):               # only revents may change
        lo, hi = i * WSAPOLLFD.size, i * WSAPOLLFD.size + WSAPOLLFD.offset("revents")
        assert after[lo:hi] == before[lo:hi] and after[hi + 2:lo + 16] == before[hi + 2:lo + 16]
    return rc, err, _revents(arr, len(entries))


def poll_one(api, s, events=REQ, timeout=1000):
    """Wine's check_poll_mask: one socket; the count must agree with revents."""
    rc, err, (revents,) = poll(api, [(s, events)], timeout)
    assert rc == (1 if revents else 0), (rc, err)
    assert err == 0
    return revents


def _send(api, s, data: bytes):
    buf = api.memory.alloc(len(data))
    api.memory.write(buf, data)
    assert api.send(s, buf, len(data), 0) == len(data)


def _nonblocking(api, s):
    assert api.ioctlsocket(s, C.FIONBIO, dword(api, 1).ptr) == 0


def _closed_port(api) -> int:
    lst, port = listener(api)
    assert api.closesocket(lst) == 0
    return port


# --- arguments ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("timeout", [0, 1])
def test_zero_count_and_null_array(api, timeout):
    """Wine test_WSAPoll: (NULL, 0) is WSAEINVAL, (NULL, 1) WSAEFAULT, whatever the timeout;
    the page: WSAEFAULT 'an exception occurred while reading user input parameters'."""
    assert api.WSAPoll(0, 0, timeout) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEINVAL
    assert api.WSAPoll(0, 1, timeout) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEFAULT


def test_unreadable_array_is_efault(api, pair):
    """The page: WSAEFAULT when the array cannot be read: an invalid address, an array shorter
    than fds entries, a no-access page. Nothing is written."""
    _, server, _ = pair
    assert api.WSAPoll(api.memory.invalid_pointer(), 1, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEFAULT
    one = api.memory.alloc(WSAPOLLFD.size)        # ends at a guard page on both providers
    api.memory.write(one, _ENTRY.pack(server, REQ, POISONED))
    assert api.WSAPoll(one, 2, 0) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEFAULT
    assert _ENTRY.unpack(api.memory.read(one, WSAPOLLFD.size))[2] == POISONED
    if hasattr(api.memory, "protect"):
        none = api.memory.alloc(WSAPOLLFD.size, prot="none")
        assert api.WSAPoll(none, 1, 0) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEFAULT


def test_not_initialised(api, tcp):
    """ws2_32 checks WSAStartup first (docs/decisions.md §4): WSANOTINITIALISED after the last WSACleanup."""
    arr = _array(api, [(tcp, REQ)])
    assert api.WSACleanup() == 0
    assert api.WSAPoll(arr.ptr, 1, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSANOTINITIALISED
    assert api.WSAStartup(0x0202, api.memory.alloc(408)) == 0


@pytest.mark.parametrize("flag", INVALID_REQUEST_FLAGS, ids=hex)
def test_invalid_request_flags(api, pair, flag):
    """The page: events may hold only POLLRDNORM, POLLRDBAND, POLLWRNORM (POLLPRI 'is not supported
    by the Microsoft Winsock provider'); anything else is SOCKET_ERROR with WSAEINVAL. Wine
    test_WSAPoll: so on a listener and on a connected socket, POLLERR/POLLHUP/POLLNVAL included."""
    client, server, lst = pair
    for s in (lst, server):
        rc, err, _ = poll(api, [(s, flag)])
        assert (rc, err) == (C.SOCKET_ERROR, C.WSAEINVAL)
    rc, err, _ = poll(api, [(server, C.POLLIN | flag)])
    assert (rc, err) == (C.SOCKET_ERROR, C.WSAEINVAL)


def test_pollin_and_pollout_are_request_flags(api, pair):
    """The page: POLLIN is POLLRDNORM | POLLRDBAND and POLLOUT is POLLWRNORM; both are valid requests."""
    assert (C.POLLIN, C.POLLOUT) == (C.POLLRDNORM | C.POLLRDBAND, C.POLLWRNORM)
    client, _, _ = pair
    assert poll_one(api, client, C.POLLIN | C.POLLOUT, 0) == C.POLLWRNORM


def test_nothing_pending_returns_zero_and_clears_revents(api, pair):
    """Wine test_WSAPoll: no events pending: 0, no error, revents 0. The page: revents need not be
    cleared before the call (it is rewritten); 'all sockets that do not meet these criteria and
    have no error condition will have the corresponding revents member set to 0'."""
    _, _, lst = pair
    assert poll(api, [(lst, REQ)]) == (0, 0, [0])


def test_negative_fd_is_ignored(api, pair, decide):
    """The page: an entry whose fd is negative is ignored and its revents set to POLLNVAL (earlier
    versions said 'cleared'); its events are not checked (Wine test_WSAPoll: POLLERR there is no
    error). Counted or not in the return value: profile (poll_nval_counted)."""
    _, _, lst = pair
    counted = decide("poll_nval_counted") == "counted"
    assert poll(api, [(C.INVALID_SOCKET, C.POLLERR), (lst, C.POLLIN)]) == (int(counted), 0, [C.POLLNVAL, 0])


def test_entry_that_is_not_a_socket(api, pair, decide):
    """Wine test_WSAPoll: a handle that is no socket gets POLLNVAL beside a valid socket, without
    failing the call; a closed socket's handle is no socket either. Counted: profile."""
    client, _, lst = pair
    closed = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    assert api.closesocket(closed) == 0
    counted = decide("poll_nval_counted") == "counted"
    assert poll(api, [(lst, C.POLLIN), (BAD_FD, C.POLLIN)]) == (int(counted), 0, [0, C.POLLNVAL])
    assert poll(api, [(closed, C.POLLIN), (client, C.POLLOUT)]) == (1 + counted, 0, [C.POLLNVAL, C.POLLWRNORM])


def test_invalid_flags_on_a_non_socket_entry(api, pair):
    """Wine test_WSAPoll (todo_wine, so Windows): unlike a negative fd, a non-socket entry's events
    are checked: WSAEINVAL, and every revents reads 0 afterwards."""
    _, _, lst = pair
    assert poll(api, [(lst, C.POLLIN), (BAD_FD, C.POLLERR)]) == (C.SOCKET_ERROR, C.WSAEINVAL, [0, 0])


def test_no_valid_socket(api, decide):
    """The page: WSAEINVAL 'if none of the sockets specified ... were valid'; Wine test_WSAPoll on
    Windows: WSAENOTSOCK (profile: poll_no_valid_socket); every revents is POLLNVAL."""
    err = getattr(C, decide("poll_no_valid_socket"))
    assert poll(api, [(C.INVALID_SOCKET, C.POLLERR), (BAD_FD, C.POLLERR)]) == \
        (C.SOCKET_ERROR, err, [C.POLLNVAL, C.POLLNVAL])
    assert poll(api, [(BAD_FD, C.POLLIN)]) == (C.SOCKET_ERROR, err, [C.POLLNVAL])


# --- listening sockets -------------------------------------------------------------------------------

def test_listener_becomes_readable(api):
    """The page: a pending connection on a listening socket is POLLRDNORM, and accept then does not
    block. Wine test_WSAPoll: the poll waits for the connection (timeout 100 there), reports it
    again until accepted, and nothing for POLLRDBAND | POLLWRNORM."""
    lst, port = listener(api)
    assert poll_one(api, lst, C.POLLIN, 0) == 0
    client = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    _nonblocking(api, client)
    ptr, n = sockaddr(api, "127.0.0.1", port)
    assert api.connect(client, ptr, n) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEWOULDBLOCK
    assert poll_one(api, lst, C.POLLIN, 1000) == C.POLLRDNORM
    assert poll_one(api, lst, C.POLLIN, 0) == C.POLLRDNORM
    assert poll_one(api, lst, C.POLLRDBAND | C.POLLWRNORM, 0) == 0
    _nonblocking(api, lst)
    assert api.accept(lst, 0, 0) != C.INVALID_SOCKET
    assert poll_one(api, lst, REQ, 0) == 0


def test_listener_reports_until_every_connection_is_accepted(api):
    """The page: POLLRDNORM on a listening socket means accept will not block; with two connections
    pending it stays set after the first accept and clears after the second (Wine test_WSAPoll:
    nothing without a pending connection)."""
    lst, port = listener(api)
    ptr, n = sockaddr(api, "127.0.0.1", port)
    for _ in range(2):
        client = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
        assert api.connect(client, ptr, n) == 0, api.WSAGetLastError()
    assert poll_one(api, lst, REQ, 1000) == C.POLLRDNORM
    _nonblocking(api, lst)
    assert api.accept(lst, 0, 0) != C.INVALID_SOCKET
    assert poll_one(api, lst, REQ, 1000) == C.POLLRDNORM
    assert api.accept(lst, 0, 0) != C.INVALID_SOCKET
    assert poll_one(api, lst, REQ, 0) == 0


# --- connected TCP -----------------------------------------------------------------------------------

def test_connected_sockets_are_writable(api, pair):
    """The page: the ability to send is POLLWRNORM. Wine test_WSAPoll: listener, server, client
    polled together: 2, with 0, POLLWRNORM, POLLWRNORM."""
    client, server, lst = pair
    assert poll(api, [(lst, REQ), (server, REQ), (client, REQ)]) == (2, 0, [0, C.POLLWRNORM, C.POLLWRNORM])


def test_poll_waits_for_the_peers_data(api, pair):
    """The page: received data is POLLRDNORM; timeout > 0 waits. The data is still on its way when
    the poll starts (on the simulator it arrives on virtual time); the poll returns when it is there."""
    client, server, _ = pair
    _send(api, client, b"1234")
    assert poll_one(api, server, C.POLLRDNORM, 5000) == C.POLLRDNORM
    assert poll_one(api, server, C.POLLRDNORM | C.POLLRDBAND, 0) == C.POLLRDNORM
    assert poll_one(api, server, REQ, 0) == C.POLLRDNORM | C.POLLWRNORM
    assert poll_one(api, client, REQ, 0) == C.POLLWRNORM
    buf = Guarded(api, 16)
    assert api.recv(server, buf.ptr, 16, 0) == 4 and buf.read(4) == b"1234"
    assert poll_one(api, server, REQ, 0) == C.POLLWRNORM


def test_timeout_returns_zero(api, pair):
    """The page: 'zero: no sockets were in the queried state before the timer expired'; the revents
    of the waiting entries are 0."""
    client, server, _ = pair
    assert poll(api, [(server, C.POLLRDNORM), (client, C.POLLRDNORM)], 50) == (0, 0, [0, 0])
    assert poll(api, [(server, C.POLLRDNORM)], 0) == (0, 0, [0])


@pytest.mark.parametrize("timeout", [-1, -1000, -2**31])
def test_negative_timeout_waits_until_ready(api, pair, timeout):
    """The page: 'Less than zero: The wait is indefinite'; any negative value, INT_MIN included. The
    poll returns once the peer's data is there."""
    client, server, _ = pair
    _send(api, client, b"late")
    assert poll_one(api, server, C.POLLRDNORM, timeout) == C.POLLRDNORM


def test_socket_closed_during_poll(api, pair):
    """Wine test_WSAPoll 'closing a socket while selecting on it' (runs on Windows): another thread
    closes the only polled socket; the poll, waiting indefinitely here (a negative timeout), returns 1
    with revents POLLNVAL (the page: POLLNVAL 'the socket ... was closed')."""
    if not hasattr(api, "new_thread"):
        pytest.skip("needs a second thread of the target")
    client, _, _ = pair
    closer, started, result = api.new_thread("closer"), threading.Event(), {}

    def close_soon():
        with api.as_thread(closer):
            api.GetCurrentThreadId()          # this Python thread now takes part (the simulator's waker)
            started.set()
            time.sleep(0.2)                   # ordering only: the poll is waiting by then
            result["close"] = api.closesocket(client)

    t = threading.Thread(target=close_soon)
    t.start()
    started.wait()
    outcome = poll(api, [(client, C.POLLRDNORM | C.POLLRDBAND)], -1)
    t.join(timeout=60)
    assert not t.is_alive() and result == {"close": 0}
    assert outcome == (1, 0, [C.POLLNVAL])


def test_own_shutdown_changes_nothing(api, pair):
    """Wine test_WSAPoll: after the socket's own shutdown(SD_RECEIVE) and shutdown(SD_SEND) it still
    shows POLLWRNORM only (send would fail, but that is not what WSAPoll reports)."""
    client, _, _ = pair
    assert api.shutdown(client, C.SD_RECEIVE) == 0
    assert poll_one(api, client, REQ, 0) == C.POLLWRNORM
    assert api.shutdown(client, C.SD_SEND) == 0
    assert poll_one(api, client, REQ, 0) == C.POLLWRNORM


@pytest.mark.parametrize("how", ["shutdown", "closesocket"])
def test_peer_graceful_close_is_pollhup(api, pair, how):
    """The page: POLLHUP when the peer shuts down sending (a TCP FIN); recv then returns 0 bytes;
    errors are reported unasked. Wine test_WSAPoll: POLLHUP with events 0 (so the poll waits for
    the FIN), POLLWRNORM | POLLHUP with every flag asked: the FIN alone is not POLLRDNORM."""
    client, server, _ = pair
    if how == "shutdown":
        assert api.shutdown(client, C.SD_SEND) == 0
    else:
        assert api.closesocket(client) == 0
    assert poll_one(api, server, 0, 5000) == C.POLLHUP
    assert poll_one(api, server, REQ, 0) == C.POLLWRNORM | C.POLLHUP
    assert api.recv(server, Guarded(api, 4).ptr, 4, 0) == 0


def test_peer_fin_after_data(api, pair):
    """Wine test_WSAPoll 'shutdown with data in the pipe': POLLRDNORM | POLLWRNORM | POLLHUP;
    the data is read first, then recv returns 0."""
    client, server, _ = pair
    _send(api, client, b"data")
    assert api.shutdown(client, C.SD_SEND) == 0
    assert poll_one(api, server, 0, 1000) == C.POLLHUP             # Wine's check_poll waits 1 s too
    assert poll_one(api, server, REQ, 0) == C.POLLRDNORM | C.POLLWRNORM | C.POLLHUP
    buf = Guarded(api, 8)
    assert api.recv(server, buf.ptr, 8, 0) == 4 and buf.read(4) == b"data"
    assert poll_one(api, server, REQ, 0) == C.POLLWRNORM | C.POLLHUP
    assert api.recv(server, buf.ptr, 8, 0) == 0


def test_peer_abort_is_pollhup(api, pair):
    """The page: POLLHUP 'a stream-oriented connection was either disconnected or aborted', reported
    unasked. Whether POLLERR comes with it the page leaves open (Wine's ws2_32 adds it; the
    simulator too). The socket stays writable in the poll's sense (Wine afd.c test_poll: WRITE
    after a reset) and is not POLLRDNORM."""
    client, server, _ = pair
    linger = api.memory.alloc(4)
    api.memory.write(linger, struct.pack("<HH", 1, 0))
    assert api.setsockopt(client, C.SOL_SOCKET, C.SO_LINGER, linger, 4) == 0
    assert api.closesocket(client) == 0
    revents = poll_one(api, server, 0, 5000)
    assert revents & C.POLLHUP and not revents & ~(C.POLLHUP | C.POLLERR)
    revents = poll_one(api, server, REQ, 0)
    assert revents & (C.POLLWRNORM | C.POLLHUP) == C.POLLWRNORM | C.POLLHUP
    assert not revents & ~(C.POLLWRNORM | C.POLLHUP | C.POLLERR)


def test_connect_in_progress_then_writable(api):
    """Wine afd.c test_poll: nothing until the connect completes, then CONNECT and WRITE together:
    POLLWRNORM (a poll for reading alone keeps waiting and times out)."""
    lst, port = listener(api)
    client = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    _nonblocking(api, client)
    ptr, n = sockaddr(api, "127.0.0.1", port)
    assert api.connect(client, ptr, n) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEWOULDBLOCK
    assert poll_one(api, client, REQ, 5000) == C.POLLWRNORM
    assert poll_one(api, client, C.POLLRDNORM, 50) == 0


def test_failed_connect(api):
    """The page (note): 'As of Windows 10 version 2004, when a TCP socket fails to connect,
    (POLLHUP | POLLERR | POLLWRNORM) is indicated' (earlier versions time out). Wine test_WSAPoll
    (todo_wine): so after a refused non-blocking connect (Windows takes over 2 s on loopback), still
    after reading SO_ERROR (WSAECONNREFUSED), and after a refused blocking connect."""
    port = _closed_port(api)
    ptr, n = sockaddr(api, "127.0.0.1", port)
    client = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    _nonblocking(api, client)
    assert api.connect(client, ptr, n) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEWOULDBLOCK
    assert poll_one(api, client, REQ, 10000) == C.POLLWRNORM | C.POLLHUP | C.POLLERR
    err, length = dword(api, 0), dword(api, 4)
    assert api.getsockopt(client, C.SOL_SOCKET, C.SO_ERROR, err.ptr, length.ptr) == 0
    assert err.u32() == C.WSAECONNREFUSED
    assert poll_one(api, client, REQ, 0) == C.POLLWRNORM | C.POLLHUP | C.POLLERR
    assert poll_one(api, client, C.POLLRDNORM, 0) == C.POLLHUP | C.POLLERR   # errors come unasked
    blocking = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    assert api.connect(blocking, ptr, n) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAECONNREFUSED
    assert poll_one(api, blocking, REQ, 0) == C.POLLWRNORM | C.POLLHUP | C.POLLERR


# --- UDP -----------------------------------------------------------------------------------------------

@pytest.mark.udp
def test_udp(api):
    """Wine test_WSAPoll: a UDP socket is POLLWRNORM, bound or not; a queued datagram adds POLLRDNORM
    (the page: data that can be read) on the receiver only."""
    unbound = api.socket(C.AF_INET, C.SOCK_DGRAM, C.IPPROTO_UDP)
    assert poll_one(api, unbound, REQ, 0) == C.POLLWRNORM
    receiver, port = udp_socket(api)
    assert poll_one(api, receiver, REQ, 0) == C.POLLWRNORM
    to, tolen = sockaddr(api, "127.0.0.1", port)
    data = api.memory.alloc(5)
    api.memory.write(data, b"data\0")
    assert api.sendto(unbound, data, 5, 0, to, tolen) == 5
    assert poll_one(api, receiver, C.POLLRDNORM | C.POLLRDBAND, 5000) == C.POLLRDNORM
    assert poll_one(api, receiver, REQ, 0) == C.POLLRDNORM | C.POLLWRNORM
    assert poll_one(api, unbound, REQ, 0) == C.POLLWRNORM


def test_many_entries_at_once(api):
    """The page: the return value counts the entries whose revents is nonzero; 'fds' counts entries,
    not sockets (the same socket twice is two entries)."""
    client, server, lst = tcp_pair(api)
    _send(api, client, b"x")
    assert poll_one(api, server, C.POLLRDNORM, 5000) == C.POLLRDNORM
    rc, err, revents = poll(api, [(lst, C.POLLIN), (server, C.POLLIN), (server, C.POLLOUT), (client, C.POLLIN)])
    assert (rc, err, revents) == (2, 0, [0, C.POLLRDNORM, C.POLLWRNORM, 0])
