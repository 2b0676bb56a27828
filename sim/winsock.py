"""`SimulatedWinsock`: the WinsockApi of one simulated process (ws2_32 and kernel32).

Each method is C-shaped: ints in, the C return value out, out-parameters
written into the process's memory, the error in the thread's last error.
Bad pointers and sizes get the documented error code; nothing outside the
range a call may write is ever written; no Python exception escapes for any
value a C caller could pass (a non-int raises TypeError: that is a Python
mistake, not a C one).
"""
from __future__ import annotations

import contextlib
import struct

from harness.winsock import constants as C
from harness.winsock.ctype import cfunc
from harness.winsock.layouts import WSABUF, WSADATA, WSAOVERLAPPED, WSATHREADID
from sim import overlapped as ov
from sim import sockaddr_io, sockopt
from sim import status as st
from sim.errors import WsaError
from sim.msg import recvmsg, sendmsg
from sim import eventselect
from sim.poll import wsapoll
from sim.select import wsselect
from sim.provider import routine_refused, start_overlapped, wsp_ioctl
from sim.c_entry import INVALID_SOCKET, SOCKET_ERROR, CallEntry, socket_call, ws2_call
from sim.decision_points import DECISIONS
from sim.kernel32 import Kernel32
from sim.mswsock import Mswsock

# Decision points this module reads (sim/decision_points.py), checked when it is imported.
_OVERFLOW_PENDING = DECISIONS["overflow_at_issue"].choice("pending")
_STREAM_FLAGS_UNCHANGED = DECISIONS["stream_recv_flags_out"].choice("unchanged")
_IOCTL_BYTES_RETURNED_FIRST = DECISIONS["wsaioctl_check_order"].choice("bytes_returned_first")
_GOR_INVALID_PARAMETER = DECISIONS["getoverlappedresult_null_out"].choice("invalid_parameter")


def _early_buffer_fault(code, inbuf, cbin, cbout) -> bool:
    """wsaioctl_check_order, bytes_returned_first: the buffer checks made before the handle is looked up."""
    if code == C.FIONREAD:
        return cbout < 4
    if code == C.FIONBIO:
        return not inbuf
    if code == C.SIO_KEEPALIVE_VALS:
        return cbin < 12
    return False


_CLOSE_CANCEL_STATUS = {DECISIONS["close_cancel_status"].choice("cancelled"): C.STATUS_CANCELLED,
                        DECISIONS["close_cancel_status"].choice("connection_aborted"): C.STATUS_CONNECTION_ABORTED}

_WSABUF_FIELDS = struct.Struct("<I4xQ")        # a WSABUF: len, then buf
assert _WSABUF_FIELDS.size == WSABUF.size
_U32 = struct.Struct("<I")
_EXTENSIONS = frozenset({"WSARecvMsg", "WSASendMsg", "AcceptEx", "ConnectEx", "GetAcceptExSockaddrs"})


