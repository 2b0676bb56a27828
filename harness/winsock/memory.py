"""What every provider's memory offers beyond alloc/free/read/write/protect, written once.

A provider's memory class inherits `MemoryHelpers` and implements the
primitives of the `Memory` protocol (harness.winsock.api); the typed
accessors and `alloc_bytes` follow from them.
"""
from __future__ import annotations

import struct

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
