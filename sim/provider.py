"""The transport provider's WSPIoctl, and the overlapped plumbing shared by every call.

Under ws2_32 (sim.winsock), as Windows layers them: ws2_32 checks
initialisation, the handle and lpcbBytesReturned, then calls WSPIoctl with
the caller's thread id; the provider validates the OVERLAPPED, runs the
code's handler and indicates completion (sim.overlapped).
"""
from __future__ import annotations

import struct

from harness.winsock import constants as C
from harness.winsock.layouts import WSAOVERLAPPED
from sim import overlapped as ov
from sim import status as st
from sim.wfp import ioctls as wfp_ioctls  # noqa: F401  (registers the WFP handlers)
from sim import interface_ioctls  # noqa: F401  (registers the address and interface IOCTLs)
from sim.errors import WsaError
from sim.ioctl_outcomes import Deferred, Fail, Inline, IoctlCall
from sim.ioctls import HANDLERS, unknown
from sim.decision_points import DECISIONS

# Decision points this module reads (sim/decision_points.py), checked when it is imported.
_BAD_EVENT_FAILS = DECISIONS["bad_event_at_issue"].choice("WSA_INVALID_HANDLE")
_INLINE_SIGNALS = DECISIONS["inline_ioctl_signals_event"].choice("yes")
_ROUTINE_ON_PORT_REFUSED = DECISIONS["routine_on_port_socket"].choice("WSAEINVAL")
_IDEAL_BACKLOG_IGNORES_OVERLAPPED = DECISIONS["ideal_backlog_overlapped"].choice("ignored")


_U32 = struct.Struct("<I")
_HEVENT = WSAOVERLAPPED.offset("hEvent")


def routine_refused(process, sock, lpOverlapped, lpCompletionRoutine) -> bool:
    """Decision point routine_on_port_socket: True (Internal now STATUS_PENDING) when a send or
    receive with a completion routine on a port-bound socket is refused. NT refuses it when the
    request enters the kernel, before the transport looks at flags or socket state, so WSARecv
    and WSASend ask this before their own checks of those."""
    if (not sock.overlapped_attr or not lpOverlapped or not lpCompletionRoutine or sock.port is None
            or process.profile.routine_on_port_socket != _ROUTINE_ON_PORT_REFUSED):
        return False
    if not process.memory.check(lpOverlapped, WSAOVERLAPPED.size, True) or not process.is_routine(lpCompletionRoutine):
        return False                # the ws2_32 checks answer first (WSAEFAULT)
    ov.mark_pending(process, lpOverlapped)      # the provider wrote it before NT refused the APC
    return True


def _fionbio_routine_refused(process, sock, lpCompletionRoutine) -> bool:
    """Decision point routine_on_port_socket, WSAEINVAL: FIONBIO is the IOCTL that reaches the kernel's
    refusal of an APC on a port-bound file (Wine 8.0: the server's create_async), before its handler
    and without writing Internal; the others complete without that check (tests/differential)."""
    return bool(lpCompletionRoutine and sock.port is not None
                and process.profile.routine_on_port_socket == _ROUTINE_ON_PORT_REFUSED)


def start_overlapped(process, sock, thread, lpOverlapped, lpCompletionRoutine, kind):
    """Validate an OVERLAPPED and routine for an overlapped call.

    Returns (IoRequest, 0) or (None, error) for an immediate failure.
    """
    mem = process.memory
    if not mem.check(lpOverlapped, WSAOVERLAPPED.size, True):
        return None, C.WSAEFAULT
    if lpCompletionRoutine:
        if not process.is_routine(lpCompletionRoutine):
            return None, C.WSAEFAULT
        if kind in ("recv", "recvmsg", "send", "sendmsg") and routine_refused(process, sock, lpOverlapped,
                                                                              lpCompletionRoutine):
            return None, C.WSAEINVAL
        event_raw = 0
    else:
        # hEvent (ov.read_event, inline: every overlapped call; readable: checked just above).
        event_raw = int.from_bytes(mem.kread(lpOverlapped + _HEVENT, 8), "little")
        event = event_raw & ~1
        if event and getattr(process.handles.get(event), "kind", "") != "event":
            if process.profile.bad_event_at_issue == _BAD_EVENT_FAILS:
                return None, C.WSA_INVALID_HANDLE
            event_raw = 0
    req = ov.IoRequest(process, sock, thread, lpOverlapped, event_raw, lpCompletionRoutine, kind)
    if event_raw & ~1:
        # The initiating call resets the event (wsagetoverlappedresult.md).
        process.handles[event_raw & ~1].signalled = False
    sock.file_signalled = False
    return req, 0


