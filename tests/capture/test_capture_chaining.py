"""The chainer's indexed search against exhaustive search, on random legs.

harness.capture.flows links legs (TCP connections, UDP flows) by ranking
candidate pairs and matching them greedily. It only looks at legs an index
says may be related, one free leg at a time per group of interchangeable
legs. The reference here ranks every pair with the same rules
(_Chainer.link and _Chainer.fits) and must make the same choices.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.capture.flows import _Chainer
from harness.capture.model import HostPort, RedirectNote, TcpConnection, UdpFlow

IPS = ["127.0.0.1", "192.0.2.1", "198.51.100.7", "::1"]
ENDPOINTS = [HostPort(ip, port) for ip in IPS for port in (443, 5000)]
STREAMS = [b"", b"GET", b"GET /a", b"GET /b", b"x" * 70, b"x" * 70 + b"y", b"x" * 70 + b"z"]
DATAGRAMS = [[], [b"q"], [b"q", b"r"], [b"x" * 70], [b"x" * 70 + b"y"]]


@st.composite
def legs(draw, proto):
    out = []
    for n in range(draw(st.integers(0, 10))):
        first = draw(st.integers(0, 40))
        c2s_at, s2c_at = first + draw(st.integers(0, 10)), draw(st.integers(first, 80))
        times = dict(id=n + 1, first_ns=first, last_ns=first + draw(st.integers(0, 30)),
                     first_data_c2s_ns=c2s_at, first_data_s2c_ns=s2c_at)
        if out and draw(st.integers(0, 2)):                 # two in three
            # Another leg like an earlier one (a loop, repeated requests): the legs compete.
            like = draw(st.sampled_from(out))
            same = dict(client=like.client, server=like.server, redirect=like.redirect)
            data = ((like.data_c2s, like.data_s2c) if proto == "tcp"
                    else (like.datagrams_c2s, like.datagrams_s2c))
        else:
            same = dict(client=draw(st.sampled_from(ENDPOINTS)), server=draw(st.sampled_from(ENDPOINTS)),
                        redirect=draw(st.one_of(st.none(), st.sampled_from(ENDPOINTS[:4]).map(
                            lambda ep: RedirectNote("vendor", None, ep)))))
            pool = STREAMS if proto == "tcp" else DATAGRAMS
            data = (draw(st.sampled_from(pool)), draw(st.sampled_from(pool)))
        if proto == "tcp":
            leg = TcpConnection(**times, **same, data_c2s=data[0], data_s2c=data[1])
            leg.syn_ack_ns = draw(st.one_of(st.none(), st.integers(first, first + 5)))
        else:
            leg = UdpFlow(**times, **same, datagrams_c2s=data[0], datagrams_s2c=data[1])
        out.append(leg)
    return out


def exhaustive(chainer, parent, child, evidence, structural):
    ranked = []
    for a in chainer.legs:
        for b in chainer.legs:
            if a.id in child or b.id in parent or b is a:
                continue
            link = chainer.link(a, b, structural)
            if link is not None and chainer.fits(a, b, link):
                level, affinity, common = link.score
                ranked.append(((-level, -affinity, -common, b.first_ns - a.first_ns, a.first_ns, a.id, b.id),
                               a, b, link.evidence))
    for _rank, a, b, ev in sorted(ranked, key=lambda r: r[0]):
        if a.id not in child and b.id not in parent:
            child[a.id], parent[b.id], evidence[b.id] = b, a, ev


def links(legs_, search):
    chainer = _Chainer(legs_, {"192.0.2.1"}, set())
    parent, child, evidence = {}, {}, {}
    for structural in (False, True):
        search(chainer, parent, child, evidence, structural)
    return {a: (b.id, evidence[b.id]) for a, b in child.items()}


@settings(max_examples=500)          # cheap examples; contention between legs needs a few hundred
@given(st.sampled_from(["tcp", "udp"]).flatmap(legs))
def test_indexed_search_makes_the_exhaustive_choices(generated):
    indexed = links(generated, lambda c, *maps: c.assign(*maps))
    assert indexed == links(generated, exhaustive)
