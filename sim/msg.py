"""WSARecvMsg and WSASendMsg: datagrams with control data (cmsgs).

Pointer rules from the LPFN_WSARECVMSG and WSASendMsg pages: WSAEFAULT for
any buffer not wholly in user memory, for a NULL name with a non-zero
namelen, and for a NULL Control.buf with a non-zero Control.len. Control
data that does not fit sets MSG_CTRUNC, a datagram that does not fit sets
MSG_TRUNC; either fails with WSAEMSGSIZE (STATUS_BUFFER_OVERFLOW when
overlapped; Wine dlls/ws2_32/tests/sock.c test_ip_pktinfo on Windows). Both functions serve datagram and raw sockets only (assumed:
WSAEOPNOTSUPP for a stream socket).
"""
from __future__ import annotations

import struct

from harness.winsock import constants as C
from harness.winsock import sockaddr as codec
from harness.winsock.layouts import IN6_PKTINFO, IN_PKTINFO, WSAMSG, iter_cmsgs, pack_cmsgs
from sim import sockaddr_io
from sim.wfp import records
from sim.errors import WsaError
from sim.net import unmap

_MSG_FMT = struct.Struct("<Qi4xQI4xI4xQI4x")    # WSAMSG on x64, field by field
assert _MSG_FMT.size == WSAMSG.size


def _read_msg(mem, lpMsg):
    if not lpMsg or not mem.check(lpMsg, WSAMSG.size, True):
        raise WsaError(C.WSAEFAULT)
    return list(_MSG_FMT.unpack(mem.kread(lpMsg, WSAMSG.size)))


def _control_for(sock, dst, meta) -> list:
    """The cmsgs a datagram carries up to this socket, per its options."""
    items = []
    opts = sock.options
    plain = unmap(dst[0])
    v4 = len(plain) == 4
    if v4 and opts[(C.IPPROTO_IP, C.IP_PKTINFO)]:
        items.append((C.IPPROTO_IP, C.IP_PKTINFO, IN_PKTINFO.pack(ipi_addr=plain, ipi_ifindex=1)))
    if sock.family == C.AF_INET6 and opts[(C.IPPROTO_IPV6, C.IPV6_PKTINFO)]:
        addr = plain if not v4 else b"\0" * 10 + b"\xff\xff" + plain
        items.append((C.IPPROTO_IPV6, C.IPV6_PKTINFO, IN6_PKTINFO.pack(ipi6_addr=addr, ipi6_ifindex=1)))
    level = C.IPPROTO_IP if sock.family == C.AF_INET else C.IPPROTO_IPV6
    wfp = meta.get("redirect")
    if wfp is not None:
        # Redirect data rides only on the flow-creating datagram (sim.wfp puts it there)
        # and reaches the caller only once the socket asked for it (docs/facts.md §3.5).
        if opts[(level, C.IP_WFP_REDIRECT_RECORDS)]:
            items.append((level, C.IP_WFP_REDIRECT_RECORDS, wfp.records_blob()))
        if opts[(level, C.IP_WFP_REDIRECT_CONTEXT)]:
            context = wfp.context_for(sock.process.pid)
            if context is not None:
                items.append((level, C.IP_WFP_REDIRECT_CONTEXT, context))
    return items


