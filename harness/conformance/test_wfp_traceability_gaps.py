"""Cases for statements of the three WFP redirect IOCTL pages that no other case checked.

Written from harness/conformance/traceability.toml: each case names, in its
docstring, the statement ids (REC-... for SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS,
CTX-... for ..._CONTEXT, SET-... for SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS)
it checks. Expected values that a decision point settles come from the
active profile (`decide`); the rest are what every page states alike.
Cases that build their own simulated world, inject faults or use the
provider entry point WSPIoctl are `sim_only`.
"""
import struct
import threading
import types

import pytest

from harness.conformance.support import (POISON, Guarded, RoutineLog, dequeue, dword, internal, overlapped,
                                         udp_socket)
from harness.winsock import constants as C
from harness.winsock.layouts import WSATHREADID
from harness.sample_driver import unpack_context

RECORDS = C.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS
CONTEXT = C.SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT
SET = C.SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS
QUERIES = [pytest.param(RECORDS, id="records"), pytest.param(CONTEXT, id="context")]
ALL_THREE = QUERIES + [pytest.param(SET, id="set")]
FAMILIES = [pytest.param(C.AF_INET, id="v4"), pytest.param(C.AF_INET6, id="v6", marks=pytest.mark.ipv6)]
PENDING = {"wfp_query_completion": "pending"}


# -- helpers -----------------------------------------------------------------------------------------

def _query(api, sock, code, size=1024, *, out=None, inbuf=0, cbin=0, ovl=0, routine=0):
    """(rc, last error or 0, *lpcbBytesReturned, output Guarded) of one query."""
    out = out or Guarded(api, max(size, 8))
    n = dword(api)
    api.WSASetLastError(POISON)
    rc = api.WSAIoctl(sock, code, inbuf, cbin, out.ptr if size else 0, size, n.ptr, ovl, routine)
    return rc, (api.WSAGetLastError() if rc else 0), n.u32(), out


def _blob(api, sock) -> bytes:
    rc, err, n, out = _query(api, sock, RECORDS)
    assert rc == 0, C.error_name(err)
    return out.read(n)


def _set(api, sock, blob, *, cbin=None, outbuf=0, cbout=0, ovl=0, routine=0):
    """(rc, last error or 0, *lpcbBytesReturned) of one SET."""
    inp = api.memory.alloc(max(len(blob), 1))
    api.memory.write(inp, blob)
    n = dword(api)
    rc = api.WSAIoctl(sock, SET, inp, len(blob) if cbin is None else cbin, outbuf, cbout, n.ptr, ovl, routine)
    return rc, (api.WSAGetLastError() if rc else 0), n.u32()


def _unknown_error(decide):
    return C.WSAEOPNOTSUPP if decide("unknown_ioctl_error") == "WSAEOPNOTSUPP" else C.WSAEINVAL


def _issue(api, sock, code, blob, size=1024, **kw):
    """One call of `code` shaped as its page says: queries fill an output, SET reads `blob`."""
    if code == SET:
        return _set(api, sock, blob, **kw)
    rc, err, n, _ = _query(api, sock, code, size, **kw)
    return rc, err, n


def _simulator(api):
    """The simulator's own surface of `api`: the provider entry point WSPIoctl and the process, kernel and
    world controls. Only sim_only cases use it; any other provider skips the case."""
    controls = {name: getattr(api, name, None) for name in ("WSPIoctl", "process", "kernel", "world")}
    if any(value is None for value in controls.values()):
        pytest.skip("needs the simulator's own controls (WSPIoctl, process, kernel, world)")
    return types.SimpleNamespace(**controls)


def _wait_event(api, event, timeout=1000):
    arr = api.memory.alloc(8)
    api.memory.write_u64(arr, event)
    return api.WSAWaitForMultipleEvents(1, arr, False, timeout, False)


