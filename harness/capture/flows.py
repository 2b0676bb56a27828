"""Reconstruct TCP connections, UDP flows and proxied flows (hop chains) from capture records.

How a hop is recognised. A WFP connect-redirect makes the client's SYN go
to a proxy (usually on loopback); the proxy then opens its own connection
(leg B) and relays. Leg B follows leg A when:

* bytes: B carries the same client->server byte stream as A (the first
  bytes, up to MATCH_PREFIX, are equal once each stream is reassembled, so
  segmentation and retransmission do not matter) and/or A carries B's
  server->client bytes; B's copy of the c2s bytes starts no earlier than
  A's, and A's copy of the s2c bytes no earlier than B's; no direction
  contradicts the other;
* note: no bytes to compare, but pcapng comments from the simulator say A
  was redirected with original destination D and B goes to D (or was itself
  redirected with original destination D);
* timing: no bytes and no note, A goes to a local address (loopback, an
  address seen on a loopback interface, or one the caller names), B starts
  while A is alive, from the same machine as A's server (the same address,
  both loopback, or loopback plus a known local address).

Candidates are ranked (evidence, same-machine affinity, length of the
matching prefix, closeness in time) and assigned one to one, best first.
The search is near-linear: legs are looked up through indexes (leading
bytes, note destinations, local clients) rather than compared pairwise, and
legs alike in everything but their start time (a loop's legs, repeated
requests) form one group in which only the earliest free fit is a candidate.
Chains start at legs nobody relayed into. A chain that visits the same proxy
twice (local addresses of one machine count as one) is a loop; so is a
chain of more than MAX_LOCAL_HOPS local hops that never leaves the machine.
"""
from __future__ import annotations

import bisect
import functools
import heapq
import ipaddress
from collections import Counter
from typing import NamedTuple

from harness.capture.model import (
    Analysis,
    HostPort,
    Hop,
    ProxiedFlow,
    TcpConnection,
    UdpFlow,
    endpoint,
    parse_note,
)
from harness.capture.text import nbytes, times

SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04
UDP_IDLE_TIMEOUT_NS = 60 * 1_000_000_000
MATCH_PREFIX = 64
MAX_LOCAL_HOPS = 4


def _signed32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= 1 << 31 else x


@functools.lru_cache(maxsize=65536)     # asked for every pair of legs; a capture has few addresses
def _is_loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip).is_loopback


# -- TCP ---------------------------------------------------------------------------

def _reassemble(segs, isn):
    """(contiguous data, distinct bytes, retransmitted bytes, gap, first data time)."""
    if not segs:
        return b"", 0, 0, False, None
    base = (isn + 1) if isn is not None else segs[0][1]
    placed = sorted((_signed32(seq - base), t, data) for t, seq, data in segs)
    start = 0 if isn is not None else min(p[0] for p in placed)
    stream = bytearray()
    pos = start
    gap = False
    covered_end = start
    distinct = 0
    total = 0
    for off, _t, data in placed:
        total += len(data)
        end = off + len(data)
        if off < start:                  # before the stream's first byte: bogus / pre-SYN
            continue
        if end > covered_end:
            distinct += end - max(off, covered_end)
            covered_end = end
        if gap:
            continue
        if off > pos:
            gap = True
            continue
        if end > pos:
            stream += data[pos - off:]
            pos = end
    return bytes(stream), distinct, max(0, total - distinct), gap, min(t for t, _s, _d in segs)


def build_tcp(records) -> list[TcpConnection]:
    conns: list[TcpConnection] = []
    segs: dict[int, dict] = {}
    current: dict = {}
    for rec in records:
        if rec.proto != "tcp":
            continue
        key = frozenset((rec.src, rec.dst))
        conn = current.get(key)
        syn_only = rec.flags & SYN and not rec.flags & ACK
        if conn is not None and syn_only:
            ended = (conn.fin_client and conn.fin_server) or conn.reset
            if rec.src != conn.client or ended or (conn.client_isn is not None and rec.seq != conn.client_isn):
                conn = None
        if conn is None:
            if syn_only:
                client, server = rec.src, rec.dst
            elif rec.flags & SYN:                    # SYN-ACK: the sender is the server
                client, server = rec.dst, rec.src
            elif rec.src.port >= 49152 > rec.dst.port:
                client, server = rec.src, rec.dst
            elif rec.dst.port >= 49152 > rec.src.port:
                client, server = rec.dst, rec.src
            else:
                client, server = rec.src, rec.dst
            conn = TcpConnection(len(conns) + 1, client, server, rec.time_ns, rec.time_ns)
            conns.append(conn)
            segs[conn.id] = {"c2s": [], "s2c": []}
            current[key] = conn
        c2s = rec.src == conn.client
        conn.packets += 1
        conn.first_ns = min(conn.first_ns, rec.time_ns)
        conn.last_ns = max(conn.last_ns, rec.time_ns)
        conn.loopback = conn.loopback or rec.loopback
        for comment in rec.comments:
            if comment not in conn.comments:
                conn.comments.append(comment)
            note = parse_note(comment)
            if note is not None and conn.redirect is None:
                conn.redirect = note
        flags = rec.flags
        if flags & SYN and not flags & ACK and c2s:
            if conn.syn:
                conn.syn_retransmits += 1
            conn.syn = True
            conn.client_isn = rec.seq
        elif flags & SYN and flags & ACK and not c2s:
            conn.syn_ack = True
            conn.server_isn = rec.seq
            if conn.syn_ack_ns is None:
                conn.syn_ack_ns = rec.time_ns
        elif flags & ACK and c2s and conn.syn and conn.syn_ack and not flags & RST:
            conn.handshake = True
        if flags & RST:
            if c2s:
                conn.rst_client = True
            else:
                conn.rst_server = True
                if conn.syn and not conn.syn_ack:
                    conn.refused = True
        if flags & FIN:
            if c2s:
                conn.fin_client = True
            else:
                conn.fin_server = True
        if rec.payload:
            segs[conn.id]["c2s" if c2s else "s2c"].append((rec.time_ns, rec.seq, rec.payload))
    for conn in conns:
        s = segs[conn.id]
        (conn.data_c2s, conn.bytes_c2s, r1, conn.gap_c2s,
         conn.first_data_c2s_ns) = _reassemble(s["c2s"], conn.client_isn)
        (conn.data_s2c, conn.bytes_s2c, r2, conn.gap_s2c,
         conn.first_data_s2c_ns) = _reassemble(s["s2c"], conn.server_isn)
        conn.retransmitted_bytes = r1 + r2
    return conns


# -- UDP ---------------------------------------------------------------------------

def build_udp(records, idle_timeout_ns: int = UDP_IDLE_TIMEOUT_NS) -> list[UdpFlow]:
    flows: list[UdpFlow] = []
    current: dict = {}
    for rec in records:
        if rec.proto == "udp":
            key = frozenset((rec.src, rec.dst))
            flow = current.get(key)
            if flow is None or rec.time_ns - flow.last_ns > idle_timeout_ns:
                flow = UdpFlow(len(flows) + 1, rec.src, rec.dst, rec.time_ns, rec.time_ns)
                flows.append(flow)
                current[key] = flow
            flow.packets += 1
            flow.last_ns = max(flow.last_ns, rec.time_ns)
            flow.loopback = flow.loopback or rec.loopback
            for comment in rec.comments:
                if comment not in flow.comments:
                    flow.comments.append(comment)
                note = parse_note(comment)
                if note is not None and flow.redirect is None:
                    flow.redirect = note
            if rec.src == flow.client:
                flow.datagrams_c2s.append(rec.payload)
                if flow.first_data_c2s_ns is None:
                    flow.first_data_c2s_ns = rec.time_ns
            else:
                flow.datagrams_s2c.append(rec.payload)
                if flow.first_data_s2c_ns is None:
                    flow.first_data_s2c_ns = rec.time_ns
        elif rec.proto == "icmp" and rec.icmp_unreachable and rec.icmp_unreachable[0] == "udp":
            _, sender, target = rec.icmp_unreachable
            flow = current.get(frozenset((sender, target)))
            if flow is not None and flow.first_ns <= rec.time_ns:
                flow.icmp_unreachable = True
                flow.packets += 1
                flow.last_ns = max(flow.last_ns, rec.time_ns)
    return flows


# -- chaining ----------------------------------------------------------------------

