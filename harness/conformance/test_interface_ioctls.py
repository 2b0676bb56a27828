"""SIO_ROUTING_INTERFACE_QUERY, SIO_ADDRESS_LIST_QUERY, SIO_GET_INTERFACE_LIST (docs/windows-observed.md
items 28-40, 47, 50, 53, 54; Wine dlls/ws2_32/tests/sock.c test_sioRoutingInterfaceQuery,
test_address_list_query, test_get_interface_list, which run on Windows).

The addresses are the host's: the cases that run on any target assert what does not depend on the
machine (errors, sizes and their relation to the count, the loopback entry); the simulated host's own
answers are checked by the sim_only cases at the end.
"""
import struct

import pytest

from harness.conformance.support import POISON, Guarded, RoutineLog, dequeue, dword, internal, make_iocp, \
    overlapped, sockaddr
from harness.winsock import constants as C
from harness.winsock.layouts import INTERFACE_INFO, SOCKADDR_IN, SOCKADDR_IN6, SOCKET_ADDRESS, \
    SOCKET_ADDRESS_LIST
from harness.winsock.sockaddr import ip_bytes

HEADER = SOCKET_ADDRESS_LIST.offset("Address")      # FIELD_OFFSET(SOCKET_ADDRESS_LIST, Address[0])
ENTRY = INTERFACE_INFO.size
ROUTE = C.SIO_ROUTING_INTERFACE_QUERY
LIST = C.SIO_ADDRESS_LIST_QUERY
IFLIST = C.SIO_GET_INTERFACE_LIST


def _udp(api, family=C.AF_INET):
    s = api.socket(family, C.SOCK_DGRAM, C.IPPROTO_UDP)
    assert s != C.INVALID_SOCKET, api.WSAGetLastError()
    return s


def _destination(api, ip: str, port: int = 0, family: int = None):
    """A sockaddr for the routing query: (ptr, length); `family` overrides the one written."""
    ptr, n = sockaddr(api, ip, port)
    if family is not None:
        api.memory.write(ptr, struct.pack("<H", family))
    return ptr, n


def _host_of(api):
    host = getattr(getattr(api, "process", None), "host", None)
    if host is None:
        pytest.skip("needs the simulator's host (its addresses)")
    return host


