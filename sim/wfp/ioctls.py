"""The WFP redirect IOCTL family, per the active profile (docs/decisions.md §4).

The records and context of an accepted socket come from `sock.redirect`,
which the simulated WFP kernel (sim.wfp) attaches when it redirected the
flow; a socket nobody redirected has none. Every contested behaviour is a
decision point read from the profile.
"""
from __future__ import annotations

from harness.winsock import constants as C
from sim.wfp import records
from sim.ioctl_outcomes import Deferred, Fail, Inline
from sim.ioctls import handler

ULONG = 4
QUERY_DELAY_NS = 50_000        # 'pending' profile value: the kernel answers 50 µs later


def _fail_for(choice: str, required: int):
    if choice == "insufficient_buffer":
        return Fail(C.ERROR_INSUFFICIENT_BUFFER, required)
    if choice == "WSAEFAULT":
        return Fail(C.WSAEFAULT, required)
    if choice == "WSAENOBUFS":
        return Fail(C.WSAENOBUFS, required)
    return Fail(C.WSAEINVAL, 0)


def _query(call, what: str):
    profile, sock, mem = call.profile, call.sock, call.mem
    # Output range first: "not totally contained in a valid part of the user address space".
    if call.cbout and (call.outbuf == 0 or not mem.check(call.outbuf, call.cbout, True)):
        return Fail(C.WSAEFAULT)
    if 0 < call.cbout < ULONG and profile.query_tiny_buffer == "WSAEINVAL":
        return Fail(C.WSAEINVAL, 0)
    if sock.type == C.SOCK_RAW:
        return Fail(C.WSAENOPROTOOPT, 0)
    if sock.is_udp:
        return Fail(C.WSAEINVAL, 0)
    if sock.state != "connected":
        return Fail(C.WSAENOTCONN, 0)
    redirect = sock.redirect
    if redirect is None:
        err = C.FWP_E_NOT_FOUND if profile.query_not_redirected == "FWP_E_NOT_FOUND" else C.WSAEINVAL
        return Fail(err, 0)
    if what == "records":
        data = redirect.records_blob()
    else:
        data = redirect.context_for(call.process.pid)
        if data is None:
            if profile.context_absent == "success_zero":
                return Inline(0)
            return Fail(C.FWP_E_NOT_FOUND, 0)
    required = len(data)
    if call.cbout == 0:
        return _fail_for(profile.query_size_probe, required)
    if call.cbout < required:
        return _fail_for(profile.query_short_buffer, required)
    completion_bytes = required if profile.wfp_completion_bytes == "actual" else 0

    def write():
        if not mem.kwrite(call.outbuf, data):
            call.process.kernel.note("buffer-unwritable",
                                     f"pid {call.process.pid}: output buffer of a {what} query "
                                     f"at 0x{call.outbuf:x} was freed before the kernel wrote it")

    if profile.wfp_query_completion == "pending":
        def finish():
            write()
            return 0, completion_bytes
        return Deferred(finish, QUERY_DELAY_NS)
    return Inline(required, completion_bytes, write)


@handler(C.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS)
def query_records(call):
    return _query(call, "records")


@handler(C.SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT)
def query_context(call):
    return _query(call, "context")


@handler(C.SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS)
def set_records(call):
    profile, sock, mem = call.profile, call.sock, call.mem
    if call.cbin and (call.inbuf == 0 or not mem.check(call.inbuf, call.cbin, False)):
        return Fail(C.WSAEFAULT, 0)
    if call.cbout and call.outbuf and not mem.check(call.outbuf, call.cbout, True):
        return Fail(C.WSAEFAULT, 0)        # SET page: a bad lpvOutBuffer is WSAEFAULT (NULL: the size rule below)
    if call.cbin == 0 or call.cbout != 0:
        return Fail(C.WSAEINVAL, 0)
    if profile.set_requires_elevation == "WSAEACCES" and not call.process.elevated:
        return Fail(C.WSAEACCES, 0)
    if not sock.is_tcp:
        return Fail(C.WSAEINVAL, 0)        # UDP forwards its record as a cmsg (assumed: not applicable)
    if sock.state in ("connected", "connecting", "listening"):
        return Fail(C.WSAEINVAL, 0)
    blob = mem.kread(call.inbuf, call.cbin)
    decoded = records.decode(blob, sock.host.records_key)
    if decoded is None:
        return Fail(C.WSAEINVAL, 0)        # not a records blob of this host: socket untouched
    sock.redirect_records = decoded
    return Inline(0)