def _prefix_match(a: bytes, b: bytes):
    """None when a side has no bytes; else (matches, common prefix length)."""
    if not a or not b:
        return None
    n = min(len(a), len(b), MATCH_PREFIX)
    if a[:n] != b[:n]:
        return False, 0
    common = n
    limit = min(len(a), len(b))
    while common < limit and a[common:common + 4096] == b[common:common + 4096]:
        common = min(limit, common + 4096)
    return True, common


def _udp_match(a: list, b: list):
    if not a or not b:
        return None
    if a[0][:MATCH_PREFIX] != b[0][:MATCH_PREFIX]:
        return False, 0
    return True, sum(len(x) for x, y in zip(a, b) if x == y)


class _Link(NamedTuple):
    """How leg B could continue leg A, from everything but when B started (the same for a whole _Group)."""
    score: tuple                       # (level, affinity, common prefix length)
    evidence: str
    c2s: bool                          # B's c2s bytes were compared with A's
    s2c: bool
    during: bool                       # B must start while A is open
    latest: float                      # no B starting after this can fit


class _Group:
    """Legs that are interchangeable as the continuation of any leg A: the same bytes
    both ways, client address, server and redirect note. Only their start times
    differ, and for a given A an earlier one always ranks higher, so A needs to
    look at one member at a time: the earliest that fits and is still free."""

    def __init__(self, legs):
        self.legs = legs                               # sorted by (first_ns, id)
        self.starts = [leg.first_ns for leg in legs]
        self._next = list(range(len(legs) + 1))        # union-find: the next free position

    def free(self, pos: int) -> int:
        """The first position >= pos whose leg has no parent yet (len(legs) if none)."""
        root = pos
        while self._next[root] != root:
            root = self._next[root]
        while self._next[pos] != root:                 # path compression: each taken leg is skipped once
            self._next[pos], pos = root, self._next[pos]
        return root

    def take(self, pos: int) -> None:
        self._next[pos] = pos + 1


def _group_key(leg):
    if leg.proto == "udp":
        data = (tuple(leg.datagrams_c2s), tuple(leg.datagrams_s2c))
    else:
        data = (leg.data_c2s, leg.data_s2c)
    return data + (leg.client.ip, leg.server, leg.redirect.original if leg.redirect else None)


def _byte_key(leg, c2s: bool) -> bytes:
    """What the byte index files a leg under: the first MATCH_PREFIX bytes of a direction
    (TCP: of the stream; UDP: of the first datagram); b'' when it carried none."""
    if leg.proto == "udp":
        grams = leg.datagrams_c2s if c2s else leg.datagrams_s2c
        return grams[0][:MATCH_PREFIX] if grams else b""
    return (leg.data_c2s if c2s else leg.data_s2c)[:MATCH_PREFIX]


class _ByteIndex:
    """Groups by the leading bytes of one direction. Two TCP streams can match when one's
    key is a prefix of the other's (a short stream against a longer one); UDP datagrams
    when the keys are equal."""

    def __init__(self, groups, c2s: bool):
        self.c2s = c2s
        self.exact: dict = {}
        for g in groups:
            key = _byte_key(g.legs[0], c2s)
            if key:
                self.exact.setdefault(key, []).append(g)
        self.short = sorted({len(k) for k in self.exact if len(k) < MATCH_PREFIX})
        self.extended: dict = {}                       # short key -> groups whose longer key starts with it
        for key, gs in self.exact.items():
            for n in self.short:
                if n >= len(key):
                    break
                if key[:n] in self.exact:
                    self.extended.setdefault(key[:n], []).extend(gs)

    def related(self, leg):
        key = _byte_key(leg, self.c2s)
        if not key:
            return []
        found = list(self.exact.get(key, ()))
        if leg.proto == "tcp":
            found += self.extended.get(key, ())
            for n in self.short:
                if n >= len(key):
                    break
                found += self.exact.get(key[:n], ())
        return found


