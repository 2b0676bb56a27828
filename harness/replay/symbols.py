"""Symbolic values: addresses and handles that differ between targets.

The recorder and the replayer each keep a `Symbols` table built from the
same events in the same order (allocations, handles returned, routines made,
invalid pointers asked for, extension pointers fetched), so a symbol names
"the same" object on both targets even when its number differs.
"""
from __future__ import annotations

import bisect
import struct

from harness.winsock import constants as C

PAST_END_SLACK = 64        # an address this far past the end of a buffer still names that buffer
_Q = struct.Struct("<Q")


class UnresolvedSymbol(KeyError):
    """A symbol the replay target has no value for (the runs diverged earlier)."""

    def __str__(self) -> str:            # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def symbol_text(sym) -> str:
    """A symbol as a user reads it: alloc3+16, handle2, routine0, invalid0, ext AcceptEx."""
    if not isinstance(sym, list) or not sym:
        return str(sym)
    kind, rest = sym[0], sym[1:]
    if kind == "alloc" and len(rest) == 2:
        return f"alloc{rest[0]}+{rest[1]}"
    if kind == "handle" and len(rest) == 2 and rest[1]:
        return f"handle{rest[0]}|{rest[1]:#x}"
    if kind == "ext":
        return f"ext {rest[0]}"
    return f"{kind}{rest[0]}" if len(rest) == 1 else " ".join(str(x) for x in sym)


class Symbols:
    def __init__(self):
        self.allocs: list[list] = []        # index -> [start, size, live]
        self._starts: list[tuple] = []      # sorted (start, index)
        self.handles: list[int] = []
        self._handle_of: dict[int, int] = {}
        self.routines: list[int] = []
        self._routine_of: dict[int, int] = {}
        self.invalids: list[int] = []
        self._invalid_of: dict[int, int] = {}
        self.ext: dict[str, int] = {}
        self._ext_of: dict[int, str] = {}

    # -- registering --------------------------------------------------------------
    def add_alloc(self, start: int, size: int) -> list:
        index = len(self.allocs)
        self.allocs.append([start, size, True])
        bisect.insort(self._starts, (start, index))
        return ["alloc", index, 0]

    def free_alloc(self, start: int) -> None:
        for entry in self.allocs:
            if entry[0] == start and entry[2]:
                entry[2] = False
                return

    def add_handle(self, value: int) -> list:
        """The symbol of a handle a call returned (a known value keeps its symbol)."""
        k = self._handle_of.get(value)
        if k is None:
            k = len(self.handles)
            self.handles.append(value)
            self._handle_of[value] = k
        return ["handle", k]

    def add_routine(self, value: int) -> list:
        k = len(self.routines)
        self.routines.append(value)
        self._routine_of[value] = k
        return ["routine", k]

    def add_invalid(self, value: int) -> list:
        k = len(self.invalids)
        self.invalids.append(value)
        self._invalid_of.setdefault(value, k)
        return ["invalid", k]

    def add_ext(self, name: str, value: int) -> None:
        self.ext[name] = value
        self._ext_of[value] = name

    # -- value -> symbol ------------------------------------------------------------
    def _alloc_at(self, value: int):
        i = bisect.bisect_right(self._starts, (value, 1 << 62))
        if i == 0:
            return None
        start = self._starts[i - 1][0]
        same = [idx for s, idx in self._starts[bisect.bisect_left(self._starts, (start, -1)):i]]
        # Prefer a live allocation; a freed one still names a use-after-free address.
        live = [idx for idx in same if self.allocs[idx][2]]
        index = live[-1] if live else same[-1]
        if value > start + self.allocs[index][1] + PAST_END_SLACK:
            return None
        return ["alloc", index, value - start]

    def pointer(self, value: int):
        """An LPVOID argument (or a word in memory) as a symbol, or the literal int."""
        if not value:
            return value
        k = self._routine_of.get(value)
        if k is not None:
            return ["routine", k]
        k = self._invalid_of.get(value)
        if k is not None:
            return ["invalid", k]
        name = self._ext_of.get(value)
        if name is not None:
            return ["ext", name]
        sym = self._alloc_at(value)
        return sym if sym is not None else value

    def handle(self, value: int):
        """A SOCKET/HANDLE/WSAEVENT argument as a symbol, or the literal int."""
        if not value or value in (C.INVALID_SOCKET,):
            return value
        k = self._handle_of.get(value)
        if k is not None:
            return ["handle", k]
        tag = value & 3
        if tag:
            k = self._handle_of.get(value & ~3)
            if k is not None:
                return ["handle", k, tag]
        return value

    def word(self, value: int):
        """A 64-bit word found in memory: a pointer or a handle, else the literal."""
        sym = self.pointer(value)
        if sym is value:
            sym = self.handle(value)
        return sym

    def scan(self, address: int, data: bytes) -> list:
        """[[offset, symbol]] for each aligned 8-byte word of data (at address) holding a symbolic value."""
        out = []
        first = (-address) % 8
        for off in range(first, len(data) - 7, 8):
            value = _Q.unpack_from(data, off)[0]
            if value:
                sym = self.word(value)
                if isinstance(sym, list):
                    out.append([off, sym])
        return out

    # -- symbol -> value ---------------------------------------------------------------
    def value(self, sym) -> int:
        if type(sym) is int:
            return sym
        kind = sym[0]
        try:
            if kind == "alloc":
                return self.allocs[sym[1]][0] + sym[2]
            if kind == "handle":
                return self.handles[sym[1]] | (sym[2] if len(sym) > 2 else 0)
            if kind == "routine":
                return self.routines[sym[1]]
            if kind == "invalid":
                return self.invalids[sym[1]]
            if kind == "ext":
                return self.ext[sym[1]]
        except (IndexError, KeyError):
            pass
        raise UnresolvedSymbol(f"{symbol_text(sym)} has no value on this target (the runs diverged earlier)")

    def substitute(self, data: bytes, syms) -> bytes:
        if not syms:
            return data
        buf = bytearray(data)
        for off, sym in syms:
            _Q.pack_into(buf, off, self.value(sym) & 0xFFFFFFFFFFFFFFFF)
        return bytes(buf)


# Calls that close the handle their first argument names, and the return values that say they did.
_CLOSERS = {"closesocket": lambda ret: ret == 0, "CloseHandle": bool, "WSACloseEvent": bool}


class FreshSymbols(Symbols):
    """Symbols where a handle value returned again after it was closed names a new object.

    Wine reuses a closed handle's value at once, the simulator never does
    (sim/world.py new_handle): without this the reused value would keep the
    closed object's symbol on one side only (the replayer and tests/differential use it)."""

    def __init__(self):
        super().__init__()
        self.retired: set[int] = set()

    def add_handle(self, value: int) -> list:
        if value in self.retired:
            self.retired.discard(value)
            self._handle_of.pop(value, None)
        return super().add_handle(value)


def retire_closed(symbols: FreshSymbols, step: dict) -> None:
    """After a call step that closed a handle, its value names nothing until a call returns it again."""
    closed = _CLOSERS.get(step.get("fn"))
    if step.get("op") == "call" and closed and type(step.get("ret")) is int and closed(step["ret"]):
        try:
            symbols.retired.add(symbols.value(step["args"][0]))
        except KeyError:
            pass
