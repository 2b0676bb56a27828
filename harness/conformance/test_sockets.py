"""The socket calls a redirect service makes: TCP and UDP, IPv4 and IPv6, names, options, messages.

Sources: the socket/bind/listen/accept/connect/send/recv/sendto/recvfrom/
getsockname/getpeername/setsockopt/getsockopt/shutdown/closesocket pages,
LPFN_WSARECVMSG and WSASendMsg pages, IPPROTO_IP options page (IP_PKTINFO).
"""
import ipaddress
import struct

import pytest

from harness.conformance.support import (POISON, Guarded, dword, get_extension, listener, local_name, loopback,
                                         refusing_port, to_text, sockaddr, tcp_pair, udp_socket)
from harness.winsock import constants as C
from harness.winsock.layouts import IN_PKTINFO, WSABUF, WSAMSG, WSA_CMSG_SPACE, iter_cmsgs

FAMILIES = [pytest.param(C.AF_INET, id="v4"), pytest.param(C.AF_INET6, id="v6", marks=pytest.mark.ipv6)]


def _bytes(api, data):
    ptr = api.memory.alloc(max(len(data), 1))
    api.memory.write(ptr, data)
    return ptr


def _recv_all(api, s, n):
    buf = Guarded(api, n)
    got = api.recv(s, buf.ptr, n, C.MSG_WAITALL)
    assert got == n, api.WSAGetLastError()
    return buf.read(n)


@pytest.mark.parametrize("family", FAMILIES)
def test_tcp_round_trip_and_names(api, family):
    """connect/accept/send/recv over loopback; getsockname/getpeername agree across the pair."""
    client, server, lst = tcp_pair(api, family)
    assert api.send(client, _bytes(api, b"ping" * 100), 400, 0) == 400
    assert _recv_all(api, server, 400) == b"ping" * 100
    assert api.send(server, _bytes(api, b"pong"), 4, 0) == 4
    assert _recv_all(api, client, 4) == b"pong"
    name, length = Guarded(api, 128), dword(api, 128)
    assert api.getpeername(server, name.ptr, length.ptr) == 0
    assert to_text(name.read(length.u32())) == local_name(api, client)
    assert to_text(name.read(length.u32()))[0] == loopback(family)


