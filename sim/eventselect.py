"""Network events: the record every socket keeps, WSAEventSelect and WSAEnumNetworkEvents.

Sources: learn.microsoft.com "WSAEventSelect function" and "WSAEnumNetworkEvents
function" (winsock2.h); Wine dlls/ws2_32/tests/sock.c test_events (its helpers
test_accept_events, test_connect_events, test_write_events, test_read_events and
test_close_events), test_WSAEnumNetworkEvents and test_fionbio, which run on real
Windows (an ok() outside todo_wine is Windows behaviour; a todo_wine line is one
Windows passes and Wine does not).

The model, per socket (attributes `ev_*` of sim.socket.Socket):

* an event is *recorded* when it happens, selected or not (Wine test_close_events
  "Close and then select", test_accept_events "Connect and then select": an event that
  happened before any WSAEventSelect is reported once one selects it); recording sets it
  in `ev_pending` and `ev_reported`;
* a recorded event is not recorded again until its re-enabling function runs (the
  WSAEventSelect page's table: recv/recvfrom/WSARecv for FD_READ, accept/AcceptEx for
  FD_ACCEPT); FD_CONNECT, FD_WRITE and FD_CLOSE happen once (the simulator has no flow
  control, so FD_WRITE never re-arms after a full send buffer);
* WSAEventSelect re-enables every event but records nothing by itself (test_write_events,
  test_read_events: after re-selecting, nothing that was already enumerated comes back),
  and signals the event when a pending event is selected (test_accept_events, "select on
  a subset containing FD_ACCEPT first"). An FD_READ or FD_ACCEPT that still holds when it
  is re-enabled this way is *armed*: it is recorded again at the next arrival of data or
  of a connection, and at nothing else (Wine test_read_events and test_accept_events, in
  event mode: after a repeated WSAEventSelect, nothing is reported until more data or a new
  connection arrives, and then FD_READ or FD_ACCEPT is, check_events_todo: Windows does, Wine
  8.0 not); an arrival is the readable amount growing past what it was when armed;
* WSAEnumNetworkEvents reports `ev_pending & ev_mask`, forgets those (only those: Wine
  test_read_events, events not selected stay pending) and resets the event.

Readiness is read from the transport without changing it, as sim.poll does. An
overlapped receive that takes arriving data before the record is refreshed leaves no
FD_READ behind (Wine test_read_events: data for a pending WSARecv is not an event).
"""
from __future__ import annotations

import struct

from harness.winsock import constants as C
from harness.winsock.layouts import WSANETWORKEVENTS

# Events that happen once per socket (FD_CONNECT once per connect: begin_connect re-arms it).
ONCE = C.FD_CONNECT | C.FD_WRITE | C.FD_CLOSE
_BITS = [(1 << i, i) for i in range(C.FD_MAX_EVENTS)]


def _state(sock):
    """(events that hold now, {bit: error}) from the socket's state, without changing it."""
    if sock.state == "closed":
        return 0, None
    if sock.is_tcp:
        state = sock.state
        if state == "listening":
            return (C.FD_ACCEPT if sock.listener.queue else 0), None
        if state == "failed":
            # A connect that failed, refused by the peer or a callout: FD_CONNECT with the error.
            return C.FD_CONNECT, {C.FD_CONNECT_BIT: sock.so_error or C.WSAECONNREFUSED}
        conn = sock.conn
        if conn is None:
            return 0, None
        if state == "connecting":
            if conn.state == "SYN_SENT":
                return 0, None
            if conn.state != "ESTABLISHED" and not conn.peer_fin:
                return C.FD_CONNECT, {C.FD_CONNECT_BIT: conn.error or C.WSAECONNREFUSED}
        elif state != "connected":
            return 0, None
        # Connected: FD_WRITE at once; FD_CONNECT only for the side that connected (Wine
        # test_connect_events: the accepted socket reports FD_WRITE alone).
        events = C.FD_WRITE | (C.FD_CONNECT if conn.listener is None else 0)
        errors = None
        if conn.rx:
            events |= C.FD_READ
        if conn.reset or (conn.state == "CLOSED" and not conn.peer_fin):
            # Wine test_close_events "Trigger RST": FD_CLOSE with WSAECONNABORTED.
            events |= C.FD_CLOSE
            errors = {C.FD_CLOSE_BIT: C.WSAECONNABORTED}
        elif conn.peer_fin:
            events |= C.FD_CLOSE          # Wine test_close_events: the peer's close or SD_SEND
        return events, errors
    # UDP: FD_WRITE once bound (Wine test_WSAEnumNetworkEvents: a bound UDP socket reports
    # FD_WRITE, once); FD_CONNECT after connect (Wine test_connect_events, todo_wine: Windows
    # reports FD_CONNECT | FD_WRITE on a UDP socket's connect). A pending ICMP port unreachable
    # is FD_READ, as it makes select report the socket readable (support.microsoft.com KB 263823).
    ep = sock.udp
    if ep is None:
        return 0, None
    events = C.FD_WRITE | (C.FD_CONNECT if sock.peer is not None else 0)
    if ep.queue or ep.pending_reset:
        events |= C.FD_READ
    return events, None


# Events a repeated WSAEventSelect arms while they hold (the rest are re-enabled outright).
ARMABLE = (C.FD_READ, C.FD_ACCEPT)


def _amount(sock, bit: int) -> int:
    """How much of an armable event is there: bytes or datagrams to read, connections to accept."""
    if bit == C.FD_ACCEPT:
        lst = sock.listener
        return len(lst.queue) if lst is not None and sock.state == "listening" else 0
    if sock.is_tcp:
        return len(sock.conn.rx) if sock.conn is not None else 0
    ep = sock.udp
    return len(ep.queue) + ep.pending_reset if ep is not None else 0


