"""The WFP redirect IOCTLs' checks that do not depend on a redirect.

Source: the SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS / _CONTEXT and
SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS pages (the seed page, summarised in docs/seed-page.md), docs/decisions.md §4 table; expected codes from the profile.
"""
import pytest

from harness.conformance.support import POISON, Guarded, dword, listener, overlapped, udp_socket
from harness.winsock import constants as C

QUERIES = [C.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS, C.SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT]


def _query(api, sock, code, size=1024, out=None):
    out = out or Guarded(api, max(size, 1))
    n = dword(api)
    rc = api.WSAIoctl(sock, code, 0, 0, out.ptr, size, n.ptr, 0, 0)
    return rc, api.WSAGetLastError(), n.u32(), out


@pytest.mark.parametrize("code", QUERIES, ids=hex)
def test_query_unconnected_socket(api, tcp, code, decide):
    """Query pages, error table: WSAENOTCONN when the socket is not connected."""
    assert decide("query_unconnected") == "WSAENOTCONN"
    rc, err, n, out = _query(api, tcp, code)
    assert (rc, err) == (C.SOCKET_ERROR, C.WSAENOTCONN)
    assert out.read() == b"\xcc" * 1024 and out.guards_intact()


@pytest.mark.parametrize("code", QUERIES, ids=hex)
def test_query_listening_socket(api, code):
    """A listening socket is not connected: WSAENOTCONN (docs/decisions.md §4)."""
    lst, _ = listener(api)
    rc, err, _, out = _query(api, lst, code)
    assert (rc, err) == (C.SOCKET_ERROR, C.WSAENOTCONN) and out.guards_intact()


@pytest.mark.udp
@pytest.mark.parametrize("code", QUERIES, ids=hex)
def test_query_udp_socket(api, code, decide):
    """Query pages: not applicable to the socket type; UDP gets its record as a cmsg."""
    s, _ = udp_socket(api)
    rc, err, _, _ = _query(api, s, code)
    assert rc == C.SOCKET_ERROR and err == getattr(C, decide("query_udp_socket"))


@pytest.mark.parametrize("code", QUERIES, ids=hex)
def test_query_not_redirected(api, pair, code, decide):
    """docs/decisions.md §4 (field: WFPSampler): a connected socket nobody redirected has no records."""
    rc, err, n, out = _query(api, pair[1], code)
    assert rc == C.SOCKET_ERROR
    expected = C.FWP_E_NOT_FOUND if decide("query_not_redirected") == "FWP_E_NOT_FOUND" else C.WSAEINVAL
    assert err == expected
    assert out.read() == b"\xcc" * 1024 and out.guards_intact()


@pytest.mark.parametrize("code", QUERIES, ids=hex)
@pytest.mark.parametrize("size", [1, 2, 3])
def test_query_tiny_buffer(api, pair, code, size, decide):
    """Query pages: cbOutBuffer below sizeof(ULONG) is WSAEINVAL with *lpcbBytesReturned = 0."""
    if decide("query_tiny_buffer") != "WSAEINVAL":
        pytest.skip("profile treats a tiny buffer like any short one")
    rc, err, n, out = _query(api, pair[1], code, size=size, out=Guarded(api, 4))
    assert (rc, err, n) == (C.SOCKET_ERROR, C.WSAEINVAL, 0)
    assert out.read() == b"\xcc" * 4 and out.guards_intact()


