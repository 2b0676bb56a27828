"""Generic Winsock IOCTLs, each as Windows was observed to handle it.

Item numbers refer to docs/windows-observed.md. A handler is
registered with the layer that handles the code on Windows: 'ws2_32'
(checked in user mode, OVERLAPPED untouched on failure, item 50) or 'afd'
(Internal is set to STATUS_PENDING before the provider's own checks,
item 49).
"""
from __future__ import annotations

import struct

from harness.winsock import constants as C
from harness.winsock.layouts import guid_bytes
from sim.ioctl_outcomes import UNTOUCHED, Deferred, Fail, Inline
from sim.decision_points import DECISIONS

# Decision points this module reads (sim/decision_points.py), checked when it is imported.
_UNKNOWN_PENDING = DECISIONS["unknown_ioctl_overlapped"].choice("pending")
_UNKNOWN_ERROR = {DECISIONS["unknown_ioctl_error"].choice("WSAEOPNOTSUPP"): C.WSAEOPNOTSUPP,
                  DECISIONS["unknown_ioctl_error"].choice("WSAEINVAL"): C.WSAEINVAL}
_FLUSH_UNSUPPORTED = DECISIONS["sio_flush"].choice("unsupported")
_EXTENSION_SIZES_CHECKED = DECISIONS["extension_pointer_sizes"].choice("checked")
_BACKLOG_BUFFER_FIRST = DECISIONS["ideal_backlog_check_order"].choice("buffer_first")
_ATMARK_DATAGRAM_REFUSED = DECISIONS["siocatmark_datagram"].choice("WSAEINVAL")


HANDLERS: dict = {}


def handler(code: int, layer: str = "afd"):
    def register(fn):
        fn.layer = layer
        HANDLERS[code] = fn
        return fn
    return register


def unknown(call):
    """A code the provider does not implement (items 11, 13, 14, 15)."""
    profile = call.profile
    if call.is_overlapped and profile.unknown_ioctl_overlapped == _UNKNOWN_PENDING:
        return Deferred(lambda: (C.STATUS_NOT_SUPPORTED, 0))
    error = _UNKNOWN_ERROR[profile.unknown_ioctl_error]
    return Fail(error, 0)


unknown.layer = "afd"


@handler(C.FIONBIO)
def fionbio(call):
    data = call.input(4)
    if data is None:                               # items 21, 22
        return Fail(C.WSAEFAULT)
    nonblocking = struct.unpack("<I", data)[0] != 0
    if not nonblocking and call.sock.ev_mask:
        # The ioctlsocket page: after WSAEventSelect "any attempt to use ioctlsocket to set the
        # socket back to blocking mode will fail with WSAEINVAL" until it is called with
        # lNetworkEvents 0; Wine dlls/ws2_32/tests/sock.c test_fionbio: WSAEINVAL, size 0.
        return Fail(C.WSAEINVAL, 0)
    call.sock.nonblocking = nonblocking
    return Inline(0)                               # output ignored (23); size 0 (24)


def _u32_out(call, value: int):
    if not call.output_ok(4):                      # item 19: size untouched
        return Fail(C.WSAEFAULT)
    return Inline(4, write=lambda: call.mem.kwrite(call.outbuf, struct.pack("<I", value)))


@handler(C.FIONREAD)
def fionread(call):
    sock = call.sock
    if sock.conn is not None and sock.state == "connected":
        value = len(sock.conn.rx)
    elif sock.udp is not None:
        value = sum(len(d[2]) for d in sock.udp.queue)
    else:
        value = 0                                  # item 20: unconnected gives 0
    return _u32_out(call, value)


@handler(C.SIOCATMARK)
def siocatmark(call):
    if call.sock.is_udp and call.profile.siocatmark_datagram == _ATMARK_DATAGRAM_REFUSED and call.output_ok(4):
        return Fail(C.WSAEINVAL)                   # decision point siocatmark_datagram
    return _u32_out(call, 1)                       # item 20: no OOB data -> TRUE


@handler(C.SIO_KEEPALIVE_VALS)
def keepalive_vals(call):
    data = call.input(12)
    if data is None:                               # item 26 (sync: size 0), item 49 (overlapped: untouched)
        return Fail(C.WSAEFAULT, UNTOUCHED if call.is_overlapped else 0)
    onoff, _time, _interval = struct.unpack("<III", data)
    call.sock.options[(C.SOL_SOCKET, C.SO_KEEPALIVE)] = 1 if onoff else 0
    # item 48: with an OVERLAPPED and no routine the size is left untouched.
    untouched = call.is_overlapped and not call.routine
    return Inline(UNTOUCHED if untouched else 0)