def recvmsg(api, thread, sock, lpMsg, lpNumber, lpOverlapped, lpRoutine):
    mem = api.memory
    try:
        if sock.is_tcp:
            raise WsaError(C.WSAEOPNOTSUPP)
        name, namelen, lpBuffers, count, control_len, control_buf, _flags = _read_msg(mem, lpMsg)
        if not name and namelen:
            raise WsaError(C.WSAEFAULT)
        if name and (namelen < sockaddr_io.size_for(sock.family) or not mem.check(name, namelen, True)):
            raise WsaError(C.WSAEFAULT)
        if control_len and (not control_buf or not mem.check(control_buf, control_len, True)):
            raise WsaError(C.WSAEFAULT)
        bufs = api._buffers(lpBuffers, count, True)
        overlapped = bool(sock.overlapped_attr and lpOverlapped)
        if lpNumber and not mem.check(lpNumber, 4, True):
            raise WsaError(C.WSAEFAULT)
        if not overlapped and not lpNumber:
            raise WsaError(C.WSAEFAULT)
    except WsaError as exc:
        return api._err(thread, exc.code)

    def take():
        ready = sock.dgram_readable()
        if ready is None:
            return None
        if ready is not True:
            return sock.take_reset(), 0, 0
        src, dst, payload, meta = sock.dgram_take()
        n = api.scatter(bufs, payload)
        flags = C.MSG_TRUNC if n < len(payload) else 0
        control = b""
        for item in _control_for(sock, dst, meta):
            packed = pack_cmsgs([item])
            if len(control) + len(packed) > control_len:
                flags |= C.MSG_CTRUNC
                break
            control += packed
        mem.kwrite(control_buf, control)
        if name:
            data = codec.pack_for(sock.family, *src)
            mem.kwrite(name, data[:namelen])
            mem.kwrite(lpMsg + WSAMSG.offset("namelen"), struct.pack("<i", len(data)))
        mem.kwrite(lpMsg + WSAMSG.offset("Control_len"), struct.pack("<I", len(control)))
        mem.kwrite(lpMsg + WSAMSG.offset("dwFlags"), struct.pack("<I", flags))
        # Truncated data or control data both fail: WSAEMSGSIZE, STATUS_BUFFER_OVERFLOW overlapped
        # (Wine dlls/ws2_32/tests/sock.c test_ip_pktinfo, Control.len 1: -1, WSAEMSGSIZE, MSG_CTRUNC).
        status = 0x80000005 if flags & (C.MSG_TRUNC | C.MSG_CTRUNC) else 0    # STATUS_BUFFER_OVERFLOW
        # The flags reach the caller in WSAMSG.dwFlags only: a routine gets dwFlags 0 (Wine
        # test_ip_pktinfo's ip_pktinfo_apc, on Windows).
        return status, n, 0

    return api._io(thread, sock, "recvmsg", take, lpOverlapped, lpRoutine, lpNumber)


def sendmsg(api, thread, sock, lpMsg, dwFlags, lpNumber, lpOverlapped, lpRoutine):
    mem = api.memory
    try:
        if sock.is_tcp:
            raise WsaError(C.WSAEOPNOTSUPP)
        if not lpMsg or not mem.check(lpMsg, WSAMSG.size, False):
            raise WsaError(C.WSAEFAULT)
        name, namelen, lpBuffers, count, control_len, control_buf, _flags = \
            _MSG_FMT.unpack(mem.kread(lpMsg, WSAMSG.size))
        if dwFlags & ~(C.MSG_DONTROUTE | C.MSG_PARTIAL):
            raise WsaError(C.WSAEOPNOTSUPP)
        if not name and namelen:
            raise WsaError(C.WSAEFAULT)
        dst = sockaddr_io.read(mem, name, namelen, sock.family) if name else None
        if control_len and (not control_buf or not mem.check(control_buf, control_len, False)):
            raise WsaError(C.WSAEFAULT)
        bufs = api._buffers(lpBuffers, count, False)
        overlapped = bool(sock.overlapped_attr and lpOverlapped)
        if lpNumber and not mem.check(lpNumber, 4, True):
            raise WsaError(C.WSAEFAULT)
        if not overlapped and not lpNumber:
            raise WsaError(C.WSAEFAULT)
        meta = {}
        control = mem.kread(control_buf, control_len) if control_len else b""
        seen = 0
        for level, ctype, data in iter_cmsgs(control):
            seen += 1
            if level in (C.IPPROTO_IP, C.IPPROTO_IPV6) and ctype == C.IP_WFP_REDIRECT_RECORDS:
                decoded = records.decode(data, sock.host.records_key)
                if decoded is None:
                    raise WsaError(C.WSAEINVAL)            # not a records blob of this host
                meta["records"] = decoded
        if control and not seen:
            raise WsaError(C.WSAEINVAL)                    # control data without a valid header
        payload = b"".join(mem.kread(p, n) for p, n in bufs)
    except WsaError as exc:
        return api._err(thread, exc.code)
    return api.send_now(thread, sock, "sendmsg", lpOverlapped, lpRoutine, lpNumber,
                        lambda: sock.dgram_send(payload, dst, meta))