class SimulatedWinsock(Kernel32, Mswsock, CallEntry):
    """One simulated process's Winsock, ready to use.

    SimulatedWinsock(profile="documented") builds a world with one host and
    one elevated process and calls WSAStartup once, for tests of the API
    alone. World.start_process() builds the ones of a larger world.
    """

    def __init__(self, profile="documented", *, process=None, overrides=None, elevated=True):
        own_world = process is None
        if own_world:
            from sim.world import World
            world = World(profile, overrides)
            host = world.add_host("localhost")
            process = world.start_process(host, "test", elevated=elevated, startup=False).process
        self.process = process
        self.world = process.world
        self.memory = process.memory
        self.kernel = process.kernel
        self._lock = process.kernel.lock
        self._tls = process._tls
        self._scheduler = process.kernel.scheduler
        if own_world:
            self.startup()

    def startup(self) -> None:
        ptr = self.memory.alloc(WSADATA.size)
        rc = self.WSAStartup(C.WINSOCK_VERSION, ptr)
        self.memory.free(ptr)
        if rc != 0:
            raise RuntimeError(f"WSAStartup failed: {rc}")

    def __repr__(self) -> str:
        return f"<SimulatedWinsock pid={self.process.pid} profile={self.process.profile.name}>"

    # -- helpers outside the C surface --------------------------------------
    @property
    def profile(self):
        return self.process.profile

    def completion_routine(self, fn) -> int:
        """A routine pointer that calls fn(dwError, cbTransferred, lpOverlapped, dwFlags)."""
        if not callable(fn):
            raise TypeError("completion_routine() needs a callable")
        return self.process.register_routine(fn)

    def new_thread(self, name: str = ""):
        with self._lock:
            return self.process.new_thread(name)

    @contextlib.contextmanager
    def as_thread(self, thread):
        """Make calls from this Python thread act as simulated `thread`."""
        tls = self.process._tls
        previous = self.process.current_thread()
        tls.thread = thread
        try:
            yield thread
        finally:
            tls.thread = previous

    # -- startup -----------------------------------------------------------
    @cfunc("WORD wVersionRequested, LPVOID lpWSAData")
    def WSAStartup(self, wVersionRequested, lpWSAData):
        with self._lock:
            self._enter()
            major, minor = wVersionRequested & 0xFF, wVersionRequested >> 8
            if not self.memory.check(lpWSAData, WSADATA.size, True) or lpWSAData == 0:
                return C.WSAEFAULT
            # Ws2_32.dll supports 1.0, 1.1, 2.0, 2.1 and 2.2 (WSAStartup page); a request between
            # them gets the highest below it, major 0 is refused with 2.2 offered (ReactOS
            # dll/win32/ws2_32/src/startup.c, Wine 8.0 alike: tests/differential).
            version = major | min(minor, major) << 8 if major in (1, 2) else 0x0202
            # Winsock 1.x callers get the 1.1 limits ("taken straight from a Winsock test app on
            # Windows", ReactOS startup.c); only the fields are written, lpVendorInfo is left alone.
            limits = (32767, 65467) if major == 1 else (0, 0)
            mem = self.memory
            mem.kwrite(lpWSAData, struct.pack("<HHHH", version, 0x0202, *limits))
            mem.kwrite(lpWSAData + WSADATA.offset("szDescription"), b"WinSock 2.0\0")
            mem.kwrite(lpWSAData + WSADATA.offset("szSystemStatus"), b"Running\0")
            if major == 0:
                return C.WSAVERNOTSUPPORTED
            self.process.wsa_refcount += 1
            return 0

    @ws2_call("", on_socket=False)
    def WSACleanup(self, thread):
        process = self.process
        process.wsa_refcount -= 1
        if process.wsa_refcount == 0:
            # The last cleanup destroys every socket (docs/windows-observed.md item 9).
            for sock in list(process.sockets.values()):
                self._close(sock)
        return 0

    @cfunc("")
    def WSAGetLastError(self):
        with self._lock:
            # Process.current_thread's first step inline, as in _enter: called after most failures.
            thread = self._tls.__dict__.get("thread") or self.process.current_thread()
            value = thread.last_error & 0xFFFFFFFF
            return value - (1 << 32) if value & 0x80000000 else value

    @cfunc("int iError")
    def WSASetLastError(self, iError):
        with self._lock:
            self.process.current_thread().last_error = iError

    # -- sockets -----------------------------------------------------------
    @ws2_call("int af, int type, int protocol", INVALID_SOCKET, on_socket=False)
    def socket(self, thread, af, type, protocol):
        return self._create(thread, af, type, protocol, True)

    @ws2_call("int af, int type, int protocol, LPVOID lpProtocolInfo, UINT g, DWORD dwFlags", INVALID_SOCKET,
              on_socket=False)
    def WSASocketW(self, thread, af, type, protocol, lpProtocolInfo, g, dwFlags):
        if lpProtocolInfo:
            # WSAPROTOCOL_INFOW selection is not modelled: an unreadable one is a fault,
            # a readable one is refused (assumed: WSAEINVAL).
            err = C.WSAEFAULT if not self.memory.check(lpProtocolInfo, 628, False) else C.WSAEINVAL
            return self._err(thread, err, INVALID_SOCKET)
        if g != 0:
            return self._err(thread, C.WSAEINVAL, INVALID_SOCKET)
        return self._create(thread, af, type, protocol, bool(dwFlags & C.WSA_FLAG_OVERLAPPED))

    def _create(self, thread, af, type_, protocol, overlapped_attr):
        """socket/WSASocketW after ws2_32's checks, under the lock."""
        process = self.process
        # ws2_32 matches the triple against its catalog (Wine dlls/ws2_32/tests/sock.c test_WSASocket, on
        # Windows): AF_UNSPEC without a protocol is WSAEINVAL whatever the type; then an unknown type is
        # WSAESOCKTNOSUPPORT, an unknown family WSAEAFNOSUPPORT, a protocol no entry of that type has
        # WSAEPROTONOSUPPORT; type 0 takes the protocol's (0: TCP), AF_UNSPEC the IPv4 entry.
        if af == C.AF_UNSPEC and protocol == 0:
            return self._err(thread, C.WSAEINVAL, INVALID_SOCKET)
        if type_ not in (0, C.SOCK_STREAM, C.SOCK_DGRAM, C.SOCK_RAW):
            return self._err(thread, C.WSAESOCKTNOSUPPORT, INVALID_SOCKET)
        if af not in (C.AF_INET, C.AF_INET6, C.AF_UNSPEC):
            return self._err(thread, C.WSAEAFNOSUPPORT, INVALID_SOCKET)
        if af == C.AF_UNSPEC:
            af = C.AF_INET
        if type_ == 0:
            type_ = {0: C.SOCK_STREAM, C.IPPROTO_TCP: C.SOCK_STREAM, C.IPPROTO_UDP: C.SOCK_DGRAM}.get(protocol)
            if type_ is None:
                return self._err(thread, C.WSAEPROTONOSUPPORT, INVALID_SOCKET)
        if type_ == C.SOCK_STREAM:
            if protocol not in (0, C.IPPROTO_TCP):
                return self._err(thread, C.WSAEPROTONOSUPPORT, INVALID_SOCKET)
            protocol = C.IPPROTO_TCP
        elif type_ == C.SOCK_DGRAM:
            if protocol not in (0, C.IPPROTO_UDP):
                return self._err(thread, C.WSAEPROTONOSUPPORT, INVALID_SOCKET)
            protocol = C.IPPROTO_UDP
        elif type_ == C.SOCK_RAW:
            if not process.elevated:
                return self._err(thread, C.WSAEACCES, INVALID_SOCKET)
            if not 0 <= protocol <= 255:
                return self._err(thread, C.WSAEPROTONOSUPPORT, INVALID_SOCKET)
        if not process.host.up:
            return self._err(thread, C.WSAENETDOWN, INVALID_SOCKET)
        sock = process.new_socket(af, type_, protocol, overlapped_attr)
        return self._ok(thread, sock.handle)

    def _run(self, thread, fn, *args):
        """Run a socket operation; WsaError becomes SOCKET_ERROR and the last error."""
        try:
            result = fn(*args)
        except WsaError as exc:
            return self._err(thread, exc.code)
        thread.last_error = 0
        return 0 if result is None else result

    @socket_call("SOCKET s, LPVOID name, int namelen")
    def bind(self, thread, sock, name, namelen):
        return self._run(thread, lambda: sock.bind(*sockaddr_io.read(self.memory, name, namelen, sock.family)))

    @socket_call("SOCKET s, int backlog")
    def listen(self, thread, sock, backlog):
        return self._run(thread, sock.listen, backlog)

    @socket_call("SOCKET s, LPVOID addr, LPVOID addrlen", INVALID_SOCKET)
    def accept(self, thread, sock, addr, addrlen):
        mem = self.memory
        if addr:
            if not addrlen or not mem.check(addrlen, 4, True):
                return self._err(thread, C.WSAEFAULT, INVALID_SOCKET)
            need = sockaddr_io.size_for(sock.family)
            if mem.kread_i32(addrlen) < need or not mem.check(addr, need, True):
                return self._err(thread, C.WSAEFAULT, INVALID_SOCKET)
        try:
            new = sock.accept(thread)
        except WsaError as exc:
            return self._err(thread, exc.code, INVALID_SOCKET)
        if addr:
            sockaddr_io.write(mem, addr, addrlen, new.family, *new.conn.remote)
        return self._ok(thread, new.handle)

    @socket_call("SOCKET s, LPVOID name, int namelen")
    def connect(self, thread, sock, name, namelen):
        return self._run(thread, lambda: sock.connect(thread, *sockaddr_io.read(self.memory, name, namelen,
                                                                               sock.family)))

    def _close(self, sock) -> None:
        process = self.process
        cancel = _CLOSE_CANCEL_STATUS[process.profile.close_cancel_status]
        sock.close(cancel)
        process.sockets.pop(sock.handle, None)
        process.handles.pop(sock.handle, None)

    @socket_call("SOCKET s")
    def closesocket(self, thread, sock):
        self._close(sock)
        return self._ok(thread)

    @socket_call("SOCKET s, int how")
    def shutdown(self, thread, sock, how):
        return self._run(thread, sock.shutdown, how)

    # -- data --------------------------------------------------------------
    def _send(self, thread, sock, buf, length, flags, dst):
        mem = self.memory
        # kread checks the range: None when any of it is unreadable.
        data = mem.kread(buf, length) if length >= 0 and (buf or not length) else None
        if data is None:
            raise WsaError(C.WSAEFAULT)
        if flags & ~(C.MSG_OOB | C.MSG_DONTROUTE):
            raise WsaError(C.WSAEOPNOTSUPP)
        if flags & C.MSG_OOB and not sock.is_tcp:
            raise WsaError(C.WSAEOPNOTSUPP)     # send/sendto pages: MSG_OOB on a socket not stream-style
        if sock.is_tcp:
            return sock.stream_send(data)
        return sock.dgram_send(data, dst)

    @socket_call("SOCKET s, LPVOID buf, int len, int flags")
    def send(self, thread, sock, buf, len, flags):
        return self._run(thread, self._send, thread, sock, buf, len, flags, None)

    @socket_call("SOCKET s, LPVOID buf, int len, int flags, LPVOID to, int tolen")
    def sendto(self, thread, sock, buf, len, flags, to, tolen):

        def op():
            dst = None
            if to and not sock.is_tcp:      # sendto on a stream ignores `to`
                dst = sockaddr_io.read(self.memory, to, tolen, sock.family)
            elif not to and not sock.is_tcp and sock.peer is None:
                raise WsaError(C.WSAEDESTADDRREQ)
            return self._send(thread, sock, buf, len, flags, dst)
        return self._run(thread, op)

    def _recv(self, thread, sock, buf, length, flags, from_, fromlen):
        mem = self.memory
        if length < 0 or (length and (buf == 0 or not mem.check(buf, length, True))):
            raise WsaError(C.WSAEFAULT)
        if flags & ~(C.MSG_PEEK | C.MSG_OOB | C.MSG_WAITALL):
            raise WsaError(C.WSAEOPNOTSUPP)
        if flags & C.MSG_OOB and not sock.is_tcp:
            raise WsaError(C.WSAEOPNOTSUPP)     # recv/recvfrom pages: MSG_OOB on a socket not stream-style
        if from_:
            need = sockaddr_io.size_for(sock.family)
            if not fromlen or not mem.check(fromlen, 4, True) or mem.kread_i32(fromlen) < need \
                    or not mem.check(from_, need, True):
                raise WsaError(C.WSAEFAULT)
        if sock.is_tcp:
            data = sock.stream_recv(thread, length, flags)
            mem.kwrite(buf, data)
            if from_:
                sockaddr_io.write(mem, from_, fromlen, sock.family, *sock.conn.remote)
            return len(data)
        if flags & C.MSG_WAITALL:
            raise WsaError(C.WSAEOPNOTSUPP)
        src, _dst, payload, _meta = sock.dgram_recv(thread)
        if flags & C.MSG_PEEK:
            sock.udp.queue.insert(0, (src, _dst, payload, _meta))
        mem.kwrite(buf, payload[:length])
        if from_:
            sockaddr_io.write(mem, from_, fromlen, sock.family, *src)
        if len(payload) > length:
            raise WsaError(C.WSAEMSGSIZE)     # truncated datagram: the rest is discarded
        return len(payload)

    @socket_call("SOCKET s, LPVOID buf, int len, int flags")
    def recv(self, thread, sock, buf, len, flags):
        return self._run(thread, self._recv, thread, sock, buf, len, flags, 0, 0)

    @socket_call("SOCKET s, LPVOID buf, int len, int flags, LPVOID from_, LPVOID fromlen")
    def recvfrom(self, thread, sock, buf, len, flags, from_, fromlen):
        return self._run(thread, self._recv, thread, sock, buf, len, flags, from_, fromlen)

    @socket_call("SOCKET s, LPVOID name, LPVOID namelen")
    def getsockname(self, thread, sock, name, namelen):
        return self._run(thread, lambda: sockaddr_io.write(self.memory, name, namelen, sock.family,
                                                        *sock.sockname()))

    @socket_call("SOCKET s, LPVOID name, LPVOID namelen")
    def getpeername(self, thread, sock, name, namelen):
        return self._run(thread, lambda: sockaddr_io.write(self.memory, name, namelen, sock.family,
                                                        *sock.peername()))

    @socket_call("SOCKET s, int level, int optname, LPVOID optval, int optlen")
    def setsockopt(self, thread, sock, level, optname, optval, optlen):
        if level == C.SOL_SOCKET and optname in (C.SO_UPDATE_ACCEPT_CONTEXT, C.SO_UPDATE_CONNECT_CONTEXT):
            return self._run(thread, self._update_context, sock, optname, optval, optlen)
        # optname is a C int: SO_EXCLUSIVEADDRUSE, ((int)(~SO_REUSEADDR)) in winsock2.h, arrives as -5;
        # the option tables (harness/winsock/constants.py) spell it as the unsigned DWORD.
        return self._run(thread, sockopt.setsockopt, sock, self.memory, level, optname & 0xFFFFFFFF, optval, optlen)

    def _update_context(self, sock, optname, optval, optlen):
        """SO_UPDATE_ACCEPT_CONTEXT / SO_UPDATE_CONNECT_CONTEXT (AcceptEx and ConnectEx Remarks).

        Until it is set, a socket AcceptEx or ConnectEx connected is "in the default state
        for a connected socket": getpeername, getsockname and shutdown fail with
        WSAENOTCONN (the SO_UPDATE_ACCEPT_CONTEXT entry of the SOL_SOCKET options page).
        The accept form takes the listening SOCKET as its value and inherits its
        options; the connect form takes no value. Errors where the pages are silent
        (assumed): a short or unreadable value WSAEFAULT, a value that is not a socket
        WSAENOTSOCK, one that is not listening WSAEINVAL, an unconnected socket WSAENOTCONN.
        """
        if not sock.is_tcp:
            raise WsaError(C.WSAENOPROTOOPT)
        listener = None
        if optname == C.SO_UPDATE_ACCEPT_CONTEXT:
            mem = self.memory
            if optlen < 8 or not optval or not mem.check(optval, 8, False):
                raise WsaError(C.WSAEFAULT)
            listener = self.process.sockets.get(struct.unpack("<Q", mem.kread(optval, 8))[0])
            if listener is None:
                raise WsaError(C.WSAENOTSOCK)
            if listener.state != "listening":
                raise WsaError(C.WSAEINVAL)
        if sock.state != "connected":
            raise WsaError(C.WSAENOTCONN)
        if listener is not None and sock.context_pending == "accept":
            sock.inherit_from(listener)
        sock.context_pending = None

    @socket_call("SOCKET s, int level, int optname, LPVOID optval, LPVOID optlen")
    def getsockopt(self, thread, sock, level, optname, optval, optlen):
        return self._run(thread, sockopt.getsockopt, sock, self.memory, level, optname & 0xFFFFFFFF, optval,
                         optlen)     # SO_EXCLUSIVEADDRUSE: as in setsockopt

    # -- IOCTLs ------------------------------------------------------------
    @socket_call("SOCKET s, LONG cmd, LPVOID argp")
    def ioctlsocket(self, thread, sock, cmd, argp):
        code = cmd & 0xFFFFFFFF
        writes = bool(code & C.IOC_OUT)
        if not argp or not self.memory.check(argp, 4, writes):
            return self._err(thread, C.WSAEFAULT)          # docs/windows-observed.md items 18, 21
        # ioctlsocket is WSAIoctl with the same 4-byte buffer both ways (ReactOS ws2_32); the byte
        # count goes to a local of ws2_32 that nobody reads, so it is not written (0).
        rc, err = wsp_ioctl(self.process, thread, sock, code, argp, 4, argp, 4, 0, 0, 0)
        return self._err(thread, err) if rc else self._ok(thread)

    @ws2_call("SOCKET s, DWORD dwIoControlCode, LPVOID lpvInBuffer, DWORD cbInBuffer, LPVOID lpvOutBuffer, "
              "DWORD cbOutBuffer, LPVOID lpcbBytesReturned, LPVOID lpOverlapped, LPVOID lpCompletionRoutine",
              on_socket=False)
    def WSAIoctl(self, thread, s, dwIoControlCode, lpvInBuffer, cbInBuffer, lpvOutBuffer, cbOutBuffer,
                 lpcbBytesReturned, lpOverlapped, lpCompletionRoutine):
        process = self.process
        # ws2_32: startup (sim.c_entry), the handle and lpcbBytesReturned (items 1-5, in the order decision
        # point wsaioctl_check_order says), then the provider.
        sock = process.sockets.get(s)
        bytes_returned_ok = bool(lpcbBytesReturned) and self.memory.check(lpcbBytesReturned, 4, True)
        if process.profile.wsaioctl_check_order == _IOCTL_BYTES_RETURNED_FIRST:
            # the process pseudo-handle (-1, any width) is refused as no socket before even these
            if not bytes_returned_ok or (sock is None and s & 0xFFFFFFFF != 0xFFFFFFFF and _early_buffer_fault(
                    dwIoControlCode, lpvInBuffer, cbInBuffer, cbOutBuffer)):
                return self._err(thread, C.WSAEFAULT)
        if sock is None:
            return self._err(thread, C.WSAENOTSOCK)
        if not bytes_returned_ok:
            return self._err(thread, C.WSAEFAULT)
        if process.faults.rules:
            injected = process.faults.take("WSAIoctl", dwIoControlCode)
            if injected is not None:
                return self._err(thread, injected)
        if not process.host.up:
            return self._err(thread, C.WSAENETDOWN)
        rc, err = wsp_ioctl(process, thread, sock, dwIoControlCode, lpvInBuffer, cbInBuffer,
                            lpvOutBuffer, cbOutBuffer, lpcbBytesReturned, lpOverlapped,
                            lpCompletionRoutine)
        thread.last_error = err
        return rc

    @cfunc("SOCKET s, DWORD dwIoControlCode, LPVOID lpvInBuffer, DWORD cbInBuffer, LPVOID lpvOutBuffer, "
           "DWORD cbOutBuffer, LPVOID lpcbBytesReturned, LPVOID lpOverlapped, LPVOID lpCompletionRoutine, "
           "LPVOID lpThreadId, LPVOID lpErrno")
    def WSPIoctl(self, s, dwIoControlCode, lpvInBuffer, cbInBuffer, lpvOutBuffer, cbOutBuffer,
                 lpcbBytesReturned, lpOverlapped, lpCompletionRoutine, lpThreadId, lpErrno):
        """The provider entry point under ws2_32 (sim only): the error goes to *lpErrno."""
        with self._lock:
            current = self._enter()
            process, mem = self.process, self.memory
            if not lpErrno or not mem.check(lpErrno, 4, True):
                return SOCKET_ERROR            # nowhere to report anything
            sock = process.sockets.get(s)
            if sock is None:
                err = C.WSAENOTSOCK
            elif not lpcbBytesReturned or not mem.check(lpcbBytesReturned, 4, True):
                err = C.WSAEFAULT
            elif not process.host.up:
                err = C.WSAENETDOWN
            else:
                thread = current
                if lpCompletionRoutine and lpOverlapped and sock.overlapped_attr:
                    # The provider keeps a copy of the WSATHREADID structure, not the pointer.
                    raw = mem.kread(lpThreadId, WSATHREADID.size) if lpThreadId else None
                    target = process.handles.get(WSATHREADID.get(raw, "ThreadHandle")) if raw else None
                    if raw is None:
                        mem.kwrite_u32(lpErrno, C.WSAEFAULT)
                        return SOCKET_ERROR
                    if getattr(target, "kind", "") != "thread":
                        mem.kwrite_u32(lpErrno, C.WSAEINVAL)
                        return SOCKET_ERROR
                    thread = target
                rc, err = wsp_ioctl(process, thread, sock, dwIoControlCode, lpvInBuffer, cbInBuffer,
                                    lpvOutBuffer, cbOutBuffer, lpcbBytesReturned, lpOverlapped,
                                    lpCompletionRoutine)
                if rc == 0:
                    mem.kwrite_u32(lpErrno, 0)
                    return 0
            mem.kwrite_u32(lpErrno, err)
            return SOCKET_ERROR

    # -- overlapped stream I/O ---------------------------------------------
    def _buffers(self, lpBuffers, count, writable):
        """[(ptr, len)] of a WSABUF array, or WsaError(WSAEFAULT)."""
        if not count:
            return []
        mem = self.memory
        # kread is check's readable test and the read in one lookup (None: not readable).
        raw = mem.kread(lpBuffers, count * WSABUF.size) if lpBuffers else None
        if raw is None:
            raise WsaError(C.WSAEFAULT)
        bufs = []
        for length, ptr in _WSABUF_FIELDS.iter_unpack(raw):
            if length and (not ptr or not mem.check(ptr, length, writable)):
                raise WsaError(C.WSAEFAULT)
            bufs.append((ptr, length))
        return bufs

    def scatter(self, bufs, data: bytes) -> int:
        """Copy data into the buffers in order; returns how many bytes fitted."""
        pos = 0
        mem = self.memory
        for ptr, length in bufs:
            if pos >= len(data):
                break
            chunk = data[pos:pos + length]
            if not mem.kwrite(ptr, chunk):
                self.kernel.note("buffer-unwritable", f"pid {self.process.pid}: receive buffer at "
                                 f"0x{ptr:x} was freed before data arrived")
            pos += len(chunk)
        return pos

    @socket_call("SOCKET s, LPVOID lpBuffers, DWORD dwBufferCount, LPVOID lpNumberOfBytesRecvd, LPVOID lpFlags, "
                 "LPVOID lpOverlapped, LPVOID lpCompletionRoutine")
    def WSARecv(self, thread, sock, lpBuffers, dwBufferCount, lpNumberOfBytesRecvd, lpFlags, lpOverlapped,
                lpCompletionRoutine):
        mem = self.memory
        try:
            if dwBufferCount == 0:
                # Wine dlls/ws2_32/tests/sock.c test_empty_recv (on Windows): no buffers, with a
                # NULL array or not, is WSAEINVAL; one buffer of length 0 is a valid receive.
                raise WsaError(C.WSAEINVAL)
            bufs = self._buffers(lpBuffers, dwBufferCount, True)
            if not lpFlags or not mem.check(lpFlags, 4, True):
                raise WsaError(C.WSAEFAULT)
            if lpCompletionRoutine and routine_refused(self.process, sock, lpOverlapped, lpCompletionRoutine):
                raise WsaError(C.WSAEINVAL)
            flags = _U32.unpack(mem.kread(lpFlags, 4))[0]
            if flags & ~(C.MSG_PEEK | C.MSG_OOB | C.MSG_PARTIAL | C.MSG_PUSH_IMMEDIATE | C.MSG_WAITALL):
                raise WsaError(C.WSAEOPNOTSUPP)
            overlapped = bool(sock.overlapped_attr and lpOverlapped)
            if lpNumberOfBytesRecvd and not mem.check(lpNumberOfBytesRecvd, 4, True):
                raise WsaError(C.WSAEFAULT)
            if not overlapped and not lpNumberOfBytesRecvd:
                raise WsaError(C.WSAEFAULT)
        except WsaError as exc:
            return self._err(thread, exc.code)
        take = _Receive(self, sock, bufs, bufs[0][1] if dwBufferCount == 1 else sum(n for _, n in bufs),
                        bool(flags & C.MSG_PEEK))
        # Decision point stream_recv_flags_out: a stream receive has no output flag to report.
        flags_out = 0 if sock.is_tcp and self.process.profile.stream_recv_flags_out == _STREAM_FLAGS_UNCHANGED \
            else lpFlags
        return self._io(thread, sock, "recv", take, lpOverlapped, lpCompletionRoutine,
                        lpNumberOfBytesRecvd, flags_out)

    @staticmethod
    def receive_state(sock) -> None:
        """Raise WsaError where the socket's state refuses a receive: a TCP socket not connected or
        shut down for receiving, a UDP socket not bound."""
        if sock.is_tcp:
            if sock.state != "connected" or sock.shut_recv:     # else nothing to refuse
                sock._stream_check(False)
        elif sock.udp is None:
            raise WsaError(C.WSAEINVAL)

    def _io(self, thread, sock, kind, take, lpOverlapped, lpCompletionRoutine, lpNumber, lpFlags=0):
        """Common path of WSARecv/WSARecvMsg: complete now, go pending, or block.

        The socket's state is the transport's to refuse (receive_state): an overlapped request has
        been issued by then, so Internal keeps the STATUS_PENDING written at entry, as for the
        IOCTLs' and the extension functions' failures at issue (docs/windows-observed.md items 10
        and 49; inferred for receives, and Wine's WS2_recv_base does so), and nothing is indicated.
        """
        mem = self.memory
        overlapped = bool(sock.overlapped_attr and lpOverlapped)
        if overlapped:
            req, err = start_overlapped(self.process, sock, thread, lpOverlapped, lpCompletionRoutine, kind)
            if req is None:
                return self._err(thread, err)
            ov.mark_pending(self.process, lpOverlapped)
            try:
                self.receive_state(sock)
            except WsaError as exc:
                ov.fail_at_issue(req)
                return self._err(thread, exc.code)
            result = take()
            if result is not None:
                status, n, flags = result
                if st.nt_success(status):
                    if lpNumber:
                        mem.kwrite_u32(lpNumber, n)
                    if lpFlags:
                        mem.kwrite_u32(lpFlags, flags)
                    ov.complete(req, status, n, flags, synchronous=True)
                    return self._ok(thread)
                if status >> 30 == 3:
                    ov.fail_at_issue(req)            # an error (a reset): not indicated
                    return self._err(thread, st.to_winsock(status))
                ov.complete(req, status, n, flags)   # a warning (truncation): indicated
                # Wine dlls/ws2_32/tests/sock.c test_ip_pktinfo ("And with an APC", on Windows): with
                # a routine, a truncation at issue returns WSA_IO_PENDING and the routine gets
                # WSAEMSGSIZE; without one, decision point overflow_at_issue.
                if req.routine or self.process.profile.overflow_at_issue == _OVERFLOW_PENDING:
                    return self._err(thread, C.WSA_IO_PENDING)
                return self._err(thread, st.to_winsock(status))

            req.take = take
            req.start = ov.start_take
            eventselect.reenable(sock, C.FD_READ)    # a receive re-enables FD_READ, pending or not
            sock.pending.append(req)
            return self._err(thread, C.WSA_IO_PENDING)
        # Synchronous.
        try:
            self.receive_state(sock)
        except WsaError as exc:
            return self._err(thread, exc.code)
        result = take()
        if result is None:
            if sock.nonblocking:
                return self._err(thread, C.WSAEWOULDBLOCK)
            try:
                result = sock.block(thread, take, kind, sock._timeout(C.SO_RCVTIMEO))
            except WsaError as exc:
                return self._err(thread, exc.code)
        status, n, flags = result
        if lpNumber:
            mem.kwrite_u32(lpNumber, n)
        if lpFlags:
            mem.kwrite_u32(lpFlags, flags)
        if not st.nt_success(status):
            return self._err(thread, st.to_winsock(status))
        return self._ok(thread)

    @socket_call("SOCKET s, LPVOID lpBuffers, DWORD dwBufferCount, LPVOID lpNumberOfBytesSent, DWORD dwFlags, "
                 "LPVOID lpOverlapped, LPVOID lpCompletionRoutine")
    def WSASend(self, thread, sock, lpBuffers, dwBufferCount, lpNumberOfBytesSent, dwFlags, lpOverlapped,
                lpCompletionRoutine):
        mem = self.memory
        overlapped = bool(sock.overlapped_attr and lpOverlapped)
        try:
            bufs = self._buffers(lpBuffers, dwBufferCount, False)
            if lpNumberOfBytesSent and not mem.check(lpNumberOfBytesSent, 4, True):
                raise WsaError(C.WSAEFAULT)
            if not overlapped and not lpNumberOfBytesSent:
                raise WsaError(C.WSAEFAULT)
            if lpCompletionRoutine and routine_refused(self.process, sock, lpOverlapped, lpCompletionRoutine):
                raise WsaError(C.WSAEINVAL)
            if dwFlags & ~(C.MSG_OOB | C.MSG_DONTROUTE | C.MSG_PARTIAL):
                raise WsaError(C.WSAEOPNOTSUPP)
            data = b"".join(mem.kread(p, n) for p, n in bufs)
        except WsaError as exc:
            return self._err(thread, exc.code)
        return self.send_now(thread, sock, "send", lpOverlapped, lpCompletionRoutine, lpNumberOfBytesSent,
                             lambda: sock.stream_send(data) if sock.is_tcp else sock.dgram_send(data, None))

    def send_now(self, thread, sock, kind, lpOverlapped, lpCompletionRoutine, lpNumber, send):
        """The common end of WSASend and WSASendMsg: start the request if overlapped, send, report.

        `send()` sends and returns the byte count or raises WsaError. Sends never wait
        for buffer space here, so an overlapped send completes inline; a failure after
        the request started is indicated through its mechanism too.
        """
        req = None
        try:
            if sock.overlapped_attr and lpOverlapped:
                req, err = start_overlapped(self.process, sock, thread, lpOverlapped, lpCompletionRoutine, kind)
                if req is None:
                    raise WsaError(err)
                ov.mark_pending(self.process, lpOverlapped)
            n = send()
        except WsaError as exc:
            if req is not None:
                ov.fail_at_issue(req)
            return self._err(thread, exc.code)
        if lpNumber:
            self.memory.kwrite_u32(lpNumber, n)
        if req is not None:
            ov.complete(req, C.STATUS_SUCCESS, n, synchronous=True)
        return self._ok(thread)

    @socket_call("SOCKET s, LPVOID lpOverlapped, LPVOID lpcbTransfer, BOOL fWait, LPVOID lpdwFlags", C.FALSE)
    def WSAGetOverlappedResult(self, thread, sock, lpOverlapped, lpcbTransfer, fWait, lpdwFlags):
        process, mem = self.process, self.memory
        # Decision point getoverlappedresult_null_out: NULL pointers are WSAEFAULT, or WSA_INVALID_PARAMETER
        # (lpOverlapped) and WSAEINVAL (the out-pointers); an unwritable one is WSAEFAULT either way.
        if process.profile.getoverlappedresult_null_out == _GOR_INVALID_PARAMETER:
            if not lpOverlapped:
                return self._err(thread, C.WSA_INVALID_PARAMETER, C.FALSE)
            if not lpcbTransfer or not lpdwFlags:
                return self._err(thread, C.WSAEINVAL, C.FALSE)
        if not lpOverlapped or not mem.check(lpOverlapped, WSAOVERLAPPED.size, True):
            return self._err(thread, C.WSAEFAULT, C.FALSE)
        if not lpcbTransfer or not mem.check(lpcbTransfer, 4, True) \
                or not lpdwFlags or not mem.check(lpdwFlags, 4, True):
            return self._err(thread, C.WSAEFAULT, C.FALSE)

        def internal():
            raw = mem.kread(lpOverlapped, 16)
            return struct.unpack("<QQ", raw) if raw else (C.STATUS_CANCELLED, 0)

        status, info = internal()
        if status == C.STATUS_PENDING:
            if not fWait:
                return self._err(thread, C.WSA_IO_INCOMPLETE, C.FALSE)
            event = ov.read_event(process, lpOverlapped) & ~1
            if event and getattr(process.handles.get(event), "kind", "") not in ("event",):
                return self._err(thread, C.WSA_INVALID_HANDLE, C.FALSE)
            try:
                sock.block(thread, lambda: True if internal()[0] != C.STATUS_PENDING else None,
                           "WSAGetOverlappedResult")
            except WsaError as exc:
                return self._err(thread, exc.code, C.FALSE)
            status, info = internal()
        flags = process.completed_flags.get(lpOverlapped, 0)
        if not st.nt_success(status):
            # The byte count is written on failure too, the flags are not (Wine
            # dlls/ws2_32/tests/sock.c test_ip_pktinfo, on Windows: WSAEMSGSIZE with the datagram's
            # size, dwFlags still 0xdeadbeef; Wine writes them: todo_wine).
            mem.kwrite_u32(lpcbTransfer, info)
            return self._err(thread, st.to_winsock(status), C.FALSE)
        mem.kwrite_u32(lpcbTransfer, info)
        mem.kwrite_u32(lpdwFlags, flags)
        return C.TRUE

    # -- extension functions -------------------------------------------------
    def call(self, fnptr: int, *args: int) -> int:
        """Call an extension function pointer (SIO_GET_EXTENSION_FUNCTION_POINTER)."""
        with self._lock:
            name = self.process.extension_at(fnptr) if isinstance(fnptr, int) else None
        if name in _EXTENSIONS:
            return getattr(self, name)(*args)
        raise TypeError(f"call(): 0x{fnptr:x} is not an extension function pointer of this process"
                        if isinstance(fnptr, int) else "call(): fnptr must be an int")

    @socket_call("SOCKET s, LPVOID lpMsg, LPVOID lpdwNumberOfBytesRecvd, LPVOID lpOverlapped, "
                 "LPVOID lpCompletionRoutine")
    def WSARecvMsg(self, thread, sock, lpMsg, lpdwNumberOfBytesRecvd, lpOverlapped, lpCompletionRoutine):
        return recvmsg(self, thread, sock, lpMsg, lpdwNumberOfBytesRecvd, lpOverlapped, lpCompletionRoutine)

    @socket_call("SOCKET Handle, LPVOID lpMsg, DWORD dwFlags, LPVOID lpNumberOfBytesSent, LPVOID lpOverlapped, "
                 "LPVOID lpCompletionRoutine")
    def WSASendMsg(self, thread, sock, lpMsg, dwFlags, lpNumberOfBytesSent, lpOverlapped, lpCompletionRoutine):
        return sendmsg(self, thread, sock, lpMsg, dwFlags, lpNumberOfBytesSent, lpOverlapped,
                       lpCompletionRoutine)

    # AcceptEx, ConnectEx, GetAcceptExSockaddrs (mswsock.h; learn.microsoft.com pages
    # "AcceptEx function", "LPFN_CONNECTEX callback function", "GetAcceptExSockaddrs
    # function"). Where the pages are silent the behaviour is that of Wine's
    # dlls/ws2_32/tests/sock.c test_AcceptEx / test_connect, which run on real Windows.
    @ws2_call("LPVOID fdArray, ULONG fds, INT timeout", on_socket=False)
    def WSAPoll(self, thread, fdArray, fds, timeout):
        """The WSAPoll page: readiness of several sockets, waiting up to `timeout` ms (sim.poll)."""
        return wsapoll(self, thread, fdArray, fds, timeout)

    @ws2_call("int nfds, LPVOID readfds, LPVOID writefds, LPVOID exceptfds, LPVOID timeout", on_socket=False)
    def select(self, thread, nfds, readfds, writefds, exceptfds, timeout):
        """The select page: readiness of the sockets of three fd_sets (sim.select)."""
        return wsselect(self, thread, readfds, writefds, exceptfds, timeout)

    @socket_call("SOCKET s, WSAEVENT hEventObject, LONG lNetworkEvents")
    def WSAEventSelect(self, thread, sock, hEventObject, lNetworkEvents):
        """The WSAEventSelect page: which network events set which event object (sim.eventselect)."""
        return eventselect.event_select(self, thread, sock, hEventObject, lNetworkEvents)

    @socket_call("SOCKET s, WSAEVENT hEventObject, LPVOID lpNetworkEvents")
    def WSAEnumNetworkEvents(self, thread, sock, hEventObject, lpNetworkEvents):
        """The WSAEnumNetworkEvents page: the selected events recorded since the last call."""
        return eventselect.enum_network_events(self, thread, sock, hEventObject, lpNetworkEvents)

    # -- world controls (not part of the C surface) ---------------------------
    def run(self, ms: float) -> None:
        """Let `ms` of virtual time pass (timers fire; no thread is alerted)."""
        self.world.run(ms)


