"""SOCKADDR_IN / SOCKADDR_IN6 in caller memory <-> (ip bytes, port)."""
from __future__ import annotations

from harness.winsock import constants as C
from harness.winsock.layouts import SOCKADDR_IN, SOCKADDR_IN6
from sim.errors import WsaError
from sim.net import is_v4_mapped, v4_mapped


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


def encode(family: int, ip: bytes, port: int) -> bytes:
    if family == C.AF_INET:
        if len(ip) == 16 and is_v4_mapped(ip):
            ip = ip[12:]
        return SOCKADDR_IN.pack(sin_family=C.AF_INET, sin_port=port, sin_addr=ip)
    if len(ip) == 4:
        ip = v4_mapped(ip)
    return SOCKADDR_IN6.pack(sin6_family=C.AF_INET6, sin6_port=port, sin6_addr=ip)


def write(mem, name: int, namelen_ptr: int, family: int, ip: bytes, port: int) -> None:
    """Write a sockaddr into (name, *namelen) as getsockname/accept/recvfrom do.

    *namelen is in/out: too small or unwritable is WSAEFAULT, and nothing is written.
    """
    data = encode(family, ip, port)
    if not mem.check(namelen_ptr, 4, True) or namelen_ptr == 0:
        raise WsaError(C.WSAEFAULT)
    have = mem.kread_i32(namelen_ptr)
    if have < len(data) or not mem.check(name, len(data), True) or name == 0:
        raise WsaError(C.WSAEFAULT)
    mem.kwrite(name, data)
    mem.kwrite_u32(namelen_ptr, len(data))