class _NoContextFwps:
    """The kernel API seen by a callout that redirects without attaching a context (it is optional)."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def FwpsApplyModifiedLayerData0(self, classifyHandle, modifiedLayerData, flags=0):
        modifiedLayerData.localRedirectContext = None
        modifiedLayerData.localRedirectContextSize = 0
        return self._inner.FwpsApplyModifiedLayerData0(classifyHandle, modifiedLayerData, flags)


def _install_without_context(world, host, policy):
    """The sample driver, but its callout applies without a context (localRedirectContext is optional)."""
    from sim.worlds.sample_callout import install_sample_driver
    callout = install_sample_driver(world, host, policy, vendor="Traceability")
    callout.fwps = _NoContextFwps(callout.fwps)
    return callout


def _redirected_world(profile, *, family=C.AF_INET, listener_flags=C.WSA_FLAG_OVERLAPPED, with_context=True,
                      overrides=None):
    """sim.worlds.ready.redirected_tcp with the proxy's listener flags and the callout's context chosen.

    Returns (proxy api, accepted redirected socket, original destination).
    """
    from sim.worlds.ready import redirected_tcp
    from sim.worlds.sample_callout import install_sample_driver
    r = redirected_tcp(profile, family, overrides, listener_flags=listener_flags,
                       install=install_sample_driver if with_context else _install_without_context)
    return r.api, r.sock, r.original


# -- parameters: dwIoControlCode, lpvInBuffer, cbInBuffer ------------------------------------------

@pytest.mark.requires_redirect
def test_control_code_selects_the_operation(redirected, decide):
    """REC-PARAM-dwIoControlCode, REC-ERR-WSAEINVAL, REC-ERR-WSAEOPNOTSUPP, CTX-PARAM-dwIoControlCode,
    CTX-ERR-WSAEINVAL, CTX-ERR-WSAEOPNOTSUPP, SET-PARAM-dwIoControlCode, SET-ERR-WSAEINVAL,
    SET-ERR-WSAEOPNOTSUPP: each page's code (mstcpip.h values) does its own operation; a neighbouring,
    unassigned code of the same vendor family is not a valid command."""
    api, sock = redirected.api, redirected.sock
    assert (RECORDS, CONTEXT, SET) == (0x980000DC, 0x980000DD, 0x980000DE)
    records = _blob(api, sock)
    rc, err, n, out = _query(api, sock, CONTEXT)
    assert rc == 0, C.error_name(err)
    context = out.read(n)
    assert records != context
    assert unpack_context(context).original_remote.port == redirected.original[1]
    fresh = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    assert _set(api, fresh, records) == (0, 0, 0)
    # The context is not a records blob: SET refuses it.
    assert _set(api, api.socket(C.AF_INET, C.SOCK_STREAM, 0), context)[:2] == \
        (C.SOCKET_ERROR, getattr(C, decide("set_bad_blob")))
    rc, err, n, _ = _query(api, sock, 0x980000DF)
    assert (rc, err) == (C.SOCKET_ERROR, _unknown_error(decide))


@pytest.mark.requires_redirect
@pytest.mark.parametrize("cbin", [0, 4, 64])
@pytest.mark.parametrize("code", QUERIES)
def test_query_input_buffer_is_unused(redirected, code, cbin):
    """REC-PARAM-lpvInBuffer, REC-PARAM-cbInBuffer, CTX-PARAM-lpvInBuffer, CTX-PARAM-cbInBuffer: the queries take
    no input; an input buffer (filled with junk) and its size change nothing and are not written."""
    api, sock = redirected.api, redirected.sock
    plain = _query(api, sock, code)
    junk = Guarded(api, 64, fill=0x5A)
    got = _query(api, sock, code, inbuf=junk.ptr, cbin=cbin)
    assert got[:3] == plain[:3] and got[0] == 0
    assert got[3].read(got[2]) == plain[3].read(plain[2])
    assert junk.read() == b"\x5a" * 64 and junk.guards_intact()


# -- TCP and UDP, IPv4 and IPv6 ----------------------------------------------------------------------

@pytest.mark.requires_redirect
@pytest.mark.sim_only
@pytest.mark.parametrize("family", FAMILIES)
def test_redirected_queries_and_set_per_family(profile, decide, family):
    """REC-DESC-PURPOSE, REC-REM-WHICH-SOCKET, REC-REM-SIZE-PROBE, CTX-DESC-PURPOSE, CTX-REM-WHICH-SOCKET,
    CTX-REM-SIZE-PROBE, SET-DESC-PURPOSE, SET-REM-FORWARD-SET: on an accepted connection redirected at the
    ALE_CONNECT_REDIRECT layer of its family (V4 or V6), the size probe, the records and the context queries
    work, and the records go onto a new socket of the same family."""
    from sim.worlds.ready import redirected_tcp
    r = redirected_tcp(profile, family=family)
    api, sock = r.api, r.sock
    for code in (RECORDS, CONTEXT):
        rc, err, full, out = _query(api, sock, code, 1024)
        assert rc == 0 and 0 < full <= 1024, C.error_name(err)
        rc, err, n, _ = _query(api, sock, code, 0)
        assert rc == C.SOCKET_ERROR
        choice = decide("query_size_probe")
        if choice == "insufficient_buffer":
            assert (err, n) == (C.ERROR_INSUFFICIENT_BUFFER, full)
        elif choice == "WSAEINVAL":
            assert (err, n) == (C.WSAEINVAL, 0)
        else:
            assert (err, n) == (getattr(C, choice), full)
    rc, _, n, out = _query(api, sock, CONTEXT)
    ctx = unpack_context(out.read(n))
    assert (ctx.original_remote.host, ctx.original_remote.port) == r.original
    outbound = api.socket(family, C.SOCK_STREAM, 0)
    assert _set(api, outbound, _blob(api, sock)) == (0, 0, 0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("code", QUERIES)
def test_query_unconnected_per_family(api, decide, code, family):
    """REC-ERR-WSAENOTCONN, CTX-ERR-WSAENOTCONN: an unconnected TCP socket of either family is not connected;
    nothing is written to the output."""
    s = api.socket(family, C.SOCK_STREAM, C.IPPROTO_TCP)
    rc, err, _, out = _query(api, s, code)
    assert (rc, err) == (C.SOCKET_ERROR, getattr(C, decide("query_unconnected")))
    assert out.read() == b"\xcc" * 1024 and out.guards_intact()


@pytest.mark.udp
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("code", QUERIES)
def test_query_udp_per_family(api, decide, code, family):
    """REC-ERR-WSAEINVAL, REC-REM-UDP-RECVMSG, CTX-ERR-WSAEINVAL: the IOCTL does not apply to a UDP socket of
    either family (UDP gets its record as WSARecvMsg control data)."""
    s, _ = udp_socket(api, family)
    rc, err, _, out = _query(api, s, code)
    assert (rc, err) == (C.SOCKET_ERROR, getattr(C, decide("query_udp_socket")))
    assert out.read() == b"\xcc" * 1024 and out.guards_intact()


@pytest.mark.elevated
@pytest.mark.parametrize("code", QUERIES)
def test_query_raw_socket(api, decide, code):
    """REC-ERR-WSAENOPROTOOPT, CTX-ERR-WSAENOPROTOOPT: a raw ICMP socket's protocol has no redirect support (raw
    sockets need an elevated process)."""
    s = api.socket(C.AF_INET, C.SOCK_RAW, C.IPPROTO_ICMP)
    assert s != C.INVALID_SOCKET, C.error_name(api.WSAGetLastError())
    rc, err, _, out = _query(api, s, code)
    assert (rc, err) == (C.SOCKET_ERROR, getattr(C, decide("query_raw_socket")))
    assert out.read() == b"\xcc" * 1024 and out.guards_intact()


# -- lpOverlapped / lpCompletionRoutine ---------------------------------------------------------------

@pytest.mark.requires_redirect
@pytest.mark.parametrize("code", ALL_THREE)
def test_bad_overlapped_or_routine_is_efault(redirected, code):
    """REC-PARAM-lpOverlapped-ASYNC, REC-ERR-WSAEFAULT, CTX-PARAM-lpOverlapped-ASYNC, CTX-ERR-WSAEFAULT,
    SET-PARAM-lpOverlapped-ASYNC, SET-ERR-WSAEFAULT: an lpOverlapped or lpCompletionRoutine not in valid user
    memory fails at once with WSAEFAULT; nothing is written or indicated."""
    api = redirected.api
    blob = _blob(api, redirected.sock)
    sock = redirected.sock if code != SET else api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    port = api.CreateIoCompletionPort(sock, 0, 9, 0)
    rc, err, n = _issue(api, sock, code, blob, ovl=api.memory.invalid_pointer())
    assert (rc, err, n) == (C.SOCKET_ERROR, C.WSAEFAULT, POISON)
    ovl = overlapped(api)
    rc, err, n = _issue(api, sock, code, blob, ovl=ovl, routine=0x1234)
    assert (rc, err, n) == (C.SOCKET_ERROR, C.WSAEFAULT, POISON)
    assert internal(api, ovl) == (POISON, POISON)
    assert api.SleepEx(0, True) == 0
    assert dequeue(api, port)[1] == C.WAIT_TIMEOUT


@pytest.mark.sim_only
@pytest.mark.requires_redirect
def test_non_overlapped_socket_ignores_overlapped_and_routine(profile):
    """REC-PARAM-lpOverlapped-IGNORED, REC-PARAM-lpCompletionRoutine, CTX-PARAM-lpOverlapped-IGNORED,
    CTX-PARAM-lpCompletionRoutine, SET-PARAM-lpOverlapped-IGNORED, SET-PARAM-lpCompletionRoutine: on a socket
    without the overlapped attribute, lpOverlapped and lpCompletionRoutine are ignored: the call completes
    before returning (even when the kernel answers later), nothing is indicated."""
    api, sock, _ = _redirected_world(profile, listener_flags=0, overrides=PENDING)
    log = RoutineLog(api)
    for code in (RECORDS, CONTEXT):
        ovl = overlapped(api)
        rc, err, n, out = _query(api, sock, code, ovl=ovl, routine=log.ptr)
        assert (rc, err) == (0, 0) and n > 0 and out.read(n) != b"\xcc" * n
        assert internal(api, ovl) == (POISON, POISON)
    outbound = api.WSASocketW(C.AF_INET, C.SOCK_STREAM, 0, 0, 0, 0)
    ovl = overlapped(api)
    assert _set(api, outbound, _blob(api, sock), ovl=ovl, routine=log.ptr) == (0, 0, 0)
    assert internal(api, ovl) == (POISON, POISON)
    assert api.SleepEx(0, True) == 0 and log.calls == []


@pytest.mark.sim_only
@pytest.mark.requires_redirect
@pytest.mark.parametrize("code", QUERIES)
def test_synchronous_query_waits_for_the_kernel(profile, code):
    """REC-PARAM-lpOverlapped-SYNC, CTX-PARAM-lpOverlapped-SYNC: without lpOverlapped the call does not return
    until the operation is complete, even when the kernel answers later (knob: pending)."""
    from sim.worlds.ready import redirected_tcp
    r = redirected_tcp(profile, overrides=PENDING)
    api = r.api
    world = _simulator(api).world
    start = world.now_ns
    rc, err, n, out = _query(api, r.sock, code)
    assert (rc, err) == (0, 0) and n > 0 and out.read(n) != b"\xcc" * n
    assert world.now_ns > start               # virtual time passed inside the call


@pytest.mark.sim_only
@pytest.mark.requires_redirect
@pytest.mark.parametrize("cause", ["close", "flush"])
@pytest.mark.parametrize("code", QUERIES)
def test_pending_query_aborted(profile, decide, code, cause):
    """REC-PARAM-lpOverlapped-SYNC, REC-RET-FAILURE, REC-ERR-WSA_IO_PENDING, REC-ERR-WSA_OPERATION_ABORTED,
    CTX-PARAM-lpOverlapped-SYNC, CTX-RET-FAILURE, CTX-ERR-WSA_IO_PENDING, CTX-ERR-WSA_OPERATION_ABORTED: a
    pending query is cancelled by closing the socket or by SIO_FLUSH and completes through its routine with
    WSA_OPERATION_ABORTED (SIO_FLUSH support: profile)."""
    from sim.worlds.ready import redirected_tcp
    r = redirected_tcp(profile, overrides=PENDING)
    api, sock = r.api, r.sock
    log = RoutineLog(api)
    ovl = overlapped(api)
    rc, err, n, _ = _query(api, sock, code, ovl=ovl, routine=log.ptr)
    assert (rc, err, n) == (C.SOCKET_ERROR, C.WSA_IO_PENDING, POISON)
    if cause == "close":
        assert api.closesocket(sock) == 0
    else:
        rc = api.WSAIoctl(sock, C.SIO_FLUSH, 0, 0, 0, 0, dword(api).ptr, 0, 0)
        if decide("sio_flush") == "unsupported":
            assert (rc, api.WSAGetLastError()) == (C.SOCKET_ERROR, _unknown_error(decide))
            while not log.calls and api.SleepEx(10, True) == C.WAIT_IO_COMPLETION:
                pass
            assert len(log.calls) == 1 and log.calls[0][0] == 0      # not cancelled: it completes
            return
        assert rc == 0
    assert api.SleepEx(0, True) == C.WAIT_IO_COMPLETION
    assert log.calls == [(C.WSA_OPERATION_ABORTED, 0, ovl, 0)]


@pytest.mark.requires_redirect
def test_set_overlapped_completion(redirected, decide):
    """SET-PARAM-lpcbBytesReturned-OVERLAPPED, SET-PARAM-lpOverlapped-ASYNC, SET-PARAM-lpOverlapped-SYNC,
    SET-PARAM-lpCompletionRoutine, SET-RET-SUCCESS, SET-RET-FAILURE, SET-ERR-WSA_IO_PENDING: an overlapped SET
    either completes now (returns 0; its event is signalled per the profile) or returns WSA_IO_PENDING and
    completes later; either way it completes exactly once, with success and 0 bytes."""
    api = redirected.api
    blob = _blob(api, redirected.sock)
    event = api.WSACreateEvent()
    ovl = overlapped(api, event)
    sock = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    rc, err, n = _set(api, sock, blob, ovl=ovl)
    if rc == 0:
        assert n == 0
        expect = C.WSA_WAIT_EVENT_0 if decide("inline_ioctl_signals_event") == "yes" else C.WSA_WAIT_TIMEOUT
        assert _wait_event(api, event, timeout=0) == expect
    else:
        assert err == C.WSA_IO_PENDING and n == POISON
        assert _wait_event(api, event) == C.WSA_WAIT_EVENT_0
    got, flags = dword(api), dword(api)
    assert api.WSAGetOverlappedResult(sock, ovl, got.ptr, False, flags.ptr) == 1
    assert got.u32() == 0
    log = RoutineLog(api)
    ovl2 = overlapped(api)
    sock2 = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    rc, err, _ = _set(api, sock2, blob, ovl=ovl2, routine=log.ptr)
    assert rc == 0 or err == C.WSA_IO_PENDING
    while not log.calls and api.SleepEx(10, True) == C.WAIT_IO_COMPLETION:
        pass
    assert log.calls == [(0, 0, ovl2, 0)]


@pytest.mark.requires_redirect
def test_set_cancellation(redirected):
    """SET-ERR-WSA_OPERATION_ABORTED: closing the socket cancels a SET that is still pending
    (WSA_OPERATION_ABORTED through its routine); a SET that completed at once is indicated once only and
    closing the socket afterwards adds nothing."""
    api = redirected.api
    blob = _blob(api, redirected.sock)
    log = RoutineLog(api)
    ovl = overlapped(api)
    sock = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    rc, err, _ = _set(api, sock, blob, ovl=ovl, routine=log.ptr)
    assert api.closesocket(sock) == 0
    while api.SleepEx(10, True) == C.WAIT_IO_COMPLETION:
        pass
    if rc == 0:
        assert log.calls == [(0, 0, ovl, 0)]
    else:
        assert err == C.WSA_IO_PENDING
        assert log.calls == [(C.WSA_OPERATION_ABORTED, 0, ovl, 0)]


# -- SET's buffers and byte count -------------------------------------------------------------------

@pytest.mark.requires_redirect
def test_set_input_length_counts(redirected, decide):
    """SET-PARAM-lpvInBuffer, SET-PARAM-cbInBuffer: the input is the records blob and cbInBuffer its exact size;
    a size one byte short is not a records blob."""
    api = redirected.api
    blob = _blob(api, redirected.sock)
    short = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    assert _set(api, short, blob, cbin=len(blob) - 1)[:2] == (C.SOCKET_ERROR, getattr(C, decide("set_bad_blob")))
    # The refused SET left the socket usable: the whole blob is accepted afterwards.
    assert _set(api, short, blob) == (0, 0, 0)


@pytest.mark.requires_redirect
def test_set_output_buffer_is_unused(redirected, decide):
    """SET-PARAM-lpvOutBuffer, SET-PARAM-cbOutBuffer, SET-ERR-WSAEFAULT: SET has no output; with cbOutBuffer 0 an
    output pointer is never written, and a zero-length range is never probed (ledger zero_length_probe)."""
    api = redirected.api
    blob = _blob(api, redirected.sock)
    out = Guarded(api, 16)
    assert _set(api, api.socket(C.AF_INET, C.SOCK_STREAM, 0), blob, outbuf=out.ptr) == (0, 0, 0)
    assert out.read() == b"\xcc" * 16 and out.guards_intact()
    rc, err, n = _set(api, api.socket(C.AF_INET, C.SOCK_STREAM, 0), blob, outbuf=api.memory.invalid_pointer())
    if decide("zero_length_probe") == "valid":
        assert (rc, err, n) == (0, 0, 0)
    else:
        assert (rc, err) == (C.SOCKET_ERROR, C.WSAEFAULT)


@pytest.mark.requires_redirect
def test_set_bytes_returned(redirected):
    """SET-PARAM-cbOutBuffer, SET-PARAM-lpcbBytesReturned-SIZE, SET-PARAM-lpcbBytesReturned-TOO-SMALL,
    SET-PARAM-lpcbBytesReturned-NONZERO: a successful SET reports 0 bytes, and so does the failure for an
    output size that is not 0 (the 'too small output' sentence of the page)."""
    api = redirected.api
    blob = _blob(api, redirected.sock)
    assert _set(api, api.socket(C.AF_INET, C.SOCK_STREAM, 0), blob) == (0, 0, 0)
    out = Guarded(api, 4)
    assert _set(api, api.socket(C.AF_INET, C.SOCK_STREAM, 0), blob, outbuf=out.ptr, cbout=4) == \
        (C.SOCKET_ERROR, C.WSAEINVAL, 0)
    assert out.read() == b"\xcc" * 4


# -- context semantics -------------------------------------------------------------------------------

@pytest.mark.sim_only
@pytest.mark.requires_redirect
def test_context_is_optional(profile, decide):
    """REC-REM-CONTEXT-SEMANTICS, CTX-PARAM-lpcbBytesReturned-NONZERO, CTX-REM-CONTEXT-SEMANTICS,
    SET-REM-CONTEXT-SEMANTICS: a callout may redirect without a context; the records query still works, the
    context query answers per the profile (ledger context_absent)."""
    api, sock, _ = _redirected_world(profile, with_context=False)
    assert len(_blob(api, sock)) > 0
    rc, err, n, out = _query(api, sock, CONTEXT)
    if decide("context_absent") == "success_zero":
        assert (rc, err, n) == (0, 0, 0)
    else:
        assert (rc, err, n) == (C.SOCKET_ERROR, C.FWP_E_NOT_FOUND, 0)
    assert out.read() == b"\xcc" * 1024 and out.guards_intact()


# -- WSPIoctl: lpThreadId and lpErrno ---------------------------------------------------------------

@pytest.mark.sim_only
@pytest.mark.requires_redirect
@pytest.mark.parametrize("code", ALL_THREE)
def test_wspioctl_reports_through_lperrno(profile, decide, code):
    """REC-DESC-WSPIOCTL, REC-PARAM-lpErrno, REC-RET-SUCCESS, CTX-DESC-WSPIOCTL, CTX-PARAM-lpErrno,
    CTX-RET-SUCCESS, SET-DESC-WSPIOCTL, SET-PARAM-lpErrno: through the provider's WSPIoctl the error goes to
    *lpErrno (0 on success), not to the thread's last error."""
    from sim.worlds.ready import redirected_tcp
    r = redirected_tcp(profile)
    api = r.api
    sim = _simulator(api)
    blob = _blob(api, r.sock)
    errno, n = dword(api), dword(api)
    if code == SET:
        inp = api.memory.alloc(len(blob))
        api.memory.write(inp, blob)
        good = (api.socket(C.AF_INET, C.SOCK_STREAM, 0), inp, len(blob), 0, 0)
        bad = (api.socket(C.AF_INET, C.SOCK_STREAM, 0), inp, 0, 0, 0)          # empty input
        bad_error = C.WSAEINVAL
    else:
        out = Guarded(api, 1024)
        good = (r.sock, 0, 0, out.ptr, 1024)
        bad = (api.socket(C.AF_INET, C.SOCK_STREAM, 0), 0, 0, out.ptr, 1024)   # not connected
        bad_error = getattr(C, decide("query_unconnected"))
    marker = 12345                              # any value WSPIoctl has no reason to write
    api.WSASetLastError(marker)
    s, inp, cbin, outp, cbout = bad
    assert sim.WSPIoctl(s, code, inp, cbin, outp, cbout, n.ptr, 0, 0, 0, errno.ptr) == C.SOCKET_ERROR
    assert errno.u32() == bad_error and api.WSAGetLastError() == marker
    s, inp, cbin, outp, cbout = good
    n.set_u32(POISON)
    assert sim.WSPIoctl(s, code, inp, cbin, outp, cbout, n.ptr, 0, 0, 0, errno.ptr) == 0
    assert errno.u32() == 0
    if code == SET:
        assert n.u32() == 0
    else:
        expected = _query(api, r.sock, code)[2]
        assert 0 < n.u32() == expected