def test_fin_and_reset(api):
    """recv returns 0 after the peer's graceful close; WSAECONNRESET after an abortive one."""
    client, server, _ = tcp_pair(api)
    assert api.shutdown(client, C.SD_SEND) == 0
    buf = Guarded(api, 8)
    assert api.recv(server, buf.ptr, 8, 0) == 0
    assert api.send(client, buf.ptr, 1, 0) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAESHUTDOWN
    client2, server2, _ = tcp_pair(api)
    linger = api.memory.alloc(4)
    api.memory.write(linger, struct.pack("<HH", 1, 0))
    assert api.setsockopt(client2, C.SOL_SOCKET, C.SO_LINGER, linger, 4) == 0
    assert api.closesocket(client2) == 0
    assert api.recv(server2, buf.ptr, 8, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAECONNRESET


def test_connect_refused(api):
    """connect page: WSAECONNREFUSED when nothing listens."""
    _held, port = refusing_port(api)
    s = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    ptr, n = sockaddr(api, "127.0.0.1", port)
    assert api.connect(s, ptr, n) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAECONNREFUSED


def test_connect_state_errors(api):
    """connect page: WSAEISCONN when connected; WSAEADDRNOTAVAIL for the any address; WSAEFAULT for a short name."""
    client, server, lst = tcp_pair(api)
    ptr, n = sockaddr(api, "127.0.0.1", 80)
    assert api.connect(client, ptr, n) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEISCONN
    s = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    any_ptr, any_n = sockaddr(api, "0.0.0.0", 80)
    assert api.connect(s, any_ptr, any_n) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEADDRNOTAVAIL
    assert api.connect(s, ptr, n - 1) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEFAULT
    assert api.connect(s, api.memory.invalid_pointer(), n) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEFAULT


def test_nonblocking_connect_completes(api):
    """A non-blocking connect returns WSAEWOULDBLOCK, then completes; a second call says WSAEALREADY or WSAEISCONN."""
    lst, port = listener(api)
    s = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    assert api.ioctlsocket(s, C.FIONBIO, dword(api, 1).ptr) == 0
    ptr, n = sockaddr(api, "127.0.0.1", port)
    assert api.connect(s, ptr, n) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEWOULDBLOCK
    # WSAEALREADY while the connect is in progress (Wine test_connecting_socket, to an unreachable
    # address); over loopback it may already have completed: WSAEISCONN
    assert api.connect(s, ptr, n) == C.SOCKET_ERROR and api.WSAGetLastError() in (C.WSAEALREADY, C.WSAEISCONN)
    api.SleepEx(50, False)
    assert api.connect(s, ptr, n) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEISCONN
    assert api.accept(lst, 0, 0) != C.INVALID_SOCKET


def test_bind_errors(api):
    """bind page: WSAEINVAL when already bound, WSAEADDRINUSE for a port in use, WSAEADDRNOTAVAIL for a foreign address."""
    s1, port = udp_socket(api)
    ptr, n = sockaddr(api, "127.0.0.1", port)
    assert api.bind(s1, ptr, n) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEINVAL
    s2 = api.socket(C.AF_INET, C.SOCK_DGRAM, 0)
    assert api.bind(s2, ptr, n) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEADDRINUSE
    foreign, fn = sockaddr(api, "203.0.113.99", 0)
    assert api.bind(s2, foreign, fn) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEADDRNOTAVAIL
    v6, v6n = sockaddr(api, "::1", 0)
    assert api.bind(s2, v6, v6n) == C.SOCKET_ERROR
    assert api.WSAGetLastError() in (C.WSAEFAULT, C.WSAEAFNOSUPPORT)


def test_listen_accept_errors(api):
    """listen page: WSAEINVAL unbound, WSAEOPNOTSUPP for UDP; accept page: WSAEINVAL not listening, WSAEFAULT short addrlen."""
    s = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    assert api.listen(s, 5) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEINVAL
    assert api.accept(s, 0, 0) == C.INVALID_SOCKET and api.WSAGetLastError() == C.WSAEINVAL
    u = api.socket(C.AF_INET, C.SOCK_DGRAM, 0)
    assert api.listen(u, 5) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEOPNOTSUPP
    lst, port = listener(api)
    addr, addrlen = Guarded(api, 16), dword(api, 15)
    assert api.accept(lst, addr.ptr, addrlen.ptr) == C.INVALID_SOCKET
    assert api.WSAGetLastError() == C.WSAEFAULT and addr.read() == b"\xcc" * 16


def test_socket_creation_errors(api):
    """socket page: WSAEAFNOSUPPORT, WSAESOCKTNOSUPPORT, WSAEPROTONOSUPPORT."""
    assert api.socket(99, C.SOCK_STREAM, 0) == C.INVALID_SOCKET and api.WSAGetLastError() == C.WSAEAFNOSUPPORT
    assert api.socket(C.AF_INET, 42, 0) == C.INVALID_SOCKET and api.WSAGetLastError() == C.WSAESOCKTNOSUPPORT
    assert api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_UDP) == C.INVALID_SOCKET
    assert api.WSAGetLastError() == C.WSAEPROTONOSUPPORT


@pytest.mark.udp
@pytest.mark.parametrize("family", FAMILIES)
def test_udp_round_trip(api, family):
    """sendto/recvfrom carry datagrams and the sender's address."""
    a, pa = udp_socket(api, family)
    b, pb = udp_socket(api, family)
    to, tolen = sockaddr(api, loopback(family), pb)
    assert api.sendto(a, _bytes(api, b"datagram"), 8, 0, to, tolen) == 8
    buf, src, srclen = Guarded(api, 64), Guarded(api, 128), dword(api, 128)
    assert api.recvfrom(b, buf.ptr, 64, 0, src.ptr, srclen.ptr) == 8
    assert buf.read(8) == b"datagram"
    assert to_text(src.read(srclen.u32())) == (loopback(family), pa)


