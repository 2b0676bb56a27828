"""The simulated network: hosts, addresses, TCP and UDP transport on virtual time.

TCP is modelled at segment level (SYN, SYN-ACK, ACK, data, FIN, RST with
real sequence numbers) so the packet log can be written as a capture file.
There is no loss, reordering or flow control: the stacks under test are the
redirect paths, not TCP itself (assumption, stated in the README).
Every segment and datagram is delivered by a scheduler timer after the
link's latency, so a run is deterministic.
"""
from __future__ import annotations

import hashlib
import itertools
import types
from dataclasses import dataclass, field

from harness.winsock.constants import AF_INET6
from harness.winsock.sockaddr import (  # noqa: F401  (the address helpers the model uses)
    V4_MAPPED_PREFIX, family_of, ip_bytes, ip_text, is_v4_mapped, unmap, v4_mapped)
from sim.scheduler import NS_PER_US

LOOPBACK_LATENCY_NS = 20 * NS_PER_US
LINK_LATENCY_NS = 500 * NS_PER_US
EPHEMERAL_FIRST, EPHEMERAL_LAST = 49152, 65535      # the default dynamic port range (docs/facts.md §9)
SYN_TIMEOUT_NS = 21_000_000_000     # Windows gives up a connect after ~21 s (3 SYNs)

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


ANY4, ANY6 = bytes(4), bytes(16)
V4_MAPPED_ANY = V4_MAPPED_PREFIX + ANY4         # ::ffff:0.0.0.0, a dual-stack socket's IPv4 wildcard
LOOP4, LOOP6 = ip_bytes("127.0.0.1"), ip_bytes("::1")


def is_loopback(raw: bytes) -> bool:
    return raw[0] == 127 if len(raw) == 4 else raw == LOOP6 or is_v4_mapped(raw) and raw[12] == 127


# unmap_endpoint runs on every segment and classify: is_v4_mapped spelled out inline.
def unmap_endpoint(ep: tuple) -> tuple:
    """(ip, port) with a v4-mapped ip made plain IPv4; `ep` itself when it already is."""
    ip = ep[0]
    return (ip[12:], ep[1]) if len(ip) == 16 and ip[:12] == V4_MAPPED_PREFIX else ep


@dataclass
class Packet:
    """One segment or datagram as it crossed the simulated wire (for captures)."""
    time_ns: int
    proto: str                 # 'tcp' | 'udp' | 'icmp'
    src: tuple                 # (ip bytes, port)
    dst: tuple
    flags: int = 0
    seq: int = 0
    ack: int = 0
    payload: bytes = b""
    note: str = ""


_NO_META = types.MappingProxyType({})      # shared by the segments that carry no kernel data: read-only


@dataclass(slots=True)
class Segment:
    src: tuple
    dst: tuple
    flags: int
    seq: int = 0
    ack: int = 0
    payload: bytes = b""
    meta: dict = field(default_factory=dict)   # kernel-side data travelling with a SYN


class TcpConn:
    """One end of a TCP connection (the transport under a socket)."""

    __slots__ = ("host", "local", "remote", "state", "snd_nxt", "rcv_nxt", "rx", "socket",
                 "listener", "peer_fin", "reset", "error", "syn_timer", "meta", "sent_fin")

    def __init__(self, host, local, remote, state, iss):
        self.host = host
        self.local = local
        self.remote = remote
        self.state = state
        self.snd_nxt = iss
        self.rcv_nxt = 0
        self.rx = bytearray()
        self.socket = None
        self.listener = None
        self.peer_fin = False
        self.reset = False
        self.error = 0              # WSAE* after a failed connect or a reset
        self.syn_timer = None
        self.meta = {}
        self.sent_fin = False

    def key(self):
        return self.local + self.remote


class TcpListener:
    __slots__ = ("host", "local", "backlog", "queue", "socket", "v6only")

    def __init__(self, host, local, backlog, socket, v6only):
        self.host = host
        self.local = local
        self.backlog = backlog
        self.queue = []             # established TcpConns waiting for accept
        self.socket = socket
        self.v6only = v6only


class UdpEndpoint:
    __slots__ = ("host", "local", "socket", "queue", "pending_reset", "v6only")

    def __init__(self, host, local, socket, v6only):
        self.host = host
        self.local = local
        self.socket = socket
        self.queue = []             # (src (ip, port), dst (ip, port), payload, meta)
        self.pending_reset = False
        self.v6only = v6only


