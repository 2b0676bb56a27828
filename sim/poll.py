"""WSAPoll: which revents each socket shows, and the checks on the WSAPOLLFD array.

Sources, cited at each rule below:

* the page: learn.microsoft.com "WSAPoll function (winsock2.h)" and
  "WSAPOLLFD structure (winsock2.h)";
* Wine: dlls/ws2_32/tests/sock.c `test_WSAPoll` and dlls/ws2_32/tests/afd.c
  `test_poll`, which run on real Windows (a `todo_wine` line is one Windows
  passes and Wine does not), and Wine's own ws2_32 WSAPoll where Windows was
  not observed (called "Wine's reading");
* assumed: where neither says, with the reason.

Where the page and observed Windows disagree the profile decides
(`poll_no_valid_socket`, `poll_nval_counted`; sim/decision_points.py).

Readiness is computed from the socket's state without changing it: polling
never settles a connect, consumes data or clears an error.
"""
from __future__ import annotations

import struct

from harness.winsock import constants as C
from harness.winsock.layouts import WSAPOLLFD
from sim.kernel import INFINITE
from sim.decision_points import DECISIONS

# Decision points this module reads (sim/decision_points.py), checked when it is imported.
_NO_VALID_SOCKET_ERROR = {DECISIONS["poll_no_valid_socket"].choice("WSAEINVAL"): C.WSAEINVAL,
                          DECISIONS["poll_no_valid_socket"].choice("WSAENOTSOCK"): C.WSAENOTSOCK}
_NVAL_COUNTED = DECISIONS["poll_nval_counted"].choice("counted")


# The page: "A combination of the following flags can be set ... POLLPRI, POLLRDBAND,
# POLLRDNORM, POLLWRNORM"; POLLPRI "is not supported by the Microsoft Winsock provider",
# and "any other values are considered errors": SOCKET_ERROR with WSAEINVAL. Wine
# test_WSAPoll (todo_wine, so Windows): POLLERR, POLLHUP, POLLNVAL, POLLWRBAND, POLLPRI
# and every undefined bit each fail with WSAEINVAL.
REQUEST_FLAGS = C.POLLRDNORM | C.POLLRDBAND | C.POLLWRNORM
# The page: "Error conditions are always returned, so information on them need not be
# requested"; revents is the state masked by `events | POLLHUP | POLLERR | POLLNVAL`
# (Wine's reading, and what Wine test_WSAPoll sees on Windows: a peer's FIN shows
# POLLHUP with events 0).
ALWAYS_REPORTED = C.POLLERR | C.POLLHUP | C.POLLNVAL
# The page (note): "As of Windows 10 version 2004, when a TCP socket fails to connect,
# (POLLHUP | POLLERR | POLLWRNORM) is indicated." Older versions report nothing and
# the poll times out (Wine test_WSAPoll: "times out on versions older than w10pro64");
# the simulator models the current behaviour.
CONNECT_FAILED = C.POLLHUP | C.POLLERR | C.POLLWRNORM

ENTRY = struct.Struct("<Qh6x")                     # WSAPOLLFD.fd, WSAPOLLFD.events, revents + padding
pack_revents = struct.Struct("<h").pack_into
REVENTS_OFFSET = WSAPOLLFD.offset("revents")
assert (WSAPOLLFD.offset("events"), REVENTS_OFFSET, ENTRY.size) == (8, 10, WSAPOLLFD.size)


def readiness(sock) -> int:
    """Every POLL* result flag that holds for `sock` now, before masking by the request."""
    if sock.state == "closed":
        # The page: POLLNVAL "when the local socket is closed"; Wine test_WSAPoll: a socket
        # closed by another thread during the poll ends it with POLLNVAL, counted.
        return C.POLLNVAL
    if sock.is_tcp:
        return _stream(sock) if sock.state != "connected" else _connected(sock.conn)
    # UDP (and raw): Wine test_WSAPoll and afd.c test_poll: POLLWRNORM bound or not.
    flags = C.POLLWRNORM
    ep = sock.udp
    if ep is not None and (ep.queue or ep.pending_reset):
        # The page: data that can be read is POLLRDNORM (Wine: a queued datagram). A pending
        # ICMP port unreachable makes the next receive fail at once with WSAECONNRESET:
        # POLLRDNORM too (the page: after POLLRDNORM "a subsequent recv ... is guaranteed to
        # complete without blocking"; support.microsoft.com KB 263823: select reports such a
        # socket readable). Assumed for WSAPoll, not observed.
        flags |= C.POLLRDNORM
    return flags