@pytest.mark.parametrize("code", QUERIES, ids=hex)
def test_query_output_not_in_user_space(api, pair, code):
    """Query pages: WSAEFAULT when lpvOutBuffer is not totally contained in valid user memory."""
    n = dword(api)
    for ptr, size in ((api.memory.invalid_pointer(), 64), (0, 64), (Guarded(api, 8).ptr + 4, 64)):
        assert api.WSAIoctl(pair[1], code, 0, 0, ptr, size, n.ptr, 0, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAEFAULT


@pytest.mark.parametrize("code", QUERIES, ids=hex)
def test_query_failure_overlapped_posts_nothing(api, tcp, code):
    """WSPIoctl page: an error other than WSA_IO_PENDING means no completion indication."""
    port = api.CreateIoCompletionPort(tcp, 0, 5, 0)
    ovl = overlapped(api)
    n = dword(api)
    out = Guarded(api, 64)
    assert api.WSAIoctl(tcp, code, 0, 0, out.ptr, 64, n.ptr, ovl, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAENOTCONN
    cnt, key, o = dword(api), Guarded(api, 8), Guarded(api, 8)
    assert api.GetQueuedCompletionStatus(port, cnt.ptr, key.ptr, o.ptr, 0) == 0
    assert api.GetLastError() == C.WAIT_TIMEOUT


class TestSet:
    def _set(self, api, sock, blob=b"x" * 32, cbin=None, out=0, cbout=0):
        inp = api.memory.alloc(max(len(blob), 1))
        api.memory.write(inp, blob)
        n = dword(api)
        rc = api.WSAIoctl(sock, C.SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS, inp,
                          len(blob) if cbin is None else cbin, out, cbout, n.ptr, 0, 0)
        return rc, api.WSAGetLastError(), n.u32()

    def test_empty_input(self, api, tcp):
        """SET page: the input is the records blob; an empty one is not acceptable (WSAEINVAL)."""
        assert self._set(api, tcp, cbin=0)[:2] == (C.SOCKET_ERROR, C.WSAEINVAL)

    def test_nonzero_output_size(self, api, tcp):
        """SET page: cbOutBuffer must be 0."""
        out = api.memory.alloc(16)
        assert self._set(api, tcp, out=out, cbout=16)[:2] == (C.SOCKET_ERROR, C.WSAEINVAL)

    def test_input_not_in_user_space(self, api, tcp):
        """SET page: WSAEFAULT when lpvInBuffer is not wholly in user memory."""
        n = dword(api)
        rc = api.WSAIoctl(tcp, C.SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS, api.memory.invalid_pointer(), 64,
                          0, 0, n.ptr, 0, 0)
        assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEFAULT

    def test_not_a_records_blob(self, api, tcp, decide):
        """docs/decisions.md §4: bytes that are not a records blob are refused and the socket is untouched."""
        rc, err, _ = self._set(api, tcp, blob=b"\x01" * 200)
        assert (rc, err) == (C.SOCKET_ERROR, getattr(C, decide("set_bad_blob")))

    def test_set_on_connected_socket(self, api, pair, decide):
        """docs/decisions.md §4: SET on an already connected socket fails."""
        rc, err, _ = self._set(api, pair[0])
        assert (rc, err) == (C.SOCKET_ERROR, getattr(C, decide("set_after_connect")))


@pytest.mark.sim_only
def test_set_requires_elevation(profile):
    """SET page: WSAEACCES for a caller without administrative rights, after the pointer checks."""
    from sim import SimulatedWinsock
    api = SimulatedWinsock(profile, elevated=False)
    tcp = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    inp = api.memory.alloc(32)
    n = dword(api)
    rc = api.WSAIoctl(tcp, C.SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS, inp, 32, 0, 0, n.ptr, 0, 0)
    expected = C.WSAEACCES if profile.value("set_requires_elevation") == "WSAEACCES" else C.WSAEINVAL
    assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == expected
    # The pointer checks come first: a bad input is still WSAEFAULT.
    rc = api.WSAIoctl(tcp, C.SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS, api.memory.invalid_pointer(), 32,
                      0, 0, n.ptr, 0, 0)
    assert api.WSAGetLastError() == C.WSAEFAULT


@pytest.mark.udp
@pytest.mark.parametrize("family,level", [(C.AF_INET, C.IPPROTO_IP), (C.AF_INET6, C.IPPROTO_IPV6)])
@pytest.mark.parametrize("option", [C.IP_WFP_REDIRECT_RECORDS, C.IP_WFP_REDIRECT_CONTEXT])
def test_wfp_socket_options(api, family, level, option, decide):
    """Item 124: getsockopt of the WFP options fails on TCP; on UDP get and set round-trip."""
    tcp = api.socket(family, C.SOCK_STREAM, 0)
    buf, length = Guarded(api, 256, fill=0), dword(api, 256)
    assert api.getsockopt(tcp, level, option, buf.ptr, length.ptr) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == getattr(C, decide("wfp_sockopt_on_tcp"))
    udp = api.socket(family, C.SOCK_DGRAM, 0)
    length.set_u32(256)
    assert api.getsockopt(udp, level, option, buf.ptr, length.ptr) == 0
    assert api.WSAGetLastError() == 0
    assert api.setsockopt(udp, level, option, buf.ptr, length.u32()) == 0
    assert buf.guards_intact()


def test_poisoned_counts_untouched_on_handle_errors(api):
    """Item 5 for the WFP codes: an invalid handle leaves every output alone."""
    out, n = Guarded(api, 64), dword(api)
    for code in QUERIES + [C.SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS]:
        assert api.WSAIoctl(0xDEADBEEF, code, 0, 0, out.ptr, 64, n.ptr, 0, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAENOTSOCK
        assert n.u32() == POISON and out.read() == b"\xcc" * 64


def test_set_output_not_in_user_space(api, tcp):
    """SET page: WSAEFAULT when lpvOutBuffer (with a non-zero size) is not in user space."""
    inp = api.memory.alloc(32)
    n = dword(api)
    rc = api.WSAIoctl(tcp, C.SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS, inp, 32, api.memory.invalid_pointer(), 16,
                      n.ptr, 0, 0)
    assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEFAULT
