"""Property: redirect records route every proxied flow to its original destination.

Any number of vendors (1-3) in any weight order, TCP or UDP, IPv4 or IPv6:
when every proxy forwards the records, every flow reaches its original
destination intact, each vendor inspects it exactly once, and the redirect
states match docs/facts.md §5.7; when some proxy drops them, the world reports a
loop instead of hanging.
"""
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.winsock import constants as C
from sim.worlds.scenarios import PAYLOAD, SERVER, Story

vendor_lists = st.lists(st.sampled_from(["VendorX", "VendorY", "VendorZ"]), min_size=1, max_size=3, unique=True)


def _flow(story, protocol, family):
    dest = SERVER[0] if family == C.AF_INET else SERVER[1]
    if protocol == "tcp":
        return story.tcp("flow", family, dest)
    return story.udp("flow", family, dest)


@settings(deadline=None, max_examples=25)
@given(vendors=vendor_lists, protocol=st.sampled_from(["tcp", "udp"]),
       family=st.sampled_from([C.AF_INET, C.AF_INET6]))
def test_forwarded_records_always_reach_the_destination(vendors, protocol, family):
    story = Story("documented", tuple(vendors))
    conn = _flow(story, protocol, family)
    story.finish()
    assert conn.verdict == "ok" and conn.intact, (vendors, conn.as_dict())
    redirected = [h for h in conn.hops if h["redirected_to"]]
    assert sorted(h["vendor"] for h in redirected) == sorted(vendors)        # each vendor once
    factor = 2 if protocol == "udp" else 1
    for vendor in vendors:
        assert story.inspected[(vendor, "up")] == factor * len(PAYLOAD)
    last = conn.hops[-1]
    assert not last["redirected_to"] and all(s["state"] in ("REDIRECTED_BY_SELF", "PREVIOUSLY_REDIRECTED_BY_SELF")
                                             for s in last["states_seen"])
    assert story.world.kernel.diagnostics == []


@settings(deadline=None, max_examples=15)
@given(vendors=vendor_lists, data=st.data())
def test_a_proxy_that_drops_the_records_makes_a_reported_loop(vendors, data):
    dropper = data.draw(st.sampled_from(vendors))
    story = Story("documented", tuple(vendors), set_records=set(vendors) - {dropper})
    conn = story.tcp("flow", C.AF_INET, SERVER[0])
    story.finish()
    assert conn.verdict == "loop", conn.as_dict()
    assert any(d.kind == "redirect-loop" for d in story.world.kernel.diagnostics)