@pytest.mark.sim_only
@pytest.mark.requires_redirect
@pytest.mark.parametrize("code", ALL_THREE)
def test_wspioctl_thread_id_is_copied(profile, code):
    """REC-PARAM-lpThreadId, CTX-PARAM-lpThreadId, SET-PARAM-lpThreadId: the provider keeps a copy of the
    WSATHREADID structure (not the pointer) and queues the completion routine to that thread, even when the
    structure is overwritten before the operation completes (queries: knob pending)."""
    from sim.worlds.ready import redirected_tcp
    r = redirected_tcp(profile, overrides=PENDING)
    api = r.api
    sim = _simulator(api)
    if not hasattr(api, "new_thread"):
        pytest.skip("needs simulated threads")
    blob = _blob(api, r.sock)
    worker = api.new_thread("worker")
    tid = api.memory.alloc(WSATHREADID.size)
    api.memory.write(tid, WSATHREADID.pack(ThreadHandle=worker.handle, Reserved=0))
    log = RoutineLog(api)
    ovl = overlapped(api)
    errno, n = dword(api), dword(api)
    if code == SET:
        inp = api.memory.alloc(len(blob))
        api.memory.write(inp, blob)
        args = (api.socket(C.AF_INET, C.SOCK_STREAM, 0), code, inp, len(blob), 0, 0)
    else:
        args = (r.sock, code, 0, 0, Guarded(api, 1024).ptr, 1024)
    rc = sim.WSPIoctl(*args, n.ptr, ovl, log.ptr, tid, errno.ptr)
    assert rc == 0 or errno.u32() == C.WSA_IO_PENDING
    api.memory.write(tid, b"\xff" * WSATHREADID.size)           # the pointer's target is gone
    api.SleepEx(50, False)                                       # let the kernel complete it
    assert api.SleepEx(0, True) == 0 and log.calls == []         # not this thread's APC
    with api.as_thread(worker):
        assert api.SleepEx(0, True) == C.WAIT_IO_COMPLETION
    assert len(log.calls) == 1 and log.calls[0][0] == 0 and log.calls[0][2] == ovl


