"""The WFP redirect IOCTL family on a connection a callout really redirected.

Source: the seed page (SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS) and its
two siblings, docs/decisions.md §4 table; expected answers come from the profile.
"""
import struct

import pytest

from harness.conformance.support import POISON, Guarded, RoutineLog, dequeue, dword, internal, overlapped
from harness.winsock import constants as C
from harness.sample_driver import unpack_context

pytestmark = pytest.mark.requires_redirect

RECORDS = C.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS
CONTEXT = C.SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT
SET = C.SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS


def _query(api, sock, code, size, out=None):
    out = out or Guarded(api, max(size, 8))
    n = dword(api)
    rc = api.WSAIoctl(sock, code, 0, 0, out.ptr if size else 0, size, n.ptr, 0, 0)
    return rc, (api.WSAGetLastError() if rc else 0), n.u32(), out


def _required(api, sock, code):
    rc, err, n, _ = _query(api, sock, code, 8192)
    assert rc == 0, C.error_name(err)
    return n


def _expect_short(decide, name, rc, err, n, required):
    choice = decide(name)
    assert rc == C.SOCKET_ERROR
    if choice == "insufficient_buffer":
        assert (err, n) == (C.ERROR_INSUFFICIENT_BUFFER, required)
    elif choice == "WSAEINVAL":
        assert (err, n) == (C.WSAEINVAL, 0)
    else:
        assert (err, n) == (getattr(C, choice), required)


@pytest.mark.parametrize("code", [RECORDS, CONTEXT], ids=["records", "context"])
def test_size_probe_with_zero_buffer(redirected, decide, code):
    """docs/decisions.md §4: cbOutBuffer == 0 probes; ERROR_INSUFFICIENT_BUFFER with the required size."""
    api, sock = redirected.api, redirected.sock
    required = _required(api, sock, code)
    rc, err, n, _ = _query(api, sock, code, 0)
    _expect_short(decide, "query_size_probe", rc, err, n, required)


@pytest.mark.parametrize("code", [RECORDS, CONTEXT], ids=["records", "context"])
@pytest.mark.parametrize("size", [1, 3])
def test_tiny_buffer(redirected, decide, code, size):
    """Seed page: cbOutBuffer smaller than a ULONG is WSAEINVAL, *lpcbBytesReturned = 0."""
    api, sock = redirected.api, redirected.sock
    out = Guarded(api, 4)
    rc, err, n, _ = _query(api, sock, code, size, out)
    if decide("query_tiny_buffer") == "WSAEINVAL":
        assert (rc, err, n) == (C.SOCKET_ERROR, C.WSAEINVAL, 0)
    assert out.read() == b"\xcc" * 4 and out.guards_intact()


@pytest.mark.parametrize("code", [RECORDS, CONTEXT], ids=["records", "context"])
def test_short_buffer_untouched(redirected, decide, code):
    """docs/decisions.md §4: sizeof(ULONG) <= cbOutBuffer < required: fails, required size, buffer untouched."""
    api, sock = redirected.api, redirected.sock
    required = _required(api, sock, code)
    out = Guarded(api, required - 1)
    rc, err, n, _ = _query(api, sock, code, required - 1, out)
    _expect_short(decide, "query_short_buffer", rc, err, n, required)
    assert out.read() == b"\xcc" * (required - 1) and out.guards_intact()


@pytest.mark.parametrize("code", [RECORDS, CONTEXT], ids=["records", "context"])
@pytest.mark.parametrize("extra", [0, 1, 900])
def test_big_enough_writes_exactly_the_blob(redirected, code, extra):
    """docs/decisions.md §4: returns 0, writes exactly the blob, *lpcbBytesReturned = its length (never 0)."""
    api, sock = redirected.api, redirected.sock
    required = _required(api, sock, code)
    out = Guarded(api, required + extra)
    api.WSASetLastError(POISON)
    rc, err, n, _ = _query(api, sock, code, required + extra, out)
    assert (rc, n) == (0, required) and n > 0 and api.WSAGetLastError() == 0
    assert out.read()[required:] == b"\xcc" * extra and out.guards_intact()


def test_context_carries_the_original_destination(redirected):
    """HOWTO step 7: the callout's context tells the proxy where the connection was going."""
    api, sock = redirected.api, redirected.sock
    rc, _, n, out = _query(api, sock, CONTEXT, 1024)
    assert rc == 0
    ctx = unpack_context(out.read(n))
    assert (ctx.original_remote.host, ctx.original_remote.port) == redirected.original
    assert ctx.process_id == redirected.app.GetCurrentProcessId()


def test_records_are_opaque_but_stable(redirected):
    """Seed page: the blob is opaque; two queries on one socket give the same bytes."""
    api, sock = redirected.api, redirected.sock
    first = _query(api, sock, RECORDS, 1024)
    second = _query(api, sock, RECORDS, 1024)
    assert first[2] == second[2] and first[3].read(first[2]) == second[3].read(second[2])


