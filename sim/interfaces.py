"""The simulated host's IP interfaces, as the interface IOCTLs report them.

A world names a host's addresses and nothing else about its links, so two things here are
assumptions, stated once: each of the host's IPv4 addresses sits on its own broadcast-capable
interface with a /24 prefix, and the host's interfaces come before the loopback interface
(127.0.0.1/8, no broadcast). What Windows does establish (Wine dlls/ws2_32/tests/sock.c
test_get_interface_list, on Windows): the list has a loopback entry, every entry's address and
netmask are AF_INET and non-zero, and a broadcast address is given exactly when IFF_BROADCAST is set.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.winsock import constants as C
from sim.net import LOOP4, LOOP6

ASSUMED_PREFIX_V4 = 24          # the world names no prefix (assumption, module docstring)
LOOPBACK_PREFIX_V4 = 8


@dataclass(frozen=True)
class Interface:
    address: bytes              # IPv4, 4 bytes
    prefix: int
    flags: int

    @property
    def netmask(self) -> bytes:
        return ((0xFFFFFFFF << (32 - self.prefix)) & 0xFFFFFFFF).to_bytes(4, "big")

    @property
    def broadcast(self) -> bytes:
        """The directed broadcast address, or 0.0.0.0 where the interface has none."""
        if not self.flags & C.IFF_BROADCAST:
            return bytes(4)
        mask = int.from_bytes(self.netmask, "big")
        return ((int.from_bytes(self.address, "big") | ~mask) & 0xFFFFFFFF).to_bytes(4, "big")


def ipv4_interfaces(host) -> list[Interface]:
    """SIO_GET_INTERFACE_LIST's entries: the host's IPv4 addresses, then the loopback interface."""
    up = C.IFF_UP | C.IFF_MULTICAST
    own = [Interface(a, ASSUMED_PREFIX_V4, up | C.IFF_BROADCAST) for a in host.addresses
           if len(a) == 4 and a != LOOP4]
    return own + [Interface(LOOP4, LOOPBACK_PREFIX_V4, up | C.IFF_LOOPBACK)]


def bindable_addresses(host, family: int) -> list[bytes]:
    """SIO_ADDRESS_LIST_QUERY's addresses: the host's addresses of the socket's family. The IOCTL's
    page (learn.microsoft.com .../winsock/sio-address-list-query) leaves out the loopback interface's
    addresses (127.*, ::1) and those whose duplicate address detection is not done (the simulated
    host's addresses are all preferred)."""
    size = 4 if family == C.AF_INET else 16
    return [a for a in host.addresses if len(a) == size and a not in (LOOP4, LOOP6) and not
            (size == 4 and a[0] == 127)]
