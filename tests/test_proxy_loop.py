"""The reference proxy's WSAPoll loop (harness.proxy.reference) in simulated two-vendor worlds.

Scenarios run one connection at a time; these put several in flight at
once (a listener with a backlog, data that arrives before the accept),
move more than one buffer per direction, and make the outbound connect
fail, which the proxy learns from POLLERR|POLLHUP and SO_ERROR.
"""
from __future__ import annotations

import pytest

from harness.winsock import constants as C
from harness.winsock import sockaddr
from harness.proxy.poller import READ, WRITE, Poller
from sim.worlds.scenarios import PAYLOAD, SERVER, Story


def _nonblocking_connects(story, count, port=80):
    app, sc = story.app, story.scratch
    name = sockaddr.from_text(SERVER[0], port)
    app.memory.write(sc.addr, name)
    app.memory.write_u32(sc.value, 1)
    socks = []
    for _ in range(count):
        s = app.socket(C.AF_INET, C.SOCK_STREAM, 0)
        assert app.ioctlsocket(s, C.FIONBIO, sc.value) == 0
        assert app.connect(s, sc.addr, len(name)) == C.SOCKET_ERROR
        assert app.WSAGetLastError() == C.WSAEWOULDBLOCK
        socks.append(s)
    return socks


@pytest.mark.parametrize("profile", ["documented", "windows-observed"])
def test_many_connections_in_flight_all_arrive_intact(profile):
    story = Story(profile, ("VendorX", "VendorY"), udp=False)
    app, sc = story.app, story.scratch
    socks = _nonblocking_connects(story, 12)
    payloads = {s: PAYLOAD + str(i).encode() for i, s in enumerate(socks)}
    want = dict.fromkeys(socks, WRITE)
    got = {s: b"" for s in socks}
    poller = Poller(app)
    while want:
        ready = poller.poll(list(want.items()), 5_000)
        assert ready, "the world went quiet with connections unfinished"
        for s, revents in ready:
            assert not revents & (C.POLLERR | C.POLLNVAL)
            if want[s] == WRITE:
                app.memory.write(sc.buf, payloads[s])
                assert app.send(s, sc.buf, len(payloads[s]), 0) == len(payloads[s])
                want[s] = READ
                continue
            n = app.recv(s, sc.buf, sc.size, 0)
            assert n > 0
            got[s] += app.memory.read(sc.buf, n)
            if len(got[s]) == len(payloads[s]):
                del want[s]
                assert app.closesocket(s) == 0
    assert got == payloads
    story.world.run(50)
    for proxy in story.proxies.values():
        assert proxy.stats.forwarded == 12 and proxy.stats.closed == 12
        assert proxy.stats.errors == [] and not proxy.connections
    assert story.inspected[("VendorX", "up")] == sum(map(len, payloads.values()))


def test_more_than_one_buffer_each_way():
    story = Story("documented", ("VendorX", "VendorY"), udp=False)
    app, sc = story.app, story.scratch
    proxy_buffer = story.proxies["VendorX"].scratch.size
    data = bytes(range(256)) * ((2 * proxy_buffer + 1000) // 256)
    s = app.socket(C.AF_INET, C.SOCK_STREAM, 0)
    name = sockaddr.from_text(SERVER[0], 80)
    app.memory.write(sc.addr, name)
    assert app.connect(s, sc.addr, len(name)) == 0
    big = app.memory.alloc(len(data))
    app.memory.write(big, data)
    assert app.send(s, big, len(data), 0) == len(data)
    assert app.recv(s, big, len(data), C.MSG_WAITALL) == len(data)
    assert app.memory.read(big, len(data)) == data
    assert app.closesocket(s) == 0
    for vendor in ("VendorX", "VendorY"):
        assert story.inspected[(vendor, "up")] == story.inspected[(vendor, "down")] == len(data)


def test_refused_outbound_connect_closes_the_client_and_is_reported():
    story = Story("documented", ("VendorX",), udp=False)
    app, sc = story.app, story.scratch
    # A redirected connection whose original destination refuses: the proxy sees its
    # connect fail, reports it, and closes the accepted socket (the client reads EOF).
    server = story.echo.api
    server.closesocket(story.echo.listeners[0])              # nobody listens on 192.0.2.20:80 now
    story.echo.listeners.pop(0)
    s = app.socket(C.AF_INET, C.SOCK_STREAM, 0)
    name = sockaddr.from_text(SERVER[0], 80)
    app.memory.write(sc.addr, name)
    assert app.connect(s, sc.addr, len(name)) == 0            # to the proxy
    assert app.recv(s, sc.buf, 16, 0) == 0                    # the proxy gave up and closed
    app.closesocket(s)
    proxy = story.proxies["VendorX"]
    assert proxy.stats.forwarded == 0 and not proxy.connections
    assert any("WSAECONNREFUSED" in e for e in proxy.stats.errors), proxy.stats.errors
