"""Sockaddr arguments in caller memory, with the errors Winsock gives: (ip bytes, port) in and out.

The byte codec is the contract's (harness.winsock.sockaddr)."""
from __future__ import annotations

from harness.winsock import constants as C
from harness.winsock import sockaddr as codec
from harness.winsock.layouts import SOCKADDR_IN, SOCKADDR_IN6
from sim.errors import WsaError


def size_for(family: int) -> int:
    return SOCKADDR_IN.size if family == C.AF_INET else SOCKADDR_IN6.size


def read(mem, ptr: int, namelen: int, family: int):
    """Parse a sockaddr the caller passed for a socket of `family`.

    A short or unreadable name is WSAEFAULT (bind/connect/sendto pages); a
    name of another family is WSAEAFNOSUPPORT.
    """
    if namelen < 2 or not mem.check(ptr, max(namelen, 0), False) or ptr == 0:
        raise WsaError(C.WSAEFAULT)
    raw = mem.kread(ptr, min(namelen, SOCKADDR_IN6.size))      # one read: the longest sockaddr parsed
    fam = int.from_bytes(raw[:2], "little")
    if fam != family:
        if namelen < size_for(fam if fam in (C.AF_INET, C.AF_INET6) else family):
            raise WsaError(C.WSAEFAULT)
        raise WsaError(C.WSAEAFNOSUPPORT)
    if namelen < size_for(family):
        raise WsaError(C.WSAEFAULT)
    port = int.from_bytes(raw[2:4], "big")
    if family == C.AF_INET:
        return raw[4:8], port
    return raw[8:24], port


def write(mem, name: int, namelen_ptr: int, family: int, ip: bytes, port: int) -> None:
    """Write a sockaddr into (name, *namelen) as getsockname/accept/recvfrom do.

    *namelen is in/out: too small or unwritable is WSAEFAULT, and nothing is written.
    """
    data = codec.pack_for(family, ip, port)
    if not mem.check(namelen_ptr, 4, True) or namelen_ptr == 0:
        raise WsaError(C.WSAEFAULT)
    have = mem.kread_i32(namelen_ptr)
    if have < len(data) or not mem.check(name, len(data), True) or name == 0:
        raise WsaError(C.WSAEFAULT)
    mem.kwrite(name, data)
    mem.kwrite_u32(namelen_ptr, len(data))
