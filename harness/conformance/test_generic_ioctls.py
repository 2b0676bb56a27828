"""Generic IOCTLs and unknown codes (docs/windows-observed.md §B, §C, §E)."""
import struct

import pytest

from harness.conformance.support import (POISON, Guarded, RoutineLog, dequeue, dword, get_extension, internal,
                                         make_iocp, overlapped)
from harness.winsock import constants as C
from harness.winsock.layouts import guid_bytes

UNKNOWN = [0xDEADBEEF, C.FIOASYNC, 0x667E]


def _unknown_error(decide):
    return C.WSAEOPNOTSUPP if decide("unknown_ioctl_error") == "WSAEOPNOTSUPP" else C.WSAEINVAL


@pytest.mark.parametrize("code", UNKNOWN, ids=hex)
def test_unknown_code_sync(api, tcp, decide, code):
    """Item 11: an unknown code fails (WSAEOPNOTSUPP on modern Windows) and *lpcbBytesReturned = 0."""
    n = dword(api)
    assert api.WSAIoctl(tcp, code, 0, 0, 0, 0, n.ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == _unknown_error(decide)
    assert n.u32() == 0


@pytest.mark.parametrize("code", UNKNOWN, ids=hex)
def test_unknown_code_overlapped_port(api, tcp, decide, code):
    """Item 13: pending, then a packet with ERROR_NOT_SUPPORTED; Internal = STATUS_NOT_SUPPORTED (profile)."""
    port = make_iocp(api, tcp)
    ovl = overlapped(api)
    n = dword(api)
    rc = api.WSAIoctl(tcp, code, 0, 0, 0, 0, n.ptr, ovl, 0)
    assert rc == C.SOCKET_ERROR
    if decide("unknown_ioctl_overlapped") == "pending":
        assert api.WSAGetLastError() == C.WSA_IO_PENDING
        assert n.u32() == POISON
        ok, err, nbytes, key, o = dequeue(api, port)
        assert (ok, err, nbytes, key, o) == (0, C.ERROR_NOT_SUPPORTED, 0, 123, ovl)
        assert internal(api, ovl) == (C.STATUS_NOT_SUPPORTED, 0)
    else:
        assert api.WSAGetLastError() == _unknown_error(decide)
        assert dequeue(api, port)[1] == C.WAIT_TIMEOUT


def test_unknown_code_overlapped_routine(api, tcp, decide):
    """Item 14: the routine runs once, with WSAEOPNOTSUPP (a Winsock code), 0 bytes, flags 0."""
    log = RoutineLog(api)
    ovl = overlapped(api)
    rc = api.WSAIoctl(tcp, 0xDEADBEEF, 0, 0, 0, 0, dword(api).ptr, ovl, log.ptr)
    assert rc == C.SOCKET_ERROR
    if decide("unknown_ioctl_overlapped") == "pending":
        assert api.WSAGetLastError() == C.WSA_IO_PENDING
        assert log.calls == []                      # only in an alertable wait
        assert api.SleepEx(0, True) == C.WAIT_IO_COMPLETION
        assert log.calls == [(C.WSAEOPNOTSUPP, 0, ovl, 0)]
        assert api.SleepEx(0, True) == 0
    else:
        assert api.SleepEx(0, True) == 0 and log.calls == []


def test_sio_flush(api, tcp, decide):
    """Item 12 vs the WFP pages: SIO_FLUSH is unsupported on modern Windows; documented as supported."""
    n = dword(api)
    rc = api.WSAIoctl(tcp, C.SIO_FLUSH, 0, 0, 0, 0, n.ptr, 0, 0)
    if decide("sio_flush") == "unsupported":
        assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == _unknown_error(decide)
    else:
        assert rc == 0 and n.u32() == 0


class TestFionbio:
    def test_bogus_small_pointer(self, api, tcp):
        """Item 21: ioctlsocket(FIONBIO, (u_long*)1) is WSAEFAULT."""
        assert api.ioctlsocket(tcp, C.FIONBIO, 1) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAEFAULT

    def test_short_input(self, api, tcp):
        """Item 22: input size 3 is WSAEFAULT; size 5 succeeds."""
        inp = dword(api, 1)
        assert api.WSAIoctl(tcp, C.FIONBIO, inp.ptr, 3, 0, 0, dword(api).ptr, 0, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAEFAULT
        big = Guarded(api, 5)
        api.memory.write(big.ptr, b"\1\0\0\0\0")
        assert api.WSAIoctl(tcp, C.FIONBIO, big.ptr, 5, 0, 0, dword(api).ptr, 0, 0) == 0

    def test_output_ignored_and_size_zero(self, api, tcp):
        """Items 23, 24: the output buffer is ignored (even an inaccessible one); size 0; error 0."""
        noaccess = api.memory.alloc(4, prot="none") if hasattr(api.memory, "protect") else 0
        n = dword(api)
        api.WSASetLastError(POISON)
        assert api.WSAIoctl(tcp, C.FIONBIO, dword(api, 1).ptr, 4, noaccess, 4, n.ptr, 0, 0) == 0
        assert n.u32() == 0 and api.WSAGetLastError() == 0

    def test_nonblocking_accept(self, api, tcp):
        """FIONBIO makes a blocking call fail with WSAEWOULDBLOCK instead of waiting."""
        from harness.conformance.support import listener
        lst, _ = listener(api)
        assert api.ioctlsocket(lst, C.FIONBIO, dword(api, 1).ptr) == 0
        assert api.accept(lst, 0, 0) == C.INVALID_SOCKET
        assert api.WSAGetLastError() == C.WSAEWOULDBLOCK


class TestFionreadSiocatmark:
    @pytest.mark.parametrize("code", [C.FIONREAD, C.SIOCATMARK], ids=hex)
    def test_short_output_is_efault_size_untouched(self, api, tcp, code):
        """Item 19: output size 3 is WSAEFAULT and lpcbBytesReturned is untouched."""
        n = dword(api)
        out = Guarded(api, 4)
        assert api.WSAIoctl(tcp, code, 0, 0, out.ptr, 3, n.ptr, 0, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAEFAULT
        assert n.u32() == POISON and out.guards_intact()

    def test_values(self, api, pair):
        """Item 20: FIONREAD 0 and SIOCATMARK TRUE on a fresh pair; 5 after the peer sends 5 bytes."""
        client, server, _ = pair
        out, n = Guarded(api, 4), dword(api)
        assert api.WSAIoctl(server, C.FIONREAD, 0, 0, out.ptr, 4, n.ptr, 0, 0) == 0
        assert (out.u32(), n.u32()) == (0, 4)
        assert api.WSAIoctl(server, C.SIOCATMARK, 0, 0, out.ptr, 4, n.ptr, 0, 0) == 0
        assert out.u32() == 1
        buf = api.memory.alloc(5)
        api.memory.write(buf, b"hello")
        assert api.send(client, buf, 5, 0) == 5
        api.SleepEx(10, False)
        assert api.WSAIoctl(server, C.FIONREAD, 0, 0, out.ptr, 4, n.ptr, 0, 0) == 0
        assert out.u32() == 5

    def test_inline_overlapped_completion(self, api, tcp):
        """Item 47: inline success with an OVERLAPPED returns 0, writes the size, Internal/High 0, packet bytes 0."""
        port = make_iocp(api, tcp)
        ovl = overlapped(api)
        out, n = Guarded(api, 4), dword(api)
        assert api.WSAIoctl(tcp, C.FIONREAD, 0, 0, out.ptr, 4, n.ptr, ovl, 0) == 0
        assert api.WSAGetLastError() == 0 and n.u32() == 4
        assert internal(api, ovl) == (0, 0)
        assert dequeue(api, port)[:5] == (1, POISON, 0, 123, ovl)


def test_siocatmark_on_udp(api, decide):
    """Decision point siocatmark_datagram: TRUE as on a stream without urgent data (item 20), or WSAEINVAL
    (Wine 8.0, found by tests/differential)."""
    udp = api.socket(C.AF_INET, C.SOCK_DGRAM, C.IPPROTO_UDP)
    out = Guarded(api, 4)
    rc = api.WSAIoctl(udp, C.SIOCATMARK, 0, 0, out.ptr, 4, dword(api).ptr, 0, 0)
    if decide("siocatmark_datagram") == "WSAEINVAL":
        assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEINVAL
        return
    assert rc == 0 and out.u32() == 1


class TestKeepalive:
    def test_bad_input(self, api, tcp):
        """Item 26: input size 0 or NULL input is WSAEFAULT with lpcbBytesReturned = 0."""
        n = dword(api)
        assert api.WSAIoctl(tcp, C.SIO_KEEPALIVE_VALS, 0, 12, 0, 0, n.ptr, 0, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAEFAULT and n.u32() == 0
        n.set_u32(POISON)
        inp = Guarded(api, 12)
        assert api.WSAIoctl(tcp, C.SIO_KEEPALIVE_VALS, inp.ptr, 0, 0, 0, n.ptr, 0, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAEFAULT and n.u32() == 0

    @pytest.mark.parametrize("vals", [(0, 0, 0), (1, 0, 0), (1, 1000, 1000), (1, 10000, 10000), (0, 100, 100)])
    def test_valid(self, api, tcp, vals):
        """Item 27: valid tuples succeed with size 0 and error 0."""
        inp = api.memory.alloc(12)
        api.memory.write(inp, struct.pack("<III", *vals))
        n = dword(api)
        assert api.WSAIoctl(tcp, C.SIO_KEEPALIVE_VALS, inp, 12, 0, 0, n.ptr, 0, 0) == 0
        assert n.u32() == 0 and api.WSAGetLastError() == 0

    def test_short_input_overlapped_sets_pending_internal(self, api, tcp):
        """Item 49: input size 11 with an OVERLAPPED: WSAEFAULT now, size untouched, Internal = STATUS_PENDING."""
        inp = api.memory.alloc(12)
        ovl = overlapped(api)
        n = dword(api)
        assert api.WSAIoctl(tcp, C.SIO_KEEPALIVE_VALS, inp, 11, 0, 0, n.ptr, ovl, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAEFAULT and n.u32() == POISON
        assert internal(api, ovl) == (C.STATUS_PENDING, POISON)

    def test_overlapped_without_routine_leaves_size(self, api, tcp):
        """Item 48: inline success with an OVERLAPPED and no routine leaves lpcbBytesReturned untouched."""
        inp = api.memory.alloc(12)
        n = dword(api)
        assert api.WSAIoctl(tcp, C.SIO_KEEPALIVE_VALS, inp, 12, 0, 0, n.ptr, overlapped(api), 0) == 0
        assert n.u32() == POISON


class TestExtensionFunctions:
    @pytest.mark.parametrize("guid", [C.WSAID_WSARECVMSG, C.WSAID_WSASENDMSG], ids=str)
    def test_known_guid(self, api, tcp, guid):
        """Item 47 (extension pointer): returns 0, 8 bytes, a non-NULL pointer."""
        assert get_extension(api, tcp, guid) != 0

    def test_unknown_guid_overlapped_is_immediate(self, api, tcp):
        """Item 51: unknown GUID with an OVERLAPPED: WSAEINVAL now; size, Internal, InternalHigh untouched; no packet."""
        port = make_iocp(api, tcp)
        inp = api.memory.alloc(16)
        api.memory.write(inp, guid_bytes(C.WSAID_ACCEPTEX)[::-1])
        ovl, n, out = overlapped(api), dword(api), Guarded(api, 8)
        rc = api.WSAIoctl(tcp, C.SIO_GET_EXTENSION_FUNCTION_POINTER, inp, 16, out.ptr, 8, n.ptr, ovl, 0)
        assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEINVAL
        assert n.u32() == POISON and internal(api, ovl) == (POISON, POISON)
        assert dequeue(api, port)[1] == C.WAIT_TIMEOUT

    @pytest.mark.parametrize("inlen,outlen", [(15, 8), (16, 4)])
    def test_short_lengths(self, api, tcp, decide, inlen, outlen):
        """Decision point extension_pointer_sizes (docs/windows-observed.md §P, no public oracle): a
        GUID input other than 16 bytes or an output under a pointer is WSAEFAULT, or the lengths are
        not looked at and the pointer is written (Wine 8.0, found by tests/differential)."""
        inp = api.memory.alloc(16)
        api.memory.write(inp, guid_bytes(C.WSAID_ACCEPTEX))
        n, out = dword(api), Guarded(api, 8)
        rc = api.WSAIoctl(tcp, C.SIO_GET_EXTENSION_FUNCTION_POINTER, inp, inlen, out.ptr, outlen, n.ptr, 0, 0)
        if decide("extension_pointer_sizes") == "checked":
            assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEFAULT
            assert out.read(8) == b"\xcc" * 8 and n.u32() == POISON
            return
        assert rc == 0 and n.u32() == 8 and struct.unpack("<Q", out.read(8))[0] != 0


class TestBaseHandle:
    @pytest.mark.parametrize("family,kind", [(C.AF_INET, C.SOCK_STREAM), (C.AF_INET, C.SOCK_DGRAM),
                                             (C.AF_INET6, C.SOCK_STREAM), (C.AF_INET6, C.SOCK_DGRAM)])
    def test_sync(self, api, family, kind):
        """Item 41: returns 0, 8 bytes, the socket itself."""
        s = api.socket(family, kind, 0)
        out, n = Guarded(api, 8), dword(api)
        assert api.WSAIoctl(s, C.SIO_BASE_HANDLE, 0, 0, out.ptr, 8, n.ptr, 0, 0) == 0
        assert n.u32() == 8 and struct.unpack("<Q", out.read())[0] == s

    def test_short_output(self, api, tcp, decide):
        """Decision point extension_pointer_sizes: an output under 8 bytes is WSAEFAULT, or its length is
        not looked at and the handle is written whole (Wine 8.0, found by tests/differential)."""
        out, n = Guarded(api, 8), dword(api)
        rc = api.WSAIoctl(tcp, C.SIO_BASE_HANDLE, 0, 0, out.ptr, 4, n.ptr, 0, 0)
        if decide("extension_pointer_sizes") == "checked":
            assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEFAULT and out.read() == b"\xcc" * 8
            return
        assert rc == 0 and n.u32() == 8 and struct.unpack("<Q", out.read())[0] == tcp

    def test_overlapped_fails_through_port(self, api, tcp):
        """Item 55: overlapped SIO_BASE_HANDLE is pending, then ERROR_NOT_SUPPORTED through the port."""
        port = make_iocp(api, tcp)
        ovl, n, out = overlapped(api), dword(api), Guarded(api, 8)
        assert api.WSAIoctl(tcp, C.SIO_BASE_HANDLE, 0, 0, out.ptr, 8, n.ptr, ovl, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSA_IO_PENDING and n.u32() == POISON
        assert dequeue(api, port)[:5] == (0, C.ERROR_NOT_SUPPORTED, 0, 123, ovl)
        assert internal(api, ovl) == (C.STATUS_NOT_SUPPORTED, 0)
        assert out.read() == b"\xcc" * 8


def test_ideal_send_backlog(api, tcp, pair):
    """Item 16: UDP WSAEOPNOTSUPP; unconnected TCP WSAENOTCONN; connected TCP 0x10000."""
    out, n = Guarded(api, 4), dword(api)
    udp = api.socket(C.AF_INET, C.SOCK_DGRAM, 0)
    assert api.WSAIoctl(udp, C.SIO_IDEAL_SEND_BACKLOG_QUERY, 0, 0, out.ptr, 4, n.ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEOPNOTSUPP
    assert api.WSAIoctl(tcp, C.SIO_IDEAL_SEND_BACKLOG_QUERY, 0, 0, out.ptr, 4, n.ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAENOTCONN
    assert api.WSAIoctl(pair[0], C.SIO_IDEAL_SEND_BACKLOG_QUERY, 0, 0, out.ptr, 4, n.ptr, 0, 0) == 0
    assert out.u32() == 0x10000


def test_ideal_send_backlog_short_output(api, decide):
    """Decision point ideal_backlog_check_order: a 3-byte output on a UDP socket answers the socket's
    WSAEOPNOTSUPP (item 16) or the output's WSAEFAULT first (Wine 8.0, tests/differential)."""
    udp = api.socket(C.AF_INET, C.SOCK_DGRAM, C.IPPROTO_UDP)
    out = Guarded(api, 4)
    rc = api.WSAIoctl(udp, C.SIO_IDEAL_SEND_BACKLOG_QUERY, 0, 0, out.ptr, 3, dword(api).ptr, 0, 0)
    expected = C.WSAEFAULT if decide("ideal_backlog_check_order") == "buffer_first" else C.WSAEOPNOTSUPP
    assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == expected and out.read() == b"\xcc" * 4


def test_ideal_send_backlog_overlapped(api, pair, decide):
    """Decision point ideal_backlog_overlapped (no Windows-run test issues the code overlapped): answered
    inline with 0x10000 either way; indicated like item 47's inline codes (Internal 0, packet with 0
    bytes), or the OVERLAPPED is not looked at and nothing is indicated (Wine 8.0, tests/differential)."""
    client, _server, _ = pair
    port = make_iocp(api, client)
    ovl, n, out = overlapped(api), dword(api), Guarded(api, 4)
    assert api.WSAIoctl(client, C.SIO_IDEAL_SEND_BACKLOG_QUERY, 0, 0, out.ptr, 4, n.ptr, ovl, 0) == 0
    assert n.u32() == 4 and out.u32() == 0x10000
    if decide("ideal_backlog_overlapped") == "ignored":
        assert internal(api, ovl) == (POISON, POISON) and dequeue(api, port)[1] == C.WAIT_TIMEOUT
        return
    assert internal(api, ovl) == (0, 0) and dequeue(api, port)[:5] == (1, POISON, 0, 123, ovl)


def test_ale_endpoint_handle(api, tcp):
    """winsock-ioctls.md: output NULL or smaller than a UINT64 is WSAEINVAL (not WSAEFAULT)."""
    out, n = Guarded(api, 8), dword(api)
    assert api.WSAIoctl(tcp, C.SIO_QUERY_WFP_ALE_ENDPOINT_HANDLE, 0, 0, 0, 0, n.ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEINVAL
    assert api.WSAIoctl(tcp, C.SIO_QUERY_WFP_ALE_ENDPOINT_HANDLE, 0, 0, out.ptr, 7, n.ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEINVAL
    assert api.WSAIoctl(tcp, C.SIO_QUERY_WFP_ALE_ENDPOINT_HANDLE, 0, 0, out.ptr, 8, n.ptr, 0, 0) == 0
    assert n.u32() == 8 and struct.unpack("<Q", out.read())[0] != 0 and out.guards_intact()
