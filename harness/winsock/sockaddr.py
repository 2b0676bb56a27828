"""SOCKADDR_IN, SOCKADDR_IN6 and SOCKADDR_STORAGE as bytes: the one codec every user shares.

Two forms of an endpoint:
- packed: the address as 4 or 16 bytes (network order) and the port as an int,
  as the simulator, the sample driver's context and captures hold them;
- text: ("192.0.2.20", 80) or ("2001:db8::20", 80), as proxies and cases write them.

The byte layouts are those of layouts.py (SOCKADDR_IN/IN6/STORAGE; ws2def.h,
ws2ipdef.h): family little-endian, port big-endian, flowinfo and scope id
little-endian. tests/test_sockaddr.py compares this codec with the layouts.
"""
from __future__ import annotations

import functools
import ipaddress
import struct

from harness.winsock.constants import AF_INET, AF_INET6
from harness.winsock.layouts import SOCKADDR_IN, SOCKADDR_IN6, SOCKADDR_STORAGE

V4_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"           # ::ffff:0:0/96, RFC 4291 section 2.5.5.2


def is_v4_mapped(ip: bytes) -> bool:
    return len(ip) == 16 and ip[:12] == V4_MAPPED_PREFIX


def v4_mapped(ip4: bytes) -> bytes:
    return V4_MAPPED_PREFIX + ip4


def unmap(ip: bytes) -> bytes:
    """A v4-mapped IPv6 address as plain IPv4; any other address as it is."""
    return ip[12:] if len(ip) == 16 and ip[:12] == V4_MAPPED_PREFIX else ip


@functools.lru_cache(maxsize=4096)       # pure, and on every classify and hop: parse each address once
def ip_bytes(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


@functools.lru_cache(maxsize=4096)
def ip_text(ip: bytes) -> str:
    return str(ipaddress.ip_address(ip))


def family_of(ip: bytes) -> int:
    return AF_INET if len(ip) == 4 else AF_INET6


_FAMILY = {4: AF_INET.to_bytes(2, "little"), 16: AF_INET6.to_bytes(2, "little")}
_SIN_ZERO = bytes(SOCKADDR_IN.size - SOCKADDR_IN.offset("sin_zero"))
_STORAGE_TAIL = {4: bytes(SOCKADDR_STORAGE.size - SOCKADDR_IN.size),
                 16: bytes(SOCKADDR_STORAGE.size - SOCKADDR_IN6.size)}
# Reading: SOCKADDR_IN/IN6 mix byte orders, so each is read with two structs at the layouts' offsets.
_SIN = struct.Struct(">H4s")                 # sin_port, sin_addr
_SIN6_PORT = struct.Struct(">H")             # sin6_port
_SIN6_REST = struct.Struct("<I16sI")         # sin6_flowinfo, sin6_addr, sin6_scope_id
assert (SOCKADDR_IN.offset("sin_port"), SOCKADDR_IN.offset("sin_addr")) == (2, 4)
assert (SOCKADDR_IN6.offset("sin6_port"), SOCKADDR_IN6.offset("sin6_flowinfo"), SOCKADDR_IN6.offset("sin6_addr"),
        SOCKADDR_IN6.offset("sin6_scope_id")) == (2, 4, 8, 24)


def pack(ip: bytes, port: int, flowinfo: int = 0, scope_id: int = 0) -> bytes:
    """SOCKADDR_IN (4-byte address) or SOCKADDR_IN6 (16-byte address). ValueError on a bad port."""
    if not (type(port) is int and 0 <= port <= 0xFFFF):
        raise ValueError(f"port {port!r} is out of range 0..65535")
    if len(ip) == 4:
        return _FAMILY[4] + port.to_bytes(2, "big") + ip + _SIN_ZERO
    if len(ip) != 16:
        raise ValueError(f"an address is 4 or 16 bytes, not {len(ip)}")
    return _FAMILY[16] + port.to_bytes(2, "big") + flowinfo.to_bytes(4, "little") + ip + scope_id.to_bytes(4, "little")


def pack_for(family: int, ip: bytes, port: int) -> bytes:
    """The sockaddr a socket of `family` reports: IPv4 addresses v4-mapped on AF_INET6, unmapped on AF_INET."""
    if family == AF_INET:
        return pack(unmap(ip), port)
    return pack(v4_mapped(ip) if len(ip) == 4 else ip, port)


def pack_storage(ip: bytes, port: int, flowinfo: int = 0, scope_id: int = 0) -> bytes:
    """A SOCKADDR_STORAGE (128 bytes): the SOCKADDR_IN/IN6, then zeros."""
    return pack(ip, port, flowinfo, scope_id) + _STORAGE_TAIL[len(ip)]


def unpack(data: bytes) -> tuple[int, bytes, int, int, int]:
    """(family, ip, port, flowinfo, scope_id) of SOCKADDR_IN/IN6/STORAGE bytes; ValueError otherwise."""
    family = int.from_bytes(data[:2], "little") if len(data) >= 2 else -1
    if family == AF_INET and len(data) >= SOCKADDR_IN.size:
        port, ip = _SIN.unpack_from(data, 2)
        return family, ip, port, 0, 0
    if family == AF_INET6 and len(data) >= SOCKADDR_IN6.size:
        flowinfo, ip, scope_id = _SIN6_REST.unpack_from(data, 4)
        return family, ip, _SIN6_PORT.unpack_from(data, 2)[0], flowinfo, scope_id
    raise ValueError(f"not a SOCKADDR_IN/IN6: family {family}, {len(data)} bytes")


@functools.lru_cache(maxsize=4096)
def from_text(host: str, port: int) -> bytes:
    """SOCKADDR_IN/IN6 of a text address and a port."""
    return pack(ip_bytes(host), port)


def to_text(data: bytes) -> tuple[str, int]:
    """(host text, port) of SOCKADDR_IN/IN6/STORAGE bytes."""
    _family, ip, port, _flowinfo, _scope_id = unpack(data)
    return ip_text(ip), port


def host_port(host: str, port: int) -> str:
    """How people write an endpoint: 192.0.2.20:80, [2001:db8::20]:80 (RFC 3986 brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def text_family(host: str) -> int:
    return family_of(ip_bytes(host))
