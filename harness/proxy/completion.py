"""A completion port for a service over any WinsockApi: OVERLAPPEDs from a slab, one packet per event.

A completion-driven service (the IOCP reference proxy, the echo server)
hands each overlapped call a slot from here and says what the completion
means; `next()` takes one packet off the port with GetQueuedCompletionStatus
and hands back what it was for. What a turn costs depends on the events
that arrived, not on how many sockets the service holds (a WSAPoll loop
passes every socket to the kernel every turn).

Reads are zero-byte WSARecvs: one completes when data, the FIN or a reset
arrives and pins no buffer while the connection is idle; the service then
reads what is there with non-blocking recv into one shared buffer (the
zero-byte receive of "Windows Sockets 2.0: Write Scalable Winsock Apps
Using Completion Ports",
https://learn.microsoft.com/en-us/archive/msdn-magazine/2000/october/windows-sockets-2-0-write-scalable-winsock-apps-using-completion-ports).
"""
from __future__ import annotations

from harness.winsock import constants as C
from harness.winsock.layouts import WSABUF, WSAOVERLAPPED
from harness.proxy.redirect import WinsockError, extension_function

SLOT = 128                  # a WSAOVERLAPPED, then room for AcceptEx's two address slots or a WSABUF
ADDRESS_SLOT = 28 + 16      # sockaddr_in6 + the 16 bytes the AcceptEx page asks for
_CHUNK = 64                 # slots allocated at once
_ZERO = bytes(WSAOVERLAPPED.size)


class CompletionPort:
    """One port; slots for overlapped calls; `ops[overlapped]` says what each outstanding one is for."""

    def __init__(self, api):
        self.api = api
        mem = api.memory
        self.handle = api.CreateIoCompletionPort(C.INVALID_HANDLE_VALUE, 0, 0, 0)
        if not self.handle:
            raise WinsockError("CreateIoCompletionPort", api.GetLastError())
        self.ops: dict = {}            # overlapped -> (handler, socket, *arguments) until its packet arrives
        self._free: list = []
        self._chunks: list = []
        self._out = mem.alloc(24)      # GetQueuedCompletionStatus's bytes, key, overlapped
        self._flags = mem.alloc(8)     # WSARecv's flags and WSAGetOverlappedResult's
        self._zero = mem.alloc(WSABUF.size)           # a WSABUF of length 0: the zero-byte receive
        mem.write(self._zero, WSABUF.pack(len=0, buf=self._out))
        self._acceptex = self._connectex = None

    # -- slots ---------------------------------------------------------------------------------
    def _slot(self, op) -> int:
        if not self._free:
            base = self.api.memory.alloc(SLOT * _CHUNK)
            self._chunks.append(base)
            self._free = [base + i * SLOT for i in range(_CHUNK - 1, -1, -1)]
        ovl = self._free.pop()
        self.api.memory.write(ovl, _ZERO)              # no event, Internal reset: a fresh OVERLAPPED
        self.ops[ovl] = op
        return ovl

    def _started(self, ovl: int, ok: bool) -> int:
        """0 when the call is under way (its packet will come), else its error (the slot stays taken:
        a packet may still come for a call that failed after it started; its handler ignores it)."""
        if ok:
            return 0
        err = self.api.WSAGetLastError()
        if err == C.WSA_IO_PENDING:
            return 0
        op = self.ops[ovl]
        self.ops[ovl] = (_ignore, op[1])
        return err

    def associate(self, s, key: int = 0) -> None:
        if not self.api.CreateIoCompletionPort(s, self.handle, key, 0):
            raise WinsockError("CreateIoCompletionPort", self.api.GetLastError())

    # -- the calls -------------------------------------------------------------------------------
    def accept(self, lst, acc, op) -> int:
        """AcceptEx of `acc` on `lst`, no data; 0 or the error."""
        api = self.api
        if self._acceptex is None:
            self._acceptex = extension_function(api, lst, C.WSAID_ACCEPTEX)
        ovl = self._slot(op)
        ok = api.call(self._acceptex, lst, acc, ovl + WSAOVERLAPPED.size, 0, ADDRESS_SLOT, ADDRESS_SLOT,
                      0, ovl)
        return self._started(ovl, ok)

    def connect(self, s, name: int, namelen: int, op) -> int:
        """ConnectEx of the bound socket `s` to the sockaddr at `name`, no data; 0 or the error."""
        api = self.api
        if self._connectex is None:
            self._connectex = extension_function(api, s, C.WSAID_CONNECTEX)
        ovl = self._slot(op)
        return self._started(ovl, api.call(self._connectex, s, name, namelen, 0, 0, 0, ovl))

    def readable(self, s, op) -> int:
        """A zero-byte WSARecv: its packet says data, the FIN or an error is there; 0 or the error."""
        api = self.api
        ovl = self._slot(op)
        api.memory.write_u32(self._flags, 0)
        return self._started(ovl, api.WSARecv(s, self._zero, 1, 0, self._flags, ovl, 0) == 0)

    def send(self, s, buf: int, n: int, op) -> int:
        """An overlapped WSASend of `n` bytes at `buf` (kept until the packet); 0 or the error."""
        api = self.api
        ovl = self._slot(op)
        wsabuf = ovl + WSAOVERLAPPED.size
        api.memory.write(wsabuf, WSABUF.pack(len=n, buf=buf))
        return self._started(ovl, api.WSASend(s, wsabuf, 1, 0, 0, ovl, 0) == 0)

    # -- the packets -----------------------------------------------------------------------------
    def next(self, timeout_ms: int = 0) -> bool:
        """Take one packet and run its handler as handler(socket, *arguments, error, bytes); False when
        none came within `timeout_ms`. `error` is 0 or the WSAE* code of the failed operation."""
        api, mem, out = self.api, self.api.memory, self._out
        ok = api.GetQueuedCompletionStatus(self.handle, out, out + 8, out + 16, timeout_ms)
        ovl = mem.read_u64(out + 16)
        if not ovl:
            if ok or api.GetLastError() != C.WAIT_TIMEOUT:
                raise WinsockError("GetQueuedCompletionStatus", api.GetLastError())
            return False
        n = mem.read_u32(out)
        op = self.ops.pop(ovl)
        err = 0
        if not ok:
            # The socket's own error code (GetQueuedCompletionStatus gives the Win32 one).
            api.WSAGetOverlappedResult(op[1], ovl, out, 0, self._flags)
            err = api.WSAGetLastError() or C.WSA_OPERATION_ABORTED
        self._free.append(ovl)
        op[0](*op[1:], err, n)
        return True

    def close(self) -> None:
        api = self.api
        api.CloseHandle(self.handle)
        for base in self._chunks:
            api.memory.free(base)
        for ptr in (self._out, self._flags, self._zero):
            api.memory.free(ptr)
        self._chunks, self.ops, self._free = [], {}, []


def _ignore(*_args) -> None:
    """The packet of a call that failed when it was made: already handled."""