class _Chainer:
    def __init__(self, legs, local: set, known_proxies: set):
        self.legs = sorted(legs, key=lambda leg: (leg.first_ns, leg.id))
        self.local = local
        self.known_proxies = known_proxies

    def is_local(self, ip: str) -> bool:
        return _is_loopback(ip) or ip in self.local

    def affinity(self, a_ip: str, b_ip: str) -> int:
        if a_ip == b_ip or (_is_loopback(a_ip) and _is_loopback(b_ip)):
            return 2
        return 1 if self.is_local(a_ip) and self.is_local(b_ip) else 0

    def machine_key(self, ep: HostPort):
        return ("local", ep.port) if self.is_local(ep.ip) else (ep.ip, ep.port)

    def link(self, a, b, structural: bool) -> _Link | None:
        """Could B (or any leg of B's group) be A's onward connection, start time aside?"""
        if a.proto == "udp":
            c2s, s2c = _udp_match(a.datagrams_c2s, b.datagrams_c2s), _udp_match(a.datagrams_s2c, b.datagrams_s2c)
        else:
            c2s, s2c = _prefix_match(a.data_c2s, b.data_c2s), _prefix_match(a.data_s2c, b.data_s2c)
        if (c2s and not c2s[0]) or (s2c and not s2c[0]):
            return None                                    # the bytes contradict a relay
        affinity = self.affinity(a.server.ip, b.client.ip)
        note_a, note_b = a.redirect, b.redirect
        noted = bool(note_a and note_a.original and (b.server == note_a.original
                                                     or (note_b and note_b.original == note_a.original)))
        # Another machine's connection is linked only by a note, or when it starts
        # while A is open and goes somewhere else than A did.
        during = affinity == 0 and not noted
        if during and b.server == a.server:
            return None
        common = (c2s[1] if c2s else 0) + (s2c[1] if s2c else 0)
        if c2s or s2c:
            level, evidence = (3 if c2s and s2c else 2), "bytes"
        elif noted:
            level, evidence = 2, "note"
        elif structural and affinity >= 1 and self.is_local(a.server.ip):
            level, evidence, during = 1, "timing", True
        else:
            return None
        latest = a.last_ns if during else float("inf")
        if s2c:
            latest = min(latest, a.first_data_s2c_ns)     # B carried the answer before A did
        return _Link((level, affinity, common), evidence, bool(c2s), bool(s2c), during, latest)

    @staticmethod
    def fits(a, b, link: _Link) -> bool:
        """Does B's timing allow it to continue A?"""
        if b.first_ns <= a.first_ns:
            return False
        if getattr(a, "syn_ack_ns", None) is not None and b.first_ns < a.syn_ack_ns:
            return False                                   # a proxy cannot accept A before its handshake
        if link.c2s and b.first_data_c2s_ns < a.first_data_c2s_ns:
            return False                                   # B sent A's bytes before A carried them
        if link.s2c and a.first_data_s2c_ns < b.first_data_s2c_ns:
            return False                                   # A got B's answer before B carried it
        return not link.during or b.first_ns <= a.last_ns

    def _related(self, a, indexes, structural):
        """The groups that may hold A's continuation, each once."""
        c2s_index, s2c_index, by_server, by_original, local_clients = indexes
        found = c2s_index.related(a) + s2c_index.related(a)
        note = a.redirect
        if note and note.original:
            found += by_server.get(note.original, []) + by_original.get(note.original, [])
        if structural and self.is_local(a.server.ip):
            found += local_clients
        return list({id(g): g for g in found}.values())

    def _offer(self, heap, a, group, link, pos) -> None:
        """Push A's best still-free fit in `group` from `pos` on (nothing when none is left)."""
        while True:
            pos = group.free(pos)
            if pos == len(group.legs) or group.starts[pos] > link.latest:
                return
            b = group.legs[pos]
            if self.fits(a, b, link):
                level, affinity, common = link.score
                # Best first: evidence, same-machine affinity, matching bytes, closeness
                # in time; then the earlier A, then the lower ids.
                heapq.heappush(heap, (-level, -affinity, -common, b.first_ns - a.first_ns, a.first_ns, a.id, b.id,
                                      pos, a, group, link))
                return
            pos += 1

    def assign(self, parent: dict, child: dict, evidence: dict, structural: bool) -> None:
        """Link legs one to one, best-ranked pair first (a greedy matching).

        Each leg offers its best candidate per related group to a heap; when the
        best pair's B was taken meanwhile, A offers its next one in that group.
        Work grows with the related groups per leg, not with the number of pairs.
        """
        by_key: dict = {}
        for leg in self.legs:
            if leg.id not in parent:
                by_key.setdefault(_group_key(leg), []).append(leg)
        groups = [_Group(legs) for legs in by_key.values()]
        by_server: dict = {}
        by_original: dict = {}
        for g in groups:
            first = g.legs[0]
            by_server.setdefault(first.server, []).append(g)
            if first.redirect and first.redirect.original:
                by_original.setdefault(first.redirect.original, []).append(g)
        local_clients = [g for g in groups if self.is_local(g.legs[0].client.ip)] if structural else []
        indexes = (_ByteIndex(groups, c2s=True), _ByteIndex(groups, c2s=False), by_server, by_original,
                   local_clients)
        heap: list = []
        for a in self.legs:
            if a.id in child:
                continue
            for g in self._related(a, indexes, structural):
                link = self.link(a, g.legs[0], structural)
                if link is not None:
                    self._offer(heap, a, g, link, bisect.bisect_right(g.starts, a.first_ns))
        # A pair's legs only ever go forward in time (B starts after A), so no
        # assignment can close a cycle.
        while heap:
            *_rank, pos, a, group, link = heapq.heappop(heap)
            if a.id in child:
                continue
            b = group.legs[pos]
            if b.id in parent:
                self._offer(heap, a, group, link, pos + 1)
                continue
            child[a.id] = b
            parent[b.id] = a
            evidence[b.id] = link.evidence
            group.take(pos)


