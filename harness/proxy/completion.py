"""A completion port for a service over any WinsockApi: OVERLAPPED slots, packets taken in batches.

A completion-driven service (the IOCP reference proxy, the completion-port
echo server) gives each overlapped call an OVERLAPPED slot and an operation
`(handler, socket, argument)`; `run()` takes every packet queued (up to
ENTRIES) with one GetQueuedCompletionStatusEx and calls
`handler(socket, argument, slot, error, bytes)` for each. What a turn costs
depends on the events that arrived, not on how many sockets the service
holds (a WSAPoll loop passes every socket to the kernel every turn).

Slots are the service's to keep: a connection takes its few when it starts
and reuses each once its packet has come (an OVERLAPPED may be reused after
its completion; Internal and InternalHigh are rewritten by every call, and
hEvent stays 0), and gives them back when it is done. Operations are
tuples built once per connection, not closures per call.

Reads are WSARecvs into the slot's own bytes (ROOM of them): a message that
fits arrives with its packet, and a full slot means "read the rest with
non-blocking recv into one shared buffer". An idle connection pins only its
slot, no buffer of its own (the aim of the zero-byte receive of "Windows
Sockets 2.0: Write Scalable Winsock Apps Using Completion Ports",
https://learn.microsoft.com/en-us/archive/msdn-magazine/2000/october/windows-sockets-2-0-write-scalable-winsock-apps-using-completion-ports,
which `readable` also offers, at the cost of a recv per event).
"""
from __future__ import annotations

import struct

from harness.winsock import constants as C
from harness.winsock.layouts import OVERLAPPED_ENTRY, WSABUF, WSAOVERLAPPED
from harness.proxy.redirect import WinsockError, extension_function

SLOT = 128                  # a WSAOVERLAPPED, then AcceptEx's two address slots, or a WSABUF and its bytes
ADDRESS_SLOT = 28 + 16      # sockaddr_in6 + the 16 bytes the AcceptEx page asks for
ENTRIES = 64                # packets taken by one GetQueuedCompletionStatusEx
_CHUNK = 64                 # slots allocated at once
# An OVERLAPPED_ENTRY: key, OVERLAPPED, Internal's low half (IO_STATUS_BLOCK's 32-bit Status), bytes.
_ENTRY = struct.Struct("<8xQI4xI4x")
assert _ENTRY.size == OVERLAPPED_ENTRY.size
_BUFFER = WSAOVERLAPPED.size            # where a slot's WSABUF or AcceptEx addresses go
DATA = _BUFFER + WSABUF.size           # where a receive slot's bytes go
ROOM = SLOT - DATA                     # bytes a receive slot takes at once