# -- errors with no other case ------------------------------------------------------------------------

@pytest.mark.sim_only
@pytest.mark.requires_redirect
@pytest.mark.parametrize("code", ALL_THREE)
def test_network_down(profile, code):
    """REC-ERR-WSAENETDOWN, CTX-ERR-WSAENETDOWN, SET-ERR-WSAENETDOWN: with the host's network down the call fails
    with WSAENETDOWN and writes nothing."""
    from sim.worlds.ready import redirected_tcp
    r = redirected_tcp(profile)
    api = r.api
    blob = _blob(api, r.sock)
    sock = r.sock if code != SET else api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    _simulator(api).process.host.up = False
    if code == SET:
        assert _set(api, sock, blob) == (C.SOCKET_ERROR, C.WSAENETDOWN, POISON)
    else:
        rc, err, n, out = _query(api, sock, code)
        assert (rc, err, n) == (C.SOCKET_ERROR, C.WSAENETDOWN, POISON)
        assert out.read() == b"\xcc" * 1024


@pytest.mark.sim_only
@pytest.mark.requires_redirect
@pytest.mark.parametrize("code", QUERIES)
def test_blocking_query_interrupted_by_close(profile, code):
    """REC-ERR-WSAEINTR, CTX-ERR-WSAEINTR: a blocking query (the kernel answers later: knob pending) is
    interrupted when another thread closes the socket: WSAEINTR."""
    from sim.worlds.ready import redirected_tcp
    r = redirected_tcp(profile, overrides=PENDING)
    api, sock = r.api, r.sock
    sim = _simulator(api)
    sim.kernel.cross_thread_grace_s = 30.0      # the closing thread, not the kernel timer, ends the wait
    out, n = Guarded(api, 1024), dword(api)
    registered, result = threading.Event(), {}

    def closer():
        api.GetCurrentThreadId()                # this Python thread now takes part in the world
        registered.set()
        while not any(th.waiting for th in sim.process.threads):
            threading.Event().wait(0.001)
        result["close"] = api.closesocket(sock)

    t = threading.Thread(target=closer)
    t.start()
    registered.wait()
    rc = api.WSAIoctl(sock, code, 0, 0, out.ptr, 1024, n.ptr, 0, 0)
    err = api.WSAGetLastError()
    t.join(timeout=60)
    assert not t.is_alive() and result == {"close": 0}
    assert (rc, err) == (C.SOCKET_ERROR, C.WSAEINTR)
    assert n.u32() == POISON