class PortIndex:
    """The (address, port) pairs one protocol uses on a host, and its ephemeral port allocator.

    `users[port | address length << 16]` counts the endpoints on each plain address (one
    endpoint's entry is its address, more are {address: count}: most ports have one), so
    "is this port taken?" is a dictionary lookup whatever the host holds; `taken[4|16]`
    marks each port any endpoint of that family uses, so the next free port of the
    dynamic range is one C-level search (bytearray.find) from the counter, with no
    stall when the counter wraps into used ports. Windows allocates ephemeral ports
    from one pool per protocol (docs/facts.md §9): a port any address of the family
    uses is not handed out again.
    """

    __slots__ = ("users", "taken", "first", "last", "next", "reserved")

    def __init__(self):
        self.users: dict = {}
        # port -> {(width, plain address): [binds with no option, SO_REUSEADDR, SO_EXCLUSIVEADDRUSE]}:
        # the bound sockets' reservations (sim/addresses.py), one dictionary lookup per bind.
        self.reserved: dict = {}
        self.taken = {4: bytearray(65536), 16: bytearray(65536)}
        self.set_range(EPHEMERAL_FIRST, EPHEMERAL_LAST - EPHEMERAL_FIRST + 1)

    def set_range(self, start: int, num: int) -> None:
        # netsh's own limits (docs/facts.md §9): start at least 1025, at least 255 ports, end at most 65535.
        if not (start >= 1025 and num >= 255 and start + num - 1 <= 65535):
            raise ValueError(f"dynamic port range start={start} num={num}: netsh takes start >= 1025, "
                             "num >= 255, start + num - 1 <= 65535")
        self.first, self.last = start, start + num - 1
        self.next = start

    def add(self, ip: bytes, port: int) -> None:
        plain = unmap(ip)
        key = port | len(plain) << 16
        on = self.users.get(key)
        if on is None:
            self.users[key] = plain             # one endpoint: its address stands for {address: 1}
            self.taken[len(plain)][port] = 1
        elif on.__class__ is bytes:
            self.users[key] = {on: 2} if on == plain else {on: 1, plain: 1}
        else:
            on[plain] = on.get(plain, 0) + 1

    def remove(self, ip: bytes, port: int) -> None:
        plain = unmap(ip)
        key = port | len(plain) << 16
        on = self.users[key]
        if on.__class__ is bytes:
            del self.users[key]
            self.taken[len(plain)][port] = 0
            return
        left = on[plain] - 1
        if left:
            on[plain] = left
        else:
            del on[plain]
            if not on:
                del self.users[key]
                self.taken[len(plain)][port] = 0

    def in_use(self, plain: bytes, port: int) -> bool:
        on = self.users.get(port | len(plain) << 16)
        if on is None:
            return False
        wildcard = ANY4 if len(plain) == 4 else ANY6
        if plain == wildcard:
            return True
        return on == plain or on == wildcard if on.__class__ is bytes else plain in on or wildcard in on

    def ephemeral(self, family_len: int) -> int:
        taken, first, last = self.taken[family_len], self.first, self.last
        start = self.next if first <= self.next <= last else first
        port = taken.find(0, start, last + 1)
        if port < 0:
            port = taken.find(0, first, start)
            if port < 0:
                return 0
        self.next = port + 1
        return port


class Endpoints(dict):
    """A host's table of endpoints keyed (local ip, local port, ...): keeps its PortIndex in step."""

    __slots__ = ("index",)

    def __init__(self, index: PortIndex):
        super().__init__()
        self.index = index

    def __setitem__(self, key, value) -> None:
        if key not in self:
            self.index.add(key[0], key[1])
        dict.__setitem__(self, key, value)

    def __delitem__(self, key) -> None:
        dict.__delitem__(self, key)
        self.index.remove(key[0], key[1])

    def pop(self, key, *default):
        if key in self:
            self.index.remove(key[0], key[1])
            return dict.pop(self, key)
        return dict.pop(self, key, *default)

    def clear(self) -> None:
        for key in self:
            self.index.remove(key[0], key[1])
        dict.clear(self)

    def setdefault(self, key, default=None):        # the other ways in: through the index too
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    def update(self, *args, **kwargs) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def popitem(self):
        key, value = dict.popitem(self)
        self.index.remove(key[0], key[1])
        return key, value