class CompletionPort:
    """One port; OVERLAPPED slots; `ops[slot]` says what each outstanding call is for."""

    def __init__(self, api):
        self.api = api
        mem = api.memory
        self.handle = api.CreateIoCompletionPort(C.INVALID_HANDLE_VALUE, 0, 0, 0)
        if not self.handle:
            raise WinsockError("CreateIoCompletionPort", api.GetLastError())
        self.ops: dict = {}            # slot -> (handler, socket, argument) until its packet arrives
        self._free: list = []
        self._chunks: list = []
        self._entries = mem.alloc(ENTRIES * OVERLAPPED_ENTRY.size)
        self._removed = mem.alloc(4)
        self._out = mem.alloc(12)      # WSAGetOverlappedResult's bytes and flags; then WSARecv's flags (0)
        self._zero = mem.alloc(WSABUF.size)           # a WSABUF of length 0: the zero-byte receive
        mem.write(self._zero, WSABUF.pack(len=0, buf=self._out))
        self._acceptex = self._connectex = None
        self._receiving: set = set()   # slots whose WSABUF names their own bytes
        self.inline = 0                # calls that completed at once since `run` began (packets queued)
        self.ops_done = None           # the operation whose handler runs now (a handler may reuse it)

    # -- slots ---------------------------------------------------------------------------------
    def slots(self, n: int) -> list:
        """`n` OVERLAPPED slots (zeroed when first allocated), the caller's until `release`."""
        free = self._free
        while len(free) < n:
            base = self.api.memory.alloc(SLOT * _CHUNK)
            self._chunks.append(base)
            free[:0] = [base + i * SLOT for i in range(_CHUNK - 1, -1, -1)]
        taken = free[-n:]
        del free[-n:]
        return taken

    def release(self, slots) -> None:
        self._free += slots

    def _started(self, slot: int, op, ok: bool) -> int:
        """0 when the call is under way (its packet will come), else its error (no packet will)."""
        if ok:
            self.ops[slot] = op
            self.inline += 1             # done already: its packet is queued now
            return 0
        err = self.api.WSAGetLastError()
        if err == C.WSA_IO_PENDING:
            self.ops[slot] = op
            return 0
        return err

    def associate(self, s, key: int = 0) -> None:
        if not self.api.CreateIoCompletionPort(s, self.handle, key, 0):
            raise WinsockError("CreateIoCompletionPort", self.api.GetLastError())

    # -- the calls -------------------------------------------------------------------------------
    def accept(self, lst, acc, slot: int, op) -> int:
        """AcceptEx of `acc` on `lst`, no data; 0 or the error."""
        api = self.api
        if self._acceptex is None:
            self._acceptex = extension_function(api, lst, C.WSAID_ACCEPTEX)
        self._receiving.discard(slot)
        ok = api.call(self._acceptex, lst, acc, slot + _BUFFER, 0, ADDRESS_SLOT, ADDRESS_SLOT, 0, slot)
        return self._started(slot, op, ok)

    def connect(self, s, name: int, namelen: int, slot: int, op) -> int:
        """ConnectEx of the bound socket `s` to the sockaddr at `name`, no data; 0 or the error."""
        api = self.api
        if self._connectex is None:
            self._connectex = extension_function(api, s, C.WSAID_CONNECTEX)
        return self._started(slot, op, api.call(self._connectex, s, name, namelen, 0, 0, 0, slot))

    def readable(self, s, slot: int, op) -> int:
        """A zero-byte WSARecv: its packet says data, the FIN or an error is there; 0 or the error."""
        return self._started(slot, op, self.api.WSARecv(s, self._zero, 1, 0, self._out + 8, slot, 0) == 0)

    def receive_slot(self, slot: int) -> int:
        """Make `slot` a receive slot (its WSABUF names its own ROOM bytes); the address of the bytes."""
        if slot not in self._receiving:
            self.api.memory.write(slot + _BUFFER, WSABUF.pack(len=ROOM, buf=slot + DATA))
            self._receiving.add(slot)
        return slot + DATA

    def receive(self, s, slot: int, op) -> int:
        """A WSARecv of up to ROOM bytes into a receive slot: its packet brings them (0 bytes: the FIN)."""
        return self._started(slot, op, self.api.WSARecv(s, slot + _BUFFER, 1, 0, self._out + 8, slot, 0) == 0)

    def send(self, s, buf: int, n: int, slot: int, op) -> int:
        """An overlapped WSASend of `n` bytes at `buf` (kept until the packet); 0 or the error."""
        api = self.api
        wsabuf = slot + _BUFFER
        self._receiving.discard(slot)
        api.memory.write(wsabuf, WSABUF.pack(len=n, buf=buf))
        return self._started(slot, op, api.WSASend(s, wsabuf, 1, 0, 0, slot, 0) == 0)

    # -- the packets -----------------------------------------------------------------------------
    def run(self, timeout_ms: int = 0) -> int:
        """Take the packets queued (waiting up to `timeout_ms` for the first) and run each one's
        handler(socket, argument, slot, error, bytes); the number taken. `error` is 0 or the
        WSAE* code of the failed operation."""
        api, mem = self.api, self.api.memory
        self.inline = 0
        if not api.GetQueuedCompletionStatusEx(self.handle, self._entries, ENTRIES, self._removed, timeout_ms,
                                               False):
            err = api.GetLastError()
            if err != C.WAIT_TIMEOUT:
                raise WinsockError("GetQueuedCompletionStatusEx", err)
            return 0
        n = mem.read_u32(self._removed)
        ops = self.ops
        for slot, status, transferred in _ENTRY.iter_unpack(mem.read(self._entries, n * _ENTRY.size)):
            self.ops_done = op = ops.pop(slot)
            handler, s, arg = op
            err = 0
            if status >= 0x80000000:          # not NT_SUCCESS: the socket's own error code
                api.WSAGetOverlappedResult(s, slot, self._out, 0, self._out + 4)
                err = api.WSAGetLastError() or C.WSA_OPERATION_ABORTED
            handler(s, arg, slot, err, transferred)
        return n

    def next(self, timeout_ms: int = 0) -> bool:
        """True if any packet came within `timeout_ms` (and its handlers ran)."""
        return self.run(timeout_ms) > 0

    def drain(self) -> bool:
        """Run every packet queued now, without a last call that finds none: stop after a batch
        that was not full unless its handlers started calls that completed at once (their
        packets are queued; what arrives later is news the world polls the service for)."""
        run = self.run
        taken = run(0)
        progress = taken > 0
        while taken == ENTRIES or self.inline:
            taken = run(0)
        return progress

    def close(self) -> None:
        api = self.api
        api.CloseHandle(self.handle)
        for base in self._chunks:
            api.memory.free(base)
        for ptr in (self._entries, self._removed, self._out, self._zero):
            api.memory.free(ptr)
        self._chunks, self.ops, self._free = [], {}, []