@pytest.mark.sim_only
@pytest.mark.requires_redirect
@pytest.mark.parametrize("error", ["WSAEINPROGRESS", "WSAEINTR", "WSAEOPNOTSUPP"])
@pytest.mark.parametrize("code", ALL_THREE)
def test_injected_error(profile, code, error):
    """REC-ERR-WSAEINPROGRESS, REC-ERR-WSAEINTR, REC-ERR-WSAEOPNOTSUPP, CTX-ERR-WSAEINPROGRESS, CTX-ERR-WSAEINTR,
    CTX-ERR-WSAEOPNOTSUPP, SET-ERR-WSAEINPROGRESS, SET-ERR-WSAEINTR, SET-ERR-WSAEOPNOTSUPP: errors with no
    realistic cause in the simulator (a Winsock 1.1 callback in progress, a SET interrupted, a provider
    without the IOCTL) come from the fault plan: the call fails with that code, writes nothing, and the next
    call is unaffected."""
    from sim.worlds.ready import redirected_tcp
    r = redirected_tcp(profile)
    api = r.api
    blob = _blob(api, r.sock)
    sock = r.sock if code != SET else api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    _simulator(api).process.faults.inject("WSAIoctl", getattr(C, error), code=code)
    if code == SET:
        assert _set(api, sock, blob) == (C.SOCKET_ERROR, getattr(C, error), POISON)
        assert _set(api, sock, blob) == (0, 0, 0)
    else:
        rc, err, n, out = _query(api, sock, code)
        assert (rc, err, n) == (C.SOCKET_ERROR, getattr(C, error), POISON)
        assert out.read() == b"\xcc" * 1024
        rc, err, n, _ = _query(api, sock, code)
        assert (rc, err) == (0, 0) and n > 0


