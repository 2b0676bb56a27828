"""The usual redirect-service sequences, Pythonic, over any WinsockApi.

docs/decisions.md §3: probe and query the records, query the context, set the
records, receive the UDP record cmsg, forward it on the first datagram.
Written only against WinsockApi and the contract, so the same code runs on
the simulator and, with the native provider, on Windows.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.winsock import constants as C
from harness.winsock import sockaddr
from harness.winsock.layouts import (WSABUF, WSAMSG, guid_bytes, iter_cmsgs,
                                     pack_cmsgs)

FIRST_GUESS = 1024          # the size the SDK Remarks suggest for a first try
MAX_BLOB = 64 * 1024
# Errors that mean "too small, here is (maybe) the size": the documented
# ERROR_INSUFFICIENT_BUFFER and what field code retries on (docs/facts.md §6.5).
_TOO_SMALL = (C.ERROR_INSUFFICIENT_BUFFER, C.WSAEFAULT, C.WSAENOBUFS)


class WinsockError(OSError):
    """A Winsock call failed; `code` is its WSAGetLastError()."""

    def __init__(self, function: str, code: int):
        super().__init__(code, f"{function} failed: {C.error_name(code)} ({code})")
        self.function = function
        self.code = code

    def __str__(self) -> str:           # the message alone: OSError would prefix "[Errno N]"
        return self.strerror


class Scratch:
    """Buffers in the target's memory, allocated once and reused by a service."""

    def __init__(self, api, size: int = 64 * 1024):
        mem = api.memory
        self.api = api
        self.size = size
        self.buf = mem.alloc(size)
        self.count = mem.alloc(4)
        self.addr = mem.alloc(128)
        self.addrlen = mem.alloc(4)
        self.value = mem.alloc(8)
        self.msg = mem.alloc(WSAMSG.size)
        self.wsabuf = mem.alloc(WSABUF.size)
        self.control = mem.alloc(4096)
        self.guid = mem.alloc(16)
        self.recv_msg = None            # the WSAMSG recv_datagram reuses (its WSABUF lives in wsabuf)


def _ioctl_out(api, scratch, s, code, size):
    """(rc, error, bytes returned, data) of a query IOCTL into a fresh buffer of `size`."""
    mem = api.memory
    out = mem.alloc(max(size, 1)) if size > scratch.size else scratch.buf
    try:
        rc = api.WSAIoctl(s, code, 0, 0, out if size else 0, size, scratch.count, 0, 0)
        err = api.WSAGetLastError() if rc else 0
        n = mem.read_u32(scratch.count)
        data = mem.read(out, n) if rc == 0 else b""
        return rc, err, n, data
    finally:
        if out != scratch.buf:
            mem.free(out)


def _query(api, scratch, s, code, name, probe=False):
    """Fetch a variable-length blob; None if there is none.

    Starts with the 1,024-byte buffer the SDK Remarks suggest (Envoy and the Guest
    Proxy Agent use 2,048), or with the documented cbOutBuffer = 0 size probe when
    `probe` is set; on a short buffer it retries with the size the call reported,
    or doubles when none was given.
    """
    size = 0 if probe else FIRST_GUESS
    for _ in range(8):
        rc, err, n, data = _ioctl_out(api, scratch, s, code, size)
        if rc == 0:
            return data
        if err == C.FWP_E_NOT_FOUND:
            return None
        if err in _TOO_SMALL and n > size:
            size = n                        # the documented probe answer: the required size
        elif err in _TOO_SMALL + (C.WSAEINVAL,) and size < MAX_BLOB:
            size = max(FIRST_GUESS, size * 2)   # no size given (or a 0 probe refused): grow
        else:
            raise WinsockError(name, err)
    raise WinsockError(name, err)


def query_records(api, s, scratch=None, probe=False):
    """The accepted socket's redirect-records blob, or None if the flow was not redirected."""
    return _query(api, scratch or Scratch(api, 4096), s, C.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS,
                  "SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS", probe)


def query_context(api, s, scratch=None, probe=False):
    """The redirect context the caller's callout attached, or None if there is none."""
    data = _query(api, scratch or Scratch(api, 4096), s, C.SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT,
                  "SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT", probe)
    return data or None


def set_records(api, s, blob: bytes, scratch=None) -> None:
    """Attach records to an outbound socket before it connects."""
    scratch = scratch or Scratch(api, max(len(blob), 16))
    mem = api.memory
    inp = scratch.buf if len(blob) <= scratch.size else mem.alloc(len(blob))
    try:
        mem.write(inp, blob)
        if api.WSAIoctl(s, C.SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS, inp, len(blob), 0, 0, scratch.count, 0, 0):
            raise WinsockError("SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS", api.WSAGetLastError())
    finally:
        if inp != scratch.buf:
            mem.free(inp)


