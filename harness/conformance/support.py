"""Helpers for conformance cases: guarded buffers, sockaddrs, connected pairs.

Everything here goes through the WinsockApi, so it works on any target.
"""
from __future__ import annotations

import struct

from harness.winsock import constants as C
from harness.winsock.layouts import WSABUF, WSAOVERLAPPED
from harness.winsock.sockaddr import from_text, to_text  # noqa: F401  (to_text: for the cases)

GUARD = b"\xA5" * 32
POISON = 0xDEADBEEF


class Guarded:
    """A buffer with guard bytes on both sides, to prove nothing is written outside it."""

    def __init__(self, api, size: int, fill: int = 0xCC):
        self.api = api
        self.size = size
        self.base = api.memory.alloc(size + 2 * len(GUARD))
        self.ptr = self.base + len(GUARD)
        api.memory.write(self.base, GUARD + bytes([fill]) * size + GUARD)

    def read(self, n: int = None) -> bytes:
        return self.api.memory.read(self.ptr, self.size if n is None else n)

    def u32(self) -> int:
        return self.api.memory.read_u32(self.ptr)

    def set_u32(self, value: int) -> None:
        self.api.memory.write_u32(self.ptr, value)

    def guards_intact(self) -> bool:
        mem = self.api.memory
        return (mem.read(self.base, len(GUARD)) == GUARD
                and mem.read(self.ptr + self.size, len(GUARD)) == GUARD)


def dword(api, value: int = POISON) -> Guarded:
    g = Guarded(api, 4)
    g.set_u32(value)
    return g


def wsabuf(api, size: int) -> tuple[int, Guarded]:
    """A one-entry WSABUF array over a guarded buffer of `size` bytes: (array, buffer)."""
    buf = Guarded(api, size)
    arr = api.memory.alloc(WSABUF.size)
    api.memory.write(arr, WSABUF.pack(len=size, buf=buf.ptr))
    return arr, buf


def sockaddr(api, ip: str, port: int) -> tuple[int, int]:
    """(ptr, length) of a SOCKADDR_IN/IN6 in the target's memory."""
    data = from_text(ip, port)
    ptr = api.memory.alloc(len(data))
    api.memory.write(ptr, data)
    return ptr, len(data)


def local_name(api, s) -> tuple[str, int]:
    buf = api.memory.alloc(128)
    length = dword(api, 128)
    assert api.getsockname(s, buf, length.ptr) == 0, api.WSAGetLastError()
    return to_text(api.memory.read(buf, length.u32()))


def loopback(family: int) -> str:
    return "127.0.0.1" if family == C.AF_INET else "::1"


def listener(api, family=C.AF_INET, ip=None):
    s = api.socket(family, C.SOCK_STREAM, C.IPPROTO_TCP)
    assert s != C.INVALID_SOCKET, api.WSAGetLastError()
    ptr, n = sockaddr(api, ip or loopback(family), 0)
    assert api.bind(s, ptr, n) == 0, api.WSAGetLastError()
    assert api.listen(s, 16) == 0, api.WSAGetLastError()
    return s, local_name(api, s)[1]


def refusing_port(api, family=C.AF_INET):
    """(socket, port): a TCP socket bound to loopback and not listening, so a connection to the port is
    refused (RFC 9293 section 3.10.7.1: a SYN to a port with no listener is answered with a reset) and, while
    the socket is open, no other socket or process on the machine can take the port (a closed
    listener's port can be handed to anyone: a race on a busy machine)."""
    s = api.socket(family, C.SOCK_STREAM, C.IPPROTO_TCP)
    assert s != C.INVALID_SOCKET, api.WSAGetLastError()
    ptr, n = sockaddr(api, loopback(family), 0)
    assert api.bind(s, ptr, n) == 0, api.WSAGetLastError()
    return s, local_name(api, s)[1]


def tcp_pair(api, family=C.AF_INET):
    """(client, accepted server socket, listener) connected over loopback."""
    lst, port = listener(api, family)
    client = api.socket(family, C.SOCK_STREAM, C.IPPROTO_TCP)
    ptr, n = sockaddr(api, loopback(family), port)
    assert api.connect(client, ptr, n) == 0, api.WSAGetLastError()
    server = api.accept(lst, 0, 0)
    assert server != C.INVALID_SOCKET, api.WSAGetLastError()
    return client, server, lst


def udp_socket(api, family=C.AF_INET, port=0):
    s = api.socket(family, C.SOCK_DGRAM, C.IPPROTO_UDP)
    assert s != C.INVALID_SOCKET, api.WSAGetLastError()
    ptr, n = sockaddr(api, loopback(family), port)
    assert api.bind(s, ptr, n) == 0, api.WSAGetLastError()
    return s, local_name(api, s)[1]


def overlapped(api, event: int = 0) -> int:
    """A zeroed WSAOVERLAPPED with hEvent set; Internal/InternalHigh poisoned."""
    ptr = api.memory.alloc(WSAOVERLAPPED.size)
    api.memory.write(ptr, WSAOVERLAPPED.pack(Internal=POISON, InternalHigh=POISON, hEvent=event))
    return ptr


def internal(api, ovl: int) -> tuple[int, int]:
    """(Internal, InternalHigh) of a WSAOVERLAPPED."""
    return struct.unpack("<QQ", api.memory.read(ovl, 16))


class RoutineLog:
    """A completion routine that records its calls."""

    def __init__(self, api):
        self.calls = []
        self.ptr = api.completion_routine(lambda *args: self.calls.append(args))


def make_iocp(api, sock, key: int = 123) -> int:
    port = api.CreateIoCompletionPort(sock, 0, key, 0)
    assert port, api.GetLastError()
    return port


def dequeue(api, port, timeout_ms: int = 0):
    """(result, error, bytes, key, overlapped) of GetQueuedCompletionStatus."""
    n, key, ovl = dword(api), Guarded(api, 8), Guarded(api, 8)
    api.memory.write(key.ptr, struct.pack("<Q", POISON))
    api.memory.write(ovl.ptr, struct.pack("<Q", POISON))
    api.WSASetLastError(POISON)
    ok = api.GetQueuedCompletionStatus(port, n.ptr, key.ptr, ovl.ptr, timeout_ms)
    error = api.GetLastError()
    return ok, error, n.u32(), struct.unpack("<Q", key.read())[0], struct.unpack("<Q", ovl.read())[0]


def get_extension(api, sock, guid) -> int:
    from harness.winsock.layouts import guid_bytes
    inp = api.memory.alloc(16)
    api.memory.write(inp, guid_bytes(guid))
    out = Guarded(api, 8)
    n = dword(api)
    assert api.WSAIoctl(sock, C.SIO_GET_EXTENSION_FUNCTION_POINTER, inp, 16, out.ptr, 8, n.ptr, 0, 0) == 0, \
        api.WSAGetLastError()
    return struct.unpack("<Q", out.read())[0]
