"""mswsock's extension functions: AcceptEx, ConnectEx, GetAcceptExSockaddrs.

Reached through SIO_GET_EXTENSION_FUNCTION_POINTER and `api.call`, as on
Windows (mswsock.h; learn.microsoft.com pages "AcceptEx function",
"LPFN_CONNECTEX callback function", "GetAcceptExSockaddrs function"). Where
the pages are silent the behaviour is that of Wine's
dlls/ws2_32/tests/sock.c test_AcceptEx / test_connect, which run on real Windows.
"""
from __future__ import annotations

import struct

from harness.winsock import constants as C
from harness.winsock import sockaddr as codec
from harness.winsock.ctype import cfunc
from sim.c_entry import ws2_call
from harness.winsock.layouts import WSAOVERLAPPED
from sim import overlapped as ov
from sim import sockaddr_io
from sim import status as st
from sim.errors import WsaError
from sim.provider import start_overlapped
from sim.decision_points import DECISIONS

# Decision points this module reads (sim/decision_points.py), checked when it is imported.
_ACCEPTEX_SHORT_FAILS = DECISIONS["acceptex_short_address"].choice("WSAEFAULT")

_ADDRESS_PAD = 16        # AcceptEx page: each address slot is the sockaddr plus 16 bytes
_U64 = (1 << 64) - 1


def _address_slot(family: int, ip: bytes, port: int) -> bytes:
    """One AcceptEx address slot: the sockaddr's length (int) then the sockaddr."""
    data = codec.pack_for(family, ip, port)
    return struct.pack("<i", len(data)) + data