# -- Remarks: the redirect feature, several proxies, UDP forwarding ---------------------------------

@pytest.mark.sim_only
@pytest.mark.requires_redirect
def test_single_proxy_redirect_and_forward(profile):
    """REC-REM-REDIRECT-FEATURE, REC-REM-TRACKING, REC-REM-FORWARD-SET, CTX-REM-REDIRECT-FEATURE,
    CTX-REM-TRACKING, CTX-REM-FORWARD-SET, SET-DESC-PURPOSE, SET-REM-REDIRECT-FEATURE, SET-REM-TRACKING,
    SET-REM-FORWARD-SET: a callout redirects a connection to a local user-mode proxy, which inspects it and
    forwards it on a new connection, carrying the records (SET), to the original destination."""
    from sim.worlds.scenarios import run
    report, _ = run("single-proxy", profile)
    (conn,) = report["connections"]
    assert report["verdict"] == "ok" and conn["intact"]
    first, second = conn["hops"]
    assert first["from_process"] == "app" and first["redirected_to"] == "127.0.0.1:9000"
    assert first["vendor"] == "VendorX" and first["proxy_pid"] == second["from_pid"]
    assert second["redirected_to"] == "" and second["records_forwarded"]
    assert conn["final_destination"] == conn["original_destination"]
    assert report["inspected_bytes"]["VendorX/up"] == conn["bytes_sent"]


