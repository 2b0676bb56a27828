"""Servers that simulated hosts run: TCP and UDP echo, written against WinsockApi.

A service is polled by the world while any simulated thread waits
(World.add_service), so a whole scenario runs deterministically on one
Python thread. A service registered with its process is polled again only
when that process has news, so each poll reads every ready socket until
WSAEWOULDBLOCK: data and a FIN that arrive in the same instant are one piece
of news, and a poll that stopped after the data would never see the FIN.
"""
from __future__ import annotations

from harness.winsock import constants as C
from harness.winsock import sockaddr
from harness.proxy import redirect as rd
from harness.proxy.completion import CompletionPort
from harness.proxy.poller import READ, Poller

ACCEPTS = 4             # AcceptEx calls outstanding per listener (each is asked on every listener event)


class EchoServer:
    """Echoes TCP streams on `tcp_port` and UDP datagrams on `udp_port` of every given address.

    One process, one service. TCP is completion-port driven (AcceptEx, a zero-byte WSARecv per
    connection, GetQueuedCompletionStatus; harness/proxy/completion.py), so a turn costs the
    events that arrived whatever the server holds; its few UDP sockets share one WSAPoll per turn.
    """

    def __init__(self, api, tcp_port: int = 0, udp_port: int = 0, addresses=("0.0.0.0", "::")):
        if not tcp_port and not udp_port:
            raise ValueError("EchoServer needs a TCP port, a UDP port or both")
        self.api = api
        self.tcp_port, self.udp_port = tcp_port, udp_port
        self.scratch = rd.Scratch(api)
        self.one = api.memory.alloc(4)           # a u_long 1 for FIONBIO, written once
        api.memory.write_u32(self.one, 1)
        self.listeners, self.udp, self.conns = [], [], {}       # conns: an ordered set
        self.echoed = 0
        self.poller = Poller(api)
        self.port = CompletionPort(api)
        self._listener_value = api.memory.alloc(8)       # SO_UPDATE_ACCEPT_CONTEXT's value
        self._families = {}
        for address in addresses:
            for kind, port in ((C.SOCK_STREAM, tcp_port), (C.SOCK_DGRAM, udp_port)):
                if not port:
                    continue
                s = api.socket(sockaddr.text_family(address), kind, 0)
                name = sockaddr.from_text(address, port)
                api.memory.write(self.scratch.addr, name)
                if api.bind(s, self.scratch.addr, len(name)):
                    raise rd.WinsockError("bind", api.WSAGetLastError())
                self._nonblocking(s)
                if kind == C.SOCK_STREAM:
                    api.listen(s, 128)
                    self.listeners.append(s)
                    self._families[s] = sockaddr.text_family(address)
                    self.port.associate(s)
                    for _ in range(ACCEPTS):
                        if not self._post_accept(s):
                            raise rd.WinsockError("AcceptEx", api.WSAGetLastError())
                else:
                    self.udp.append(s)

    def _nonblocking(self, s) -> None:
        self.api.ioctlsocket(s, C.FIONBIO, self.one)

    def _post_accept(self, lst) -> bool:
        api = self.api
        acc = api.socket(self._families[lst], C.SOCK_STREAM, 0)
        if self.port.accept(lst, acc, (self._accepted, acc, lst)):
            api.closesocket(acc)
            return False
        return True

    def _accepted(self, acc, lst, err, _n) -> None:
        api = self.api
        if lst in self.listeners:           # not after its listener was closed (the accept was cancelled)
            self._post_accept(lst)
        if err:
            api.closesocket(acc)
            return
        api.memory.write_u64(self._listener_value, lst)
        api.setsockopt(acc, C.SOL_SOCKET, C.SO_UPDATE_ACCEPT_CONTEXT, self._listener_value, 8)
        self._nonblocking(acc)
        self.port.associate(acc)
        self.conns[acc] = None
        self._wait(acc)

    def _wait(self, s) -> None:
        if self.port.readable(s, (self._readable,  s)):
            self._close(s)

    def _readable(self, s, _err, _n) -> None:
        """Echo what is there, to WSAEWOULDBLOCK: a FIN may wait behind the data."""
        api, sc = self.api, self.scratch
        while True:
            n = api.recv(s, sc.buf, sc.size, 0)
            if n > 0:
                api.send(s, sc.buf, n, 0)
                self.echoed += n
                continue
            if n == 0 or api.WSAGetLastError() != C.WSAEWOULDBLOCK:
                self._close(s)
            else:
                self._wait(s)
            return

    def _close(self, s) -> None:
        self.api.closesocket(s)
        self.conns.pop(s, None)

    def poll(self) -> bool:
        """One turn: every completion packet queued now, then one WSAPoll over the UDP sockets."""
        next_packet = self.port.next
        progress = False
        while next_packet(0):
            progress = True
        if not self.udp:
            return progress
        api, sc, mem = self.api, self.scratch, self.api.memory
        ready = self.poller.poll([(s, READ) for s in self.udp])
        for s, _revents in ready:
            while True:
                mem.write_u32(sc.addrlen, 128)
                n = api.recvfrom(s, sc.buf, sc.size, 0, sc.addr, sc.addrlen)
                if n < 0:
                    break
                api.sendto(s, sc.buf, n, 0, sc.addr, mem.read_u32(sc.addrlen))
                self.echoed += n
        return progress or bool(ready)
