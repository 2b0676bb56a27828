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
from harness.proxy.completion import DATA, ROOM, CompletionPort
from harness.proxy.poller import READ, Poller


class EchoServer:
    """Echoes TCP streams on `tcp_port` and UDP datagrams on `udp_port` of every given address.

    One process, one service, one WSAPoll per turn for both protocols.
    """

    def __init__(self, api, tcp_port: int = 0, udp_port: int = 0, addresses=("0.0.0.0", "::")):
        if not tcp_port and not udp_port:
            raise ValueError("EchoServer needs a TCP port, a UDP port or both")
        self.api = api
        self.tcp_port, self.udp_port = tcp_port, udp_port
        self.scratch = rd.Scratch(api)
        self.one = api.memory.alloc(4)           # a u_long 1 for FIONBIO, written once
        api.memory.write_u32(self.one, 1)
        self.listeners, self.udp, self.conns = [], [], []
        self.echoed = 0
        self.poller = Poller(api)
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
                else:
                    self.udp.append(s)

    def _nonblocking(self, s) -> None:
        self.api.ioctlsocket(s, C.FIONBIO, self.one)

    def _echo_datagrams(self, s) -> None:
        """Echo every datagram waiting on UDP socket `s` to its sender."""
        api, sc, mem = self.api, self.scratch, self.api.memory
        while True:
            mem.write_u32(sc.addrlen, 128)
            n = api.recvfrom(s, sc.buf, sc.size, 0, sc.addr, sc.addrlen)
            if n < 0:
                return
            api.sendto(s, sc.buf, n, 0, sc.addr, mem.read_u32(sc.addrlen))
            self.echoed += n

    def poll(self) -> bool:
        """One turn: a WSAPoll over every socket, then echo what each ready one has."""
        api, sc = self.api, self.scratch
        interest = [(s, READ) for s in self.listeners + self.conns + self.udp]
        ready = self.poller.poll(interest)
        for s, _revents in ready:
            if s in self.listeners:
                while True:                           # drain the backlog: nothing else says it is there
                    new = api.accept(s, 0, 0)
                    if new == C.INVALID_SOCKET:
                        break
                    self._nonblocking(new)
                    self.conns.append(new)
            elif s in self.udp:
                self._echo_datagrams(s)
            else:
                while True:
                    n = api.recv(s, sc.buf, sc.size, 0)
                    if n > 0:
                        api.send(s, sc.buf, n, 0)
                        self.echoed += n
                        continue                      # read to WSAEWOULDBLOCK: a FIN may wait behind the data
                    if n == 0 or api.WSAGetLastError() != C.WSAEWOULDBLOCK:
                        api.closesocket(s)
                        self.conns.remove(s)
                    break
        return bool(ready)


class CompletionEchoServer(EchoServer):
    """The echo server on a completion port: what a turn costs does not grow with what it holds.

    TCP: `ACCEPTS` AcceptEx calls outstanding per listener; each connection has one WSARecv into
    its own OVERLAPPED slot outstanding (harness.proxy.completion) and echoes what it brings with a
    non-blocking send; the FIN (a 0-byte completion) or an error closes it. UDP stays on WSAPoll
    (its sockets are the server's own few).
    """

    ACCEPTS = 2

    def __init__(self, api, tcp_port: int = 0, udp_port: int = 0, addresses=("0.0.0.0", "::")):
        super().__init__(api, tcp_port, udp_port, addresses)
        self.port = port = CompletionPort(api)
        self.accepts: dict = {}                   # AcceptEx slot -> its accept socket
        self.families = dict(zip(self.listeners, (sockaddr.text_family(a) for a in addresses))) if tcp_port else {}
        self._listener_value = api.memory.alloc(8)
        for lst in self.listeners:
            port.associate(lst)
            for slot in port.slots(self.ACCEPTS):
                self._post_accept(lst, slot)

    def _post_accept(self, lst, slot) -> None:
        api = self.api
        acc = api.socket(self.families[lst], C.SOCK_STREAM, 0)
        if acc == C.INVALID_SOCKET or self.port.accept(lst, acc, slot, (self._accepted, lst, acc)):
            raise rd.WinsockError("AcceptEx", api.WSAGetLastError())
        self.accepts[slot] = acc

    def _accepted(self, lst, acc, slot, err, _n) -> None:
        api = self.api
        del self.accepts[slot]
        if lst not in self.listeners:            # the listener was closed: nothing more to accept
            api.closesocket(acc)
            return
        self._post_accept(lst, slot)
        if err:
            api.closesocket(acc)
            return
        api.memory.write_u64(self._listener_value, lst)
        api.setsockopt(acc, C.SOL_SOCKET, C.SO_UPDATE_ACCEPT_CONTEXT, self._listener_value, 8)
        self._nonblocking(acc)
        self.port.associate(acc)
        (own,) = self.port.slots(1)
        self.port.receive_slot(own)
        op = (self._received, acc, None)
        self._receive(acc, own, op)             # the same operation for each of its receives

    def _receive(self, s, slot, op) -> None:
        if self.port.receive(s, slot, op):
            self.api.closesocket(s)               # failed at once: no packet will come
            self.port.release([slot])

    def _received(self, s, _arg, slot, err, n) -> None:
        api = self.api
        if err or n == 0:
            api.closesocket(s)                    # the FIN or a reset: done
            self.port.release([slot])
            return
        data = slot + DATA
        api.send(s, data, n, 0)
        self.echoed += n
        if n == ROOM:                             # a full slot: echo what else is there
            sc = self.scratch
            while (got := api.recv(s, sc.buf, sc.size, 0)) > 0:
                api.send(s, sc.buf, got, 0)
                self.echoed += got
        self._receive(s, slot, self.port.ops_done)

    def poll(self) -> bool:
        """One turn: every completion packet queued now, then a WSAPoll over the UDP sockets."""
        progress = self.port.drain()
        if self.udp:
            progress = self._poll_udp() or progress
        return progress

    def _poll_udp(self) -> bool:
        ready = self.poller.poll([(s, READ) for s in self.udp])
        for s, _revents in ready:
            self._echo_datagrams(s)
        return bool(ready)