@handler(C.SIO_GET_EXTENSION_FUNCTION_POINTER, layer="ws2_32")
def extension_function_pointer(call):
    checked = call.profile.extension_pointer_sizes == _EXTENSION_SIZES_CHECKED
    # Decision point extension_pointer_sizes (gap P): checked, a short input or output is WSAEFAULT;
    # unchecked, 16 GUID bytes are read and 8 pointer bytes written whatever the lengths say (an
    # unreadable or unwritable range, where such a provider would fault, is WSAEFAULT here).
    guid = call.input(16) if checked else (call.mem.kread(call.inbuf, 16) if call.inbuf else None)
    if guid is None:
        return Fail(C.WSAEFAULT)
    ptr = call.process.extension_pointer(guid)
    if ptr is None:
        return Fail(C.WSAEINVAL)                   # item 51: unknown GUID, everything untouched
    if not (call.output_ok(8) if checked else call.outbuf and call.mem.check(call.outbuf, 8, True)):
        return Fail(C.WSAEFAULT)
    return Inline(8, write=lambda: call.mem.kwrite(call.outbuf, struct.pack("<Q", ptr)))


@handler(C.SIO_BASE_HANDLE)
def base_handle(call):
    if call.is_overlapped:
        return Deferred(lambda: (C.STATUS_NOT_SUPPORTED, 0))   # item 55
    checked = call.profile.extension_pointer_sizes == _EXTENSION_SIZES_CHECKED
    # Decision point extension_pointer_sizes: a short or NULL output is WSAEFAULT, or (unchecked) only an
    # unwritable one is (where such a provider would fault).
    if not (call.output_ok(8) if checked else call.outbuf and call.mem.check(call.outbuf, 8, True)):
        return Fail(C.WSAEFAULT)
    handle = call.sock.handle
    return Inline(8, write=lambda: call.mem.kwrite(call.outbuf, struct.pack("<Q", handle)))   # item 41


@handler(C.SIO_IDEAL_SEND_BACKLOG_QUERY)
def ideal_send_backlog(call):
    sock = call.sock
    if call.profile.ideal_backlog_check_order == _BACKLOG_BUFFER_FIRST and not call.output_ok(4):
        return Fail(C.WSAEFAULT)                   # decision point ideal_backlog_check_order
    if not sock.is_tcp:
        return Fail(C.WSAEOPNOTSUPP)               # item 16
    if sock.state != "connected":
        return Fail(C.WSAENOTCONN)
    return _u32_out(call, 0x10000)


@handler(C.SIO_UDP_CONNRESET)
def udp_connreset(call):
    data = call.input(4)
    if data is None:
        return Fail(C.WSAEFAULT)
    if not call.sock.is_udp:
        return Fail(C.WSAEINVAL)
    call.sock.udp_connreset = struct.unpack("<I", data)[0] != 0
    return Inline(0)


@handler(C.SIO_FLUSH)
def flush(call):
    if call.profile.sio_flush == _FLUSH_UNSUPPORTED:
        return unknown(call)                       # item 12
    # Documented: pending operations end with WSA_OPERATION_ABORTED (WFP IOCTL error tables).
    from sim.overlapped import cancel
    for req in [r for r in call.sock.pending if r.kind == "ioctl"]:
        cancel(req)
    return Inline(0)


@handler(C.SIO_QUERY_WFP_ALE_ENDPOINT_HANDLE)
def ale_endpoint_handle(call):
    # winsock-ioctls.md: output smaller than a UINT64, or NULL -> WSAEINVAL (not WSAEFAULT).
    if call.cbout < 8 or call.outbuf == 0:
        return Fail(C.WSAEINVAL)
    if not call.mem.check(call.outbuf, 8, True):
        return Fail(C.WSAEFAULT)
    value = call.sock.endpoint_handle
    return Inline(8, write=lambda: call.mem.kwrite(call.outbuf, struct.pack("<Q", value)))


EXTENSION_GUIDS = {
    guid_bytes(C.WSAID_WSARECVMSG): "WSARecvMsg",
    guid_bytes(C.WSAID_WSASENDMSG): "WSASendMsg",
    guid_bytes(C.WSAID_ACCEPTEX): "AcceptEx",
    guid_bytes(C.WSAID_CONNECTEX): "ConnectEx",
    guid_bytes(C.WSAID_GETACCEPTEXSOCKADDRS): "GetAcceptExSockaddrs",
}