@pytest.mark.udp
def test_udp_truncation(api):
    """recvfrom page: a datagram longer than the buffer is truncated with WSAEMSGSIZE."""
    a, _ = udp_socket(api)
    b, pb = udp_socket(api)
    to, tolen = sockaddr(api, "127.0.0.1", pb)
    api.sendto(a, _bytes(api, b"0123456789"), 10, 0, to, tolen)
    buf = Guarded(api, 4)
    assert api.recv(b, buf.ptr, 4, 0) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEMSGSIZE
    assert buf.read() == b"0123" and buf.guards_intact()


@pytest.mark.udp
def test_udp_port_unreachable(api):
    """An ICMP port unreachable shows up as WSAECONNRESET on the next receive (SIO_UDP_CONNRESET
    is on by default: winsock-ioctls.md). The ICMP arrives when it arrives: the receive is
    non-blocking and retried for up to a second, so a provider that never reports it ends with
    WSAEWOULDBLOCK instead of blocking for ever."""
    a, _ = udp_socket(api)
    b, pb = udp_socket(api)
    to, tolen = sockaddr(api, "127.0.0.1", pb)
    assert api.closesocket(b) == 0
    assert api.ioctlsocket(a, C.FIONBIO, dword(api, 1).ptr) == 0
    api.sendto(a, _bytes(api, b"x"), 1, 0, to, tolen)
    buf = Guarded(api, 4)
    for _ in range(100):
        assert api.recv(a, buf.ptr, 4, 0) == C.SOCKET_ERROR
        if api.WSAGetLastError() != C.WSAEWOULDBLOCK:
            break
        api.SleepEx(10, False)
    assert api.WSAGetLastError() == C.WSAECONNRESET


@pytest.mark.ipv6
def test_dual_stack_accepts_ipv4(api):
    """IPV6_V6ONLY off: an AF_INET6 listener on :: accepts an IPv4 client, seen as a v4-mapped address."""
    lst = api.socket(C.AF_INET6, C.SOCK_STREAM, 0)
    off = dword(api, 0)
    assert api.setsockopt(lst, C.IPPROTO_IPV6, C.IPV6_V6ONLY, off.ptr, 4) == 0
    ptr, n = sockaddr(api, "::", 0)
    assert api.bind(lst, ptr, n) == 0 and api.listen(lst, 4) == 0
    port = local_name(api, lst)[1]
    c = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    to, tolen = sockaddr(api, "127.0.0.1", port)
    assert api.connect(c, to, tolen) == 0
    addr, addrlen = Guarded(api, 28), dword(api, 28)
    server = api.accept(lst, addr.ptr, addrlen.ptr)
    assert server != C.INVALID_SOCKET
    peer = ipaddress.ip_address(to_text(addr.read(addrlen.u32()))[0])
    assert str(peer.ipv4_mapped) == "127.0.0.1"


def test_sockopt_errors(api, tcp):
    """setsockopt/getsockopt pages: WSAENOPROTOOPT unknown option, WSAEINVAL unknown level, WSAEFAULT short length."""
    v = dword(api, 1)
    assert api.setsockopt(tcp, C.SOL_SOCKET, 0x7777, v.ptr, 4) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAENOPROTOOPT
    assert api.setsockopt(tcp, 12345, C.SO_REUSEADDR, v.ptr, 4) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEINVAL
    assert api.setsockopt(tcp, C.SOL_SOCKET, C.SO_RCVBUF, api.memory.invalid_pointer(), 4) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEFAULT
    out, length = Guarded(api, 4), dword(api, 3)
    assert api.getsockopt(tcp, C.SOL_SOCKET, C.SO_TYPE, out.ptr, length.ptr) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEFAULT and out.read() == b"\xcc" * 4
    length.set_u32(4)
    assert api.getsockopt(tcp, C.SOL_SOCKET, C.SO_TYPE, out.ptr, length.ptr) == 0
    assert out.u32() == C.SOCK_STREAM