def wsp_ioctl(process, thread, sock, code, lpvInBuffer, cbInBuffer, lpvOutBuffer, cbOutBuffer,
              lpcbBytesReturned, lpOverlapped, lpCompletionRoutine):
    """Returns (return value, error); the caller stores the error.

    lpcbBytesReturned 0: the caller (ioctlsocket) does not want the count; WSAIoctl has
    refused a NULL one before this runs."""
    mem = process.memory
    is_overlapped = bool(sock.overlapped_attr and lpOverlapped)
    if code == C.SIO_IDEAL_SEND_BACKLOG_QUERY and \
            process.profile.ideal_backlog_overlapped == _IDEAL_BACKLOG_IGNORES_OVERLAPPED:
        is_overlapped = False           # decision point ideal_backlog_overlapped
    fn = HANDLERS.get(code, unknown)
    req = None
    if is_overlapped:
        req, err = start_overlapped(process, sock, thread, lpOverlapped, lpCompletionRoutine, "ioctl")
        if req is None:
            return -1, err
        if code == C.FIONBIO and _fionbio_routine_refused(process, sock, lpCompletionRoutine):
            return -1, C.WSAEINVAL
        if fn.layer == "afd":
            ov.mark_pending(process, lpOverlapped)
    call = IoctlCall(process, sock, thread, code, lpvInBuffer, cbInBuffer, lpvOutBuffer, cbOutBuffer,
                     lpcbBytesReturned, lpOverlapped, lpCompletionRoutine, is_overlapped)
    outcome = fn(call)
    kind = type(outcome)
    if kind is Inline:
        if outcome.write is not None:
            outcome.write()
        if outcome.bytes_returned is not None and lpcbBytesReturned:
            mem.kwrite(lpcbBytesReturned, _U32.pack(outcome.bytes_returned))
        if req is not None:
            signal = process.profile.inline_ioctl_signals_event == _INLINE_SIGNALS
            if not signal:
                req.event_raw &= 1
            ov.complete(req, C.STATUS_SUCCESS, outcome.completion_bytes, synchronous=True)
        return 0, 0
    if kind is Fail:
        if outcome.bytes_returned is not None and lpcbBytesReturned:
            mem.kwrite(lpcbBytesReturned, _U32.pack(outcome.bytes_returned))
        return -1, outcome.error
    if kind is Deferred:
        return _deferred(process, thread, sock, req, outcome, lpcbBytesReturned)
    raise TypeError(f"IOCTL handler for 0x{code:08X} returned {outcome!r}")


def _deferred(process, thread, sock, req, outcome: Deferred, lpcbBytesReturned):
    kernel = process.kernel
    if req is not None:
        sock.pending.append(req)

        def fire():
            if not req.done:
                status, info = outcome.finish()
                ov.complete(req, status, info)

        timer = kernel.scheduler.call_later(outcome.delay_ns, fire, "ioctl-complete")
        req.on_cancel = timer.cancel
        return -1, C.WSA_IO_PENDING
    # Synchronous: the call blocks until the simulated kernel answers.
    box = []
    timer = kernel.scheduler.call_later(outcome.delay_ns, lambda: box.append(outcome.finish()),
                                        "ioctl-complete")
    try:
        sock.block(thread, lambda: box[0] if box else None, "WSAIoctl")
    except WsaError as exc:
        timer.cancel()          # interrupted (WSAEINTR): the kernel never answers this call
        return -1, exc.code
    status, info = box[0]
    if not st.nt_success(status):
        return -1, st.to_winsock(status)
    if lpcbBytesReturned:
        process.memory.kwrite(lpcbBytesReturned, _U32.pack(info))
    return 0, 0
