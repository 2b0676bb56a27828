"""What an IOCTL handler decides, and the call it decides about.

A handler looks at an `IoctlCall` and returns one outcome; the provider
(sim.provider) turns the outcome into return value, last error, byte count
and completion indication, the same way for every code. The three classes
are the ones Windows shows (docs/windows-observed.md §E): immediate failure,
inline completion, and pending.
"""
from __future__ import annotations

from typing import Callable, Optional


class IoctlCall:
    __slots__ = ("process", "mem", "sock", "thread", "code", "inbuf", "cbin", "outbuf", "cbout",
                 "bytes_ptr", "overlapped", "routine", "is_overlapped", "profile")

    def __init__(self, process, sock, thread, code, inbuf, cbin, outbuf, cbout, bytes_ptr,
                 overlapped, routine, is_overlapped):
        self.process = process
        self.mem = process.memory
        self.sock = sock
        self.thread = thread
        self.code = code
        self.inbuf = inbuf
        self.cbin = cbin
        self.outbuf = outbuf
        self.cbout = cbout
        self.bytes_ptr = bytes_ptr
        self.overlapped = overlapped
        self.routine = routine
        self.is_overlapped = is_overlapped
        self.profile = process.profile

    def input(self, n: int):
        """The first n input bytes, or None when the input is short or unreadable."""
        if self.cbin < n or self.inbuf == 0:
            return None
        return self.mem.kread(self.inbuf, n)

    def output_ok(self, n: int) -> bool:
        return self.cbout >= n and self.outbuf != 0 and self.mem.check(self.outbuf, n, True)


UNTOUCHED = None


class Fail:
    """Fails now: nothing started, nothing will be indicated (WSPIoctl page)."""
    __slots__ = ("error", "bytes_returned")

    def __init__(self, error: int, bytes_returned: Optional[int] = UNTOUCHED):
        self.error = error
        self.bytes_returned = bytes_returned

    def __repr__(self) -> str:
        return f"Fail({self.error}, {self.bytes_returned})"


class Inline:
    """Succeeds now; an overlapped call still posts its completion (item 47).

    `write()` writes the output buffer; `completion_bytes` is what the
    completion carries (0 for the user-mode inline IOCTLs, item 47).
    """
    __slots__ = ("bytes_returned", "completion_bytes", "write")

    def __init__(self, bytes_returned: Optional[int] = 0, completion_bytes: int = 0,
                 write: Optional[Callable[[], None]] = None):
        self.bytes_returned = bytes_returned
        self.completion_bytes = completion_bytes
        self.write = write


class Deferred:
    """Goes pending (overlapped) or blocks (synchronous) until the kernel completes it.

    `finish()` runs at completion time and returns (NTSTATUS, information).
    """
    __slots__ = ("finish", "delay_ns")

    def __init__(self, finish: Callable[[], tuple], delay_ns: int = 0):
        self.finish = finish
        self.delay_ns = delay_ns