def _wsamsg(api, bufsize=64, control=64, name=True):
    data = Guarded(api, bufsize)
    arr = api.memory.alloc(WSABUF.size)
    api.memory.write(arr, WSABUF.pack(len=bufsize, buf=data.ptr))
    ctrl = Guarded(api, max(control, 1))
    nm = Guarded(api, 28) if name else None
    msg = api.memory.alloc(WSAMSG.size)
    api.memory.write(msg, WSAMSG.pack(name=nm.ptr if nm else 0, namelen=28 if nm else 0, lpBuffers=arr,
                                      dwBufferCount=1, Control_len=control, Control_buf=ctrl.ptr if control else 0,
                                      dwFlags=0))
    return msg, data, ctrl


@pytest.mark.udp
def test_recvmsg_pktinfo_and_ctrunc(api):
    """WSARecvMsg with IP_PKTINFO: one cmsg naming the destination. A short Control buffer sets
    MSG_CTRUNC and fails the call with WSAEMSGSIZE (Wine dlls/ws2_32/tests/sock.c test_ip_pktinfo,
    which runs on Windows: Control.len 1 gives -1, WSAEMSGSIZE, dwFlags MSG_CTRUNC)."""
    a, _ = udp_socket(api)
    b, pb = udp_socket(api)
    assert api.setsockopt(b, C.IPPROTO_IP, C.IP_PKTINFO, dword(api, 1).ptr, 4) == 0
    recvmsg = get_extension(api, b, C.WSAID_WSARECVMSG)
    to, tolen = sockaddr(api, "127.0.0.1", pb)
    for _ in range(2):
        api.sendto(a, _bytes(api, b"hello"), 5, 0, to, tolen)
    msg, data, ctrl = _wsamsg(api)
    n = dword(api)
    assert api.call(recvmsg, b, msg, n.ptr, 0, 0) == 0
    assert n.u32() == 5 and data.read(5) == b"hello"
    fields = WSAMSG.unpack(api.memory.read(msg, WSAMSG.size))
    assert fields["dwFlags"] == 0 and fields["Control_len"] == WSA_CMSG_SPACE(IN_PKTINFO.size)
    cmsgs = list(iter_cmsgs(ctrl.read(fields["Control_len"])))
    assert [(lv, t) for lv, t, _ in cmsgs] == [(C.IPPROTO_IP, C.IP_PKTINFO)]
    assert IN_PKTINFO.unpack(cmsgs[0][2])["ipi_addr"] == bytes([127, 0, 0, 1])
    msg, data, ctrl = _wsamsg(api, control=8)
    assert api.call(recvmsg, b, msg, n.ptr, 0, 0) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEMSGSIZE
    fields = WSAMSG.unpack(api.memory.read(msg, WSAMSG.size))
    assert fields["dwFlags"] == C.MSG_CTRUNC and data.read(5) == b"hello" and ctrl.guards_intact()