# --- SIO_ROUTING_INTERFACE_QUERY (Wine test_sioRoutingInterfaceQuery, a UDP socket) -----------------------
class TestRoutingInterfaceQuery:
    @pytest.mark.parametrize("null_input", [False, True], ids=["15_bytes", "null"])
    def test_short_or_null_input(self, api, null_input):
        """Item 28: input of 15 bytes or NULL is WSAEINVAL, lpcbBytesReturned untouched."""
        s = _udp(api)
        dst, _ = _destination(api, "127.0.0.1")
        out, n = Guarded(api, 16), dword(api)
        rc = api.WSAIoctl(s, ROUTE, 0 if null_input else dst, 16 if null_input else 15, out.ptr, 16, n.ptr, 0, 0)
        assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEINVAL
        assert n.u32() == POISON and out.read() == b"\xcc" * 16

    def test_family_zero(self, api):
        """Item 29: family 0 is WSAEAFNOSUPPORT, size untouched."""
        s = _udp(api)
        dst, _ = _destination(api, "0.0.0.0", family=0)
        n = dword(api)
        assert api.WSAIoctl(s, ROUTE, dst, 16, Guarded(api, 16).ptr, 16, n.ptr, 0, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAEAFNOSUPPORT and n.u32() == POISON

    def test_wildcard_destination(self, api):
        """Item 30: 0.0.0.0 is WSAEINVAL, size untouched."""
        s = _udp(api)
        dst, _ = _destination(api, "0.0.0.0")
        out, n = Guarded(api, 16), dword(api)
        assert api.WSAIoctl(s, ROUTE, dst, 16, out.ptr, 16, n.ptr, 0, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAEINVAL and n.u32() == POISON

    def test_loopback(self, api):
        """Item 31: 127.0.0.1 succeeds, error 0, 16 bytes: a sockaddr_in with port 0 (which source address
        is not asserted: Wine's test says no route to loopback is guaranteed)."""
        s = _udp(api)
        dst, _ = _destination(api, "127.0.0.1", 5000)
        out, n = Guarded(api, 16), dword(api)
        api.WSASetLastError(POISON)
        assert api.WSAIoctl(s, ROUTE, dst, 16, out.ptr, 16, n.ptr, 0, 0) == 0
        assert api.WSAGetLastError() == 0 and n.u32() == SOCKADDR_IN.size
        family, port = struct.unpack_from("<H", out.read())[0], struct.unpack_from(">H", out.read(), 2)[0]
        assert (family, port) == (C.AF_INET, 0) and out.guards_intact()

    def test_ipv6_loopback(self, api):
        """The Winsock IOCTLs page (the local interface's address for any destination sockaddr): ::1 on an
        AF_INET6 socket succeeds with a sockaddr_in6 of 28 bytes, port 0."""
        s = _udp(api, C.AF_INET6)
        dst, length = _destination(api, "::1", 5000)
        out, n = Guarded(api, SOCKADDR_IN6.size), dword(api)
        assert api.WSAIoctl(s, ROUTE, dst, length, out.ptr, SOCKADDR_IN6.size, n.ptr, 0, 0) == 0
        assert n.u32() == SOCKADDR_IN6.size
        data = out.read()
        assert struct.unpack_from("<H", data)[0] == C.AF_INET6 and data[2:4] == b"\0\0" and out.guards_intact()

    def test_short_output_reports_size(self, api):
        """Item 32 and the Winsock IOCTLs page: an output of 15 bytes is WSAEFAULT, lpcbBytesReturned = 16."""
        s = _udp(api)
        dst, _ = _destination(api, "127.0.0.1")
        out, n = Guarded(api, 16), dword(api)
        assert api.WSAIoctl(s, ROUTE, dst, 16, out.ptr, 15, n.ptr, 0, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAEFAULT and n.u32() == SOCKADDR_IN.size

    def test_null_output(self, api):
        """Item 33: a NULL output is WSAEFAULT, size untouched."""
        s = _udp(api)
        dst, _ = _destination(api, "127.0.0.1")
        n = dword(api)
        assert api.WSAIoctl(s, ROUTE, dst, 16, 0, 16, n.ptr, 0, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAEFAULT and n.u32() == POISON

    def test_overlapped_port(self, api):
        """Item 47: with an OVERLAPPED, 0 at once with size 16; a packet with 0 bytes; Internal/High 0."""
        s = _udp(api)
        port = make_iocp(api, s)
        dst, _ = _destination(api, "127.0.0.1")
        ovl, out, n = overlapped(api), Guarded(api, 16), dword(api)
        api.WSASetLastError(POISON)
        assert api.WSAIoctl(s, ROUTE, dst, 16, out.ptr, 16, n.ptr, ovl, 0) == 0
        assert api.WSAGetLastError() == 0 and n.u32() == SOCKADDR_IN.size
        assert dequeue(api, port)[:5] == (1, POISON, 0, 123, ovl)
        assert internal(api, ovl) == (0, 0)

    def test_overlapped_routine(self, api):
        """Item 47 (test_sioRoutingInterfaceQuery's APC part): 0 at once, the routine runs in the next
        alertable wait with error 0 and 0 bytes."""
        s = _udp(api)
        dst, _ = _destination(api, "127.0.0.1")
        log, ovl, n = RoutineLog(api), overlapped(api), dword(api)
        assert api.WSAIoctl(s, ROUTE, dst, 16, Guarded(api, 16).ptr, 16, n.ptr, ovl, log.ptr) == 0
        assert n.u32() == SOCKADDR_IN.size
        assert api.SleepEx(0, True) == C.WAIT_IO_COMPLETION
        assert log.calls == [(0, 0, ovl, 0)]


# --- SIO_ADDRESS_LIST_QUERY (Wine test_address_list_query, a TCP socket) -------------------------------
def _required(api, s) -> int:
    n = dword(api, 0)
    assert api.WSAIoctl(s, LIST, 0, 0, 0, 0, n.ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEFAULT
    return n.u32()


def _entries(api, out: Guarded) -> list:
    """[(lpSockaddr, iSockaddrLength)] of a SOCKET_ADDRESS_LIST."""
    data = out.read()
    count = struct.unpack_from("<i", data)[0]
    return [SOCKET_ADDRESS.unpack(data[HEADER + SOCKET_ADDRESS.size * i:]) for i in range(count)]


class TestAddressListQuery:
    @pytest.mark.parametrize("family", [C.AF_INET, C.AF_INET6], ids=["ipv4", "ipv6"])
    def test_required_size_then_list(self, api, family):
        """Items 34, 38: no buffer is WSAEFAULT with the size needed (at least the header); that size
        succeeds, error 0, and equals FIELD_OFFSET(Address[count]) plus the sockaddr lengths. Each
        entry points into the buffer at a sockaddr of the socket's family (the IOCTL's page: the
        addresses of the socket's protocol family)."""
        s = api.socket(family, C.SOCK_STREAM, C.IPPROTO_TCP)
        need = _required(api, s)
        assert need >= HEADER
        out, n = Guarded(api, 1024), dword(api, 0)
        api.WSASetLastError(POISON)
        assert api.WSAIoctl(s, LIST, 0, 0, out.ptr, 1024, n.ptr, 0, 0) == 0
        assert api.WSAGetLastError() == 0 and n.u32() == need
        entries = _entries(api, out)
        assert need == HEADER + SOCKET_ADDRESS.size * len(entries) + sum(e["iSockaddrLength"] for e in entries)
        size = SOCKADDR_IN.size if family == C.AF_INET else SOCKADDR_IN6.size
        for e in entries:
            assert out.ptr <= e["lpSockaddr"] and e["lpSockaddr"] + e["iSockaddrLength"] <= out.ptr + need
            assert e["iSockaddrLength"] == size
            assert struct.unpack("<H", api.memory.read(e["lpSockaddr"], 2))[0] == family
        assert out.guards_intact()

    @pytest.mark.parametrize("null_buffer", [True, False], ids=["null_with_size", "size_0"])
    def test_null_or_empty_output(self, api, tcp, null_buffer):
        """Item 35: a NULL output with a size, or a buffer of size 0: WSAEFAULT with the size needed."""
        need = _required(api, tcp)
        out, n = Guarded(api, 64), dword(api)
        rc = api.WSAIoctl(tcp, LIST, 0, 0, 0 if null_buffer else out.ptr, 1024 if null_buffer else 0, n.ptr, 0, 0)
        assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEFAULT and n.u32() == need
        assert out.read() == b"\xcc" * 64

    def test_output_of_one_byte(self, api, tcp):
        """Item 36: an output smaller than the header is WSAEINVAL with lpcbBytesReturned = 0."""
        n = dword(api)
        assert api.WSAIoctl(tcp, LIST, 0, 0, Guarded(api, 8).ptr, 1, n.ptr, 0, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAEINVAL and n.u32() == 0

    def test_output_of_the_header(self, api, tcp):
        """Item 37: an output of exactly the header is WSAEFAULT with the size needed, the buffer untouched
        (iAddressCount still 0xcccccccc); a host with no address to list needs only the header (item 38)."""
        need = _required(api, tcp)
        out, n = Guarded(api, HEADER), dword(api)
        rc = api.WSAIoctl(tcp, LIST, 0, 0, out.ptr, HEADER, n.ptr, 0, 0)
        if need == HEADER:
            assert rc == 0 and n.u32() == HEADER and struct.unpack_from("<i", out.read())[0] == 0
            return
        assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEFAULT and n.u32() == need
        assert out.read() == b"\xcc" * HEADER

    def test_overlapped_failures_leave_overlapped(self, api, tcp):
        """Item 50: with an OVERLAPPED, size 0 (WSAEFAULT, the size needed), 1 (WSAEINVAL, 0) and the header
        (WSAEFAULT) fail at once leaving Internal/InternalHigh alone and queue nothing; then a large enough
        buffer succeeds inline (item 47): 0, the size, one packet with 0 bytes, Internal/High 0."""
        port = make_iocp(api, tcp)
        need = _required(api, tcp)
        out = Guarded(api, 1024)
        for size, error, written in ((0, C.WSAEFAULT, need), (1, C.WSAEINVAL, 0), (HEADER, C.WSAEFAULT, need)):
            if size == HEADER and need == HEADER:
                continue                                # nothing to list: the header is large enough
            ovl, n = overlapped(api), dword(api)
            api.WSASetLastError(POISON)
            assert api.WSAIoctl(tcp, LIST, 0, 0, out.ptr, size, n.ptr, ovl, 0) == C.SOCKET_ERROR
            assert (api.WSAGetLastError(), n.u32()) == (error, written)
            assert internal(api, ovl) == (POISON, POISON)
        ovl, n = overlapped(api), dword(api)
        api.WSASetLastError(POISON)
        assert api.WSAIoctl(tcp, LIST, 0, 0, out.ptr, 1024, n.ptr, ovl, 0) == 0
        assert api.WSAGetLastError() == 0 and n.u32() == need
        assert dequeue(api, port)[:5] == (1, POISON, 0, 123, ovl)
        assert internal(api, ovl) == (0, 0)
        assert dequeue(api, port)[1] == C.WAIT_TIMEOUT

    def test_overlapped_routine(self, api, tcp):
        """Item 47 (test_address_list_query's APC part): 0 at once with the size; the routine runs once in
        the next alertable wait, error 0, 0 bytes."""
        need = _required(api, tcp)
        log, ovl, n = RoutineLog(api), overlapped(api), dword(api)
        assert api.WSAIoctl(tcp, LIST, 0, 0, Guarded(api, 1024).ptr, 1024, n.ptr, ovl, log.ptr) == 0
        assert n.u32() == need
        assert api.SleepEx(0, True) == C.WAIT_IO_COMPLETION
        assert log.calls == [(0, 0, ovl, 0)]


# --- SIO_GET_INTERFACE_LIST (Wine test_get_interface_list, a TCP socket) -------------------------------
def _interfaces(data: bytes) -> list:
    return [INTERFACE_INFO.unpack(data[i:i + ENTRY]) for i in range(0, len(data), ENTRY)]


def _sin(gen: bytes) -> tuple:
    return struct.unpack_from("<H", gen)[0], gen[4:8]


class TestGetInterfaceList:
    def test_sync(self, api, tcp):
        """Item 39: 0, error 0, a non-zero multiple of sizeof(INTERFACE_INFO); a loopback entry; every
        address and netmask AF_INET and non-zero; a broadcast address exactly when IFF_BROADCAST is set."""
        out, n = Guarded(api, 4096), dword(api)
        api.WSASetLastError(POISON)
        assert api.WSAIoctl(tcp, IFLIST, 0, 0, out.ptr, 4096, n.ptr, 0, 0) == 0
        size = n.u32()
        assert api.WSAGetLastError() == 0 and size and size % ENTRY == 0
        infos = _interfaces(out.read(size))
        assert any(i["iiFlags"] & C.IFF_LOOPBACK for i in infos)
        for i in infos:
            assert _sin(i["iiAddress"])[0] == C.AF_INET and _sin(i["iiAddress"])[1] != bytes(4)
            assert _sin(i["iiNetmask"])[0] == C.AF_INET and _sin(i["iiNetmask"])[1] != bytes(4)
            assert (_sin(i["iiBroadcastAddress"])[1] != bytes(4)) == bool(i["iiFlags"] & C.IFF_BROADCAST)
        assert out.guards_intact()

    def test_sync_too_small(self, api, tcp):
        """Item 40: one byte short of one entry is WSAEFAULT with lpcbBytesReturned = 0."""
        n = dword(api)
        assert api.WSAIoctl(tcp, IFLIST, 0, 0, Guarded(api, ENTRY).ptr, ENTRY - 1, n.ptr, 0, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAEFAULT and n.u32() == 0

    def test_overlapped_port(self, api, tcp):
        """Item 53: pending (-1, 997, size untouched); the packet carries the size, Internal 0, InternalHigh
        the size, and the buffer holds what the synchronous call gave."""
        port = make_iocp(api, tcp)
        out, n = Guarded(api, 4096), dword(api)
        assert api.WSAIoctl(tcp, IFLIST, 0, 0, out.ptr, 4096, n.ptr, 0, 0) == 0
        size, first = n.u32(), out.read()
        ovl, n, out = overlapped(api), dword(api), Guarded(api, 4096)
        assert api.WSAIoctl(tcp, IFLIST, 0, 0, out.ptr, 4096, n.ptr, ovl, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSA_IO_PENDING and n.u32() == POISON
        assert dequeue(api, port, 1000)[:5] == (1, POISON, size, 123, ovl)
        assert internal(api, ovl) == (0, size)
        assert out.read() == first

    def test_overlapped_too_small_port(self, api, tcp):
        """Item 54: pending, then FALSE with ERROR_INSUFFICIENT_BUFFER, 0 bytes; Internal
        STATUS_BUFFER_TOO_SMALL, InternalHigh 0."""
        port = make_iocp(api, tcp)
        ovl, n = overlapped(api), dword(api)
        assert api.WSAIoctl(tcp, IFLIST, 0, 0, Guarded(api, ENTRY).ptr, ENTRY - 1, n.ptr, ovl, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSA_IO_PENDING and n.u32() == POISON
        assert dequeue(api, port, 1000)[:5] == (0, C.ERROR_INSUFFICIENT_BUFFER, 0, 123, ovl)
        assert internal(api, ovl) == (C.STATUS_BUFFER_TOO_SMALL, 0)

    def test_overlapped_too_small_routine(self, api, tcp):
        """Item 54: with a routine, pending; the routine runs once with WSAEFAULT and 0 bytes."""
        log, ovl, n = RoutineLog(api), overlapped(api), dword(api)
        rc = api.WSAIoctl(tcp, IFLIST, 0, 0, Guarded(api, ENTRY).ptr, ENTRY - 1, n.ptr, ovl, log.ptr)
        assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSA_IO_PENDING and n.u32() == POISON
        assert api.SleepEx(100, True) == C.WAIT_IO_COMPLETION
        assert log.calls == [(C.WSAEFAULT, 0, ovl, 0)]

    def test_ipv6_socket(self, api):
        """The Winsock IOCTLs page: WSAEINVAL on a socket not at IPPROTO_IP (an AF_INET6 one: item 17,
        a field report on Windows 10)."""
        s = api.socket(C.AF_INET6, C.SOCK_STREAM, C.IPPROTO_TCP)
        out = Guarded(api, 4096)
        assert api.WSAIoctl(s, IFLIST, 0, 0, out.ptr, 4096, dword(api).ptr, 0, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAEINVAL


# --- the simulated host's answers ---------------------------------------------------------------------
@pytest.mark.sim_only
def test_simulated_host_answers(api, tcp):
    """The answers come from the simulated host (sim/interfaces.py): the routing query picks the address
    the host sends from (loopback for loopback), the address list holds the host's addresses of the
    socket's family without loopback (the SIO_ADDRESS_LIST_QUERY page), the interface list the host's
    IPv4 addresses (a /24 with its broadcast address: an assumption) and then loopback."""
    host = _host_of(api)
    own4 = [a for a in host.addresses if len(a) == 4]
    udp, out, n = _udp(api), Guarded(api, 1024), dword(api)
    for dst, src in (("127.0.0.1", ip_bytes("127.0.0.1")), ("198.51.100.7", own4[0])):
        assert api.WSAIoctl(udp, ROUTE, _destination(api, dst)[0], 16, out.ptr, 16, n.ptr, 0, 0) == 0
        assert out.read(8)[4:8] == src
    assert api.WSAIoctl(tcp, LIST, 0, 0, out.ptr, 1024, n.ptr, 0, 0) == 0
    assert [api.memory.read(e["lpSockaddr"] + 4, 4) for e in _entries(api, out)] == own4
    assert api.WSAIoctl(tcp, IFLIST, 0, 0, out.ptr, 1024, n.ptr, 0, 0) == 0
    infos = _interfaces(out.read(n.u32()))
    assert [_sin(i["iiAddress"])[1] for i in infos] == own4 + [ip_bytes("127.0.0.1")]
    assert _sin(infos[0]["iiBroadcastAddress"])[1] == own4[0][:3] + b"\xff"
    assert infos[-1]["iiFlags"] == C.IFF_UP | C.IFF_LOOPBACK | C.IFF_MULTICAST


@pytest.mark.sim_only
def test_routing_query_unreachable(profile):
    """The Winsock IOCTLs page: a destination no interface reaches is WSAENETUNREACH (an IPv6 socket on a
    host with no IPv6 address)."""
    from sim.world import World
    world = World(profile)
    api = world.start_process(world.add_host("v4only", ["192.0.2.20"]))
    s = _udp(api, C.AF_INET6)
    n = dword(api)
    dst, length = _destination(api, "2001:db8::99")
    assert api.WSAIoctl(s, ROUTE, dst, length, Guarded(api, 28).ptr, 28, n.ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAENETUNREACH and n.u32() == POISON
