"""Data structures of the packet-evidence analysis (plain dataclasses, JSON-ready via to_dict)."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import NamedTuple
from harness.winsock.sockaddr import host_port


class HostPort(NamedTuple):
    """(ip text, port); str() gives 192.0.2.1:80 or [2001:db8::1]:80."""
    ip: str
    port: int

    def __str__(self) -> str:
        return host_port(self.ip, self.port)

    @property
    def is_loopback(self) -> bool:
        return ipaddress.ip_address(self.ip).is_loopback

    @classmethod
    def parse(cls, text: str) -> HostPort:
        """'192.0.2.1:80', '[2001:db8::1]:80' (also a bare IPv4-mapped form) -> HostPort."""
        text = text.strip().rstrip(".,;")
        m = re.fullmatch(r"\[([^\]]+)\]:(\d+)", text)
        if m:
            ip, port = m.group(1), m.group(2)
        else:
            ip, _sep, port = text.rpartition(":")
        try:
            addr = ipaddress.ip_address(ip.split("%")[0])
        except ValueError:
            addr = None
        if addr is None or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"not an address:port: {text} (e.g. 192.0.2.1:80 or [2001:db8::1]:80)")
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        return cls(str(addr), int(port))


def endpoint(value) -> HostPort:
    """HostPort from an HostPort, 'ip:port' text or an (ip, port) tuple (ip as text or bytes)."""
    if isinstance(value, HostPort):
        return value
    if isinstance(value, str):
        return HostPort.parse(value)
    ip, port = value
    addr = ipaddress.ip_address(bytes(ip) if isinstance(ip, (bytes, bytearray)) else ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return HostPort(str(addr), int(port))


def _text(ep: HostPort | None) -> str | None:
    return str(ep) if ep is not None else None


# 'redirected by <vendor> to <addr>; original <addr>' (tolerant of small variations)
_ADDR = r"(\[[^\]]+\]:\d+|[0-9A-Fa-f.:]+:\d+)"
NOTE_RE = re.compile(r"redirected\s+by\s+(?P<vendor>.+?)\s+to\s+(?:proxy\s+)?(?P<to>" + _ADDR + r")"
                     r"(?:.*?original(?:\s+destination)?\s*[:=]?\s*(?P<orig>" + _ADDR + r"))?",
                     re.IGNORECASE)


@dataclass
class RedirectNote:
    vendor: str
    to: HostPort | None
    original: HostPort | None


def parse_note(text: str) -> RedirectNote | None:
    m = NOTE_RE.search(text or "")
    if not m:
        return None

    def ep(s):
        try:
            return HostPort.parse(s) if s else None
        except ValueError:
            return None
    return RedirectNote(m.group("vendor").strip(), ep(m.group("to")), ep(m.group("orig")))


@dataclass
class TcpConnection:
    """One TCP connection reconstructed from the capture (client = the SYN sender)."""
    id: int
    client: HostPort
    server: HostPort
    first_ns: int
    last_ns: int
    packets: int = 0
    syn: bool = False                  # client's SYN seen
    syn_ack: bool = False              # server's SYN-ACK seen
    handshake: bool = False            # SYN, SYN-ACK and the client's ACK seen
    syn_retransmits: int = 0
    syn_ack_ns: int | None = None      # when the server's SYN-ACK was seen
    client_isn: int | None = None
    server_isn: int | None = None
    fin_client: bool = False
    fin_server: bool = False
    rst_client: bool = False
    rst_server: bool = False
    refused: bool = False              # RST answering the SYN
    data_c2s: bytes = b""              # reassembled, contiguous from the first byte
    data_s2c: bytes = b""
    bytes_c2s: int = 0                 # distinct payload bytes seen (may exceed len(data_*) after a gap)
    bytes_s2c: int = 0
    retransmitted_bytes: int = 0
    gap_c2s: bool = False              # bytes missing from the capture in that direction
    gap_s2c: bool = False
    first_data_c2s_ns: int | None = None
    first_data_s2c_ns: int | None = None
    comments: list = field(default_factory=list)
    redirect: RedirectNote | None = None
    loopback: bool = False

    proto = "tcp"

    @property
    def established(self) -> bool:
        """The server answered (SYN-ACK seen, or, for a capture that began mid-connection, data from it)."""
        return self.syn_ack or (not self.syn and (self.bytes_s2c > 0 or self.fin_server))

    @property
    def no_answer(self) -> bool:
        return self.syn and not self.syn_ack and not self.refused

    @property
    def reset(self) -> bool:
        return self.rst_client or self.rst_server

    @property
    def state(self) -> str:
        if self.refused:
            return "refused"
        if self.no_answer:
            return "no-answer"
        if self.reset:
            return "reset"
        if self.fin_client and self.fin_server:
            return "closed"
        if self.fin_client or self.fin_server:
            return "half-closed"
        return "open"

    def to_dict(self) -> dict:
        return {"id": self.id, "proto": "tcp", "client": str(self.client), "server": str(self.server),
                "first_ns": self.first_ns, "last_ns": self.last_ns, "packets": self.packets,
                "handshake": self.handshake, "syn": self.syn, "syn_ack": self.syn_ack,
                "state": self.state, "fin_client": self.fin_client, "fin_server": self.fin_server,
                "rst_client": self.rst_client, "rst_server": self.rst_server, "refused": self.refused,
                "bytes_c2s": self.bytes_c2s, "bytes_s2c": self.bytes_s2c,
                "retransmitted_bytes": self.retransmitted_bytes,
                "gap_c2s": self.gap_c2s, "gap_s2c": self.gap_s2c, "comments": list(self.comments)}


@dataclass
class UdpFlow:
    """UDP datagrams between two endpoints with no idle gap longer than the timeout (client = first sender)."""
    id: int
    client: HostPort
    server: HostPort
    first_ns: int
    last_ns: int
    packets: int = 0
    datagrams_c2s: list = field(default_factory=list)     # payloads, in order
    datagrams_s2c: list = field(default_factory=list)
    first_data_c2s_ns: int | None = None
    first_data_s2c_ns: int | None = None
    icmp_unreachable: bool = False
    comments: list = field(default_factory=list)
    redirect: RedirectNote | None = None
    loopback: bool = False

    proto = "udp"

    @property
    def bytes_c2s(self) -> int:
        return sum(map(len, self.datagrams_c2s))

    @property
    def bytes_s2c(self) -> int:
        return sum(map(len, self.datagrams_s2c))

    @property
    def data_c2s(self) -> bytes:
        return b"".join(self.datagrams_c2s)

    @property
    def data_s2c(self) -> bytes:
        return b"".join(self.datagrams_s2c)

    @property
    def established(self) -> bool:
        return not self.icmp_unreachable

    @property
    def state(self) -> str:
        if self.icmp_unreachable:
            return "port-unreachable"
        return "answered" if self.datagrams_s2c else "unanswered"

    def to_dict(self) -> dict:
        return {"id": self.id, "proto": "udp", "client": str(self.client), "server": str(self.server),
                "first_ns": self.first_ns, "last_ns": self.last_ns, "packets": self.packets,
                "datagrams_c2s": len(self.datagrams_c2s), "datagrams_s2c": len(self.datagrams_s2c),
                "bytes_c2s": self.bytes_c2s, "bytes_s2c": self.bytes_s2c, "state": self.state,
                "icmp_unreachable": self.icmp_unreachable, "comments": list(self.comments)}


@dataclass
class Hop:
    """One leg of a proxied flow: a connection from src to dst (a proxy, or the final destination)."""
    index: int                         # 0 = the client's own connection
    proto: str
    src: HostPort
    dst: HostPort
    to_proxy: bool                     # dst is a proxy that relayed onwards (or a known proxy)
    bytes_c2s: int
    bytes_s2c: int
    state: str                         # TcpConnection.state / UdpFlow.state
    established: bool
    intact_c2s: bool | None            # this leg's c2s bytes == the previous leg's (None for hop 0)
    intact_s2c: bool | None
    evidence: str                      # why this leg follows the previous: 'bytes', 'note', 'timing', 'first'
    first_ns: int
    last_ns: int
    redirected_by: str | None = None
    original_destination: HostPort | None = None
    connection: object = None          # the TcpConnection or UdpFlow

    def to_dict(self) -> dict:
        return {"index": self.index, "proto": self.proto, "src": str(self.src), "dst": str(self.dst),
                "to_proxy": self.to_proxy, "bytes_c2s": self.bytes_c2s, "bytes_s2c": self.bytes_s2c,
                "state": self.state, "established": self.established,
                "intact_c2s": self.intact_c2s, "intact_s2c": self.intact_s2c, "evidence": self.evidence,
                "first_ns": self.first_ns, "last_ns": self.last_ns, "redirected_by": self.redirected_by,
                "original_destination": _text(self.original_destination),
                "connection_id": getattr(self.connection, "id", None)}


@dataclass
class ProxiedFlow:
    """One original flow followed through every proxy it passed.

    hops[0] is the client's connection. proxies lists the proxy of every hop
    that went to one, in order (a loop repeats it; distinct_proxies does
    not). final_destination is where the flow ended up, None when it never
    reached a destination (a loop, a refusal, no answer, a chain ending at a
    proxy); last_destination is the last hop's destination either way.
    intact_c2s / intact_s2c: the destination got exactly what the client
    sent / the client got exactly what the destination sent (so never true
    for a flow that reached nothing).
    verdict: 'ok', 'loop', 'unreached', 'reset' (reached, but a leg was reset)
    or 'altered' (reached, bytes changed on the way).
    """
    id: int
    proto: str
    client: HostPort
    hops: list
    proxies: list
    final_destination: HostPort | None
    original_destination: HostPort | None
    reached: bool
    loop: bool
    loop_chain: list                   # endpoints visited, in order, when loop
    intact_c2s: bool
    intact_s2c: bool
    bytes_c2s: int                     # what the client sent / received
    bytes_s2c: int
    reset: bool
    verdict: str
    reasons: list = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return self.intact_c2s and self.intact_s2c

    @property
    def distinct_proxies(self) -> list:
        """The proxies passed, each once, in the order first visited."""
        return list(dict.fromkeys(self.proxies))

    @property
    def last_destination(self) -> HostPort:
        return self.hops[-1].dst

    @property
    def chain(self) -> list:
        """[client, proxy, ..., last destination]."""
        return [self.client] + [h.dst for h in self.hops]

    def to_dict(self) -> dict:
        return {"id": self.id, "proto": self.proto, "client": str(self.client),
                "proxies": [str(p) for p in self.proxies],
                "distinct_proxies": [str(p) for p in self.distinct_proxies],
                "final_destination": _text(self.final_destination),
                "original_destination": _text(self.original_destination),
                "last_destination": str(self.last_destination),
                "reached": self.reached, "loop": self.loop, "loop_chain": [str(e) for e in self.loop_chain],
                "intact": self.intact, "intact_c2s": self.intact_c2s, "intact_s2c": self.intact_s2c,
                "bytes_c2s": self.bytes_c2s, "bytes_s2c": self.bytes_s2c, "reset": self.reset,
                "verdict": self.verdict, "reasons": list(self.reasons),
                "hops": [h.to_dict() for h in self.hops]}


@dataclass
class Analysis:
    """Everything reconstructed from one capture."""
    source: str
    packets: int
    connections: list
    udp_flows: list
    flows: list
    local_addresses: set
    proxies: set
    warnings: list = field(default_factory=list)

    @property
    def loops(self) -> list:
        return [f for f in self.flows if f.loop]

    @property
    def unreached(self) -> list:
        """Flows that reached no destination (loops included: a loop never gets there)."""
        return [f for f in self.flows if not f.reached]

    @property
    def problems(self) -> list:
        return [f for f in self.flows if f.loop or not f.reached]

    @property
    def proxied(self) -> list:
        return [f for f in self.flows if f.proxies]

    def flows_from(self, client) -> list:
        client = endpoint(client)
        return [f for f in self.flows if f.client == client]

    def flows_to(self, destination) -> list:
        destination = endpoint(destination)
        return [f for f in self.flows if destination in (f.last_destination, f.original_destination)]

    def summary(self) -> dict:
        return {"tcp_connections": len(self.connections), "udp_flows": len(self.udp_flows),
                "flows": len(self.flows), "proxied": len(self.proxied),
                "loops": len(self.loops), "unreached": len(self.unreached)}

    def to_dict(self) -> dict:
        return {"source": self.source, "packets": self.packets, "summary": self.summary(),
                "local_addresses": sorted(self.local_addresses),
                "proxies": sorted(str(p) for p in self.proxies),
                "flows": [f.to_dict() for f in self.flows],
                "connections": [c.to_dict() for c in self.connections],
                "udp_flows": [u.to_dict() for u in self.udp_flows],
                "warnings": list(self.warnings)}
