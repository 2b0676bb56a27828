"""A simulated process address space.

Allocations sit on page boundaries with an unmapped guard page between them,
so a range that runs off the end of a buffer touches unmapped memory, as it
would on Windows. The C-shaped calls validate every range they touch with
`check` before reading or writing; a range that fails the check is what the
documentation calls "not totally contained in a valid part of the user
address space" and yields WSAEFAULT. A zero-length range is always valid:
ProbeForRead/ProbeForWrite do nothing for length 0 (assumption, see the
ledger entry `zero_length_probe`).
"""
from __future__ import annotations

import bisect
import struct
from harness.winsock.memory import MemoryHelpers

PAGE = 0x1000
USER_BASE = 0x0000_0000_1000_0000        # first allocation
CODE_BASE = 0x0000_7FF7_0000_0000        # completion routines and extension functions
KERNEL_ADDRESS = 0xFFFF_F800_0000_1000   # a canonical kernel address: never user memory

PROT_NONE = 0
PROT_READ = 1
PROT_RW = 3
_PROTS = {"none": PROT_NONE, "r": PROT_READ, "rw": PROT_RW}
_U32 = struct.Struct("<I")
_PAGE_INDEX_LIMIT = 256     # regions up to 1 MiB are indexed by page for O(1) lookups


class AccessViolation(Exception):
    """Raised by the Python-side helpers (`read`, `write`, ...) on a bad address.

    The C-shaped calls never raise it: they check ranges and return WSAEFAULT.
    """


class Region:
    __slots__ = ("start", "size", "end", "data", "prot", "tag")

    def __init__(self, start: int, size: int, prot: int, tag: str):
        self.start = start
        self.size = size
        self.end = start + max(size, 1)      # a zero-size allocation still owns its address
        self.data = bytearray(size)
        self.prot = prot
        self.tag = tag


class AddressSpace(MemoryHelpers):
    def __init__(self, lock):
        self._lock = lock
        self._starts: list[int] = []
        self._regions: list[Region] = []
        self._next = USER_BASE
        self._freed: list[int] = []
        self._code: dict[int, object] = {}
        self._next_code = CODE_BASE
        self._last = None                    # the region found last: most calls hit it again
        self._pages: dict = {}               # page number -> region, for small regions

    # -- Python-side helpers (tests, proxies) -------------------------------
    def alloc(self, size: int, prot: str = "rw", tag: str = "") -> int:
        """Allocate `size` bytes (zero-filled); returns the address."""
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"alloc size must be a non-negative int, not {size!r}")
        with self._lock:
            start = self._next
            pages = max(1, (size + PAGE - 1) // PAGE)
            self._next = start + (pages + 1) * PAGE   # +1: the guard page
            region = Region(start, size, _PROTS[prot], tag)
            if pages <= _PAGE_INDEX_LIMIT:
                for page in range(start >> 12, (start >> 12) + pages):
                    self._pages[page] = region
            i = bisect.bisect(self._starts, start)
            self._starts.insert(i, start)
            self._regions.insert(i, region)
            return start

    def free(self, ptr: int) -> None:
        with self._lock:
            i = bisect.bisect_left(self._starts, ptr)
            if i >= len(self._starts) or self._starts[i] != ptr:
                raise AccessViolation(f"free of 0x{ptr:x}: not the start of an allocation")
            region = self._regions[i]
            del self._starts[i]
            del self._regions[i]
            for page in range(region.start >> 12, (region.end - 1 >> 12) + 1):
                if self._pages.get(page) is region:
                    del self._pages[page]
            self._freed.append(ptr)
            self._last = None

    def protect(self, ptr: int, prot: str) -> None:
        with self._lock:
            region = self._region_at(ptr)
            if region is None or region.start != ptr:
                raise AccessViolation(f"protect of 0x{ptr:x}: not an allocation")
            region.prot = _PROTS[prot]

    # read and write take the lock without `with` (half the cost): proxies call them on every step.
    def read(self, ptr: int, n: int) -> bytes:
        self._lock.acquire()
        try:
            data = self.kread(ptr, n, PROT_NONE)
        finally:
            self._lock.release()
        if data is None:
            raise AccessViolation(f"read of {n} bytes at 0x{ptr:x}")
        return data

    def write(self, ptr: int, data: bytes) -> None:
        self._lock.acquire()
        try:
            written = self.kwrite(ptr, data, PROT_NONE)
        finally:
            self._lock.release()
        if not written:
            raise AccessViolation(f"write of {len(data)} bytes at 0x{ptr:x}")

    def invalid_pointer(self) -> int:
        """An address no valid buffer covers: a freed region, else a kernel address."""
        with self._lock:
            for ptr in reversed(self._freed):
                if self._region_at(ptr) is None:
                    return ptr
            return KERNEL_ADDRESS

    def is_allocated(self, ptr: int) -> bool:
        with self._lock:
            return self._region_at(ptr) is not None

    # -- kernel side: used by the C-shaped calls ----------------------------
    def _region_at(self, ptr: int):
        region = self._pages.get(ptr >> 12)
        if region is not None:
            return region if ptr < region.end else None
        last = self._last
        if last is not None and last.start <= ptr < last.end:
            return last
        i = bisect.bisect(self._starts, ptr) - 1
        if i < 0:
            return None
        region = self._regions[i]
        if ptr < region.end:
            self._last = region
            return region
        return None

    def check(self, ptr: int, n: int, write: bool) -> bool:
        """True when [ptr, ptr+n) lies in one mapped region with the needed access."""
        if n == 0:
            return True
        region = self._pages.get(ptr >> 12) or self._region_at(ptr)     # the page index inline: every call
        if region is None or ptr + n > region.start + region.size:
            return False
        return region.prot == PROT_RW if write else region.prot != PROT_NONE

    def kread(self, ptr: int, n: int, need: int = PROT_READ):
        """Bytes at [ptr, ptr+n), or None when the range is not readable."""
        if n == 0:
            return b""
        region = self._pages.get(ptr >> 12) or self._region_at(ptr)
        if region is None or ptr + n > region.start + region.size:
            return None
        if need and region.prot == PROT_NONE:
            return None
        off = ptr - region.start
        return bytes(region.data[off:off + n])

    def kwrite(self, ptr: int, data: bytes, need: int = PROT_RW) -> bool:
        """Write `data` at ptr if the whole range is writable; False (nothing written) otherwise."""
        n = len(data)
        if n == 0:
            return True
        region = self._pages.get(ptr >> 12) or self._region_at(ptr)
        if region is None or ptr + n > region.start + region.size:
            return False
        if need and region.prot != PROT_RW:
            return False
        off = ptr - region.start
        region.data[off:off + n] = data
        return True

    def kread_u32(self, ptr: int):
        data = self.kread(ptr, 4)
        return None if data is None else _U32.unpack(data)[0]

    def kread_i32(self, ptr: int):
        data = self.kread(ptr, 4)
        return None if data is None else struct.unpack("<i", data)[0]

    def kwrite_u32(self, ptr: int, value: int) -> bool:
        return self.kwrite(ptr, _U32.pack(value & 0xFFFFFFFF))

    def kwrite_u64(self, ptr: int, value: int) -> bool:
        return self.kwrite(ptr, struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))

    # -- code addresses -------------------------------------------------------
    def register_code(self, target) -> int:
        """Give a Python callable (or an extension-function marker) a code address."""
        with self._lock:
            ptr = self._next_code
            self._next_code += 0x10
            self._code[ptr] = target
            return ptr

    def code_at(self, ptr: int):
        return self._code.get(ptr)