@pytest.mark.sim_only
@pytest.mark.requires_redirect
def test_two_vendors_cooperate_without_a_loop(profile):
    """REC-REM-MULTI-PROXY, REC-REM-TRACKING, REC-REM-CONTEXT-SEMANTICS, CTX-REM-MULTI-PROXY, CTX-REM-TRACKING,
    CTX-REM-CONTEXT-SEMANTICS, SET-REM-MULTI-PROXY, SET-REM-TRACKING: with two vendors' proxies each inspects
    the flow once; the records carried by SET let each callout see its own earlier redirection (BY_SELF, then
    PREVIOUSLY_BY_SELF) so nobody redirects again; without SET the flow loops."""
    from sim.worlds.scenarios import run
    report, _ = run("two-vendors", profile)
    (conn,) = report["connections"]
    assert report["verdict"] == "ok" and conn["intact"]
    assert [h["vendor"] for h in conn["hops"]] == ["VendorX", "VendorY", ""]
    seen = [{s["callout"]: s["state"] for s in h["states_seen"]} for h in conn["hops"]]
    assert seen[1] == {"VendorX": "REDIRECTED_BY_SELF", "VendorY": "REDIRECTED_BY_OTHER"}
    assert seen[2] == {"VendorX": "PREVIOUSLY_REDIRECTED_BY_SELF", "VendorY": "REDIRECTED_BY_SELF"}
    assert all(h["records_forwarded"] for h in conn["hops"][1:])
    assert {k: v for k, v in report["inspected_bytes"].items() if k.endswith("/up")} == \
        {"VendorX/up": conn["bytes_sent"], "VendorY/up": conn["bytes_sent"]}
    looped, _ = run("missing-set-loop", profile)
    assert looped["verdict"] == "loop" and looped["connections"][0]["loop_chain"]


