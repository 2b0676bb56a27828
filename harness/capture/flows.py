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
Chains start at legs nobody relayed into. A chain that visits the same proxy
twice (local addresses of one machine count as one) is a loop; so is a
chain of more than MAX_LOCAL_HOPS local hops that never leaves the machine.
"""
from __future__ import annotations

import ipaddress
from collections import Counter

from harness.capture.model import (
    Analysis,
    Endpoint,
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

    def machine_key(self, ep: Endpoint):
        return ("local", ep.port) if self.is_local(ep.ip) else (ep.ip, ep.port)

    def candidate(self, a, b, structural: bool):
        if b is a or b.first_ns <= a.first_ns:
            return None
        if getattr(a, "syn_ack_ns", None) is not None and b.first_ns < a.syn_ack_ns:
            return None                                    # a proxy cannot accept A before its handshake
        if a.proto == "udp":
            c2s, s2c = _udp_match(a.datagrams_c2s, b.datagrams_c2s), _udp_match(a.datagrams_s2c, b.datagrams_s2c)
        else:
            c2s, s2c = _prefix_match(a.data_c2s, b.data_c2s), _prefix_match(a.data_s2c, b.data_s2c)
        if (c2s and not c2s[0]) or (s2c and not s2c[0]):
            return None                                    # the bytes contradict a relay
        if c2s and b.first_data_c2s_ns < a.first_data_c2s_ns:
            return None                                    # B sent A's bytes before A carried them
        if s2c and a.first_data_s2c_ns < b.first_data_s2c_ns:
            return None                                    # A got B's answer before B carried it
        affinity = self.affinity(a.server.ip, b.client.ip)
        during = a.first_ns < b.first_ns <= a.last_ns
        note_a, note_b = a.redirect, b.redirect
        noted = bool(note_a and note_a.original and (b.server == note_a.original
                                                     or (note_b and note_b.original == note_a.original)))
        if affinity == 0 and not noted and (b.server == a.server or not during):
            return None
        common = (c2s[1] if c2s else 0) + (s2c[1] if s2c else 0)
        gap = b.first_ns - a.first_ns
        if c2s or s2c:
            level, evidence = (3 if c2s and s2c else 2), "bytes"
        else:
            if noted:
                level, evidence = 2, "note"
            elif structural and affinity >= 1 and during and self.is_local(a.server.ip):
                level, evidence = 1, "timing"
            else:
                return None
        return (level, affinity, common, -gap), evidence

    def assign(self, parent: dict, child: dict, evidence: dict, structural: bool) -> None:
        cands = []
        for i, a in enumerate(self.legs):
            if a.id in child:
                continue
            for b in self.legs[i + 1:]:
                if b.id in parent:
                    continue
                got = self.candidate(a, b, structural)
                if got is not None:
                    cands.append((got[0], a.first_ns, a.id, b.id, got[1], a, b))
        cands.sort(key=lambda c: (c[0], -c[1], -c[2], -c[3]), reverse=True)
        for _score, _t, _aid, _bid, ev, a, b in cands:
            if a.id in child or b.id in parent or self._reaches(b, a, child):
                continue
            child[a.id] = b
            parent[b.id] = a
            evidence[b.id] = ev

    @staticmethod
    def _reaches(start, target, child) -> bool:
        node = start
        while node is not None:
            if node is target:
                return True
            node = child.get(node.id)
        return False


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
