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
import functools
import inspect
import struct

from harness.winsock import constants as C
from harness.winsock import sockaddr as codec
from harness.winsock.ctype import COERCION_NAMESPACE, cfunc, coercion_lines, parse_signature
from harness.winsock.layouts import WSABUF, WSADATA, WSAOVERLAPPED, WSATHREADID
from sim import overlapped as ov
from sim import sockaddr_io, sockopt
from sim import status as st
from sim.errors import WsaError
from sim.kernel import CompletionPort, Event
from sim.msg import recvmsg, sendmsg
from sim.poll import wsapoll
from sim.provider import start_overlapped, wsp_ioctl

SOCKET_ERROR = C.SOCKET_ERROR
INVALID_SOCKET = C.INVALID_SOCKET
_I32 = struct.Struct("<I")
_U64 = (1 << 64) - 1
_ADDRESS_PAD = 16        # AcceptEx page: each address slot is the sockaddr plus 16 bytes


def _address_slot(family: int, ip: bytes, port: int) -> bytes:
    """One AcceptEx address slot: the sockaddr's length (int) then the sockaddr."""
    data = codec.pack_for(family, ip, port)
    return struct.pack("<i", len(data)) + data


def socket_call(signature: str, failure=SOCKET_ERROR):
    """A C-shaped call on a socket: `cfunc`'s argument checks, then the lock, the current
    thread and ws2_32's handle checks, in one generated function.

    The decorated method receives (thread, sock) in place of the SOCKET (the
    signature's first parameter); the wrapper advertises the C signature. One
    frame, and the lock taken without a `with`: this runs on every call on a
    socket (bench/ measures it).
    """
    params = parse_signature(signature)
    names = [n for _, n in params]

    def decorate(fn):
        expected = ["self", "thread", "sock"] + names[1:]
        if list(inspect.signature(fn).parameters) != expected:
            raise ValueError(f"{fn.__name__}: parameters must be {expected}")
        handle, rest = names[0], "".join(f", {n}" for n in names[1:])
        lines = [f"def {fn.__name__}(self, {', '.join(names)}):"]
        lines += coercion_lines(params, fn.__name__)
        lines += [
            "    lock = self._lock",
            "    lock.acquire()",
            "    try:",
            "        thread = self._enter()",
            "        process = self.process",
            "        if process.wsa_refcount == 0:",
            "            thread.last_error = WSANOTINITIALISED",
            "            return failure",
            f"        sock = process.sockets.get({handle})",
            "        if sock is None:",
            "            thread.last_error = WSAENOTSOCK",
            "            return failure",
            f"        return _fn(self, thread, sock{rest})",
            "    finally:",
            "        lock.release()"]
        namespace = dict(COERCION_NAMESPACE, _fn=fn, failure=failure, WSANOTINITIALISED=C.WSANOTINITIALISED,
                         WSAENOTSOCK=C.WSAENOTSOCK)
        exec("\n".join(lines), namespace)  # noqa: S102 - generated from the declared signature
        wrapper = functools.wraps(fn)(namespace[fn.__name__])
        del wrapper.__wrapped__                 # advertise the C signature, not fn's (thread, sock, ...)
        wrapper.__c_signature__ = tuple(params)
        return wrapper
    return decorate


