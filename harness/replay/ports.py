"""Ports the system chose, as symbols: each compares by its order of first appearance.

An implicit bind, a bind to port 0, an accepted connection's peer: the system picks the port,
and two targets pick different numbers (the simulator counts up from 49152, Wine takes Linux's
random ones). Where a port can be such a choice, it is replaced by its order of first appearance
on that target, so two runs compare equal when they use "the same" ports in the same places.

Ports are numbered per space (TCP, UDP): the simulator hands the same number to a TCP and a UDP
socket, as Windows may, where Linux does not. The one implementation: tests/differential's
lockstep and the replayer both use it.
"""
from __future__ import annotations

from harness.winsock import constants as C

_FAMILIES = (C.AF_INET, C.AF_INET6)
MARK = 0xEE                 # the high byte of a port rewritten as an ordinal


def space_of(sock_type: int | None) -> str:
    """The port space of a socket type: "udp" for datagrams, else "tcp" (raw sockets have no ports)."""
    return "udp" if sock_type == C.SOCK_DGRAM else "tcp"


class PortOrdinals:
    """One target's ports, each numbered by its first appearance within its space."""

    def __init__(self):
        self._ordinal: dict[tuple, int] = {}

    def ordinal(self, port: int, space: str = "tcp") -> int:
        return self._ordinal.setdefault((space, port), len(self._ordinal))

    def normalise(self, data: bytes, start: int, space: str = "tcp") -> bytes:
        """`data` (a buffer's bytes from offset `start`, SOCKADDR_IN/IN6 2-aligned in it) with every
        nonzero port of an AF_INET/AF_INET6 address replaced by MARK and its ordinal."""
        buf = bytearray(data)
        for i in range((-start) % 2, len(buf) - 3, 2):
            family = buf[i] | buf[i + 1] << 8
            port = buf[i + 2] << 8 | buf[i + 3]
            if family in _FAMILIES and port:
                buf[i + 2:i + 4] = bytes((MARK, self.ordinal(port, space) & 0xFF))
        return bytes(buf)