class Host:
    def __init__(self, network, name: str, addresses):
        self.network = network
        self.name = name
        self.addresses = tuple(ip_bytes(a) if isinstance(a, str) else a for a in addresses)
        self._owns: dict = {}              # address -> owns(address): asked on every segment
        self.up = True
        # Every endpoint table keeps its protocol's port index up to date (PortIndex).
        self.ports = {"tcp": PortIndex(), "udp": PortIndex()}
        self.tcp_conns: dict[tuple, TcpConn] = Endpoints(self.ports["tcp"])
        self.tcp_listeners: dict[tuple, TcpListener] = Endpoints(self.ports["tcp"])
        self.udp: dict[tuple, UdpEndpoint] = Endpoints(self.ports["udp"])
        # Sockets sharing one local address (sim/addresses.py lets them): one is in the table
        # above and gets the traffic, the others wait here in line for it to close.
        self.waiting: dict = {}            # (table, (ip, port)) -> [TcpListener or UdpEndpoint, ...]
        self._iss = itertools.count(0x1000_0000, 0x0101_0101)
        # Hook for the WFP connect-redirect layer (sim.wfp): sees every connect.
        self.connect_redirect = None
        self.bind_redirect = None          # the ALE bind-redirect layer (sim.wfp)
        self.processes = []
        # Key of the integrity tag on this host's redirect-records blobs (sim.wfp.records).
        self.records_key = hashlib.sha256(b"wfp-records:" + name.encode()).digest()

    def __repr__(self) -> str:
        return f"<Host {self.name} {[ip_text(a) for a in self.addresses]}>"

    # -- addresses ---------------------------------------------------------
    def owns(self, raw: bytes) -> bool:
        known = self._owns.get(raw)
        if known is None:
            if len(self._owns) >= 4096:
                self._owns.clear()             # a run that tries many addresses: stay bounded
            plain = unmap(raw)
            known = self._owns[raw] = is_loopback(plain) or plain in self.addresses
        return known

    def source_for(self, dst: bytes, family: int) -> bytes:
        """Source address selection (simplified RFC 6724): loopback to loopback."""
        plain = unmap(dst)
        if is_loopback(plain):
            src = LOOP4 if len(plain) == 4 else LOOP6
        elif plain in self.addresses:
            src = plain
        else:
            for src in self.addresses:             # the host's first address of the family
                if len(src) == len(plain):
                    break
            else:
                return None
        if family == AF_INET6 and len(src) == 4:
            return v4_mapped(src)
        return src

    def port_in_use(self, proto: str, ip: bytes, port: int) -> bool:
        """Is (ip, port) taken in the same address family (IPv4 and IPv6 tables are separate)?"""
        return self.ports[proto].in_use(unmap(ip), port)

    def ephemeral_port(self, proto: str, ip: bytes) -> int:
        """The next free port of the dynamic range (docs/facts.md §9), or 0 when all are taken."""
        return self.ports[proto].ephemeral(len(unmap(ip)))

    def set_dynamic_ports(self, proto: str, start: int, num: int) -> None:
        """`netsh int ipv4 set dynamicport <proto> start=<start> num=<num>` for this host."""
        self.ports[proto].set_range(start, num)

    # -- sockets sharing an address ------------------------------------------
    def add_endpoint(self, table: dict, endpoint, newest_first: bool = False) -> None:
        """Put a listener or UDP endpoint in its table; one already there on the same address keeps
        the traffic (or, `newest_first`, hands it over) and the other waits in line."""
        key = endpoint.local
        held = table.get(key)
        if held is None:
            table[key] = endpoint
            return
        line = self.waiting.setdefault((id(table), key), [])
        if newest_first:
            line.insert(0, held)
            table[key] = endpoint
        else:
            line.append(endpoint)

    def remove_endpoint(self, table: dict, endpoint) -> None:
        """Take a listener or UDP endpoint out; the next in line on its address takes its place."""
        key = endpoint.local
        line = self.waiting.get((id(table), key))
        if table.get(key) is endpoint:
            if line:
                table[key] = line.pop(0)
            else:
                del table[key]
        elif line and endpoint in line:
            line.remove(endpoint)
        else:
            return
        if line is not None and not line:
            del self.waiting[(id(table), key)]

    # -- TCP ---------------------------------------------------------------
    def tcp_connect(self, socket, local, remote, meta) -> TcpConn:
        conn = TcpConn(self, local, remote, "SYN_SENT", next(self._iss) & 0xFFFFFFFF)
        conn.socket = socket
        conn.meta = meta
        self.tcp_conns[conn.key()] = conn
        self.network.send_tcp(self, conn, SYN, meta=meta)
        conn.snd_nxt = (conn.snd_nxt + 1) & 0xFFFFFFFF
        kernel = self.network.kernel
        conn.syn_timer = kernel.scheduler.call_later(SYN_TIMEOUT_NS, self._syn_timeout, "syn-timeout", conn)
        return conn

    @staticmethod
    def _stop_syn_timer(conn) -> None:
        # Dropped, not just cancelled: the timer holds the connection, which would make a cycle.
        timer = conn.syn_timer
        if timer is not None:
            conn.syn_timer = None
            timer.cancel()

    def _syn_timeout(self, conn):
        conn.syn_timer = None
        if conn.state == "SYN_SENT":
            self._fail(conn, 10060)   # WSAETIMEDOUT

    def _fail(self, conn, error):
        self._stop_syn_timer(conn)
        conn.state = "CLOSED"
        conn.error = error
        self.tcp_conns.pop(conn.key(), None)
        if conn.socket is not None:
            conn.socket.on_transport_event()
        self.network.kernel.poke()

    def _find_listener(self, dst):
        ip, port = dst
        lst = self.tcp_listeners.get(dst)
        if lst is None:
            plain = unmap(ip)
            # The exact address (v4-mapped on a dual-stack socket) before the wildcards (Wine
            # test_reuseaddr on Windows: a loopback listener beside a wildcard one gets the
            # connection); then 0.0.0.0, ::ffff:0.0.0.0, and :: on a dual-stack socket.
            candidates = ([(v4_mapped(plain), port), (ANY4, port), (V4_MAPPED_ANY, port), (ANY6, port)]
                          if len(plain) == 4 else [(ANY6, port)])
            for cand in candidates:
                lst = self.tcp_listeners.get(cand)
                if lst is not None and not (len(cand[0]) == 16 and len(plain) == 4 and lst.v6only):
                    break
                lst = None
        return lst

    def receive_tcp(self, seg: Segment) -> None:
        if not self.up:
            return
        conn = self.tcp_conns.get(seg.dst + seg.src)
        if conn is None and len(seg.dst[0]) == 4:
            conn = self.tcp_conns.get((v4_mapped(seg.dst[0]), seg.dst[1], v4_mapped(seg.src[0]), seg.src[1]))
        if conn is None:
            if seg.flags & SYN and not seg.flags & ACK:
                self._on_syn(seg)
            elif not seg.flags & RST:
                self.network.send_raw(self, Segment(seg.dst, seg.src, RST | ACK, seg.ack,
                                                    (seg.seq + len(seg.payload)) & 0xFFFFFFFF))
            return
        if seg.flags & RST:
            if conn.state == "SYN_SENT":
                self._fail(conn, 10061)          # WSAECONNREFUSED
            else:
                conn.reset = True
                self._fail(conn, 10054)          # WSAECONNRESET
            return
        if conn.state == "SYN_SENT" and seg.flags & SYN and seg.flags & ACK:
            conn.rcv_nxt = (seg.seq + 1) & 0xFFFFFFFF
            conn.state = "ESTABLISHED"
            self._stop_syn_timer(conn)
            self.network.send_tcp(self, conn, ACK)
        elif conn.state == "SYN_RCVD" and seg.flags & ACK:
            conn.state = "ESTABLISHED"
            lst = conn.listener
            if lst is not None and self.tcp_listeners.get(lst.local) is lst:
                lst.queue.append(conn)
                if lst.socket is not None:
                    lst.socket.on_transport_event()
            else:   # the listener went away during the handshake
                self.tcp_abort(conn)
                return
        if seg.payload:
            conn.rx += seg.payload
            conn.rcv_nxt = (conn.rcv_nxt + len(seg.payload)) & 0xFFFFFFFF
        if seg.flags & FIN:
            conn.peer_fin = True
            conn.rcv_nxt = (conn.rcv_nxt + 1) & 0xFFFFFFFF
            if conn.sent_fin:
                self.tcp_conns.pop(conn.key(), None)
        if conn.socket is not None:
            conn.socket.on_transport_event()
        self.network.kernel.poke()

    def _on_syn(self, seg: Segment) -> None:
        lst = self._find_listener(seg.dst)
        if "redirect" in seg.meta:
            lst = self._redirect_target(lst, seg.dst, seg.meta, "connection")
        if lst is None or len(lst.queue) >= lst.backlog:
            # No listener, or a full backlog (simplified: refused, not retried).
            self.network.send_raw(self, Segment(seg.dst, seg.src, RST | ACK, 0, (seg.seq + 1) & 0xFFFFFFFF))
            return
        local = seg.dst if len(lst.local[0]) == len(seg.dst[0]) else (v4_mapped(seg.dst[0]), seg.dst[1])
        remote = seg.src if len(local[0]) == len(seg.src[0]) else (v4_mapped(seg.src[0]), seg.src[1])
        conn = TcpConn(self, local, remote, "SYN_RCVD", next(self._iss) & 0xFFFFFFFF)
        conn.rcv_nxt = (seg.seq + 1) & 0xFFFFFFFF
        conn.listener = lst
        conn.meta = seg.meta
        self.tcp_conns[conn.key()] = conn
        self.network.send_tcp(self, conn, SYN | ACK)
        conn.snd_nxt = (conn.snd_nxt + 1) & 0xFFFFFFFF

    def _redirect_target(self, endpoint, dst, meta, what: str):
        """`endpoint` if its process is the redirect's localRedirectTargetPID, else None, with a diagnostic:
        a redirected flow is delivered only to that process (docs/decisions.md §5; FWPS_CONNECT_REQUEST0)."""
        pid = meta.get("redirect_target_pid")
        owner = endpoint.socket.process.pid if endpoint is not None and endpoint.socket is not None else None
        if owner == pid:
            return endpoint
        where = f"{ip_text(unmap(dst[0]))}:{dst[1]}"
        why = "nothing listens there" if owner is None else f"the socket there belongs to pid {owner}"
        self.network.kernel.note("redirect-target-refused", f"redirected {what} to {where} for pid {pid} "
                                 f"refused: {why} (a redirected flow goes only to its localRedirectTargetPID)")
        return None

    def tcp_send(self, conn: TcpConn, data: bytes) -> None:
        self.network.send_tcp(self, conn, PSH | ACK, data)
        conn.snd_nxt = (conn.snd_nxt + len(data)) & 0xFFFFFFFF

    def tcp_fin(self, conn: TcpConn) -> None:
        if conn.sent_fin or conn.state not in ("ESTABLISHED", "SYN_RCVD"):
            return
        conn.sent_fin = True
        self.network.send_tcp(self, conn, FIN | ACK)
        conn.snd_nxt = (conn.snd_nxt + 1) & 0xFFFFFFFF
        if conn.peer_fin:
            self.tcp_conns.pop(conn.key(), None)

    def tcp_abort(self, conn: TcpConn) -> None:
        if conn.state in ("ESTABLISHED", "SYN_RCVD", "SYN_SENT") and not conn.reset:
            self.network.send_tcp(self, conn, RST | ACK)
        conn.state = "CLOSED"
        self._stop_syn_timer(conn)
        self.tcp_conns.pop(conn.key(), None)

    # -- UDP ---------------------------------------------------------------
    def udp_endpoint(self, local):
        """The UDP endpoint that owns local address `local` (ip as on the wire, port): bound to
        it exactly, or to the wildcard of its family, or dual-stack to :: for IPv4."""
        ep = self.udp.get(local)
        if ep is None:
            ip, port = local
            plain = unmap(ip)
            for cand in ([(v4_mapped(plain), port), (ANY4, port), (V4_MAPPED_ANY, port), (ANY6, port)]
                         if len(plain) == 4 else [(ANY6, port)]):     # the order of _find_listener
                ep = self.udp.get(cand)
                if ep is not None and not (len(cand[0]) == 16 and len(plain) == 4 and ep.v6only):
                    break
                ep = None
        return ep

    def receive_udp(self, src, dst, payload, meta) -> None:
        if not self.up:
            return
        ep = self.udp_endpoint(dst)
        if "redirect" in meta:
            ep = self._redirect_target(ep, dst, meta, "datagram")
        if ep is not None and ep.socket is not None and ep.socket.peer is not None:
            peer_ip, peer_port = ep.socket.peer
            if (unmap(peer_ip), peer_port) != (unmap(src[0]), src[1]):
                return      # a connected UDP socket takes datagrams from its peer only (connect page)
        if ep is None:
            # ICMP port unreachable goes back to the sender (SIO_UDP_CONNRESET default on).
            self.network.send_icmp_unreachable(self, dst, src)
            return
        ep.queue.append((src, dst, payload, meta))
        if ep.socket is not None:
            ep.socket.on_transport_event()
        self.network.kernel.poke()

    def receive_icmp_unreachable(self, src_of_datagram) -> None:
        # The socket that sent the datagram, however it was bound: to the address, to the
        # wildcard, or implicitly by its first sendto (which binds to the wildcard).
        ep = self.udp_endpoint(src_of_datagram)
        if ep is None or not self.up:
            return
        if ep.socket is not None and not ep.socket.udp_connreset:
            # SIO_UDP_CONNRESET FALSE: "Set to FALSE to disable reporting" (winsock-ioctls
            # page); a message arriving while reporting is off is dropped, not kept for later.
            return
        ep.pending_reset = True
        if ep.socket is not None:
            ep.socket.on_transport_event()
        self.network.kernel.poke()