def extension_function(api, s, guid, scratch=None) -> int:
    scratch = scratch or Scratch(api, 64)
    api.memory.write(scratch.guid, guid_bytes(guid))
    if api.WSAIoctl(s, C.SIO_GET_EXTENSION_FUNCTION_POINTER, scratch.guid, 16, scratch.value, 8,
                    scratch.count, 0, 0):
        raise WinsockError("SIO_GET_EXTENSION_FUNCTION_POINTER", api.WSAGetLastError())
    return api.memory.read_u64(scratch.value)


def enable_redirect_cmsgs(api, s, family: int, scratch=None) -> None:
    """Ask for the records and context cmsgs on a UDP socket (EBPF socket_helper.cpp does the same)."""
    scratch = scratch or Scratch(api, 64)
    level = C.IPPROTO_IP if family == C.AF_INET else C.IPPROTO_IPV6
    api.memory.write_u32(scratch.value, 1)
    for option in (C.IP_WFP_REDIRECT_RECORDS, C.IP_WFP_REDIRECT_CONTEXT):
        if api.setsockopt(s, level, option, scratch.value, 4):
            raise WinsockError("setsockopt", api.WSAGetLastError())


@dataclass
class Datagram:
    payload: bytes
    source: tuple
    records: bytes = None
    context: bytes = None
    flags: int = 0


def recv_datagram(api, s, recvmsg: int, scratch: Scratch):
    """One datagram with its redirect cmsgs; None when nothing is waiting (non-blocking socket)."""
    mem = api.memory
    if scratch.recv_msg is None:
        mem.write(scratch.wsabuf, WSABUF.pack(len=scratch.size, buf=scratch.buf))
        scratch.recv_msg = WSAMSG.pack(name=scratch.addr, namelen=128, lpBuffers=scratch.wsabuf, dwBufferCount=1,
                                       Control_len=4096, Control_buf=scratch.control, dwFlags=0)
    mem.write(scratch.msg, scratch.recv_msg)   # WSARecvMsg rewrites namelen, Control.len and dwFlags
    if api.call(recvmsg, s, scratch.msg, scratch.count, 0, 0):
        err = api.WSAGetLastError()
        if err == C.WSAEWOULDBLOCK:
            return None
        raise WinsockError("WSARecvMsg", err)
    n = mem.read_u32(scratch.count)
    msg = WSAMSG.unpack(mem.read(scratch.msg, WSAMSG.size))
    dgram = Datagram(mem.read(scratch.buf, n), sockaddr.to_text(mem.read(scratch.addr, msg["namelen"])),
                     flags=msg["dwFlags"])
    for level, ctype, data in iter_cmsgs(mem.read(scratch.control, msg["Control_len"])):
        if level in (C.IPPROTO_IP, C.IPPROTO_IPV6):
            if ctype == C.IP_WFP_REDIRECT_RECORDS:
                dgram.records = data
            elif ctype == C.IP_WFP_REDIRECT_CONTEXT:
                dgram.context = data
    return dgram


def send_datagram(api, s, sendmsg: int, payload: bytes, destination: tuple, records: bytes, scratch: Scratch):
    """Send one datagram to `destination` with the records cmsg (the flow's first datagram)."""
    mem = api.memory
    family = sockaddr.text_family(destination[0])
    level = C.IPPROTO_IP if family == C.AF_INET else C.IPPROTO_IPV6
    control = pack_cmsgs([(level, C.IP_WFP_REDIRECT_RECORDS, records)]) if records else b""
    name = sockaddr.from_text(*destination)
    mem.write(scratch.addr, name)
    mem.write(scratch.buf, payload)
    mem.write(scratch.control, control)
    scratch.recv_msg = None                    # the shared WSABUF is about to change
    mem.write(scratch.wsabuf, WSABUF.pack(len=len(payload), buf=scratch.buf))
    mem.write(scratch.msg, WSAMSG.pack(name=scratch.addr, namelen=len(name), lpBuffers=scratch.wsabuf,
                                       dwBufferCount=1, Control_len=len(control),
                                       Control_buf=scratch.control if control else 0, dwFlags=0))
    if api.call(sendmsg, s, scratch.msg, 0, scratch.count, 0, 0):
        raise WinsockError("WSASendMsg", api.WSAGetLastError())
