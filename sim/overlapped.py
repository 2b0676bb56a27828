"""Overlapped requests and how their completion is indicated.

One function, `complete`, delivers every completion, so each operation
completes exactly once and through exactly the mechanisms the documentation
names (summary-of-overlapped-completion-indication-mechanisms-in-the-spi-2.md):

| lpOverlapped | hEvent   | routine | indication                                  |
|--------------|----------|---------|---------------------------------------------|
| non-NULL     | NULL     | NULL    | completion port if associated, else none    |
| non-NULL     | event    | NULL    | event set (and port packet unless hEvent&1) |
| non-NULL     | ignored  | routine | APC queued to the issuing thread            |

Internal and InternalHigh of the caller's WSAOVERLAPPED receive the
NTSTATUS and the byte count, as on Windows (docs/windows-observed.md items 13, 47, 53).
"""
from __future__ import annotations

import struct

from harness.winsock import constants as C
from harness.winsock.layouts import WSAOVERLAPPED
from sim import status as st
from sim.kernel import CompletionPacket
from sim.decision_points import DECISIONS

# Decision points this module reads (sim/decision_points.py), checked when it is imported.
_ROUTINE_AND_PACKET = DECISIONS["routine_and_port"].choice("both")
_PACKET_NAMES_ROUTINE = DECISIONS["routine_and_port"].choice("both_packet_names_routine")


_INTERNAL = WSAOVERLAPPED.offset("Internal")
_HEVENT = WSAOVERLAPPED.offset("hEvent")
_PENDING = struct.pack("<Q", C.STATUS_PENDING)
_STATUS_AND_BYTES = struct.Struct("<QQ")


class IoRequest:
    __slots__ = ("process", "socket", "thread", "overlapped", "event_raw", "routine", "kind",
                 "done", "on_cancel", "start", "take")

    def __init__(self, process, socket, thread, overlapped, event_raw, routine, kind):
        self.process = process
        self.socket = socket
        self.thread = thread
        self.overlapped = overlapped
        self.event_raw = event_raw
        self.routine = routine
        self.kind = kind            # 'ioctl', 'recv', 'send', 'recvmsg', ...
        self.done = False
        self.on_cancel = None       # called before a cancellation completes the request
        self.start = None
        self.take = None            # for start_take: what the request waits for

    def __repr__(self) -> str:
        return f"<IoRequest {self.kind} ovl=0x{self.overlapped:x} done={self.done}>"


def read_event(process, overlapped: int) -> int:
    data = process.memory.kread(overlapped + _HEVENT, 8)
    return int.from_bytes(data, "little") if data else 0


def mark_pending(process, overlapped: int) -> None:
    """Internal = STATUS_PENDING, written when a request enters the kernel (items 10, 49)."""
    process.memory.kwrite(overlapped + _INTERNAL, _PENDING)


def complete(req: IoRequest, status: int, information: int, flags: int = 0,
             synchronous: bool = False) -> None:
    """Deliver the completion of `req` through its mechanisms, exactly once."""
    if req.done:
        raise AssertionError(f"{req!r} completed twice")   # a simulator bug, never user input
    req.done = True
    req.start = req.on_cancel = req.take = None    # done with them: they may close over the request
    process = req.process
    kernel = process.kernel
    sock = req.socket
    if sock is not None and req in sock.pending:    # not when completed at issue: never pending
        sock.pending.remove(req)
    mem = process.memory
    if not mem.kwrite(req.overlapped + _INTERNAL, _STATUS_AND_BYTES.pack(status, information)):
        # Windows would write into whatever is there now; we record the bug instead.
        kernel.note("overlapped-unwritable",
                    f"pid {process.pid}: WSAOVERLAPPED at 0x{req.overlapped:x} was freed or made "
                    f"read-only before its {req.kind} completed")
    if flags:                           # kept only when not 0 (WSAGetOverlappedResult's default)
        process.completed_flags[req.overlapped] = flags
    elif process.completed_flags:
        process.completed_flags.pop(req.overlapped, None)
    post_packet = True
    packet_overlapped = req.overlapped
    if req.routine:
        routine = req.routine
        overlapped = req.overlapped
        err = st.to_winsock(status)
        thread = req.thread
        thread.apcs.append(lambda: process.call_routine(routine, err, information, overlapped, flags))
        routine_and_port = process.profile.routine_and_port
        post_packet = routine_and_port in (_ROUTINE_AND_PACKET, _PACKET_NAMES_ROUTINE)
        if routine_and_port == _PACKET_NAMES_ROUTINE:
            packet_overlapped = routine
    else:
        event = req.event_raw & ~1
        if event:
            obj = process.handles.get(event)
            if obj is not None and getattr(obj, "kind", "") == "event":
                obj.signalled = True
        if req.event_raw & 1:
            post_packet = False     # low bit of hEvent: no completion packet (GetQueuedCompletionStatus docs)
    if sock is not None:
        if not sock.notify_modes & C.FILE_SKIP_SET_EVENT_ON_HANDLE:
            sock.file_signalled = True
        port = sock.port
        if post_packet and port is not None and not port.closed:
            if not (synchronous and st.nt_success(status)
                    and sock.notify_modes & C.FILE_SKIP_COMPLETION_PORT_ON_SUCCESS):
                port.packets.append(CompletionPacket(sock.port_key, information, packet_overlapped, status))
    kernel.poke()


def start_take(req: IoRequest) -> None:
    """A request's `start` when its `take` says what it waits for: complete it once `take` can."""
    result = req.take()
    if result is not None:
        complete(req, *result)


def fail_at_issue(req: IoRequest) -> None:
    """`req` failed with an error before the call returned: nothing is indicated, ever.

    The WSARecv page: an error other than WSA_IO_PENDING means "the overlapped operation
    was not successfully initiated and no completion indication will occur" (docs/facts.md
    §4.2). Internal keeps the STATUS_PENDING written at entry (docs/windows-observed.md
    item 49: the IOCTLs' AFD-level failures at issue).
    """
    req.done = True
    sock = req.socket
    if sock is not None and req in sock.pending:
        sock.pending.remove(req)


def cancel(req: IoRequest, status: int = C.STATUS_CANCELLED) -> None:
    if req.done:
        return
    if req.on_cancel is not None:
        req.on_cancel()
    complete(req, status, 0)