def _stream(sock) -> int:
    state = sock.state
    if state == "listening":
        # The page: a pending connection on a listening socket is POLLRDNORM ("a subsequent
        # call to accept is guaranteed to complete without blocking"). Wine test_WSAPoll:
        # nothing else, and nothing at all without a pending connection.
        return C.POLLRDNORM if sock.listener.queue else 0
    conn = sock.conn
    if state == "connecting":
        # Wine afd.c test_poll: no event until the connect completes, then CONNECT|WRITE
        # together (POLLWRNORM). Read from the transport without settling the socket.
        if conn is None or conn.state == "SYN_SENT":
            return 0
        if conn.state != "ESTABLISHED" and not conn.peer_fin:
            return CONNECT_FAILED
    elif state == "failed":
        # Failed connects, asynchronous or not, and a connect a callout refused: Wine
        # test_WSAPoll (todo_wine) shows POLLWRNORM|POLLHUP|POLLERR for both, also after
        # SO_ERROR was read (so this keys on the state, not on so_error).
        return CONNECT_FAILED
    elif state != "connected":
        # New or bound, never connected: Wine afd.c test_poll (an IOCTL_AFD_POLL for every
        # flag on such a socket pends until connect), so no event.
        return 0
    return _connected(conn)


def _connected(conn) -> int:
    """A connected stream socket's flags (readiness calls this directly: most polled sockets are)."""
    # Connected. Writable: the simulator has no flow control, so a send never blocks
    # (Wine afd.c test_poll shows WRITE on connected sockets until the send buffer
    # fills). Our own shutdown changes nothing: Wine test_WSAPoll, after
    # shutdown(SD_RECEIVE) and shutdown(SD_SEND) the socket still shows POLLWRNORM only.
    flags = C.POLLWRNORM
    if conn.rx:
        flags |= C.POLLRDNORM          # the page: data received that can be read
    if conn.peer_fin:
        # The page: POLLHUP "when a remote peer shuts down a send operation (a TCP FIN was
        # received). A subsequent recv function request will return zero bytes." Wine
        # test_WSAPoll: POLLWRNORM|POLLHUP after the peer's shutdown(SD_SEND) or
        # closesocket, POLLWRNORM|POLLRDNORM|POLLHUP with data still unread: the FIN
        # alone is not POLLRDNORM.
        flags |= C.POLLHUP
    if conn.reset or conn.state == "CLOSED":
        # The page: POLLHUP "a stream-oriented connection was either disconnected or
        # aborted", POLLERR "an error has occurred". Wine afd.c test_poll: after a RST the
        # socket shows AFD_POLL_RESET with WRITE still set; Wine's reading maps RESET to
        # POLLHUP|POLLERR (assumed for Windows' ws2_32: that mapping is not observed).
        flags |= C.POLLHUP | C.POLLERR
    return flags


