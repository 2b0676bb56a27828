"""Readiness of many sockets in one WSAPoll call, over any WinsockApi.

A service keeps a `Poller` per process: it says which sockets it wants to
read or write, `poll()` writes the WSAPOLLFD array into the process's
memory once, calls WSAPoll and hands back the sockets that are ready. One
call per turn instead of one failed accept/recv (plus WSAGetLastError) per
idle socket: that is what event-loop proxies on Windows do (libuv, curl).
"""
from __future__ import annotations

import struct

from harness.winsock import constants as C
from harness.winsock.layouts import WSAPOLLFD
from harness.proxy.redirect import WinsockError

READ = C.POLLRDNORM
WRITE = C.POLLWRNORM
# Always reported, whatever was asked for (WSAPOLLFD page: revents).
FAILED = C.POLLERR | C.POLLHUP | C.POLLNVAL

# One WSAPOLLFD as a single struct: fd (SOCKET), events (SHORT), revents (SHORT), padding.
_ENTRY = struct.Struct("<Qhh4x")
assert (_ENTRY.size, WSAPOLLFD.offset("events"), WSAPOLLFD.offset("revents")) == (WSAPOLLFD.size, 8, 10)


class Poller:
    """One WSAPOLLFD array in the process's memory, grown as needed and reused every turn."""

    def __init__(self, api, capacity: int = 16):
        self.api = api
        self.capacity = 0
        self.array = 0
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        mem = self.api.memory
        if self.array:
            mem.free(self.array)
        self.capacity = capacity
        self.array = mem.alloc(capacity * WSAPOLLFD.size)
        self._written = None               # the (socket, events) pairs the array holds

    def poll(self, interest, timeout_ms: int = 0) -> list:
        """[(socket, revents)] of the (socket, events) pairs in `interest` that are ready.

        Waits up to `timeout_ms` (0: not at all, negative: forever) for one.
        """
        n = len(interest)
        if not n:
            return []
        if n > self.capacity:
            self._grow(max(n, 2 * self.capacity))
        api, mem = self.api, self.api.memory
        if interest != self._written:
            # WSAPoll changes only revents: the array it left holds the same fd/events pairs.
            pack = _ENTRY.pack
            mem.write(self.array, b"".join([pack(s, events, 0) for s, events in interest]))
            self._written = list(interest)
        count = api.WSAPoll(self.array, n, timeout_ms)
        if count == C.SOCKET_ERROR:
            raise WinsockError("WSAPoll", api.WSAGetLastError())
        if count == 0:
            return []
        ready = []
        for (s, _events), (_fd, _ev, revents) in zip(interest, _ENTRY.iter_unpack(mem.read(self.array,
                                                                                           n * WSAPOLLFD.size))):
            if revents:
                ready.append((s, revents))
        return ready

    def close(self) -> None:
        if self.array:
            self.api.memory.free(self.array)
            self.array = 0
            self._written = None
