"""select: which sockets of three fd_sets are readable, writable or exceptional.

Sources, cited at each rule: learn.microsoft.com "select function (winsock2.h)" and
"fd_set structure"; Wine dlls/ws2_32/tests/sock.c test_select and test_tcp_reset,
which run on real Windows (an ok() outside todo_wine is Windows behaviour); support.
microsoft.com KB 263823 for a UDP socket with a pending ICMP port unreachable;
assumed where none says, with the reason.

Readiness is read from the socket's state without changing it, as sim.poll does.
"""
from __future__ import annotations

import struct

from harness.winsock import constants as C
from harness.winsock.layouts import FD_ARRAY_OFFSET, TIMEVAL
from sim.kernel import INFINITE

_U32 = struct.Struct("<I")


def ready(sock) -> tuple:
    """(readable, writable, exceptional) for `sock` now (the select page's three lists)."""
    if sock.state == "closed":
        # Closed by another thread during the wait: Wine test_select (bug 38399) sees the
        # socket readable when it is in readfds.
        return True, False, False
    if sock.is_tcp:
        state = sock.state
        if state == "listening":
            return bool(sock.listener.queue), False, False     # the page: "connection is pending"
        if state == "failed":
            return False, False, True      # the page, exceptfds: "connection attempt failed"
        conn = sock.conn
        if state == "connecting":
            if conn is None or conn.state == "SYN_SENT":
                return False, False, False
            if conn.state != "ESTABLISHED" and not conn.peer_fin:
                return False, False, True
        elif state != "connected":
            return False, False, False     # Wine test_select: an unconnected socket is in no set
        # Connected: writable (no flow control); readable with data, after the peer's FIN
        # ("connection has been closed/reset/terminated") or a reset (Wine test_tcp_reset:
        # readable and writable, not exceptional).
        readable = bool(conn.rx) or conn.peer_fin or conn.reset or conn.state == "CLOSED"
        return readable, True, False
    # UDP: writable bound or not (Wine test_select: an unbound UDP socket is writable);
    # readable with a datagram or a pending ICMP port unreachable (KB 263823).
    ep = sock.udp
    return ep is not None and bool(ep.queue or ep.pending_reset), True, False


def _read_set(mem, ptr):
    """The SOCKETs of the fd_set at `ptr`, or None if it is not readable and writable."""
    head = mem.kread(ptr, 4)
    if head is None:
        return None
    count = _U32.unpack(head)[0]
    size = FD_ARRAY_OFFSET + 8 * count
    if not mem.check(ptr, size, True):
        return None
    return list(struct.unpack_from(f"<{count}Q", mem.kread(ptr + FD_ARRAY_OFFSET, 8 * count) or b""))


def wsselect(api, thread, readfds: int, writefds: int, exceptfds: int, timeout: int) -> int:
    """The body of SimulatedWinsock.select, after ws2_32's checks (nfds is ignored: the page)."""
    process, mem = api.process, api.memory
    sets = []                             # (role index, pointer, [SOCKET, ...])
    for role, ptr in enumerate((readfds, writefds, exceptfds)):
        if not ptr:
            continue
        handles = _read_set(mem, ptr)
        if handles is None:
            # The page: WSAEFAULT when a set or the timeval "are not part of the user address
            # space". Only fd_count entries are read (Wine test_select: a set whose second
            # entry lies on a no-access page works with fd_count 1); they must be writable too.
            return api._err(thread, C.WSAEFAULT)
        sets.append((role, ptr, handles))
    if not any(handles for _, _, handles in sets):
        # The page: WSAEINVAL when "all three descriptor parameters were null"; Wine test_select:
        # three empty sets too.
        return api._err(thread, C.WSAEINVAL)
    sockets = process.sockets
    entries = []                          # (role, pointer, SOCKET, socket)
    for role, ptr, handles in sets:
        for h in handles:
            sock = sockets.get(h)
            if sock is None:
                # Wine test_select: INVALID_SOCKET or a closed socket in any set is WSAENOTSOCK,
                # and the sets are left as they were.
                return api._err(thread, C.WSAENOTSOCK)
            entries.append((role, ptr, h, sock))
    wait_ms = INFINITE
    if timeout:
        raw = mem.kread(timeout, TIMEVAL.size)
        if raw is None:
            return api._err(thread, C.WSAEFAULT)
        sec, usec = struct.unpack("<ii", raw)
        if sec < 0 or usec < 0:
            return api._err(thread, C.WSAEINVAL)    # the page: "The time-out value is not valid" (assumed: negative)
        wait_ms = min(sec * 1000 + usec // 1000, INFINITE - 1)
    if not process.host.up:
        return api._err(thread, C.WSAENETDOWN)

    def any_ready():
        for role, _, _, sock in entries:
            if ready(sock)[role] or sock.state == "closed":
                return True
        return None

    if wait_ms != 0:
        # Not modelled: Windows waits alertably here (Wine test_select: a queued APC runs
        # during a select that times out), as for WSAPoll (sim/poll.py).
        api.kernel.wait(thread, any_ready, wait_ms, False, "select")
    if any(sock.state == "closed" and not any(r == 0 and s is sock for r, _, _, s in entries)
           for _, _, _, sock in entries):
        # Wine test_select: a socket closed during the wait that is in no readfds ends the
        # select with WSAENOTSOCK, the sets as they were.
        return api._err(thread, C.WSAENOTSOCK)
    # Results go to each distinct pointer once: a set passed as two arguments is one output
    # (Wine test_select "overlapping fd_set pointers": the same readfds as writefds counts a
    # socket once), and a socket listed twice appears once (fd_count shrinks, the entries
    # past it are left as they were).
    out: dict[int, list] = {ptr: [] for _, ptr, _ in sets}
    count = 0
    for role, ptr, h, sock in entries:
        if ready(sock)[role] and h not in out[ptr]:
            out[ptr].append(h)
            count += 1
    for ptr, handles in out.items():
        mem.kwrite(ptr, _U32.pack(len(handles)))
        if handles:
            mem.kwrite(ptr + FD_ARRAY_OFFSET, struct.pack(f"<{len(handles)}Q", *handles))
    return api._ok(thread, count)