class Network:
    def __init__(self, kernel):
        self.kernel = kernel
        self.hosts: list[Host] = []
        self.by_address: dict[bytes, Host] = {}
        self.packets: list[Packet] = []
        self.record = True
        self.loopback_latency_ns = LOOPBACK_LATENCY_NS
        self.link_latency_ns = LINK_LATENCY_NS

    def add_host(self, name: str, addresses) -> Host:
        host = Host(self, name, addresses)
        for a in host.addresses:
            if a in self.by_address:
                raise ValueError(f"address {ip_text(a)} already belongs to {self.by_address[a].name}")
            self.by_address[a] = host
        self.hosts.append(host)
        return host

    def _route(self, src_host: Host, dst_ip: bytes):
        if src_host.owns(dst_ip):
            return src_host, self.loopback_latency_ns
        return self.by_address.get(unmap(dst_ip)), self.link_latency_ns

    def _log(self, proto, src, dst, flags=0, seq=0, ack=0, payload=b"", note=""):
        if self.record:
            self.packets.append(Packet(self.kernel.now_ns, proto, (unmap(src[0]), src[1]),
                                       (unmap(dst[0]), dst[1]), flags, seq, ack, bytes(payload), note))

    def send_tcp(self, host: Host, conn: TcpConn, flags: int, payload: bytes = b"", meta=None) -> None:
        self.send_raw(host, Segment(conn.local, conn.remote, flags, conn.snd_nxt,
                                    conn.rcv_nxt if flags & ACK else 0, payload, meta or _NO_META))

    def send_raw(self, host: Host, seg: Segment) -> None:
        """Put a segment we own on the wire: on the wire addresses are plain IPv4 or IPv6."""
        if not host.up:
            return
        if len(seg.src[0]) == 16:          # plain IPv4 (the common case) needs no unmapping
            seg.src = unmap_endpoint(seg.src)
        dst = seg.dst
        if len(dst[0]) == 16:
            seg.dst = dst = unmap_endpoint(dst)
        if self.record:
            note = seg.meta.get("note", "") if seg.flags & SYN and not seg.flags & ACK else ""
            self._log("tcp", seg.src, dst, seg.flags, seg.seq, seg.ack, seg.payload, note)
        target, latency = self._route(host, dst[0])
        if target is not None:
            self.kernel.scheduler.post(latency, target.receive_tcp, seg)

    def send_udp(self, host: Host, src, dst, payload: bytes, meta=None) -> bool:
        if not host.up:
            return False
        src = (unmap(src[0]), src[1])
        dst = (unmap(dst[0]), dst[1])
        self._log("udp", src, dst, payload=payload, note=(meta or {}).get("note", ""))
        target, latency = self._route(host, dst[0])
        if target is None:
            return True
        meta = meta or {}
        self.kernel.scheduler.post(latency, target.receive_udp, src, dst, payload, meta)
        return True

    def send_icmp_unreachable(self, host: Host, unreachable_dst, back_to) -> None:
        self._log("icmp", unreachable_dst, back_to, note="port unreachable")
        target, latency = self._route(host, back_to[0])
        if target is not None:
            self.kernel.scheduler.post(latency, target.receive_icmp_unreachable, back_to)