def _flows_from_chains(legs, parent, child, evidence, chainer, proxies, proto, start_id) -> list[ProxiedFlow]:
    flows = []
    roots = sorted((leg for leg in legs if leg.id not in parent), key=lambda leg: (leg.first_ns, leg.id))
    for root in roots:
        chain = [root]
        while chain[-1].id in child:
            chain.append(child[chain[-1].id])
        flows.append(_flow(start_id + len(flows), proto, chain, evidence, chainer, proxies))
    return flows


def _flow(fid, proto, chain, evidence, chainer, proxies) -> ProxiedFlow:
    first, last = chain[0], chain[-1]
    hops = []
    for i, leg in enumerate(chain):
        prev = chain[i - 1] if i else None
        if proto == "udp":
            ic = leg.datagrams_c2s == prev.datagrams_c2s if prev else None
            isc = leg.datagrams_s2c == prev.datagrams_s2c if prev else None
        else:
            ic = leg.data_c2s == prev.data_c2s and not (leg.gap_c2s or prev.gap_c2s) if prev else None
            isc = leg.data_s2c == prev.data_s2c and not (leg.gap_s2c or prev.gap_s2c) if prev else None
        hops.append(Hop(i, proto, leg.client, leg.server, i < len(chain) - 1 or leg.server in proxies,
                        leg.bytes_c2s, leg.bytes_s2c, leg.state, leg.established, ic, isc,
                        evidence.get(leg.id, "first"), leg.first_ns, leg.last_ns,
                        leg.redirect.vendor if leg.redirect else None,
                        leg.redirect.original if leg.redirect else None, leg))
    visited = [leg.server for leg in chain]
    keys = [chainer.machine_key(ep) for ep in visited]
    reasons = []
    visits = Counter(keys)
    repeated = next((k for k in keys if visits[k] > 1), None)
    loop = repeated is not None
    if loop:
        again = visited[keys.index(repeated)]
        reasons.append(f"redirect loop: the chain visits {again} {times(visits[repeated])}")
    ends_at_proxy = last.server in proxies
    if not loop and ends_at_proxy and len(chain) > MAX_LOCAL_HOPS and all(chainer.is_local(ep.ip) for ep in visited):
        loop = True
        reasons.append(f"redirect loop: {len(chain)} hops through local proxies, never leaving the machine")
    reached = last.established and not ends_at_proxy
    if proto == "tcp":
        if last.refused:
            reasons.append(f"{last.server} refused the connection (RST answering SYN)")
        elif last.no_answer:
            reasons.append(f"no answer from {last.server} (SYN sent {times(1 + last.syn_retransmits)}, no SYN-ACK)")
    elif last.icmp_unreachable:
        reasons.append(f"{last.server} answered ICMP port unreachable")
    if ends_at_proxy and not loop:
        reasons.append(f"the chain ends at proxy {last.server}: it never opened the onward connection")
    # Intact end to end means the destination got what the client sent (and back):
    # a flow that reached nothing delivered nothing, however faithfully each proxy relayed.
    if proto == "udp":
        same_c2s = first.datagrams_c2s == last.datagrams_c2s
        same_s2c = first.datagrams_s2c == last.datagrams_s2c
    else:
        same_c2s = first.data_c2s == last.data_c2s and not any(leg.gap_c2s for leg in chain)
        same_s2c = first.data_s2c == last.data_s2c and not any(leg.gap_s2c for leg in chain)
    intact_c2s, intact_s2c = reached and same_c2s, reached and same_s2c
    if reached and len(chain) > 1:
        if not same_c2s:
            reasons.append(f"client->server bytes differ: client sent {nbytes(first.bytes_c2s)}, "
                           f"{last.server} got {nbytes(last.bytes_c2s)}")
        if not same_s2c:
            reasons.append(f"server->client bytes differ: {last.server} sent {nbytes(last.bytes_s2c)}, "
                           f"client got {nbytes(first.bytes_s2c)}")
    reset = proto == "tcp" and any(leg.reset and not leg.refused for leg in chain)
    if reset:
        who = [str(leg.server) for leg in chain if leg.reset and not leg.refused]
        reasons.append("reset on the leg to " + ", ".join(who))
    original = next((leg.redirect.original for leg in chain if leg.redirect and leg.redirect.original), None)
    if original is None and reached:
        original = last.server
    if loop:
        verdict = "loop"
    elif not reached:
        verdict = "unreached"
    elif reset:
        verdict = "reset"
    elif not (intact_c2s and intact_s2c):
        verdict = "altered"
    else:
        verdict = "ok"
    return ProxiedFlow(fid, proto, first.client, hops, [h.dst for h in hops if h.to_proxy],
                       last.server if reached else None, original,
                       reached, loop, visited if loop else [], intact_c2s, intact_s2c,
                       first.bytes_c2s, first.bytes_s2c, reset, verdict, reasons)


