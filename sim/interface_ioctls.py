"""The IOCTLs that report the host's addresses: SIO_ROUTING_INTERFACE_QUERY, SIO_ADDRESS_LIST_QUERY,
SIO_GET_INTERFACE_LIST.

Item numbers refer to docs/windows-observed.md; the answers come from the simulated host
(sim/interfaces.py, sim/net.py Host.source_for). The first two are answered in user mode
(layer 'ws2_32': a failure leaves the OVERLAPPED alone, item 50; a success is indicated with
0 bytes, item 47); SIO_GET_INTERFACE_LIST is a kernel request that really pends (items 53, 54).
"""
from __future__ import annotations

import struct

from harness.winsock import constants as C
from harness.winsock import sockaddr as codec
from harness.winsock.layouts import INTERFACE_INFO, SOCKADDR, SOCKADDR_IN, SOCKADDR_IN6, SOCKET_ADDRESS, \
    SOCKET_ADDRESS_LIST
from sim.interfaces import bindable_addresses, ipv4_interfaces
from sim.ioctl_outcomes import UNTOUCHED, Deferred, Fail, Inline
from sim.ioctls import handler

_SOCKADDR_SIZE = {C.AF_INET: SOCKADDR_IN.size, C.AF_INET6: SOCKADDR_IN6.size}
_LIST_HEADER = SOCKET_ADDRESS_LIST.offset("Address")        # FIELD_OFFSET(SOCKET_ADDRESS_LIST, Address[0])
_WILDCARDS = (bytes(4), bytes(16))
_SOCKADDR_GEN = INTERFACE_INFO.by_name["iiAddress"].size     # a sockaddr_gen: here a sockaddr_in, then zeros


@handler(C.SIO_ROUTING_INTERFACE_QUERY, layer="ws2_32")
def routing_interface_query(call):
    """Item 47 puts this code in the user-mode inline class; that its failures also leave the OVERLAPPED
    alone, as SIO_ADDRESS_LIST_QUERY's do (item 50), is assumed (no Windows-run test looks)."""
    sock, mem = call.sock, call.mem
    if call.inbuf == 0 or call.cbin < SOCKADDR.size:
        return Fail(C.WSAEINVAL)                   # item 28: short or NULL input, size untouched
    head = mem.kread(call.inbuf, SOCKADDR.size)
    if head is None:
        return Fail(C.WSAEFAULT)                   # the Winsock IOCTLs page: an input outside user memory
    family = struct.unpack_from("<H", head)[0]
    # Item 29: family 0 is WSAEAFNOSUPPORT. A family other than the socket's is assumed to be too.
    if family != sock.family:
        return Fail(C.WSAEAFNOSUPPORT)
    size = _SOCKADDR_SIZE[family]
    if call.cbin < size:
        return Fail(C.WSAEINVAL)                   # an AF_INET6 input short of a sockaddr_in6 (assumed, item 28)
    raw = mem.kread(call.inbuf, size)
    if raw is None:
        return Fail(C.WSAEFAULT)
    dst = raw[4:8] if family == C.AF_INET else raw[8:24]
    if dst in _WILDCARDS:
        return Fail(C.WSAEINVAL)                   # item 30: 0.0.0.0 (:: assumed alike)
    if call.cbout < size and call.outbuf != 0:
        return Fail(C.WSAEFAULT, size)             # item 32 and the Winsock IOCTLs page: the size needed
    if call.outbuf == 0 or not mem.check(call.outbuf, size, True):
        return Fail(C.WSAEFAULT)                   # item 33: NULL (or outside user memory), size untouched
    src = sock.host.source_for(dst, family)
    if src is None:
        # The Winsock IOCTLs page: a destination no interface reaches is WSAENETUNREACH.
        return Fail(C.WSAENETUNREACH)
    data = codec.pack_for(family, src, 0)
    return Inline(size, write=lambda: mem.kwrite(call.outbuf, data))      # items 31, 47


@handler(C.SIO_ADDRESS_LIST_QUERY, layer="ws2_32")
def address_list_query(call):
    """Items 34-38 (sizes), 47 (inline), 50 (failures leave the OVERLAPPED alone)."""
    if 0 < call.cbout < _LIST_HEADER:
        return Fail(C.WSAEINVAL, 0)                # item 36: smaller than the header, size 0
    family = call.sock.family
    addresses = bindable_addresses(call.sock.host, family)
    entry = _SOCKADDR_SIZE[family]
    count = len(addresses)
    names_at = _LIST_HEADER + SOCKET_ADDRESS.size * count
    needed = names_at + entry * count              # item 38: FIELD_OFFSET(Address[n]) + the sockaddrs
    if call.outbuf == 0 or call.cbout < needed or not call.mem.check(call.outbuf, needed, True):
        return Fail(C.WSAEFAULT, needed)           # items 34, 35, 37: the size needed, buffer untouched
    base = call.outbuf
    out = bytearray(struct.pack("<i4x", count))
    for i in range(count):
        out += SOCKET_ADDRESS.pack(lpSockaddr=base + names_at + entry * i, iSockaddrLength=entry)
    for ip in addresses:
        out += codec.pack(ip, 0)
    data = bytes(out)
    return Inline(needed, write=lambda: call.mem.kwrite(base, data))


def _interface_list(host) -> bytes:
    def gen(ip: bytes) -> bytes:
        return codec.pack(ip, 0).ljust(_SOCKADDR_GEN, b"\0")

    out = bytearray()
    for itf in ipv4_interfaces(host):
        # no broadcast address: the union left zero (family 0), as Wine test_get_interface_list expects
        broadcast = gen(itf.broadcast) if itf.flags & C.IFF_BROADCAST else bytes(_SOCKADDR_GEN)
        out += INTERFACE_INFO.pack(iiFlags=itf.flags, iiAddress=gen(itf.address), iiBroadcastAddress=broadcast,
                                   iiNetmask=gen(itf.netmask))
    return bytes(out)


@handler(C.SIO_GET_INTERFACE_LIST)
def get_interface_list(call):
    """Items 39, 40 (synchronous), 53, 54 (overlapped: pending, answered through the completion)."""
    if call.sock.family != C.AF_INET:
        # The Winsock IOCTLs page: WSAEINVAL on a socket not at IPPROTO_IP (AF_INET6: item 17). Answered
        # at issue, sizes as item 40's failure (assumed).
        return Fail(C.WSAEINVAL, UNTOUCHED if call.is_overlapped else 0)
    data = _interface_list(call.sock.host)
    mem, outbuf, cbout = call.mem, call.outbuf, call.cbout

    def fits() -> bool:
        return cbout >= len(data) and outbuf != 0 and mem.check(outbuf, len(data), True)

    if not call.is_overlapped:
        if not fits():
            return Fail(C.WSAEFAULT, 0)            # item 40: size 0
        return Inline(len(data), write=lambda: mem.kwrite(outbuf, data))       # item 39

    def finish():
        if not fits():
            return C.STATUS_BUFFER_TOO_SMALL, 0     # item 54
        mem.kwrite(outbuf, data)
        return C.STATUS_SUCCESS, len(data)          # item 53: the packet carries the size
    return Deferred(finish)
