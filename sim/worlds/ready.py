"""Ready-made worlds: a client and a server host, and a connection a sample driver redirected.

`client_server_world` is the two hosts every story starts from (scenarios,
the packaged proxy's sim target, the fixtures below). In `redirected_tcp`
and `redirected_udp` the caller is the proxy process: `Redirected.api` is
its WinsockApi and `Redirected.sock` the accepted, redirected socket,
exactly what a redirect service holds when it is about to query the records
and the context.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.winsock import constants as C
from harness.winsock import sockaddr
from harness.proxy import redirect as rd
from harness.sample_driver import RedirectPolicy
from sim.worlds.services import EchoServer
from sim.worlds.sample_callout import install_sample_driver
from sim.world import World

CLIENT = ("192.0.2.10", "2001:db8::10")
SERVER = ("192.0.2.20", "2001:db8::20")
PROXY_PORT = 9000


@dataclass
class ClientServer:
    world: World
    client: object         # sim.net.Host at CLIENT
    server: object         # sim.net.Host at SERVER
    echo: EchoServer       # the server's echo process (None without ports)


def client_server_world(profile="documented", overrides=None, *, tcp_port: int = 0,
                        udp_port: int = 0, echo=EchoServer) -> ClientServer:
    """A world with a client host (CLIENT) and a server host (SERVER) whose echo process serves
    `tcp_port` and `udp_port` (none when both are 0); `echo`: its class (EchoServer on WSAPoll,
    or CompletionEchoServer)."""
    world = World(profile, overrides)
    client = world.add_host("client", CLIENT)
    server = world.add_host("server", SERVER)
    server_echo = None
    if tcp_port or udp_port:
        server_echo = echo(world.start_process(server, "echo"), tcp_port=tcp_port, udp_port=udp_port)
        world.add_service(server_echo.poll, server_echo.api)
    return ClientServer(world, client, server, server_echo)


@dataclass
class Redirected:
    world: World
    api: object            # the proxy process
    sock: int              # the accepted, redirected socket (TCP) or the proxy's UDP socket
    listener: int
    app: object            # the application process that connected
    app_sock: int
    original: tuple        # (ip, port) the application asked for
    callout: object


def _listen(api, kind, ip, port, flags=C.WSA_FLAG_OVERLAPPED):
    s = api.WSASocketW(sockaddr.text_family(ip), kind, 0, 0, 0, flags)
    name = sockaddr.from_text(ip, port)
    ptr = api.memory.alloc(len(name))
    api.memory.write(ptr, name)
    assert api.bind(s, ptr, len(name)) == 0, api.WSAGetLastError()
    if kind == C.SOCK_STREAM:
        assert api.listen(s, 16) == 0
    return s


def redirected_tcp(profile="documented", family=C.AF_INET, overrides=None, *,
                   listener_flags=C.WSA_FLAG_OVERLAPPED, install=install_sample_driver) -> Redirected:
    """`listener_flags`: the WSASocketW flags of the proxy's listener (its accepted socket inherits
    the overlapped attribute); `install(world, host, policy)`: loads the redirecting driver."""
    hosts = client_server_world(profile, overrides, tcp_port=80)
    world, client = hosts.world, hosts.client
    proxy = world.start_process(client, "proxy")
    loop_ip = "127.0.0.1" if family == C.AF_INET else "::1"
    lst = _listen(proxy, C.SOCK_STREAM, loop_ip, PROXY_PORT, listener_flags)
    callout = install(world, client, RedirectPolicy(
        tcp_ports=(80,), tcp_proxy_port=PROXY_PORT, proxy_process_id=proxy.GetCurrentProcessId()))
    app = world.start_process(client, "app", elevated=False)
    original = (SERVER[0] if family == C.AF_INET else SERVER[1], 80)
    s = app.socket(family, C.SOCK_STREAM, 0)
    name = sockaddr.from_text(*original)
    ptr = app.memory.alloc(len(name))
    app.memory.write(ptr, name)
    assert app.connect(s, ptr, len(name)) == 0, app.WSAGetLastError()
    accepted = proxy.accept(lst, 0, 0)
    assert accepted != C.INVALID_SOCKET, proxy.WSAGetLastError()
    return Redirected(world, proxy, accepted, lst, app, s, original, callout)


def redirected_udp(profile="documented", family=C.AF_INET, enable_cmsgs=True) -> Redirected:
    """The proxy's UDP socket, with the application's first datagram already sent to it."""
    hosts = client_server_world(profile)
    world, client = hosts.world, hosts.client
    proxy = world.start_process(client, "proxy")
    loop_ip = "127.0.0.1" if family == C.AF_INET else "::1"
    udp = _listen(proxy, C.SOCK_DGRAM, loop_ip, PROXY_PORT + 53)
    if enable_cmsgs:
        rd.enable_redirect_cmsgs(proxy, udp, family)
    callout = install_sample_driver(world, client, RedirectPolicy(
        udp_ports=(53,), udp_proxy_port=PROXY_PORT + 53, proxy_process_id=proxy.GetCurrentProcessId()))
    app = world.start_process(client, "app", elevated=False)
    original = (SERVER[0] if family == C.AF_INET else SERVER[1], 53)
    s = app.socket(family, C.SOCK_DGRAM, 0)
    name = sockaddr.from_text(*original)
    ptr = app.memory.alloc(64)
    app.memory.write(ptr, name)
    for payload in (b"first", b"second"):
        app.memory.write(ptr + 32, payload)
        assert app.sendto(s, ptr + 32, len(payload), 0, ptr, len(name)) == len(payload)
    world.run(5)
    return Redirected(world, proxy, udp, udp, app, s, original, callout)
