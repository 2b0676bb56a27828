"""What every provider's memory offers beyond alloc/free/read/write/protect, written once.

A provider's memory class inherits `MemoryHelpers` and implements the
primitives of the `Memory` protocol (harness.winsock.api); the typed
accessors and `alloc_bytes` follow from them.
"""
from __future__ import annotations

import bisect
import struct
import threading

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class MemoryHelpers:
    def alloc_bytes(self, data: bytes, prot: str = "rw") -> int:
        """A new buffer holding `data`, then given protection `prot`."""
        ptr = self.alloc(len(data), "rw")
        self.write(ptr, data)
        if prot != "rw":
            self.protect(ptr, prot)
        return ptr

    def read_u32(self, ptr: int) -> int:
        return _U32.unpack(self.read(ptr, 4))[0]

    def write_u32(self, ptr: int, value: int) -> None:
        self.write(ptr, _U32.pack(value & 0xFFFFFFFF))

    def read_u64(self, ptr: int) -> int:
        return _U64.unpack(self.read(ptr, 8))[0]

    def write_u64(self, ptr: int, value: int) -> None:
        self.write(ptr, _U64.pack(value & 0xFFFFFFFFFFFFFFFF))


class AccessViolation(Exception):
    """A Python-side memory helper (`read`, `write`, `free`, ...) was given an address range
    this memory did not allocate. Raised instead of touching the address, so the
    interpreter (or the agent) never faults."""


PROTS = ("rw", "r", "none")


class AllocationTable:
    """The bookkeeping of a memory whose allocations are regions sorted by start (each
    with `.start` and `.size`), for providers over real pages (harness.agent)."""

    def __init__(self):
        self._lock = threading.RLock()
        self._starts: list[int] = []
        self._regions: list = []
        self._invalid = 0
        self._closed = False

    @staticmethod
    def _check_alloc(size, prot) -> None:
        if type(size) is not int or size < 0:
            raise ValueError(f"alloc size must be a non-negative int, not {size!r}")
        if prot not in PROTS:
            raise ValueError(f"alloc prot must be one of {PROTS}, not {prot!r}")

    def _insert(self, region) -> int:
        i = bisect.bisect(self._starts, region.start)
        self._starts.insert(i, region.start)
        self._regions.insert(i, region)
        return region.start

    def _remove(self, i: int) -> None:
        del self._starts[i]
        del self._regions[i]

    def _check_open(self):
        if self._closed:
            raise ValueError(f"{type(self).__name__} is closed")

    def _region_at(self, ptr):
        if type(ptr) is not int:
            return None
        i = bisect.bisect(self._starts, ptr) - 1
        if i < 0:
            return None
        region = self._regions[i]
        return region if ptr < region.start + max(region.size, 1) else None

    def _range(self, ptr, n, what):
        if type(ptr) is not int:
            raise TypeError(f"{what}: address must be an int, not {type(ptr).__name__}")
        region = self._region_at(ptr)
        if region is None or ptr + n > region.start + region.size:
            raise AccessViolation(f"{what} of {n} bytes at {ptr:#x}: not inside an allocation of this "
                                  f"{type(self).__name__}" + (f" (allocation {region.start:#x}, {region.size} bytes)"
                                                               if region else ""))
        return region

    def _index_of_start(self, ptr, what) -> int:
        i = bisect.bisect_left(self._starts, ptr) if type(ptr) is int else len(self._starts)
        if i >= len(self._starts) or self._starts[i] != ptr:
            shown = f"{ptr:#x}" if type(ptr) is int else repr(ptr)
            raise AccessViolation(f"{what} of {shown}: not the start of an allocation of this {type(self).__name__}")
        return i