class _Receive:
    """What a WSARecv waits for: called, (status, bytes, flags) when it can complete now, else None.
    An object, not a closure: a pending receive is held per idle socket (a closure and its cells
    took four times the memory)."""

    __slots__ = ("winsock", "sock", "bufs", "total", "peek")

    def __init__(self, winsock, sock, bufs, total, peek):
        self.winsock, self.sock, self.bufs, self.total, self.peek = winsock, sock, bufs, total, peek

    def __call__(self):
        sock = self.sock
        if sock.is_tcp:
            ready = sock.stream_readable()
            if ready is None:
                return None
            if ready is not True:
                return st.from_winsock(ready), 0, 0
            data = sock.stream_take(self.total, self.peek)
            return C.STATUS_SUCCESS, self.winsock.scatter(self.bufs, data), 0
        ready = sock.dgram_readable()
        if ready is None:
            return None
        if ready is not True:
            # The reset is this receive's result, synchronous or through its completion
            # (never an exception: it also runs from the scheduler for a pending receive).
            return sock.take_reset(), 0, 0
        item = sock.dgram_take()
        if self.peek:
            sock.udp.queue.insert(0, item)
        n = self.winsock.scatter(self.bufs, item[2])
        if n < len(item[2]):
            return C.STATUS_BUFFER_OVERFLOW, n, C.MSG_PARTIAL
        return C.STATUS_SUCCESS, n, 0