def _arrivals(sock) -> None:
    """Fire the armed events whose amount grew: new data or a new connection arrived."""
    armed = sock.ev_armed
    for bit in list(armed):
        now = _amount(sock, bit)
        if now > armed[bit]:
            del armed[bit]
            sock.ev_reported &= ~bit        # re-enabled: the arrival records it
        else:
            armed[bit] = now                # a pending receive took some: count from here
    if not armed:
        sock.ev_armed = None


def refresh(sock) -> None:
    """Record what the socket's state shows that is not recorded yet; signal if selected."""
    if sock.ev_armed:
        _arrivals(sock)
    events, errors = _state(sock)
    new = events & ~sock.ev_reported & ~(sock.ev_once & ONCE)
    if not new:
        return
    sock.ev_pending |= new
    sock.ev_reported |= new
    sock.ev_once |= new & ONCE
    if errors is None and not sock.ev_errors:
        _signal(sock)                   # no error to store or forget (most sockets, most events)
        return
    for bit, index in _BITS:
        if new & bit:
            # Only errors not 0 are stored (most sockets never have one: no dict for them).
            err = errors.get(index, 0) if errors else 0
            if err:
                if sock.ev_errors is None:
                    sock.ev_errors = {}
                sock.ev_errors[index] = err
            elif sock.ev_errors:
                sock.ev_errors.pop(index, None)
    _signal(sock)


def reenable(sock, events: int) -> None:
    """A re-enabling function ran (recv for FD_READ, accept for FD_ACCEPT, connect for
    FD_CONNECT): forget the event, then record it again if it still holds."""
    sock.ev_reported &= ~events
    sock.ev_pending &= ~events
    if sock.ev_armed:
        for bit in list(sock.ev_armed):
            if bit & events:
                del sock.ev_armed[bit]
    sock.ev_once &= ~(events & ONCE)
    refresh(sock)


def _signal(sock) -> None:
    if sock.ev_pending & sock.ev_mask and sock.ev_event:
        event = sock.process.handles.get(sock.ev_event)
        if getattr(event, "kind", "") == "event":
            event.signalled = True
            sock.kernel.poke()


def inherit(new, listener) -> None:
    """The WSAEventSelect page: a socket accept() returns has the listening socket's
    selection (same events, same event object), and so is non-blocking too."""
    if listener.ev_mask:
        new.ev_mask, new.ev_event = listener.ev_mask, listener.ev_event
        new.nonblocking = True
        _signal(new)              # what adopt() recorded (FD_WRITE, data already there)


def event_select(api, thread, sock, hEventObject: int, lNetworkEvents: int) -> int:
    """The body of WSAEventSelect, after ws2_32's checks.

    The page: the socket becomes non-blocking "regardless of the value of
    lNetworkEvents", and a second call cancels the first. Assumed where the page is
    silent: a non-NULL hEventObject that is not an event handle is WSAEINVAL (the page's
    "one of the specified parameters was invalid"); bits outside FD_ALL_EVENTS are ignored.
    """
    if hEventObject and getattr(api.process.handles.get(hEventObject), "kind", "") != "event":
        return api._err(thread, C.WSAEINVAL)
    if not api.process.host.up:
        return api._err(thread, C.WSAENETDOWN)
    sock.nonblocking = True
    sock.ev_mask = lNetworkEvents & C.FD_ALL_EVENTS
    sock.ev_event = hEventObject
    # Re-enable all but the once-only events; one that still holds waits for its next arrival.
    held, _ = _state(sock)
    armed = {bit: _amount(sock, bit) for bit in ARMABLE if held & sock.ev_reported & bit}
    sock.ev_armed = armed or None
    sock.ev_reported &= sock.ev_once | sum(armed)
    _signal(sock)
    return api._ok(thread)


def enum_network_events(api, thread, sock, hEventObject: int, lpNetworkEvents: int) -> int:
    """The body of WSAEnumNetworkEvents, after ws2_32's checks.

    The page: reports the selected events recorded since the last call, with an error
    code per event; resets hEventObject when given. Wine test_WSAEnumNetworkEvents (on
    Windows): iErrorCode entries of events not reported are left untouched; a NULL
    hEventObject is accepted. Assumed: an unwritable lpNetworkEvents is WSAEFAULT and a
    non-NULL hEventObject that is not an event is WSAEINVAL, both before anything changes.
    """
    mem = api.memory
    if not lpNetworkEvents or not mem.check(lpNetworkEvents, WSANETWORKEVENTS.size, True):
        return api._err(thread, C.WSAEFAULT)
    event = api.process.handles.get(hEventObject) if hEventObject else None
    if hEventObject and getattr(event, "kind", "") != "event":
        return api._err(thread, C.WSAEINVAL)
    reported = sock.ev_pending & sock.ev_mask
    sock.ev_pending &= ~reported
    raw = bytearray(mem.kread(lpNetworkEvents, WSANETWORKEVENTS.size))
    struct.pack_into("<i", raw, 0, reported)
    base = WSANETWORKEVENTS.offset("iErrorCode")
    for bit, index in _BITS:
        if reported & bit:
            struct.pack_into("<i", raw, base + 4 * index, sock.ev_errors.get(index, 0) if sock.ev_errors else 0)
    mem.kwrite(lpNetworkEvents, bytes(raw))
    if event is not None:
        event.signalled = False
    return api._ok(thread)
