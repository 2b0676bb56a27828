"""The built-in services (sim/worlds/services.py, harness/proxy/reference.py) when data and a FIN arrive together.

A service registered with its process (World.add_service) is polled again only
when that process has news. Data and a FIN that arrive in the same instant are
one piece of news: a service that stops reading after the data never sees the
FIN, never sends its own, and the client's receive loop waits forever (a
SimulationDeadlock here).
"""
from __future__ import annotations

import pytest

from harness.winsock import constants as C
from harness.winsock import sockaddr
from sim.worlds.ready import SERVER, client_server_world
from harness.proxy.reference import IocpRedirectProxy, RedirectProxy
from sim.worlds.scenarios import Story
from sim.worlds.services import CompletionEchoServer, EchoServer

DATA = b"request and FIN in one instant"


def _send_then_fin(app, host, port) -> bytes:
    """Send DATA and shut down at once, then read everything up to the peer's FIN."""
    s = app.socket(sockaddr.text_family(host), C.SOCK_STREAM, 0)
    name = sockaddr.from_text(host, port)
    buf = app.memory.alloc(256)
    app.memory.write(buf, name)
    assert app.connect(s, buf, len(name)) == 0, C.error_name(app.WSAGetLastError())
    app.memory.write(buf + 128, DATA)
    assert app.send(s, buf + 128, len(DATA), 0) == len(DATA)
    assert app.shutdown(s, C.SD_SEND) == 0
    got = b""
    while (n := app.recv(s, buf + 128, 128, 0)) > 0:
        got += app.memory.read(buf + 128, n)
    assert n == 0
    app.closesocket(s)
    return got


@pytest.mark.parametrize("echo", [EchoServer, CompletionEchoServer])
@pytest.mark.parametrize("host", SERVER)
def test_echo_server_sends_its_fin(host, echo):
    hosts = client_server_world(tcp_port=7, echo=echo)
    app = hosts.world.start_process(hosts.client, "app")
    assert _send_then_fin(app, host, 7) == DATA
    assert not hosts.echo.conns                    # it closed its side (the WSAPoll server's list)
    if echo is CompletionEchoServer:               # no receive left outstanding: only the AcceptEx calls
        assert set(hosts.echo.port.ops) == set(hosts.echo.accepts)


def test_completion_echo_server_echoes_more_than_a_slot_and_udp():
    """A message longer than a receive slot is echoed whole (the rest read with recv); UDP on WSAPoll."""
    hosts = client_server_world(tcp_port=7, udp_port=7, echo=CompletionEchoServer)
    app = hosts.world.start_process(hosts.client, "app")
    s = app.socket(C.AF_INET, C.SOCK_STREAM, 0)
    name = sockaddr.from_text(SERVER[0], 7)
    buf = app.memory.alloc(8192)
    app.memory.write(buf, name)
    assert app.connect(s, buf, len(name)) == 0
    big = bytes(range(256)) * 12
    app.memory.write(buf + 256, big)
    assert app.send(s, buf + 256, len(big), 0) == len(big)
    assert app.recv(s, buf + 4096, len(big), C.MSG_WAITALL) == len(big)
    assert app.memory.read(buf + 4096, len(big)) == big
    u = app.socket(C.AF_INET, C.SOCK_DGRAM, 0)
    app.memory.write(buf + 256, b"ping")
    assert app.sendto(u, buf + 256, 4, 0, buf, len(name)) == 4
    assert app.recv(u, buf + 4096, 64, 0) == 4 and app.memory.read(buf + 4096, 4) == b"ping"


@pytest.mark.parametrize("proxy", [RedirectProxy, IocpRedirectProxy])
@pytest.mark.parametrize("vendors", [("VendorX",), ("VendorX", "VendorY")])
def test_reference_proxy_passes_the_fin_on(vendors, proxy):
    story = Story("documented", vendors, udp=False, proxy=proxy)
    assert _send_then_fin(story.app, SERVER[0], 80) == DATA
    story.world.run(10)
    for proxy in story.proxies.values():
        assert not proxy.connections and proxy.stats.closed == 1 and proxy.stats.errors == []
