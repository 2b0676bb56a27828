"""Servers that simulated hosts run: TCP and UDP echo, written against WinsockApi.

A service is polled by the world while any simulated thread waits
(World.add_service), so a whole scenario runs deterministically on one
Python thread.
"""
from __future__ import annotations

from harness.winsock import constants as C
from harness.winsock import redirect as rd


class EchoServer:
    """Echoes TCP streams and UDP datagrams on `port` of every given address."""

    def __init__(self, api, port: int, addresses=("0.0.0.0", "::"), tcp=True, udp=True):
        self.api = api
        self.port = port
        self.scratch = rd.Scratch(api)
        self.listeners, self.udp, self.conns = [], [], []
        self.echoed = 0
        for address in addresses:
            for kind, wanted in ((C.SOCK_STREAM, tcp), (C.SOCK_DGRAM, udp)):
                if not wanted:
                    continue
                s = api.socket(rd.family_of(address), kind, 0)
                name = rd.sockaddr_bytes(address, port)
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
        self.api.memory.write_u32(self.scratch.value, 1)
        self.api.ioctlsocket(s, C.FIONBIO, self.scratch.value)

    def poll(self) -> bool:
        """Echo everything that is waiting now; True if anything happened."""
        progress = False
        while self._round():          # a round handles one event per socket; drain them all
            progress = True
        return progress

    def _round(self) -> bool:
        api, sc, mem = self.api, self.scratch, self.api.memory
        progress = False
        for lst in self.listeners:
            s = api.accept(lst, 0, 0)
            if s != C.INVALID_SOCKET:
                self._nonblocking(s)
                self.conns.append(s)
                progress = True
        for s in list(self.conns):
            n = api.recv(s, sc.buf, sc.size, 0)
            if n > 0:
                api.send(s, sc.buf, n, 0)
                self.echoed += n
                progress = True
            elif n == 0 or api.WSAGetLastError() != C.WSAEWOULDBLOCK:
                api.closesocket(s)
                self.conns.remove(s)
                progress = True
        for s in self.udp:
            mem.write_u32(sc.addrlen, 128)
            n = api.recvfrom(s, sc.buf, sc.size, 0, sc.addr, sc.addrlen)
            if n >= 0:
                api.sendto(s, sc.buf, n, 0, sc.addr, mem.read_u32(sc.addrlen))
                self.echoed += n
                progress = True
        return progress
