"""What an IOCTL handler decides, and the call it decides about.

A handler looks at an `IoctlCall` and returns one outcome; the provider
(sim.provider) turns the outcome into return value, last error, byte count
and completion indication, the same way for every code. The three classes
are the ones Windows shows (windows-observed.md §E): immediate failure,
inline completion, and pending.
"""
from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Fail:
    """Fails now: nothing started, nothing will be indicated (WSPIoctl page)."""
    error: int
    bytes_returned: Optional[int] = UNTOUCHED


@dataclass(frozen=True)
class Inline:
    """Succeeds now; an overlapped call still posts its completion (item 47)."""
    bytes_returned: Optional[int] = 0
    completion_bytes: int = 0
    write: Optional[Callable[[], None]] = None   # writes the output buffer


@dataclass(frozen=True)
class Deferred:
    """Goes pending (overlapped) or blocks (synchronous) until the kernel completes it.

    `finish()` runs at completion time and returns (NTSTATUS, information).
    """
    finish: Callable[[], tuple]
    delay_ns: int = 0