@pytest.mark.sim_only
@pytest.mark.udp
@pytest.mark.requires_redirect
@pytest.mark.parametrize("family", FAMILIES)
def test_udp_records_forwarded_on_first_datagram_only(profile, family):
    """REC-REM-UDP-RECVMSG, REC-REM-UDP-SENDMSG, REC-REM-UDP-FIRST-PACKET: the proxy receives the record as
    WSARecvMsg control data of the flow's first datagram and forwards it as WSASendMsg control data of its own
    first datagram only; the flow reaches the original destination in two hops, no loop."""
    from harness.proxy import redirect as rd
    from sim.worlds.ready import redirected_udp
    r = redirected_udp(profile, family)
    api = r.api
    scratch = rd.Scratch(api)
    recvmsg = rd.extension_function(api, r.sock, C.WSAID_WSARECVMSG, scratch)
    first = rd.recv_datagram(api, r.sock, recvmsg, scratch)
    second = rd.recv_datagram(api, r.sock, recvmsg, scratch)
    assert first.records and second.records is None
    out = api.socket(family, C.SOCK_DGRAM, 0)
    sendmsg = rd.extension_function(api, out, C.WSAID_WSASENDMSG, scratch)
    rd.send_datagram(api, out, sendmsg, first.payload, r.original, first.records, scratch)
    rd.send_datagram(api, out, sendmsg, second.payload, r.original, None, scratch)
    r.world.run(5)
    (lineage,) = r.world.hops.report()
    assert not lineage["loop"]
    app_hop, proxy_hop = lineage["hops"]
    assert app_hop["redirected_to"] and not app_hop["records_forwarded"]
    assert proxy_hop["from_pid"] == api.GetCurrentProcessId()
    assert proxy_hop["redirected_to"] == "" and proxy_hop["records_forwarded"]
    assert {s["state"] for s in proxy_hop["states_seen"]} == {"REDIRECTED_BY_SELF"}


@pytest.mark.requires_redirect
def test_records_blob_round_trips_unparsed(redirected, decide):
    """REC-REM-OPAQUE, CTX-REM-OPAQUE, SET-REM-OPAQUE: the application passes the blob back byte for byte without
    understanding it; the same bytes with one bit changed are refused."""
    api = redirected.api
    blob = _blob(api, redirected.sock)
    assert _set(api, api.socket(C.AF_INET, C.SOCK_STREAM, 0), blob) == (0, 0, 0)
    flipped = bytes([blob[0] ^ 0x80]) + blob[1:]
    assert _set(api, api.socket(C.AF_INET, C.SOCK_STREAM, 0), flipped)[:2] == \
        (C.SOCKET_ERROR, getattr(C, decide("set_bad_blob")))
    assert struct.calcsize("<I") <= len(blob)