def dedupe(records, window_ns: int) -> list:
    """Drop exact repeats of a packet seen again within window_ns (pktmon logs one
    packet at several stack components). Records must be sorted by time."""
    last_seen: dict = {}
    out = []
    for rec in records:
        key = (rec.proto, rec.src, rec.dst, rec.flags, rec.seq, rec.ack, rec.payload)
        seen = last_seen.get(key)
        last_seen[key] = rec.time_ns
        if seen is not None and rec.time_ns - seen <= window_ns:
            continue
        out.append(rec)
    return out


def analyze_records(records, *, source: str = "", local_addresses=(), proxies=(),
                    udp_idle_timeout_ns: int = UDP_IDLE_TIMEOUT_NS, dedupe_ns: int = 0,
                    warnings=()) -> Analysis:
    """Reconstruct everything from Records (see harness.capture.reader).

    dedupe_ns > 0 drops identical packets repeated within that time (pktmon
    captures list a packet once per stack component it crossed).
    """
    records = sorted(records, key=lambda r: (r.time_ns, r.index))
    if dedupe_ns:
        records = dedupe(records, dedupe_ns)
    local = {str(ipaddress.ip_address(a)) for a in local_addresses}
    for rec in records:
        if rec.loopback:
            local.update((rec.src.ip, rec.dst.ip))
    known = {endpoint(p) for p in proxies}
    conns = build_tcp(records)
    udp = build_udp(records, udp_idle_timeout_ns)
    for leg in list(conns) + list(udp):
        if leg.redirect and leg.redirect.to:
            known.add(leg.redirect.to)
    flows = []
    all_proxies = set(known)
    for proto, legs in (("tcp", conns), ("udp", udp)):
        parent, child, evidence = {}, {}, {}
        chainer = _Chainer(legs, local, known)
        chainer.assign(parent, child, evidence, structural=False)
        # What the byte-matched chains teach: the proxy's outbound address is on its machine.
        for a in list(parent.values()):
            b = child[a.id]
            if chainer.is_local(a.server.ip) and not _is_loopback(b.client.ip):
                local.add(b.client.ip)
            if chainer.is_local(b.client.ip) and not _is_loopback(a.server.ip):
                local.add(a.server.ip)
        chainer.assign(parent, child, evidence, structural=True)
        proxies_here = set(known) | {a.server for a in parent.values()}
        all_proxies |= proxies_here
        flows += _flows_from_chains(legs, parent, child, evidence, chainer, proxies_here, proto, len(flows) + 1)
    flows.sort(key=lambda f: (f.hops[0].first_ns, f.proto))
    for n, f in enumerate(flows, 1):
        f.id = n
    return Analysis(source, len(records), conns, udp, flows, local, all_proxies, list(warnings))