class Mswsock:
    def _extension_overlapped(self, lpOverlapped):
        """The OVERLAPPED both functions require; 0 when usable, else the error.

        NULL: ERROR_INVALID_PARAMETER (Wine test_AcceptEx / test_connect, "NULL overlapped").
        Otherwise Internal becomes STATUS_PENDING before the other checks, so an immediate
        failure leaves it there (same tests: "overlapped.Internal == STATUS_PENDING").
        """
        if not lpOverlapped:
            return C.ERROR_INVALID_PARAMETER
        if not self.memory.check(lpOverlapped, WSAOVERLAPPED.size, True):
            return C.WSAEFAULT
        ov.mark_pending(self.process, lpOverlapped)
        return 0

    @ws2_call("SOCKET sListenSocket, SOCKET sAcceptSocket, LPVOID lpOutputBuffer, DWORD dwReceiveDataLength, "
              "DWORD dwLocalAddressLength, DWORD dwRemoteAddressLength, LPVOID lpdwBytesReceived, "
              "LPVOID lpOverlapped", C.FALSE, on_socket=False)
    def AcceptEx(self, thread, sListenSocket, sAcceptSocket, lpOutputBuffer, dwReceiveDataLength, dwLocalAddressLength,
                 dwRemoteAddressLength, lpdwBytesReceived, lpOverlapped):
        process, mem = self.process, self.memory
        err = self._extension_overlapped(lpOverlapped)
        if err:
            return self._err(thread, err, C.FALSE)
        lst = process.sockets.get(sListenSocket)
        acc = process.sockets.get(sAcceptSocket)
        need = sockaddr_io.size_for(lst.family if lst is not None else C.AF_INET) + _ADDRESS_PAD
        total = dwReceiveDataLength + dwLocalAddressLength + dwRemoteAddressLength
        strict = process.profile.acceptex_short_address == _ACCEPTEX_SHORT_FAILS
        # Without the strict reading a local length of 0 asks for no local address: Windows
        # completes and writes none (Wine dlls/ws2_32/tests/sock.c test_AcceptEx: local size 0
        # pends, then succeeds); only a slot too small for its address fails the completion.
        no_local = dwLocalAddressLength == 0 and not strict
        short = (dwLocalAddressLength < need and not no_local) or dwRemoteAddressLength < need
        if lst is None or acc is None:
            err = C.WSAENOTSOCK
        elif not lst.is_tcp:
            err = C.WSAEOPNOTSUPP           # AcceptEx page: sListenSocket not connection-oriented
        elif lst.state != "listening":
            err = C.WSAEINVAL               # AcceptEx page: listen was not called
        elif (not acc.is_tcp or acc.family != lst.family or acc.local is not None
              or acc.state != "new" or acc.accepting is not None):
            err = C.WSAEINVAL               # page: "must not be bound or connected"; Wine: UDP, twice
        elif dwRemoteAddressLength == 0 or (short and strict):
            err = C.WSAEFAULT               # page: "at least 16 bytes more than the maximum address length"
        elif not lpOutputBuffer or not mem.check(lpOutputBuffer, total, True):
            err = C.WSAEFAULT               # page: lpOutputBuffer "must be specified"
        elif lpdwBytesReceived and not mem.check(lpdwBytesReceived, 4, True):
            err = C.WSAEFAULT
        elif not process.host.up:
            err = C.WSAENETDOWN
        if err:
            return self._err(thread, err, C.FALSE)
        req, err = start_overlapped(process, lst, thread, lpOverlapped, 0, "accept")
        if req is None:
            return self._err(thread, err, C.FALSE)
        family = lst.family

        def take():
            """(status, bytes) once the accept can complete, else None."""
            if acc.conn is None:
                queue = lst.listener.queue if lst.listener is not None else ()
                if not queue:
                    return None
                if short:
                    # The address does not fit: the completion fails and the connection stays
                    # queued for the next accept (Wine test_AcceptEx, "The above connection
                    # request is not accepted": accept() then gets it).
                    return C.STATUS_BUFFER_TOO_SMALL, 0
                acc.adopt(queue.pop(0), lst)
                acc.context_pending = "accept"
            if dwReceiveDataLength == 0:
                n = 0
            else:
                ready = acc.stream_readable()
                if ready is None:
                    return None         # page: completes after the first block of data
                if ready is not True:
                    return st.from_winsock(C.WSAECONNRESET), 0
                data = acc.stream_take(dwReceiveDataLength)   # b"" on the peer's FIN
                mem.kwrite(lpOutputBuffer, data)
                n = len(data)
            slot = (lpOutputBuffer + dwReceiveDataLength) & _U64
            if not no_local:
                mem.kwrite(slot, _address_slot(family, *acc.conn.local))
            mem.kwrite((slot + dwLocalAddressLength) & _U64, _address_slot(family, *acc.conn.remote))
            return C.STATUS_SUCCESS, n

        def release(r):
            if acc.accepting is r:
                acc.accepting = None

        result = take()
        if result is not None:
            status, n = result
            if lpdwBytesReceived:
                mem.kwrite_u32(lpdwBytesReceived, n)
            ov.complete(req, status, n, synchronous=True)
            if st.nt_success(status):
                return self._ok(thread, C.TRUE)
            return self._err(thread, st.to_winsock(status), C.FALSE)

        def start(r):
            res = take()
            if res is not None:
                release(r)
                ov.complete(r, res[0], res[1])
        req.start = start
        req.on_cancel = lambda: release(req)
        lst.pending.append(req)
        acc.accepting = req
        return self._err(thread, C.WSA_IO_PENDING, C.FALSE)

    @ws2_call("SOCKET s, LPVOID name, int namelen, LPVOID lpSendBuffer, DWORD dwSendDataLength, "
              "LPVOID lpdwBytesSent, LPVOID lpOverlapped", C.FALSE, on_socket=False)
    def ConnectEx(self, thread, s, name, namelen, lpSendBuffer, dwSendDataLength, lpdwBytesSent, lpOverlapped):
        process, mem = self.process, self.memory
        # The OVERLAPPED before the socket, as AcceptEx (docs/windows-observed.md item 10: on Windows
        # AcceptEx on INVALID_SOCKET leaves Internal STATUS_PENDING; ConnectEx is the same extension
        # path, inferred; Wine dlls/ws2_32/socket.c WS2_ConnectEx does so too).
        err = self._extension_overlapped(lpOverlapped)
        if err:
            return self._err(thread, err, C.FALSE)
        sock = process.sockets.get(s)
        if sock is None:
            return self._err(thread, C.WSAENOTSOCK, C.FALSE)
        try:
            if not sock.is_tcp:
                raise WsaError(C.WSAEINVAL)       # page: connection-oriented sockets only (assumed code)
            if sock.state == "listening" or sock.accepting is not None:
                raise WsaError(C.WSAEINVAL)       # page: "unbound or a listening socket"; Wine test_AcceptEx
            if sock.state == "connected":
                raise WsaError(C.WSAEISCONN)      # Wine test_connect
            if sock.state == "connecting":
                # Wine test_connecting_socket (runs on Windows): ConnectEx while connect() or
                # another ConnectEx is in progress is WSAEINVAL, not connect's WSAEALREADY.
                raise WsaError(C.WSAEINVAL)
            if sock.local is None:
                raise WsaError(C.WSAEINVAL)       # page: s must be "previously bound"
            ip, port = sockaddr_io.read(mem, name, namelen, sock.family)
            if lpSendBuffer and dwSendDataLength and not mem.check(lpSendBuffer, dwSendDataLength, False):
                raise WsaError(C.WSAEFAULT)
            if lpdwBytesSent and not mem.check(lpdwBytesSent, 4, True):
                raise WsaError(C.WSAEFAULT)
            data = mem.kread(lpSendBuffer, dwSendDataLength) if lpSendBuffer and dwSendDataLength else b""
            req, err = start_overlapped(process, sock, thread, lpOverlapped, 0, "connect")
            if req is None:
                raise WsaError(err)
            # The very path connect() takes: checks, bind, the WFP connect-redirect hook.
            sock.begin_connect(ip, port)
        except WsaError as exc:
            return self._err(thread, exc.code, C.FALSE)

        def take():
            if not sock._connect_settled():
                return None
            sock._settle_connect()
            if sock.state != "connected":
                # page: WSAECONNREFUSED, WSAENETUNREACH, WSAETIMEDOUT come through the completion
                return st.from_winsock(sock.so_error), 0
            sock.context_pending = "connect"
            try:
                n = sock.stream_send(data) if data else 0
            except WsaError as exc:
                return st.from_winsock(exc.code), 0
            return C.STATUS_SUCCESS, n

        def start(r):
            res = take()
            if res is not None:
                ov.complete(r, res[0], res[1])
        req.start = start
        sock.pending.append(req)
        start(req)                 # a callout may have refused the connect already
        return self._err(thread, C.WSA_IO_PENDING, C.FALSE)

    @cfunc("LPVOID lpOutputBuffer, DWORD dwReceiveDataLength, DWORD dwLocalAddressLength, "
           "DWORD dwRemoteAddressLength, LPVOID LocalSockaddr, LPVOID LocalSockaddrLength, "
           "LPVOID RemoteSockaddr, LPVOID RemoteSockaddrLength")
    def GetAcceptExSockaddrs(self, lpOutputBuffer, dwReceiveDataLength, dwLocalAddressLength,
                             dwRemoteAddressLength, LocalSockaddr, LocalSockaddrLength, RemoteSockaddr,
                             RemoteSockaddrLength):
        """void: parse AcceptEx's buffer into pointers inside it (GetAcceptExSockaddrs page).

        Each address slot holds the address length (a 4-byte int) then the sockaddr,
        the layout Wine's WS2_GetAcceptExSockaddrs decodes; the pointers written out
        point into lpOutputBuffer. A slot too small to hold its address leaves that
        pair of outputs untouched (Wine test_AcceptEx, local size 0). Windows does not
        validate anything here (a bad pointer faults in the caller); the simulator
        writes only where the memory is valid.
        """
        with self._lock:
            self._enter()
            mem = self.memory
            if not lpOutputBuffer:
                return
            slot = (lpOutputBuffer + dwReceiveDataLength) & _U64
            for size, out, out_len in ((dwLocalAddressLength, LocalSockaddr, LocalSockaddrLength),
                                       (dwRemoteAddressLength, RemoteSockaddr, RemoteSockaddrLength)):
                length = mem.kread_i32(slot) if size >= 4 else None
                if length is not None and 0 < length <= size - 4 and mem.check(slot + 4, length, False) \
                        and out and out_len and mem.check(out, 8, True) and mem.check(out_len, 4, True):
                    mem.kwrite_u64(out, slot + 4)
                    mem.kwrite_u32(out_len, length)
                slot = (slot + size) & _U64