class SimulatedWinsock:
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

    def _enter(self):
        """Fire what virtual time has made due, and name the calling simulated thread."""
        scheduler = self._scheduler
        if scheduler.next_due_ns <= scheduler.now_ns:
            scheduler.run_due()
        # Process.current_thread's first step inline (a Python thread that has called before).
        return self._tls.__dict__.get("thread") or self.process.current_thread()

    def _socket(self, thread, s):
        """The socket for handle s after ws2_32's checks, or an error code."""
        process = self.process
        if process.wsa_refcount == 0:
            return None, C.WSANOTINITIALISED
        sock = process.sockets.get(s)
        if sock is None:
            return None, C.WSAENOTSOCK
        return sock, 0

    @staticmethod
    def _ok(thread, value=0):
        thread.last_error = 0
        return value

    @staticmethod
    def _err(thread, code, value=SOCKET_ERROR):
        thread.last_error = code
        return value

    # -- startup -----------------------------------------------------------
    @cfunc("WORD wVersionRequested, LPVOID lpWSAData")
    def WSAStartup(self, wVersionRequested, lpWSAData):
        with self._lock:
            self._enter()
            major, minor = wVersionRequested & 0xFF, wVersionRequested >> 8
            if not self.memory.check(lpWSAData, WSADATA.size, True) or lpWSAData == 0:
                return C.WSAEFAULT
            version = 0x0202 if (major, minor) >= (2, 2) else wVersionRequested
            data = WSADATA.pack(wVersion=version, wHighVersion=0x0202, iMaxSockets=0, iMaxUdpDg=0,
                                lpVendorInfo=0, szDescription=b"WinSock 2.0", szSystemStatus=b"Running")
            self.memory.kwrite(lpWSAData, data)
            if major < 1 or (major == 1 and minor == 0):
                return C.WSAVERNOTSUPPORTED
            self.process.wsa_refcount += 1
            return 0

    @cfunc("")
    def WSACleanup(self):
        with self._lock:
            thread = self._enter()
            process = self.process
            if process.wsa_refcount == 0:
                return self._err(thread, C.WSANOTINITIALISED)
            process.wsa_refcount -= 1
            if process.wsa_refcount == 0:
                # The last cleanup destroys every socket (docs/windows-observed.md item 9).
                for sock in list(process.sockets.values()):
                    self._close(sock)
            return 0

    @cfunc("")
    def WSAGetLastError(self):
        with self._lock:
            value = self.process.current_thread().last_error & 0xFFFFFFFF
            return value - (1 << 32) if value & 0x80000000 else value

    @cfunc("int iError")
    def WSASetLastError(self, iError):
        with self._lock:
            self.process.current_thread().last_error = iError

    @cfunc("")
    def GetLastError(self):
        with self._lock:
            return self.process.current_thread().last_error & 0xFFFFFFFF

    @cfunc("")
    def GetCurrentProcessId(self):
        return self.process.pid

    @cfunc("")
    def GetCurrentThreadId(self):
        with self._lock:
            self.kernel.enter()
            return self.process.current_thread().tid

    # -- sockets -----------------------------------------------------------
    @cfunc("int af, int type, int protocol")
    def socket(self, af, type, protocol):
        return self._create(af, type, protocol, True)

    @cfunc("int af, int type, int protocol, LPVOID lpProtocolInfo, UINT g, DWORD dwFlags")
    def WSASocketW(self, af, type, protocol, lpProtocolInfo, g, dwFlags):
        with self._lock:
            thread = self._enter()
            if lpProtocolInfo:
                # WSAPROTOCOL_INFOW selection is not modelled: an unreadable one is a fault,
                # a readable one is refused (assumed: WSAEINVAL).
                err = C.WSAEFAULT if not self.memory.check(lpProtocolInfo, 628, False) else C.WSAEINVAL
                return self._err(thread, err, INVALID_SOCKET)
            if g != 0:
                return self._err(thread, C.WSAEINVAL, INVALID_SOCKET)
        return self._create(af, type, protocol, bool(dwFlags & C.WSA_FLAG_OVERLAPPED))

    def _create(self, af, type_, protocol, overlapped_attr):
        with self._lock:
            thread = self._enter()
            process = self.process
            if process.wsa_refcount == 0:
                return self._err(thread, C.WSANOTINITIALISED, INVALID_SOCKET)
            if af not in (C.AF_INET, C.AF_INET6):
                return self._err(thread, C.WSAEAFNOSUPPORT, INVALID_SOCKET)
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
            else:
                return self._err(thread, C.WSAESOCKTNOSUPPORT, INVALID_SOCKET)
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
        cancel = C.STATUS_CANCELLED if process.profile.close_cancel_status == "cancelled" \
            else C.STATUS_CONNECTION_ABORTED
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
        return self._run(thread, sockopt.setsockopt, sock, self.memory, level, optname, optval, optlen)

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
        return self._run(thread, sockopt.getsockopt, sock, self.memory, level, optname, optval, optlen)

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

    @cfunc("SOCKET s, DWORD dwIoControlCode, LPVOID lpvInBuffer, DWORD cbInBuffer, LPVOID lpvOutBuffer, "
           "DWORD cbOutBuffer, LPVOID lpcbBytesReturned, LPVOID lpOverlapped, LPVOID lpCompletionRoutine")
    def WSAIoctl(self, s, dwIoControlCode, lpvInBuffer, cbInBuffer, lpvOutBuffer, cbOutBuffer,
                 lpcbBytesReturned, lpOverlapped, lpCompletionRoutine):
        lock = self._lock
        lock.acquire()              # not `with`: half the cost, and the records query measures it (bench/)
        try:
            thread = self._enter()
            process = self.process
            # ws2_32: startup, then the handle, then lpcbBytesReturned (items 1-5), then the provider.
            if process.wsa_refcount == 0:
                return self._err(thread, C.WSANOTINITIALISED)
            sock = process.sockets.get(s)
            if sock is None:
                return self._err(thread, C.WSAENOTSOCK)
            if not lpcbBytesReturned or not self.memory.check(lpcbBytesReturned, 4, True):
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
        finally:
            lock.release()

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
        mem = self.memory
        if count and (not lpBuffers or not mem.check(lpBuffers, count * WSABUF.size, False)):
            raise WsaError(C.WSAEFAULT)
        raw = mem.kread(lpBuffers, count * WSABUF.size) if count else b""
        bufs = []
        for i in range(count):
            length, ptr = struct.unpack_from("<I4xQ", raw, i * WSABUF.size)
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
            bufs = self._buffers(lpBuffers, dwBufferCount, True)
            if not lpFlags or not mem.check(lpFlags, 4, True):
                raise WsaError(C.WSAEFAULT)
            flags = mem.kread_u32(lpFlags)
            if flags & ~(C.MSG_PEEK | C.MSG_OOB | C.MSG_PARTIAL | C.MSG_PUSH_IMMEDIATE | C.MSG_WAITALL):
                raise WsaError(C.WSAEOPNOTSUPP)
            overlapped = bool(sock.overlapped_attr and lpOverlapped)
            if lpNumberOfBytesRecvd and not mem.check(lpNumberOfBytesRecvd, 4, True):
                raise WsaError(C.WSAEFAULT)
            if not overlapped and not lpNumberOfBytesRecvd:
                raise WsaError(C.WSAEFAULT)
            if sock.is_tcp:
                sock._stream_check(False)
            elif sock.udp is None:
                raise WsaError(C.WSAEINVAL)
        except WsaError as exc:
            return self._err(thread, exc.code)
        total = sum(n for _, n in bufs)
        peek = bool(flags & C.MSG_PEEK)

        def take():
            """(status, bytes, flags) when the receive can complete now, else None."""
            if sock.is_tcp:
                ready = sock.stream_readable()
                if ready is None:
                    return None
                if ready is not True:
                    return st.from_winsock(ready), 0, 0
                data = sock.stream_take(total, peek)
                return C.STATUS_SUCCESS, self.scatter(bufs, data), 0
            ready = sock.dgram_readable()
            if ready is None:
                return None
            if ready is not True:
                sock.dgram_take() if not sock.udp.queue else None
                sock.udp.pending_reset = False
                return st.from_winsock(ready), 0, 0
            item = sock.dgram_take()
            if peek:
                sock.udp.queue.insert(0, item)
            n = self.scatter(bufs, item[2])
            if n < len(item[2]):
                return C.STATUS_BUFFER_OVERFLOW, n, C.MSG_PARTIAL
            return C.STATUS_SUCCESS, n, 0

        return self._io(thread, sock, "recv", take, lpOverlapped, lpCompletionRoutine,
                        lpNumberOfBytesRecvd, lpFlags)

    def _io(self, thread, sock, kind, take, lpOverlapped, lpCompletionRoutine, lpNumber, lpFlags=0):
        """Common path of WSARecv/WSARecvMsg: complete now, go pending, or block."""
        mem = self.memory
        overlapped = bool(sock.overlapped_attr and lpOverlapped)
        if overlapped:
            req, err = start_overlapped(self.process, sock, thread, lpOverlapped, lpCompletionRoutine, kind)
            if req is None:
                return self._err(thread, err)
            ov.mark_pending(self.process, lpOverlapped)
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
                ov.complete(req, status, n, flags)   # failed after starting: indicated, and reported
                return self._err(thread, st.to_winsock(status))

            def start(r):
                res = take()
                if res is not None:
                    ov.complete(r, res[0], res[1], res[2])
            req.start = start
            sock.pending.append(req)
            return self._err(thread, C.WSA_IO_PENDING)
        # Synchronous.
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
                ov.complete(req, st.from_winsock(exc.code), 0)
            return self._err(thread, exc.code)
        if lpNumber:
            self.memory.kwrite_u32(lpNumber, n)
        if req is not None:
            ov.complete(req, C.STATUS_SUCCESS, n, synchronous=True)
        return self._ok(thread)

    @socket_call("SOCKET s, LPVOID lpOverlapped, LPVOID lpcbTransfer, BOOL fWait, LPVOID lpdwFlags", C.FALSE)
    def WSAGetOverlappedResult(self, thread, sock, lpOverlapped, lpcbTransfer, fWait, lpdwFlags):
        process, mem = self.process, self.memory
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
            mem.kwrite_u32(lpdwFlags, flags)
            return self._err(thread, st.to_winsock(status), C.FALSE)
        mem.kwrite_u32(lpcbTransfer, info)
        mem.kwrite_u32(lpdwFlags, flags)
        return C.TRUE

    # -- extension functions -------------------------------------------------
    def call(self, fnptr: int, *args: int) -> int:
        """Call an extension function pointer (SIO_GET_EXTENSION_FUNCTION_POINTER)."""
        with self._lock:
            name = self.process.extension_at(fnptr) if isinstance(fnptr, int) else None
        if name == "WSARecvMsg":
            return self.WSARecvMsg(*args)
        if name == "WSASendMsg":
            return self.WSASendMsg(*args)
        if name == "AcceptEx":
            return self.AcceptEx(*args)
        if name == "ConnectEx":
            return self.ConnectEx(*args)
        if name == "GetAcceptExSockaddrs":
            return self.GetAcceptExSockaddrs(*args)
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

    @cfunc("SOCKET sListenSocket, SOCKET sAcceptSocket, LPVOID lpOutputBuffer, DWORD dwReceiveDataLength, "
           "DWORD dwLocalAddressLength, DWORD dwRemoteAddressLength, LPVOID lpdwBytesReceived, "
           "LPVOID lpOverlapped")
    def AcceptEx(self, sListenSocket, sAcceptSocket, lpOutputBuffer, dwReceiveDataLength, dwLocalAddressLength,
                 dwRemoteAddressLength, lpdwBytesReceived, lpOverlapped):
        with self._lock:
            thread = self._enter()
            process, mem = self.process, self.memory
            if process.wsa_refcount == 0:
                return self._err(thread, C.WSANOTINITIALISED, C.FALSE)
            err = self._extension_overlapped(lpOverlapped)
            if err:
                return self._err(thread, err, C.FALSE)
            lst = process.sockets.get(sListenSocket)
            acc = process.sockets.get(sAcceptSocket)
            need = sockaddr_io.size_for(lst.family if lst is not None else C.AF_INET) + _ADDRESS_PAD
            total = dwReceiveDataLength + dwLocalAddressLength + dwRemoteAddressLength
            short = dwLocalAddressLength < need or dwRemoteAddressLength < need
            strict = process.profile.acceptex_short_address == "WSAEFAULT"
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
                    acc.adopt(queue.pop(0))
                    acc.context_pending = "accept"
                if short:
                    return C.STATUS_BUFFER_TOO_SMALL, 0      # the address does not fit (Wine test_AcceptEx)
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

    @cfunc("SOCKET s, LPVOID name, int namelen, LPVOID lpSendBuffer, DWORD dwSendDataLength, "
           "LPVOID lpdwBytesSent, LPVOID lpOverlapped")
    def ConnectEx(self, s, name, namelen, lpSendBuffer, dwSendDataLength, lpdwBytesSent, lpOverlapped):
        with self._lock:
            thread = self._enter()
            process, mem = self.process, self.memory
            sock, err = self._socket(thread, s)
            if err:
                return self._err(thread, err, C.FALSE)
            err = self._extension_overlapped(lpOverlapped)
            if err:
                return self._err(thread, err, C.FALSE)
            try:
                if not sock.is_tcp:
                    raise WsaError(C.WSAEINVAL)       # page: connection-oriented sockets only (assumed code)
                if sock.state == "listening" or sock.accepting is not None:
                    raise WsaError(C.WSAEINVAL)       # page: "unbound or a listening socket"; Wine test_AcceptEx
                if sock.state == "connected":
                    raise WsaError(C.WSAEISCONN)      # Wine test_connect
                if sock.state == "connecting":
                    raise WsaError(C.WSAEALREADY)
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

    # -- events and waits ----------------------------------------------------
    @cfunc("")
    def WSACreateEvent(self):
        with self._lock:
            thread = self._enter()
            return self._ok(thread, self.process.new_handle(Event(False, True)))

    def _event(self, h):
        obj = self.process.handles.get(h)
        return obj if getattr(obj, "kind", "") == "event" else None

    @cfunc("WSAEVENT hEvent")
    def WSACloseEvent(self, hEvent):
        with self._lock:
            thread = self._enter()
            if self._event(hEvent) is None:
                return self._err(thread, C.WSA_INVALID_HANDLE, C.FALSE)
            del self.process.handles[hEvent]
            return C.TRUE

    @cfunc("WSAEVENT hEvent")
    def WSASetEvent(self, hEvent):
        with self._lock:
            thread = self._enter()
            event = self._event(hEvent)
            if event is None:
                return self._err(thread, C.WSA_INVALID_HANDLE, C.FALSE)
            event.signalled = True
            self.kernel.poke()
            return C.TRUE

    @cfunc("WSAEVENT hEvent")
    def WSAResetEvent(self, hEvent):
        with self._lock:
            thread = self._enter()
            event = self._event(hEvent)
            if event is None:
                return self._err(thread, C.WSA_INVALID_HANDLE, C.FALSE)
            event.signalled = False
            return C.TRUE

    def _waitable(self, h):
        obj = self.process.handles.get(h)
        kind = getattr(obj, "kind", "")
        if kind == "event":
            return lambda: obj.signalled
        if kind == "socket":
            return lambda: obj.file_signalled
        return None

    @cfunc("DWORD cEvents, LPVOID lphEvents, BOOL fWaitAll, DWORD dwTimeout, BOOL fAlertable")
    def WSAWaitForMultipleEvents(self, cEvents, lphEvents, fWaitAll, dwTimeout, fAlertable):
        with self._lock:
            thread = self._enter()
            process, mem = self.process, self.memory
            if process.wsa_refcount == 0:
                return self._err(thread, C.WSANOTINITIALISED, C.WSA_WAIT_FAILED)
            if cEvents == 0 or cEvents > C.WSA_MAXIMUM_WAIT_EVENTS:
                return self._err(thread, C.WSA_INVALID_PARAMETER, C.WSA_WAIT_FAILED)
            raw = mem.kread(lphEvents, cEvents * 8) if lphEvents else None
            if raw is None:
                return self._err(thread, C.WSA_INVALID_PARAMETER, C.WSA_WAIT_FAILED)
            handles = struct.unpack(f"<{cEvents}Q", raw)
            probes = [self._waitable(h) for h in handles]
            if any(p is None for p in probes):
                return self._err(thread, C.WSA_INVALID_HANDLE, C.WSA_WAIT_FAILED)
            if fWaitAll and len(set(handles)) != len(handles):
                return self._err(thread, C.WSA_INVALID_PARAMETER, C.WSA_WAIT_FAILED)

            def ready():
                if fWaitAll:
                    return 0 if all(p() for p in probes) else None
                for i, p in enumerate(probes):
                    if p():
                        return i
                return None
            return self._wait(thread, ready, dwTimeout, bool(fAlertable), "WSAWaitForMultipleEvents",
                              C.WSA_WAIT_EVENT_0, C.WSA_WAIT_TIMEOUT)

    @cfunc("LPVOID fdArray, ULONG fds, INT timeout")
    def WSAPoll(self, fdArray, fds, timeout):
        """The WSAPoll page: readiness of several sockets, waiting up to `timeout` ms (sim.poll)."""
        with self._lock:
            thread = self._enter()
            return wsapoll(self, thread, fdArray, fds, timeout)

    def _wait(self, thread, ready, timeout, alertable, what, base, timeout_value):
        if alertable and thread.apcs and self.process.profile.wait_satisfaction_order == "apcs_first":
            self.kernel.run_apcs(thread)
            return C.WAIT_IO_COMPLETION
        kind, value = self.kernel.wait(thread, ready, timeout, alertable, what)
        if kind == "ready":
            return base + value
        if kind == "apc":
            return C.WAIT_IO_COMPLETION
        return timeout_value

    @cfunc("DWORD dwMilliseconds, BOOL bAlertable")
    def SleepEx(self, dwMilliseconds, bAlertable):
        with self._lock:
            thread = self._enter()
            if dwMilliseconds == 0 and not (bAlertable and thread.apcs):
                return 0
            return self._wait(thread, lambda: None, dwMilliseconds, bool(bAlertable), "SleepEx", 0, 0)

    # -- completion ports ----------------------------------------------------
    def _port(self, h):
        obj = self.process.handles.get(h)
        return obj if getattr(obj, "kind", "") == "iocp" else None

    @cfunc("HANDLE FileHandle, HANDLE ExistingCompletionPort, ULONG_PTR CompletionKey, "
           "DWORD NumberOfConcurrentThreads")
    def CreateIoCompletionPort(self, FileHandle, ExistingCompletionPort, CompletionKey,
                               NumberOfConcurrentThreads):
        with self._lock:
            thread = self._enter()
            process = self.process
            if FileHandle == C.INVALID_HANDLE_VALUE:
                if ExistingCompletionPort:
                    return self._err(thread, C.ERROR_INVALID_PARAMETER, 0)
                return process.new_handle(CompletionPort())
            sock = process.handles.get(FileHandle)
            if getattr(sock, "kind", "") != "socket":
                return self._err(thread, C.ERROR_INVALID_HANDLE, 0)
            if ExistingCompletionPort:
                port = self._port(ExistingCompletionPort)
                if port is None:
                    return self._err(thread, C.ERROR_INVALID_HANDLE, 0)
                port_handle = ExistingCompletionPort
            else:
                port = CompletionPort()
                port_handle = None
            if sock.port is not None or not sock.overlapped_attr:
                # Already associated, or a synchronous-I/O file: NtSetInformationFile refuses.
                return self._err(thread, C.ERROR_INVALID_PARAMETER, 0)
            if port_handle is None:
                port_handle = process.new_handle(port)
            sock.port = port
            sock.port_key = CompletionKey
            return port_handle

    @cfunc("HANDLE CompletionPort, LPVOID lpNumberOfBytesTransferred, LPVOID lpCompletionKey, "
           "LPVOID lpOverlapped, DWORD dwMilliseconds")
    def GetQueuedCompletionStatus(self, CompletionPort, lpNumberOfBytesTransferred, lpCompletionKey,
                                  lpOverlapped, dwMilliseconds):
        with self._lock:
            thread = self._enter()
            mem = self.memory
            port = self._port(CompletionPort)
            if port is None:
                if lpOverlapped and mem.check(lpOverlapped, 8, True):
                    mem.kwrite_u64(lpOverlapped, 0)
                return self._err(thread, C.ERROR_INVALID_HANDLE, C.FALSE)
            if not all(p and mem.check(p, n, True) for p, n in
                       ((lpNumberOfBytesTransferred, 4), (lpCompletionKey, 8), (lpOverlapped, 8))):
                return self._err(thread, C.ERROR_NOACCESS, C.FALSE)
            kind, _ = self.kernel.wait(thread, lambda: True if port.packets or port.closed else None,
                                       dwMilliseconds, False, "GetQueuedCompletionStatus")
            if kind != "ready" or not port.packets:
                mem.kwrite_u64(lpOverlapped, 0)
                code = C.ERROR_ABANDONED_WAIT_0 if port.closed else C.WAIT_TIMEOUT
                return self._err(thread, code, C.FALSE)
            packet = port.packets.popleft()
            mem.kwrite_u32(lpNumberOfBytesTransferred, packet.information)
            mem.kwrite_u64(lpCompletionKey, packet.key)
            mem.kwrite_u64(lpOverlapped, packet.overlapped)
            if st.nt_success(packet.status):
                return C.TRUE          # the last error is left alone (docs/windows-observed.md item 121)
            return self._err(thread, st.to_win32(packet.status), C.FALSE)

    @cfunc("HANDLE CompletionPort, DWORD dwNumberOfBytesTransferred, ULONG_PTR dwCompletionKey, "
           "LPVOID lpOverlapped")
    def PostQueuedCompletionStatus(self, CompletionPort, dwNumberOfBytesTransferred, dwCompletionKey,
                                   lpOverlapped):
        from sim.kernel import Packet
        with self._lock:
            thread = self._enter()
            port = self._port(CompletionPort)
            if port is None:
                return self._err(thread, C.ERROR_INVALID_HANDLE, C.FALSE)
            port.packets.append(Packet(dwCompletionKey, dwNumberOfBytesTransferred, lpOverlapped, 0))
            self.kernel.poke()
            return C.TRUE

    @cfunc("HANDLE FileHandle, UCHAR Flags")
    def SetFileCompletionNotificationModes(self, FileHandle, Flags):
        with self._lock:
            thread = self._enter()
            sock = self.process.handles.get(FileHandle)
            if getattr(sock, "kind", "") != "socket":
                return self._err(thread, C.ERROR_INVALID_HANDLE, C.FALSE)
            if Flags & ~(C.FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | C.FILE_SKIP_SET_EVENT_ON_HANDLE):
                return self._err(thread, C.ERROR_INVALID_PARAMETER, C.FALSE)
            sock.notify_modes |= Flags
            return C.TRUE

    @cfunc("HANDLE hFile, LPVOID lpOverlapped")
    def CancelIoEx(self, hFile, lpOverlapped):
        with self._lock:
            thread = self._enter()
            sock = self.process.handles.get(hFile)
            if getattr(sock, "kind", "") != "socket":
                return self._err(thread, C.ERROR_INVALID_HANDLE, C.FALSE)
            victims = [r for r in sock.pending if not lpOverlapped or r.overlapped == lpOverlapped]
            if not victims:
                return self._err(thread, C.ERROR_NOT_FOUND, C.FALSE)
            for req in victims:
                ov.cancel(req)
            return C.TRUE

    @cfunc("HANDLE hObject")
    def CloseHandle(self, hObject):
        with self._lock:
            thread = self._enter()
            process = self.process
            obj = process.handles.get(hObject)
            kind = getattr(obj, "kind", "")
            if kind == "socket":
                self._close(obj)
                return C.TRUE
            if kind in ("event", "iocp", "thread"):
                del process.handles[hObject]
                if kind == "iocp":
                    obj.closed = True
                    self.kernel.poke()
                return C.TRUE
            return self._err(thread, C.ERROR_INVALID_HANDLE, C.FALSE)

    # -- world controls (not part of the C surface) ---------------------------
    def run(self, ms: float) -> None:
        """Let `ms` of virtual time pass (timers fire; no thread is alerted)."""
        self.world.run(ms)