@pytest.mark.parametrize("code", [RECORDS, CONTEXT], ids=["records", "context"])
def test_output_not_in_user_space(redirected, code):
    """Seed page: WSAEFAULT when lpvOutBuffer is not wholly valid; nothing written."""
    api, sock = redirected.api, redirected.sock
    n = dword(api)
    short = Guarded(api, 16)
    for ptr, size in ((api.memory.invalid_pointer(), 1024), (short.ptr + 8, 1024)):
        assert api.WSAIoctl(sock, code, 0, 0, ptr, size, n.ptr, 0, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAEFAULT
    assert short.read() == b"\xcc" * 16 and short.guards_intact()


def test_not_redirected_connection_on_the_same_host(redirected, decide):
    """docs/decisions.md §4: a connected socket nobody redirected has no records (FWP_E_NOT_FOUND)."""
    rc, err, _, _ = _query(redirected.app, redirected.app_sock, RECORDS, 1024)
    expected = C.FWP_E_NOT_FOUND if decide("query_not_redirected") == "FWP_E_NOT_FOUND" else C.WSAEINVAL
    assert (rc, err) == (C.SOCKET_ERROR, expected)


class TestOverlappedQuery:
    def test_inline_completion_signals_event(self, redirected, decide):
        """docs/decisions.md §4: an overlapped query completes inline and still signals its event."""
        if decide("wfp_query_completion") != "inline":
            pytest.skip("profile defers the query")
        api, sock = redirected.api, redirected.sock
        event = api.WSACreateEvent()
        ovl = overlapped(api, event)
        out, n = Guarded(api, 1024), dword(api)
        assert api.WSAIoctl(sock, RECORDS, 0, 0, out.ptr, 1024, n.ptr, ovl, 0) == 0
        size = n.u32()
        arr = api.memory.alloc(8)
        api.memory.write_u64(arr, event)
        signalled = api.WSAWaitForMultipleEvents(1, arr, False, 0, False) == 0
        assert signalled == (decide("inline_ioctl_signals_event") == "yes")
        expected_bytes = size if decide("wfp_completion_bytes") == "actual" else 0
        assert internal(api, ovl) == (0, expected_bytes)
        got, flags = dword(api), dword(api)
        assert api.WSAGetOverlappedResult(sock, ovl, got.ptr, False, flags.ptr) == 1
        assert got.u32() == expected_bytes

    def test_inline_completion_routine_and_port(self, redirected, decide):
        """The routine is queued (alertable wait) and, on a port-bound socket, a packet is posted."""
        api, sock = redirected.api, redirected.sock
        log = RoutineLog(api)
        ovl = overlapped(api)
        out = Guarded(api, 1024)
        rc = api.WSAIoctl(sock, CONTEXT, 0, 0, out.ptr, 1024, dword(api).ptr, ovl, log.ptr)
        pending = decide("wfp_query_completion") == "pending"
        assert rc == (C.SOCKET_ERROR if pending else 0)
        while api.SleepEx(100, True) == C.WAIT_IO_COMPLETION and not log.calls:
            pass
        assert len(log.calls) == 1 and log.calls[0][0] == 0 and log.calls[0][2] == ovl
        port = api.CreateIoCompletionPort(sock, 0, 77, 0)
        ovl2 = overlapped(api)
        rc = api.WSAIoctl(sock, RECORDS, 0, 0, out.ptr, 1024, dword(api).ptr, ovl2, 0)
        ok, err, nbytes, key, o = dequeue(api, port, timeout_ms=100)
        assert (ok, key, o) == (1, 77, ovl2)


@pytest.mark.sim_only
def test_pending_knob_defers_completion(profile):
    """docs/decisions.md §4: overlapped_query = pending defers completion to the simulated kernel."""
    from sim.worlds.ready import redirected_tcp
    r = redirected_tcp(profile, overrides={"wfp_query_completion": "pending"})
    api, sock = r.api, r.sock
    event = api.WSACreateEvent()
    ovl = overlapped(api, event)
    out, n = Guarded(api, 1024), dword(api)
    assert api.WSAIoctl(sock, RECORDS, 0, 0, out.ptr, 1024, n.ptr, ovl, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSA_IO_PENDING and n.u32() == POISON
    assert internal(api, ovl)[0] == C.STATUS_PENDING
    arr = api.memory.alloc(8)
    api.memory.write_u64(arr, event)
    assert api.WSAWaitForMultipleEvents(1, arr, False, 1000, False) == 0
    status, size = internal(api, ovl)
    assert status == 0 and size > 0 and out.read(size) != b"\xcc" * size


@pytest.mark.sim_only
def test_pending_query_cancelled_by_close(profile, decide):
    """docs/decisions.md §4: a pending operation ends with WSA_OPERATION_ABORTED when the socket closes."""
    from sim.worlds.ready import redirected_tcp
    r = redirected_tcp(profile, overrides={"wfp_query_completion": "pending"})
    api, sock = r.api, r.sock
    log = RoutineLog(api)
    ovl = overlapped(api)
    assert api.WSAIoctl(sock, RECORDS, 0, 0, Guarded(api, 1024).ptr, 1024, dword(api).ptr, ovl, log.ptr) == -1
    assert api.closesocket(sock) == 0
    assert api.SleepEx(0, True) == C.WAIT_IO_COMPLETION
    assert log.calls == [(C.WSA_OPERATION_ABORTED, 0, ovl, 0)]


class TestSet:
    def _blob(self, redirected):
        rc, _, n, out = _query(redirected.api, redirected.sock, RECORDS, 1024)
        assert rc == 0
        return out.read(n)

    def _set(self, api, sock, blob, cbout=0):
        inp = api.memory.alloc(len(blob))
        api.memory.write(inp, blob)
        n = dword(api)
        rc = api.WSAIoctl(sock, SET, inp, len(blob), 0, cbout, n.ptr, 0, 0)
        return rc, (api.WSAGetLastError() if rc else 0), n.u32()

    def test_set_success(self, redirected):
        """docs/decisions.md §4: SET returns 0 with *lpcbBytesReturned = 0."""
        api = redirected.api
        out = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
        assert self._set(api, out, self._blob(redirected)) == (0, 0, 0)

    def test_set_tampered_blob(self, redirected, decide):
        """docs/decisions.md §5: a tampered blob is refused and the socket is untouched."""
        api = redirected.api
        blob = bytearray(self._blob(redirected))
        blob[10] ^= 0x01
        out = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
        assert self._set(api, out, bytes(blob))[:2] == (C.SOCKET_ERROR, getattr(C, decide("set_bad_blob")))

    def test_set_after_connect(self, redirected, decide):
        """docs/decisions.md §4: SET on an already connected socket fails (the accepted one is connected)."""
        assert self._set(redirected.api, redirected.sock, self._blob(redirected))[:2] == \
            (C.SOCKET_ERROR, getattr(C, decide("set_after_connect")))

    def test_set_with_output_size(self, redirected):
        """SET page: cbOutBuffer must be 0."""
        api = redirected.api
        out = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
        assert self._set(api, out, self._blob(redirected), cbout=4)[:2] == (C.SOCKET_ERROR, C.WSAEINVAL)

    def test_set_by_non_elevated_process(self, redirected, decide):
        """SET page: WSAEACCES for a process that is not elevated (the application here)."""
        if getattr(redirected, "app_elevated", False):
            pytest.skip("on this target the connecting application is the elevated test process")
        app = redirected.app
        s = app.socket(C.AF_INET, C.SOCK_STREAM, 0)
        rc, err, _ = self._set(app, s, self._blob(redirected))
        if decide("set_requires_elevation") == "WSAEACCES":
            assert (rc, err) == (C.SOCKET_ERROR, C.WSAEACCES)


@pytest.mark.udp
@pytest.mark.sim_only
@pytest.mark.parametrize("family", [C.AF_INET, C.AF_INET6], ids=["v4", "v6"])
def test_udp_records_arrive_on_first_datagram_only(profile, family):
    """Seed page Remarks: only the flow-creating datagram carries the record (cmsg type 60)."""
    from harness.proxy import redirect as rd
    from sim.worlds.ready import redirected_udp
    r = redirected_udp(profile, family)
    api = r.api
    scratch = rd.Scratch(api)
    recvmsg = rd.extension_function(api, r.sock, C.WSAID_WSARECVMSG, scratch)
    first = rd.recv_datagram(api, r.sock, recvmsg, scratch)
    second = rd.recv_datagram(api, r.sock, recvmsg, scratch)
    assert first.payload == b"first" and first.records and first.context
    ctx = unpack_context(first.context)
    assert (ctx.original_remote.host, ctx.original_remote.port) == r.original
    assert second.payload == b"second" and second.records is None and second.context is None


@pytest.mark.udp
@pytest.mark.sim_only
def test_udp_cmsgs_only_when_asked_for(profile):
    """EBPF socket_helper.cpp: the receiver enables IP_WFP_REDIRECT_CONTEXT first; otherwise no cmsg."""
    from harness.proxy import redirect as rd
    from sim.worlds.ready import redirected_udp
    r = redirected_udp(profile, enable_cmsgs=False)
    scratch = rd.Scratch(r.api)
    recvmsg = rd.extension_function(r.api, r.sock, C.WSAID_WSARECVMSG, scratch)
    first = rd.recv_datagram(r.api, r.sock, recvmsg, scratch)
    assert first.payload == b"first" and first.records is None and first.context is None


def test_records_blob_layout_is_not_a_contract(redirected):
    """The blob is opaque: the harness never parses it; only its length is checked here."""
    rc, _, n, out = _query(redirected.api, redirected.sock, RECORDS, 1024)
    assert rc == 0 and 0 < n <= 1024 and struct.calcsize("<I") <= n


@pytest.mark.sim_only
def test_multi_proxy_case_reaches_the_destination(two_vendor_world):
    """Seed page Remarks: with records tracking, two vendors' proxies inspect the same flow
    cooperatively and the connection reaches its final destination (no infinite proxy loop)."""
    story = two_vendor_world
    conn = story.tcp("app -> server:80", C.AF_INET, "192.0.2.20")
    story.finish()
    assert conn.verdict == "ok" and conn.intact and conn.final_destination == "192.0.2.20:80"
    assert [h["vendor"] for h in conn.hops if h["redirected_to"]] == ["VendorX", "VendorY"]
