"""What the world keeps of a proxied connection, and for how long.

The hop report follows a connection across proxies; it must not keep the
flow's redirect records and contexts alive (the kernel frees a redirect
context with its flow, docs/decisions.md §5), must stay bounded in a long run,
and a connection must leave no reference cycles behind: the cyclic
collector's passes over them cost a long run 5 to 25% (bench/bench_redirect.py).
"""
from __future__ import annotations

import gc

from harness.winsock import constants as C
from harness.winsock import sockaddr
from harness.proxy import redirect as rd
from harness.sample_driver import unpack_context
from sim.worlds.ready import redirected_tcp
from sim.worlds.scenarios import SERVER, Story
from sim.wfp.flows import FlowRedirect


def _live_flow_redirects() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is FlowRedirect)


def test_a_chain_continues_after_the_accepted_flow_is_gone():
    """A proxy may query, close the accepted socket, and only then connect out with the records:
    the flow's redirect data is freed with it, and the records still continue its chain."""
    r = redirected_tcp()
    proxy, world = r.api, r.world
    records = rd.query_records(proxy, r.sock)
    original = unpack_context(rd.query_context(proxy, r.sock)).original_remote
    assert proxy.closesocket(r.sock) == 0 and r.app.closesocket(r.app_sock) == 0
    world.run(50)
    assert _live_flow_redirects() == 0

    out = proxy.socket(C.AF_INET, C.SOCK_STREAM, 0)
    rd.set_records(proxy, out, records)
    name = sockaddr.from_text(original.host, original.port)
    ptr = proxy.memory.alloc(len(name))
    proxy.memory.write(ptr, name)
    assert proxy.connect(out, ptr, len(name)) == 0, proxy.WSAGetLastError()

    (chain,) = world.hops.report()
    assert not chain["loop"] and chain["original_destination"] == f"{SERVER[0]}:80"
    app_hop, proxy_hop = chain["hops"]
    assert app_hop["vendor"] and app_hop["redirected_to"] == "127.0.0.1:9000"
    assert proxy_hop["from_process"] == "proxy" and proxy_hop["records_forwarded"]
    assert proxy_hop["redirected_to"] == ""        # the driver saw its own records: passed, no loop


def test_the_report_keeps_the_newest_chains():
    story = Story("documented", ("VendorX", "VendorY"), udp=False)
    tracker = story.world.hops
    tracker.keep = 2
    for i in range(4):
        assert story.tcp(f"connection {i}", C.AF_INET, SERVER[0]).intact
    assert len(tracker.lineages) == 2 and tracker.dropped == 2
    assert [len(x.hops) for x in tracker.lineages] == [3, 3]       # app, proxy X, proxy Y each time
    assert len(tracker.by_flow) == 4                               # the kept chains' two flows each
    story.finish()
    assert [c.verdict for c in story.connections[-2:]] == ["ok", "ok"]


def test_a_proxied_connection_leaves_no_reference_cycles():
    story = Story("documented", ("VendorX", "VendorY"), udp=False)
    story.tcp("warm-up", C.AF_INET, SERVER[0])        # first-use caches and tables
    story.world.run(50)
    gc.collect()
    gc.disable()
    try:
        for i in range(3):
            assert story.tcp(f"connection {i}", C.AF_INET, SERVER[0]).intact
        story.world.run(50)                         # FINs through both proxies, their closes
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert _live_flow_redirects() == 0
