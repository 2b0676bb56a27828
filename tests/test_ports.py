"""The host's port index and ephemeral allocator (sim.net.PortIndex; docs/facts.md §9)."""
import pytest

from sim.net import ANY4, ANY6, LOOP4, PortIndex, ip_bytes
from sim.world import World


def test_next_free_port_after_the_last_wrapping_over_used_ones():
    ports = PortIndex()
    ports.set_range(60000, 255)
    for port in range(60000, 60255, 2):             # every other port taken
        ports.add(LOOP4, port)
    ports.next = 60254                               # taken, and the last of the range: wrap
    assert ports.ephemeral(4) == 60001
    assert ports.ephemeral(4) == 60003               # sequential from the last one handed out


def test_a_port_is_taken_per_family_and_by_the_wildcard():
    ports = PortIndex()
    ports.add(LOOP4, 50000)
    assert ports.in_use(LOOP4, 50000) and ports.in_use(ANY4, 50000)
    assert not ports.in_use(ip_bytes("192.0.2.10"), 50000)        # another address of the family: free
    assert not ports.in_use(ANY6, 50000)                           # the IPv6 table is separate
    ports.add(ANY4, 50000)
    assert ports.in_use(ip_bytes("192.0.2.10"), 50000)             # the wildcard takes every address
    ports.remove(ANY4, 50000)
    ports.remove(LOOP4, 50000)
    assert not ports.in_use(ANY4, 50000) and ports.users == {}


def test_exhausted_range_gives_zero_and_a_freed_port_comes_back():
    ports = PortIndex()
    ports.set_range(1025, 255)
    got = [ports.ephemeral(4) for _ in range(255)]
    for port in got:
        ports.add(ANY4, port)
    assert sorted(got) == list(range(1025, 1280)) and ports.ephemeral(4) == 0
    ports.remove(ANY4, 1100)
    assert ports.ephemeral(4) == 1100


@pytest.mark.parametrize("start,num", [(1024, 255), (60000, 254), (65300, 255)])
def test_the_range_takes_what_netsh_takes(start, num):
    with pytest.raises(ValueError):
        PortIndex().set_range(start, num)


def test_host_tables_keep_the_index_in_step():
    world = World()
    host = world.add_host("h", ("192.0.2.10",))
    key = (LOOP4, 50001, LOOP4, 80)
    host.tcp_conns[key] = object()
    assert host.port_in_use("tcp", LOOP4, 50001) and not host.port_in_use("udp", LOOP4, 50001)
    assert host.tcp_conns.pop(key) is not None and host.tcp_conns.pop(key, None) is None
    assert not host.port_in_use("tcp", LOOP4, 50001)
    host.tcp_listeners[(ANY4, 9000)] = object()
    host.tcp_listeners[(ANY4, 9000)] = object()                     # replaced, not counted twice
    del host.tcp_listeners[(ANY4, 9000)]
    assert not host.port_in_use("tcp", ANY4, 9000)
