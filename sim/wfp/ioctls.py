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
from sim.decision_points import DECISIONS

# Decision points this module reads (sim/decision_points.py), checked when it is imported.
_TINY_FAILS = DECISIONS["query_tiny_buffer"].choice("WSAEINVAL")
_NOT_REDIRECTED_ERROR = {DECISIONS["query_not_redirected"].choice("FWP_E_NOT_FOUND"): C.FWP_E_NOT_FOUND,
                         DECISIONS["query_not_redirected"].choice("WSAEINVAL"): C.WSAEINVAL}
_NO_CONTEXT_SUCCEEDS = DECISIONS["context_absent"].choice("success_zero")
_COMPLETION_ACTUAL = DECISIONS["wfp_completion_bytes"].choice("actual")
_QUERY_PENDING = DECISIONS["wfp_query_completion"].choice("pending")
_SET_NEEDS_ELEVATION = DECISIONS["set_requires_elevation"].choice("WSAEACCES")


ULONG = 4
QUERY_DELAY_NS = 50_000        # 'pending' profile value: the kernel answers 50 µs later


def _short_buffer_failure(point) -> dict:
    """Each choice of `point` -> the failure it names: (error, *lpcbBytesReturned; None: the required size)."""
    errors = {"insufficient_buffer": C.ERROR_INSUFFICIENT_BUFFER, "WSAEFAULT": C.WSAEFAULT,
              "WSAENOBUFS": C.WSAENOBUFS, "WSAEINVAL": C.WSAEINVAL}
    return {point.choice(c): (errors[c], 0 if c == "WSAEINVAL" else None) for c in point.choices}


def _fail_for(failures: dict, choice: str, required: int):
    error, returned = failures[choice]
    return Fail(error, required if returned is None else returned)


_SIZE_PROBE_FAILURE = _short_buffer_failure(DECISIONS["query_size_probe"])
_SHORT_BUFFER_FAILURE = _short_buffer_failure(DECISIONS["query_short_buffer"])


def _query(call, what: str):
    profile, sock, mem = call.profile, call.sock, call.mem
    # Decision point wfp_query_check_order: the output range, the size, then the socket.
    # Output range first: "not totally contained in a valid part of the user address space".
    if call.cbout and (call.outbuf == 0 or not mem.check(call.outbuf, call.cbout, True)):
        return Fail(C.WSAEFAULT)
    if 0 < call.cbout < ULONG and profile.query_tiny_buffer == _TINY_FAILS:
        return Fail(C.WSAEINVAL, 0)
    # Decision point query_raw_socket: WSAENOPROTOOPT.
    if sock.type == C.SOCK_RAW:
        return Fail(C.WSAENOPROTOOPT, 0)
    # Decision point query_udp_socket: WSAEINVAL (UDP gets its record as a cmsg).
    if sock.is_udp:
        return Fail(C.WSAEINVAL, 0)
    # Decision point query_unconnected: WSAENOTCONN.
    if sock.state != "connected":
        return Fail(C.WSAENOTCONN, 0)
    redirect = sock.redirect
    if redirect is None:
        err = _NOT_REDIRECTED_ERROR[profile.query_not_redirected]
        return Fail(err, 0)
    if what == "records":
        data = redirect.records_blob()
    else:
        data = redirect.context_for(call.process.pid)
        if data is None:
            if profile.context_absent == _NO_CONTEXT_SUCCEEDS:
                return Inline(0)
            return Fail(C.FWP_E_NOT_FOUND, 0)
    required = len(data)
    if call.cbout == 0:
        return _fail_for(_SIZE_PROBE_FAILURE, profile.query_size_probe, required)
    if call.cbout < required:
        return _fail_for(_SHORT_BUFFER_FAILURE, profile.query_short_buffer, required)
    completion_bytes = required if profile.wfp_completion_bytes == _COMPLETION_ACTUAL else 0

    def write():
        if not mem.kwrite(call.outbuf, data):
            call.process.kernel.note("buffer-unwritable",
                                     f"pid {call.process.pid}: output buffer of a {what} query "
                                     f"at 0x{call.outbuf:x} was freed before the kernel wrote it")

    if profile.wfp_query_completion == _QUERY_PENDING:
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
    # Decision point set_bad_blob: an empty input or a non-zero output size is WSAEINVAL.
    if call.cbin == 0 or call.cbout != 0:
        return Fail(C.WSAEINVAL, 0)
    if profile.set_requires_elevation == _SET_NEEDS_ELEVATION and not call.process.elevated:
        return Fail(C.WSAEACCES, 0)
    if not sock.is_tcp:
        return Fail(C.WSAEINVAL, 0)        # UDP forwards its record as a cmsg (assumed: not applicable)
    # Decision point set_after_connect: WSAEINVAL on a connected (or connecting, listening) socket.
    if sock.state in ("connected", "connecting", "listening"):
        return Fail(C.WSAEINVAL, 0)
    blob = mem.kread(call.inbuf, call.cbin)
    decoded = records.decode(blob, sock.host.records_key)
    if decoded is None:
        return Fail(C.WSAEINVAL, 0)        # not a records blob of this host: socket untouched
    sock.redirect_records = decoded
    return Inline(0)