@pytest.mark.udp
def test_recvmsg_argument_errors(api):
    """LPFN_WSARECVMSG page: WSAEFAULT for a NULL name with namelen != 0 and a NULL Control.buf with Control.len != 0.
    The checks come before any wait: on a non-blocking socket with nothing queued a provider that
    skipped them answers WSAEWOULDBLOCK rather than block."""
    b, _ = udp_socket(api)
    assert api.ioctlsocket(b, C.FIONBIO, dword(api, 1).ptr) == 0
    recvmsg = get_extension(api, b, C.WSAID_WSARECVMSG)
    msg = api.memory.alloc(WSAMSG.size)
    api.memory.write(msg, WSAMSG.pack(name=0, namelen=16, lpBuffers=0, dwBufferCount=0, Control_len=0,
                                      Control_buf=0, dwFlags=0))
    assert api.call(recvmsg, b, msg, dword(api).ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEFAULT
    api.memory.write(msg, WSAMSG.pack(name=0, namelen=0, lpBuffers=0, dwBufferCount=0, Control_len=64,
                                      Control_buf=0, dwFlags=0))
    assert api.call(recvmsg, b, msg, dword(api).ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEFAULT
    assert api.call(recvmsg, b, api.memory.invalid_pointer(), dword(api).ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEFAULT


@pytest.mark.udp
def test_sendmsg_to_name(api):
    """WSASendMsg sends the buffers to WSAMSG.name."""
    a, _ = udp_socket(api)
    b, pb = udp_socket(api)
    sendmsg = get_extension(api, a, C.WSAID_WSASENDMSG)
    to, tolen = sockaddr(api, "127.0.0.1", pb)
    payload = _bytes(api, b"via sendmsg")
    arr = api.memory.alloc(WSABUF.size)
    api.memory.write(arr, WSABUF.pack(len=11, buf=payload))
    msg = api.memory.alloc(WSAMSG.size)
    api.memory.write(msg, WSAMSG.pack(name=to, namelen=tolen, lpBuffers=arr, dwBufferCount=1, Control_len=0,
                                      Control_buf=0, dwFlags=0))
    n = dword(api)
    assert api.call(sendmsg, a, msg, 0, n.ptr, 0, 0) == 0 and n.u32() == 11
    buf = Guarded(api, 32)
    assert api.recv(b, buf.ptr, 32, 0) == 11 and buf.read(11) == b"via sendmsg"


def test_getsockname_unbound_and_short(api, tcp):
    """getsockname page: WSAEINVAL when unbound; WSAEFAULT when *namelen is too small (nothing written)."""
    name, length = Guarded(api, 16), dword(api, 16)
    assert api.getsockname(tcp, name.ptr, length.ptr) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEINVAL
    client, _, _ = tcp_pair(api)
    length.set_u32(8)
    assert api.getsockname(client, name.ptr, length.ptr) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEFAULT and name.read() == b"\xcc" * 16 and length.u32() == 8


def test_send_recv_bad_buffers(api):
    """send/recv pages: WSAEFAULT for a buffer not in user space; nothing is received into it."""
    client, server, _ = tcp_pair(api)
    assert api.send(client, api.memory.invalid_pointer(), 10, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEFAULT
    ro = api.memory.alloc(8, prot="r")
    api.send(client, _bytes(api, b"abc"), 3, 0)
    assert api.recv(server, ro, 8, 0) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEFAULT
    assert _recv_all(api, server, 3) == b"abc"
    assert api.recv(POISON, 0, 0, 0) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAENOTSOCK


def test_recv_unknown_flag(api):
    """A flag recv does not know (0x4000) fails with WSAEOPNOTSUPP before anything waits for data
    (sim/winsock.py WSARecv's flag check). The socket is non-blocking, so a provider that ignored
    the flag answers WSAEWOULDBLOCK instead of waiting for data that never comes."""
    _client, server, _ = tcp_pair(api)
    assert api.ioctlsocket(server, C.FIONBIO, dword(api, 1).ptr) == 0
    assert api.recv(server, Guarded(api, 1).ptr, 1, 0x4000) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEOPNOTSUPP


@pytest.mark.udp
def test_connected_udp_socket_takes_only_its_peer(api):
    """connect page: for a connectionless socket, datagrams from addresses other than the
    connected one are discarded."""
    a, pa = udp_socket(api)
    b, pb = udp_socket(api)
    c, _ = udp_socket(api)
    peer, peerlen = sockaddr(api, "127.0.0.1", pa)
    assert api.connect(b, peer, peerlen) == 0
    to_b, to_blen = sockaddr(api, "127.0.0.1", pb)
    api.sendto(c, _bytes(api, b"stranger"), 8, 0, to_b, to_blen)
    api.sendto(a, _bytes(api, b"peer"), 4, 0, to_b, to_blen)
    buf = Guarded(api, 16)
    assert api.recv(b, buf.ptr, 16, 0) == 4 and buf.read(4) == b"peer"
    assert api.ioctlsocket(b, C.FIONBIO, dword(api, 1).ptr) == 0
    assert api.recv(b, buf.ptr, 16, 0) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEWOULDBLOCK


@pytest.mark.sim_only
@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_ephemeral_ports_run_out(api, kind):
    """docs/facts.md §9: port 0 gets a unique port of the dynamic client port range (bind page); when every
    port of it is taken, bind to port 0 and connect on an unbound socket fail with WSAENOBUFS (bind and
    connect pages). The host's range is set to netsh's smallest (`set dynamicport start=60000 num=255`),
    a world control, so the test runs out in 255 sockets; a freed port is handed out again."""
    host = getattr(getattr(api, "process", None), "host", None)
    if host is None:
        pytest.skip("needs the simulator's host (its dynamic port range)")
    start, num = 60000, 255
    if kind == "tcp":
        lst, port = listener(api)                    # before the range shrinks: its port stays outside
        assert not start <= port < start + num
        target = sockaddr(api, "127.0.0.1", port)
    host.set_dynamic_ports(kind, start, num)
    ptr, n = sockaddr(api, "0.0.0.0", 0)

    def take():
        """A socket given an ephemeral port (bind to 0, or connect's implicit bind): (socket, rc, error)."""
        s = api.socket(C.AF_INET, C.SOCK_DGRAM if kind == "udp" else C.SOCK_STREAM, 0)
        rc = api.bind(s, ptr, n) if kind == "udp" else api.connect(s, *target)
        err = api.WSAGetLastError() if rc else 0
        if kind == "tcp" and rc == 0:
            assert api.accept(lst, 0, 0) != C.INVALID_SOCKET     # keep the backlog free
        return s, rc, err

    socks = []
    for _ in range(num):
        s, rc, err = take()
        assert (rc, err) == (0, 0)
        socks.append(s)
    ports = [local_name(api, s)[1] for s in socks]
    assert sorted(ports) == list(range(start, start + num))       # unique, all from the range
    s, rc, err = take()
    assert (rc, err) == (C.SOCKET_ERROR, C.WSAENOBUFS)
    assert api.closesocket(s) == 0
    freed = ports[100]
    if kind == "tcp":                # an abortive close (linger on, 0 s): no FIN_WAIT/TIME_WAIT holds the port
        linger = _bytes(api, struct.pack("<HH", 1, 0))
        assert api.setsockopt(socks[100], C.SOL_SOCKET, C.SO_LINGER, linger, 4) == 0
    assert api.closesocket(socks[100]) == 0
    s, rc, err = take()
    assert (rc, err) == (0, 0) and local_name(api, s)[1] == freed


def test_zero_length_recv_waits_for_data(api, pair):
    """Wine test_empty_recv (on Windows): a zero-length receive waits for data like any other (a
    zero-length WSARecv pends until data arrives), so on a non-blocking socket with nothing
    queued it is WSAEWOULDBLOCK, not 0 (which would say the peer closed); with data queued it
    returns 0 and leaves the data."""
    client, server, _ = pair
    one = dword(api, 1)
    assert api.ioctlsocket(server, C.FIONBIO, one.ptr) == 0
    buf = Guarded(api, 4)
    assert api.recv(server, buf.ptr, 0, 0) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEWOULDBLOCK
    api.memory.write(buf.ptr, b"data")
    assert api.send(client, buf.ptr, 4, 0) == 4
    while api.recv(server, buf.ptr, 0, 0) == C.SOCKET_ERROR:
        assert api.WSAGetLastError() == C.WSAEWOULDBLOCK
        api.SleepEx(10, False)
    assert api.recv(server, buf.ptr, 4, 0) == 4 and buf.read() == b"data"


@pytest.mark.udp
def test_oob_on_a_datagram_socket(api):
    """The sendto page: WSAEOPNOTSUPP when MSG_OOB is specified on a socket that is not
    stream-style (found by tests/differential: Wine agrees; the simulator refuses recv/recvfrom's
    MSG_OOB alike, as their pages say, where Wine 8.0 receives: tests/differential/known.toml)."""
    a, port = udp_socket(api)
    b, _ = udp_socket(api)
    to, tolen = sockaddr(api, "127.0.0.1", port)
    buf = Guarded(api, 8)
    assert api.sendto(b, buf.ptr, 4, C.MSG_OOB, to, tolen) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEOPNOTSUPP
    assert api.sendto(b, buf.ptr, 4, 0, to, tolen) == 4 and buf.guards_intact()


def test_stream_recv_flags_out(api, decide):
    """Decision point stream_recv_flags_out: after a WSARecv with MSG_PEEK completes at once on a TCP
    socket, *lpFlags holds the output flags (0: none applies to a stream, the WSARecvEx page) or is
    left as the caller set it (Wine 8.0, found by tests/differential). The peek leaves the data."""
    client, server, _ = tcp_pair(api)
    assert api.send(client, _bytes(api, b"abcd"), 4, 0) == 4
    buf = Guarded(api, 16)
    arr = api.memory.alloc(WSABUF.size)
    api.memory.write(arr, WSABUF.pack(len=16, buf=buf.ptr))
    flags, n = dword(api, C.MSG_PEEK), dword(api)
    while api.WSARecv(server, arr, 1, n.ptr, flags.ptr, 0, 0) == 0 and n.u32() < 4:
        flags.set_u32(C.MSG_PEEK)                   # the bytes arrive in pieces: peek again
    assert n.u32() == 4 and buf.read(4) == b"abcd"
    assert flags.u32() == (C.MSG_PEEK if decide("stream_recv_flags_out") == "unchanged" else 0)
    assert _recv_all(api, server, 4) == b"abcd"


_D = 0xDEAD
# Rows of Wine dlls/ws2_32/tests/sock.c test_WSASocket (ok() outside todo_wine, on Windows): the error,
# or the type and protocol the socket gets.
SOCKET_TRIPLES = [
    ((_D, C.SOCK_STREAM, C.IPPROTO_TCP), C.WSAEAFNOSUPPORT), ((C.AF_INET, _D, C.IPPROTO_TCP), C.WSAESOCKTNOSUPPORT),
    ((C.AF_INET, C.SOCK_STREAM, _D), C.WSAEPROTONOSUPPORT), ((_D, _D, C.IPPROTO_TCP), C.WSAESOCKTNOSUPPORT),
    ((_D, C.SOCK_STREAM, _D), C.WSAEAFNOSUPPORT), ((C.AF_INET, _D, _D), C.WSAESOCKTNOSUPPORT),
    ((C.AF_INET, 0, _D), C.WSAEPROTONOSUPPORT), ((C.AF_INET, C.SOCK_STREAM, C.IPPROTO_UDP), C.WSAEPROTONOSUPPORT),
    ((C.AF_INET, C.SOCK_DGRAM, C.IPPROTO_TCP), C.WSAEPROTONOSUPPORT),
    ((C.AF_UNSPEC, C.SOCK_STREAM, _D), C.WSAEPROTONOSUPPORT), ((C.AF_UNSPEC, _D, C.IPPROTO_UDP), C.WSAESOCKTNOSUPPORT),
    ((C.AF_UNSPEC, C.SOCK_STREAM, 0), C.WSAEINVAL), ((C.AF_UNSPEC, _D, 0), C.WSAEINVAL),
    ((C.AF_UNSPEC, 0, _D), C.WSAEPROTONOSUPPORT), ((C.AF_UNSPEC, 0, 0), C.WSAEINVAL),
    ((C.AF_INET, 0, 0), (C.SOCK_STREAM, C.IPPROTO_TCP)), ((C.AF_INET, 0, C.IPPROTO_UDP), (C.SOCK_DGRAM, C.IPPROTO_UDP)),
    ((C.AF_UNSPEC, 0, C.IPPROTO_TCP), (C.SOCK_STREAM, C.IPPROTO_TCP)),
    ((C.AF_UNSPEC, C.SOCK_STREAM, C.IPPROTO_TCP), (C.SOCK_STREAM, C.IPPROTO_TCP)),
]


@pytest.mark.parametrize("triple,expected", SOCKET_TRIPLES, ids=lambda v: str(v))
def test_socket_triples(api, triple, expected):
    """Wine test_WSASocket (Windows): ws2_32's catalog match. AF_UNSPEC without a protocol is WSAEINVAL;
    then the type, the family, the protocol; type 0 takes the protocol's."""
    s = api.WSASocketW(*triple, 0, 0, 0)
    if isinstance(expected, int):
        assert s == C.INVALID_SOCKET and api.WSAGetLastError() == expected
        return
    assert s != C.INVALID_SOCKET, api.WSAGetLastError()
    value, length = Guarded(api, 4), dword(api, 4)
    assert api.getsockopt(s, C.SOL_SOCKET, C.SO_TYPE, value.ptr, length.ptr) == 0
    assert value.u32() == expected[0]
    assert api.closesocket(s) == 0
