"""The reference redirect service: accept, query records and context, forward, relay.

The sample driver (driver-fixtures/wfp-redirect-callout) redirects matching
connections to this proxy's port on loopback, with a context that carries
the original destination. For each accepted TCP connection the proxy
queries the records and the context, opens an outbound socket, sets the
records on it (unless told not to: that is the missing-set-loop story),
connects to the original destination and relays both directions. For UDP
it reads the records and context cmsgs of a flow's first datagram and
forwards the records on its own first datagram to the destination.

Two flavours, both written only against WinsockApi, both one non-blocking
turn per `poll()` (so the simulator can run many proxies in one thread;
`serve_forever()` runs one as a console program or service on Windows):
`RedirectProxy` is the model of an event-loop proxy (libuv, curl): one
WSAPoll over every socket per turn, so a turn costs what the proxy holds.
`IocpRedirectProxy` is completion-port driven (AcceptEx, ConnectEx,
WSARecv into per-connection slots, GetQueuedCompletionStatusEx): a turn
costs the events that arrived, whatever it holds. The scenarios run the
WSAPoll one by default (Story(proxy=...) picks either; both tell the same
stories): with the few connections a scenario holds it makes fewer calls
per connection (bench/RESULTS.md, session 7). A failed outbound connect is seen as POLLERR|POLLHUP, which WSAPoll reports
from Windows 10 version 2004 on (the WSAPoll page); every guest of
vm-templates/guest-matrix.toml is newer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.winsock import constants as C
from harness.winsock import sockaddr
from harness.proxy import redirect as rd
from harness.proxy.completion import DATA, ROOM, CompletionPort
from harness.proxy.poller import FAILED, READ, WRITE, Poller
from harness.sample_driver import unpack_context


@dataclass
class ProxyStats:
    accepted: int = 0
    forwarded: int = 0
    closed: int = 0
    refused: int = 0
    udp_flows: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    errors: list = field(default_factory=list)


_LISTENER, _UDP = "listener", "udp"      # owners of the sockets a proxy polls, besides connections


class _Tcp:
    """One proxied TCP connection."""

    # Slots: a proxy holds thousands (and the completion-port proxy's own few fields are here too).
    __slots__ = ("client", "out", "original", "records", "context", "state", "pending", "eof", "shut",
                 "inspected", "slots", "ops", "outstanding", "sending")

    def __init__(self, client, original, records, context):
        self.client = client
        self.out = None
        self.original = original          # (ip, port) from the redirect context
        self.records = records
        self.context = context
        self.state = "connecting"
        self.pending = {"up": b"", "down": b""}
        self.eof = {"up": False, "down": False}
        self.shut = {"up": False, "down": False}
        self.inspected = {"up": 0, "down": 0}
        self.slots = self.ops = None      # the completion-port proxy's: OVERLAPPED slots, operations
        self.outstanding = 0
        self.sending = ""

    def interest(self, out) -> None:
        """Append (socket, events) for what this connection waits for."""
        pending, eof = self.pending, self.eof
        if self.state == "connecting":
            out.append((self.out, WRITE))
            if not eof["up"]:
                out.append((self.client, READ))
            return
        events = (0 if eof["down"] else READ) | (WRITE if pending["up"] else 0)
        if events:
            out.append((self.out, events))
        events = (0 if eof["up"] else READ) | (WRITE if pending["down"] else 0)
        if events:
            out.append((self.client, events))


class RedirectProxy:
    def __init__(self, api, name: str = "proxy", tcp_port: int = 0, udp_port: int = 0,
                 addresses=("127.0.0.1", "::1"), set_records: bool = True, inspect=None):
        self.api = api
        self.name = name
        self.tcp_port = tcp_port
        self.udp_port = udp_port
        self.addresses = addresses
        self.set_records = set_records
        self.inspect = inspect            # inspect(proxy, connection, direction, data)
        self.stats = ProxyStats()
        self.listeners = []
        self.udp_sockets = []
        self.connections: dict = {}      # _Tcp -> None: an ordered set (removal costs the same at any size)
        self.udp_flows = {}               # (proxy socket, client endpoint) -> outbound socket info
        self.scratch = None
        self.one = 0
        self.poller = None
        self.pid = api.GetCurrentProcessId()

    # -- setup ---------------------------------------------------------------
    def _nonblocking(self, s) -> None:
        if self.api.ioctlsocket(s, C.FIONBIO, self.one):
            raise rd.WinsockError("ioctlsocket(FIONBIO)", self.api.WSAGetLastError())

    def _bound(self, kind, address, port):
        api = self.api
        family = sockaddr.text_family(address)
        s = api.socket(family, kind, 0)
        if s == C.INVALID_SOCKET:
            raise rd.WinsockError("socket", api.WSAGetLastError())
        name = sockaddr.from_text(address, port)
        api.memory.write(self.scratch.addr, name)
        if api.bind(s, self.scratch.addr, len(name)):
            err = api.WSAGetLastError()
            api.closesocket(s)
            raise rd.WinsockError(f"bind({address}:{port})", err)
        self._nonblocking(s)
        return s, family

    def start(self) -> "RedirectProxy":
        api = self.api
        self.scratch = rd.Scratch(api)
        self.one = api.memory.alloc(4)           # a u_long 1 for FIONBIO, written once
        api.memory.write_u32(self.one, 1)
        self.poller = Poller(api)
        for address in self.addresses:
            if self.tcp_port:
                s, _ = self._bound(C.SOCK_STREAM, address, self.tcp_port)
                if api.listen(s, 128):
                    raise rd.WinsockError("listen", api.WSAGetLastError())
                self.listeners.append(s)
            if self.udp_port:
                s, family = self._bound(C.SOCK_DGRAM, address, self.udp_port)
                rd.enable_redirect_cmsgs(api, s, family, self.scratch)
                self.udp_sockets.append(s)
        probe = self.listeners[0] if self.listeners else self.udp_sockets[0]
        self.recvmsg = rd.extension_function(api, probe, C.WSAID_WSARECVMSG, self.scratch)
        self.sendmsg = rd.extension_function(api, probe, C.WSAID_WSASENDMSG, self.scratch)
        return self

    def close(self) -> None:
        api = self.api
        for conn in self.connections:
            for s in (conn.client, conn.out):
                if s:
                    api.closesocket(s)
        for flow in self.udp_flows.values():
            api.closesocket(flow["out"])
        for s in self.listeners + self.udp_sockets:
            api.closesocket(s)
        self.connections, self.udp_flows, self.listeners, self.udp_sockets = {}, {}, [], []
        if self.poller is not None:
            self.poller.close()

    # -- the loop --------------------------------------------------------------
    def poll(self, timeout_ms: int = 0) -> bool:
        """One turn: a WSAPoll over every socket, then one step on each ready one.

        True if anything was ready. A ready listener is drained (accept until
        WSAEWOULDBLOCK), so what is left after a turn is only what arrives
        later. The WSAPoll waits up to `timeout_ms` (0: not at all).
        """
        interest, owners = self._interest()
        ready = self.poller.poll(interest, timeout_ms)
        for s, revents in ready:
            owner = owners[s]
            if owner is _LISTENER:
                while self._accept(s):
                    pass
            elif isinstance(owner, _Tcp):
                self._on_tcp(owner, s, revents)
            else:
                self._udp_ready(s, owner)
        return bool(ready)

    def _interest(self):
        """([(socket, events)], {socket: what it belongs to}) for this turn."""
        interest = [(s, READ) for s in self.listeners + self.udp_sockets]
        owners = dict.fromkeys(self.listeners, _LISTENER)
        owners.update(dict.fromkeys(self.udp_sockets, _UDP))
        for conn in self.connections:
            start = len(interest)
            conn.interest(interest)
            for s, _ in interest[start:]:
                owners[s] = conn
        self._flow_interest(interest, owners)
        return interest, owners

    def _flow_interest(self, interest: list, owners: dict) -> None:
        """Add each UDP flow's outbound socket to this turn's interest."""
        for key, flow in self.udp_flows.items():
            interest.append((flow["out"], READ))
            owners[flow["out"]] = (key, flow)

    def _udp_ready(self, s, owner) -> None:
        """A ready UDP socket: the proxy's own (datagrams in) or a flow's outbound one (replies)."""
        if owner is _UDP:
            while self._udp_in(s):
                pass
        elif owner[0] in self.udp_flows:
            while self._udp_back(*owner):
                pass

    def serve_forever(self, idle_ms: int = 1000) -> None:    # pragma: no cover - the native console loop
        while True:
            self.poll(idle_ms)

    # -- TCP -------------------------------------------------------------------
    def _error(self, what: str) -> None:
        self.stats.errors.append(what)

    def _accept(self, lst) -> bool:
        api = self.api
        client = api.accept(lst, 0, 0)
        if client == C.INVALID_SOCKET:
            err = api.WSAGetLastError()
            if err != C.WSAEWOULDBLOCK:
                self._error(f"accept: {C.error_name(err)}")
            return False
        self._accepted(client)
        return True

    def _accepted(self, client) -> None:
        """A client was accepted: query its records and context and connect out for it."""
        api = self.api
        self.stats.accepted += 1
        self._nonblocking(client)
        try:
            records = rd.query_records(api, client, self.scratch)
            context = rd.query_context(api, client, self.scratch)
            original = unpack_context(context).original_remote if context else None
        except (rd.WinsockError, ValueError) as exc:
            self._error(f"query: {exc}")
            records = context = original = None
        if original is None:
            self.stats.refused += 1
            api.closesocket(client)          # no original destination: nothing to forward to
            return
        conn = _Tcp(client, (original.host, original.port), records, context)
        self.connections[conn] = None
        self._connect_out(conn)

    def _connect_out(self, conn: _Tcp) -> None:
        api = self.api
        out = api.socket(sockaddr.text_family(conn.original[0]), C.SOCK_STREAM, 0)
        conn.out = out
        self._nonblocking(out)
        try:
            if self.set_records and conn.records:
                rd.set_records(api, out, conn.records, self.scratch)
        except rd.WinsockError as exc:
            self._error(f"set records: {exc}")
        name = sockaddr.from_text(*conn.original)
        api.memory.write(self.scratch.addr, name)
        if api.connect(out, self.scratch.addr, len(name)) == 0:
            self._connected(conn)
        elif api.WSAGetLastError() != C.WSAEWOULDBLOCK:
            self._fail(conn, f"connect to {sockaddr.host_port(*conn.original)}: {C.error_name(api.WSAGetLastError())}")

    def _connected(self, conn: _Tcp) -> None:
        conn.state = "relay"
        self.stats.forwarded += 1

    def _fail(self, conn: _Tcp, why: str) -> None:
        self._error(why)
        self._finish(conn)

    def _finish(self, conn: _Tcp) -> None:
        for s in (conn.client, conn.out):
            if s:
                self.api.closesocket(s)
        conn.state = "closed"
        del self.connections[conn]
        self.stats.closed += 1

    def _connect_error(self, conn: _Tcp) -> int:
        """SO_ERROR of the outbound socket: why its connect failed (the flags say only that it did)."""
        api, scratch = self.api, self.scratch
        api.memory.write_u32(scratch.addrlen, 4)
        api.getsockopt(conn.out, C.SOL_SOCKET, C.SO_ERROR, scratch.value, scratch.addrlen)
        return api.memory.read_u32(scratch.value) or C.WSAECONNREFUSED

    def _on_tcp(self, conn: _Tcp, s, revents) -> None:
        if conn.state == "closed":
            return                            # finished by an earlier socket of this turn
        if s == conn.out and conn.state == "connecting":
            if revents & (C.POLLERR | C.POLLHUP):
                self._fail(conn, f"connect to {sockaddr.host_port(*conn.original)}: {C.error_name(self._connect_error(conn))}")
                return
            self._connected(conn)
            self._flush(conn, "up", conn.out)
        else:
            up = s == conn.client
            direction, dst = ("up", conn.out) if up else ("down", conn.client)
            if revents & (READ | FAILED) and not conn.eof[direction]:
                while self._receive(conn, direction, s):
                    pass                      # to WSAEWOULDBLOCK: a FIN may wait behind the data
            if conn.state != "connecting" or not up:
                self._flush(conn, direction, dst)
            if revents & WRITE:               # the other direction waited for room on this socket
                self._flush(conn, "down" if up else "up", s)
        eof, pending = conn.eof, conn.pending
        if eof["up"] and eof["down"] and not pending["up"] and not pending["down"] and conn.state != "closed":
            self._finish(conn)

    def _receive(self, conn: _Tcp, direction: str, src) -> bool:
        """One recv into `direction`'s pending data; True when it got data (there may be more, or a FIN).

        Read until the socket says WSAEWOULDBLOCK, EOF or an error: an event loop that waits for
        readiness again after a short read never learns of a FIN that arrived with the data when
        nothing else arrives later (edge-triggered hosts, and World.add_service's gate)."""
        api, scratch = self.api, self.scratch
        n = api.recv(src, scratch.buf, scratch.size, 0)
        if n > 0:
            data = api.memory.read(scratch.buf, n)
            conn.inspected[direction] += n
            if self.inspect is not None:
                self.inspect(self, conn, direction, data)
            conn.pending[direction] += data
            return True
        if n == 0:
            conn.eof[direction] = True
        elif api.WSAGetLastError() != C.WSAEWOULDBLOCK:
            conn.eof["up"] = conn.eof["down"] = True         # reset or failure: drop both directions
            conn.pending = {"up": b"", "down": b""}
        return False

    def _flush(self, conn: _Tcp, direction: str, dst) -> None:
        """Send what `direction` holds to `dst`; after the EOF, pass the FIN on."""
        api, scratch = self.api, self.scratch
        data = conn.pending[direction]
        if data:
            api.memory.write(scratch.buf, data[:scratch.size])
            sent = api.send(dst, scratch.buf, min(len(data), scratch.size), 0)
            if sent > 0:
                conn.pending[direction] = data[sent:]
                if direction == "up":
                    self.stats.bytes_up += sent
                else:
                    self.stats.bytes_down += sent
            elif api.WSAGetLastError() != C.WSAEWOULDBLOCK:
                conn.pending[direction] = b""
        if conn.eof[direction] and not conn.pending[direction] and not conn.shut[direction]:
            api.shutdown(dst, C.SD_SEND)
            conn.shut[direction] = True

    # -- UDP -------------------------------------------------------------------
    def _udp_in(self, s) -> bool:
        api = self.api
        try:
            dgram = rd.recv_datagram(api, s, self.recvmsg, self.scratch)
        except rd.WinsockError as exc:
            self._error(str(exc))
            return True
        if dgram is None:
            return False
        key = (s, dgram.source)
        flow = self.udp_flows.get(key)
        if self.inspect is not None:
            self.inspect(self, flow, "up", dgram.payload)
        if flow is None:
            if not dgram.context:
                self.stats.refused += 1          # not a redirected flow's first datagram
                return True
            try:
                original = unpack_context(dgram.context).original_remote
            except ValueError as exc:
                self._error(f"udp context: {exc}")
                return True
            out = api.socket(sockaddr.text_family(original.host), C.SOCK_DGRAM, 0)
            flow = {"out": out, "original": (original.host, original.port), "client": dgram.source}
            self.udp_flows[key] = flow
            self.stats.udp_flows += 1
            try:
                rd.send_datagram(api, out, self.sendmsg, dgram.payload, flow["original"],
                                 dgram.records if self.set_records else None, self.scratch)
            except rd.WinsockError as exc:
                self._error(str(exc))
            self._nonblocking(out)
        else:
            name = sockaddr.from_text(*flow["original"])
            api.memory.write(self.scratch.addr, name)
            api.memory.write(self.scratch.buf, dgram.payload)
            api.sendto(flow["out"], self.scratch.buf, len(dgram.payload), 0, self.scratch.addr, len(name))
        self.stats.bytes_up += len(dgram.payload)
        return True

    def _udp_back(self, key, flow) -> bool:
        api, scratch, mem = self.api, self.scratch, self.api.memory
        n = api.recv(flow["out"], scratch.buf, scratch.size, 0)
        if n < 0:
            return False
        data = mem.read(scratch.buf, n)
        if self.inspect is not None:
            self.inspect(self, flow, "down", data)
        name = sockaddr.from_text(*flow["client"])
        mem.write(scratch.addr, name)
        api.sendto(key[0], scratch.buf, n, 0, scratch.addr, len(name))
        self.stats.bytes_down += n
        return True




class IocpRedirectProxy(RedirectProxy):
    """The reference proxy on a completion port: what an event costs does not depend on what it holds.

    Each listener keeps `ACCEPTS` AcceptEx calls outstanding; an accepted client is queried as in
    RedirectProxy, its outbound socket is bound and connected with ConnectEx, and each socket of a
    relayed connection has one WSARecv into its own OVERLAPPED slot outstanding while its direction
    is open. A packet brings the bytes (a full slot: the proxy reads the rest with non-blocking
    recv; data or a FIN behind them completes the next WSARecv at once) and the proxy sends with
    non-blocking send (what a send cannot take now goes out as an overlapped WSASend). Packets are
    taken in batches (GetQueuedCompletionStatusEx). UDP stays on WSAPoll: its sockets are the
    proxy's own few.
    """

    ACCEPTS = 2                 # AcceptEx calls outstanding per listener: the backlog holds the rest

    def start(self) -> "IocpRedirectProxy":
        super().start()
        api = self.api
        self.port = port = CompletionPort(api)
        self._accept_addr = api.memory.alloc(8)      # SO_UPDATE_ACCEPT_CONTEXT's value: the listener
        self._families = {lst: sockaddr_family(api, lst, self.scratch) for lst in self.listeners}
        self._accepts: dict = {}                     # AcceptEx slot -> its accept socket
        for lst in self.listeners:
            port.associate(lst)
            api.memory.write_u64(self._accept_addr, lst)
            for slot in port.slots(self.ACCEPTS):
                self._post_accept(lst, slot)
        return self

    def close(self) -> None:
        api = self.api
        super().close()                              # connections, UDP flows, listeners
        for acc in self._accepts.values():
            api.closesocket(acc)                     # the accept sockets of outstanding AcceptEx calls
        self._accepts = {}
        self.port.close()

    def poll(self, timeout_ms: int = 0) -> bool:
        """One turn: every completion packet queued now, then one WSAPoll over the UDP sockets."""
        port = self.port
        progress = port.drain()
        if self.udp_sockets or self.udp_flows:
            progress = self._poll_udp(0 if progress else timeout_ms) or progress
        elif not progress and timeout_ms:
            progress = port.run(timeout_ms) > 0
            if progress:
                port.drain()
        return progress

    def _poll_udp(self, timeout_ms: int) -> bool:
        interest = [(s, READ) for s in self.udp_sockets]
        owners = dict.fromkeys(self.udp_sockets, _UDP)
        self._flow_interest(interest, owners)
        ready = self.poller.poll(interest, timeout_ms)
        for s, _revents in ready:
            self._udp_ready(s, owners[s])
        return bool(ready)

    # -- TCP on the port -------------------------------------------------------------------------
    def _post_accept(self, lst, slot) -> None:
        api = self.api
        acc = api.socket(self._families[lst], C.SOCK_STREAM, 0)
        if acc == C.INVALID_SOCKET:
            self._error(f"socket for AcceptEx: {C.error_name(api.WSAGetLastError())}")
            self.port.release([slot])
            return
        err = self.port.accept(lst, acc, slot, (self._accept_done, lst, acc))
        if err:
            api.closesocket(acc)
            self.port.release([slot])
            self._error(f"AcceptEx: {C.error_name(err)}")
        else:
            self._accepts[slot] = acc

    def _accept_done(self, lst, acc, slot, err, _n) -> None:
        api = self.api
        del self._accepts[slot]
        if lst not in self.listeners:                 # the proxy closed: nothing more to accept
            api.closesocket(acc)
            return
        self._post_accept(lst, slot)
        if err:
            api.closesocket(acc)
            if err != C.WSA_OPERATION_ABORTED:
                self._error(f"AcceptEx: {C.error_name(err)}")
            return
        api.memory.write_u64(self._accept_addr, lst)
        api.setsockopt(acc, C.SOL_SOCKET, C.SO_UPDATE_ACCEPT_CONTEXT, self._accept_addr, 8)
        self.port.associate(acc)
        self._accepted(acc)

    def _connect_out(self, conn: _Tcp) -> None:
        api, scratch, port = self.api, self.scratch, self.port
        family = sockaddr.text_family(conn.original[0])
        out = api.socket(family, C.SOCK_STREAM, 0)
        conn.out = out
        # Its slots, held while it lives: a WSARecv on each socket. The ConnectEx's and an overlapped
        # WSASend's are taken when needed and given back at their packets.
        conn.slots = slots = port.slots(2)
        port.receive_slot(slots[0])
        port.receive_slot(slots[1])
        receive = self._received
        conn.ops = ((receive, conn.client, conn), (receive, out, conn))
        self._nonblocking(out)
        try:
            if self.set_records and conn.records:
                rd.set_records(api, out, conn.records, scratch)
        except rd.WinsockError as exc:
            self._error(f"set records: {exc}")
        port.associate(out)
        anywhere = _ANY4 if family == C.AF_INET else _ANY6
        api.memory.write(scratch.addr, anywhere)
        if api.bind(out, scratch.addr, len(anywhere)):       # ConnectEx needs a bound socket (its page)
            self._fail(conn, f"bind: {C.error_name(api.WSAGetLastError())}")
            return
        name = sockaddr.from_text(*conn.original)
        api.memory.write(scratch.addr, name)
        slot = port.slots(1)[0]
        err = port.connect(out, scratch.addr, len(name), slot, (self._connect_done, out, conn))
        if err:
            port.release([slot])
            self._fail(conn, f"connect to {sockaddr.host_port(*conn.original)}: {C.error_name(err)}")
            return
        conn.outstanding += 1
        self._wait_readable(conn, conn.client)     # what the client sends meanwhile waits in `pending`

    def _connect_done(self, out, conn: _Tcp, slot, err, _n) -> None:
        conn.outstanding -= 1
        self.port.release([slot])
        if conn.state == "closed":
            self._done_with(conn)
            return
        if err:
            self._fail(conn, f"connect to {sockaddr.host_port(*conn.original)}: {C.error_name(err)}")
            return
        self.api.setsockopt(out, C.SOL_SOCKET, C.SO_UPDATE_CONNECT_CONTEXT, 0, 0)
        self._connected(conn)
        self._flush(conn, "up", out)
        self._wait_readable(conn, out)
        self._maybe_finish(conn)

    def _wait_readable(self, conn: _Tcp, s) -> None:
        up = s == conn.client
        if conn.state == "closed" or conn.eof["up" if up else "down"]:
            return
        err = self.port.receive(s, conn.slots[0 if up else 1], conn.ops[0 if up else 1])
        if err:
            self._fail(conn, f"WSARecv: {C.error_name(err)}")
        else:
            conn.outstanding += 1

    def _received(self, s, conn: _Tcp, slot, err, n) -> None:
        conn.outstanding -= 1
        if conn.state == "closed":
            self._done_with(conn)
            return
        up = s == conn.client
        direction, dst = ("up", conn.out) if up else ("down", conn.client)
        if err:
            conn.eof["up"] = conn.eof["down"] = True         # reset or failure: drop both directions
            conn.pending = {"up": b"", "down": b""}
        elif n == 0:
            conn.eof[direction] = True
        else:
            self._take(conn, direction, self.api.memory.read(slot + DATA, n))
            if n == ROOM:                     # a full slot: read what else is there
                while self._receive(conn, direction, s) == self.scratch.size:
                    pass
        if conn.state != "connecting" or not up:
            self._flush(conn, direction, dst)
        self._maybe_finish(conn)
        self._wait_readable(conn, s)

    def _take(self, conn: _Tcp, direction: str, data: bytes) -> None:
        conn.inspected[direction] += len(data)
        if self.inspect is not None:
            self.inspect(self, conn, direction, data)
        conn.pending[direction] += data

    def _receive(self, conn: _Tcp, direction: str, src) -> int:
        """One non-blocking recv into `direction`'s pending data: the bytes it got (0 at EOF, on an
        error or WSAEWOULDBLOCK). No read to WSAEWOULDBLOCK: data or a FIN behind a short read
        completes the next WSARecv at once."""
        api, scratch = self.api, self.scratch
        n = api.recv(src, scratch.buf, scratch.size, 0)
        if n > 0:
            self._take(conn, direction, api.memory.read(scratch.buf, n))
            return n
        if n == 0:
            conn.eof[direction] = True
        elif api.WSAGetLastError() != C.WSAEWOULDBLOCK:
            conn.eof["up"] = conn.eof["down"] = True         # reset or failure: drop both directions
            conn.pending = {"up": b"", "down": b""}
        return 0

    def _flush(self, conn: _Tcp, direction: str, dst) -> None:
        if direction[0] in conn.sending:
            return                          # an overlapped send is out: the rest follows it, in order
        super()._flush(conn, direction, dst)
        data = conn.pending[direction]
        if data and conn.state != "closed":
            # The socket could not take it now: an overlapped send completes when it has.
            buf = self.api.memory.alloc(len(data))
            self.api.memory.write(buf, data)
            conn.pending[direction] = b""
            slot = self.port.slots(1)[0]
            err = self.port.send(dst, buf, len(data), slot, (self._sent, dst, (conn, direction, buf, len(data))))
            if err:
                self.port.release([slot])
                self.api.memory.free(buf)
                conn.eof["up"] = conn.eof["down"] = True
            else:
                conn.sending += direction[0]
                conn.outstanding += 1

    def _sent(self, dst, what, slot, err, _sent) -> None:
        conn, direction, buf, n = what
        self.api.memory.free(buf)
        self.port.release([slot])
        conn.outstanding -= 1
        conn.sending = conn.sending.replace(direction[0], "")
        if conn.state == "closed":
            self._done_with(conn)
            return
        if err:
            conn.eof["up"] = conn.eof["down"] = True
            conn.pending = {"up": b"", "down": b""}
        else:
            if direction == "up":
                self.stats.bytes_up += n
            else:
                self.stats.bytes_down += n
            self._flush(conn, direction, dst)
        self._maybe_finish(conn)

    def _maybe_finish(self, conn: _Tcp) -> None:
        eof, pending = conn.eof, conn.pending
        if (eof["up"] and eof["down"] and not pending["up"] and not pending["down"] and not conn.sending
                and conn.state != "closed"):
            self._finish(conn)

    def _finish(self, conn: _Tcp) -> None:
        super()._finish(conn)                # closing the sockets cancels what is outstanding
        self._done_with(conn)

    def _done_with(self, conn: _Tcp) -> None:
        """Give the connection's slots back once no packet can come for them."""
        if conn.outstanding == 0 and conn.slots:
            self.port.release(conn.slots)
            conn.slots = conn.ops = None


_ANY4 = sockaddr.from_text("0.0.0.0", 0)
_ANY6 = sockaddr.from_text("::", 0)


def sockaddr_family(api, s, scratch) -> int:
    """The address family of socket `s` (getsockname's sa_family)."""
    api.memory.write_u32(scratch.addrlen, 128)
    if api.getsockname(s, scratch.addr, scratch.addrlen):
        raise rd.WinsockError("getsockname", api.WSAGetLastError())
    return int.from_bytes(api.memory.read(scratch.addr, 2), "little")