def wsapoll(api, thread, fdArray: int, fds: int, timeout: int) -> int:
    """The body of SimulatedWinsock.WSAPoll, under the world lock on `thread`, after ws2_32's checks.

    Order of checks (startup first, as every ws2_32 call, in sim.c_entry; the rest from Wine
    test_WSAPoll on Windows): fds == 0, then the array, then the entries (no
    valid socket, then request flags), then the network.
    """
    process, mem = api.process, api.memory
    if fds == 0:
        # Wine test_WSAPoll: WSAPoll(NULL, 0, 0) and (NULL, 0, 1) fail with WSAEINVAL; the
        # page: "the array must contain at least one structure" (assumed the same for a
        # non-NULL array: Wine's reading checks the count first).
        return api._err(thread, C.WSAEINVAL)
    size = fds * WSAPOLLFD.size
    if not fdArray or not mem.check(fdArray, size, True):
        # Wine test_WSAPoll: a NULL array with fds > 0 is WSAEFAULT; the page: WSAEFAULT "an
        # exception occurred while reading user input parameters". An array that is
        # readable but not writable is refused the same way before anything is written
        # (assumed: writing revents would fault; the simulator writes nothing on failure).
        return api._err(thread, C.WSAEFAULT)
    raw = mem.kread(fdArray, size)
    entries = []                      # (index, events, socket)
    nval = []                         # indexes whose fd is negative or not a socket
    bad_flags = False
    sockets = process.sockets
    for i, (fd, events) in enumerate(ENTRY.iter_unpack(raw)):
        if fd >> 63:
            # The page: "Members of fdarray which have their fd member set to a negative
            # value are ignored and their revents will be set to POLLNVAL upon return"
            # (older versions of the page said "cleared"); Wine test_WSAPoll agrees with
            # the current text, and ignores even invalid request flags there.
            nval.append(i)
            continue
        events &= 0xFFFF
        if events & ~REQUEST_FLAGS:
            bad_flags = True          # Wine test_WSAPoll: checked for non-sockets too
        sock = sockets.get(fd)
        if sock is None:
            nval.append(i)            # Wine test_WSAPoll: POLLNVAL for a handle that is no socket
            continue
        entries.append((i, events | ALWAYS_REPORTED, sock))
    # revents are written into a copy of the caller's array, stored back in one write: the
    # other bytes are the caller's own, unchanged (nothing outside the array is touched).
    out = bytearray(raw)

    def store(index: int, value: int) -> None:
        pack_revents(out, index * WSAPOLLFD.size + REVENTS_OFFSET, value)

    if not entries:
        # The page: WSAEINVAL "if none of the sockets specified in the fd member ... were
        # valid"; Wine test_WSAPoll on Windows: WSAENOTSOCK, every revents POLLNVAL.
        for i in nval:
            store(i, C.POLLNVAL)
        mem.kwrite(fdArray, out)
        return api._err(thread, _NO_VALID_SOCKET_ERROR[process.profile.poll_no_valid_socket])
    if bad_flags:
        # The page and Wine test_WSAPoll (above); on Windows every revents reads 0 after
        # this failure, the non-socket's included.
        for i in range(fds):
            store(i, 0)
        mem.kwrite(fdArray, out)
        return api._err(thread, C.WSAEINVAL)
    if not process.host.up:
        return api._err(thread, C.WSAENETDOWN)            # the page (assumed position)

    def ready():
        for _, mask, sock in entries:         # a loop, not any(generator): no frame per socket
            if readiness(sock) & mask:
                return True
        return None

    if timeout != 0:
        # The page: timeout > 0 waits that many milliseconds, < 0 indefinitely, 0 returns at
        # once. Virtual time advances while waiting; a wait nothing can end raises
        # SimulationDeadlock. The page's note says Winsock waits alertably here (APCs run
        # and the poll goes on; Wine test_WSAPoll shows it): not modelled, the simulator
        # runs completion routines only in the explicitly alertable waits (README).
        api.kernel.wait(thread, ready, INFINITE if timeout < 0 else timeout, False, "WSAPoll")
    count = 0
    size = WSAPOLLFD.size
    for i, mask, sock in entries:
        value = readiness(sock) & mask        # the request plus what is always reported
        pack_revents(out, i * size + REVENTS_OFFSET, value)     # store(), inline: once per socket per poll
        count += bool(value)
    for i in nval:
        store(i, C.POLLNVAL)
    if process.profile.poll_nval_counted == _NVAL_COUNTED:
        count += len(nval)     # the page's return value: "the number of elements ... revents nonzero"
    mem.kwrite(fdArray, out)
    return api._ok(thread, count)
