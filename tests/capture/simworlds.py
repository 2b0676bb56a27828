"""Simulated worlds for the packet-evidence tests: clients, servers and hand-written proxies.

Everything uses the simulator's C-shaped WinsockApi (no WFP): a "proxy" is a
process that accepts on a local port and relays with its own outbound
connection, exactly as a redirect proxy does after the callout sent the
client to it. Programs run sequentially on one Python thread; blocking
calls advance virtual time.
"""
from __future__ import annotations

from harness.conformance.support import sockaddr
from harness.winsock import constants as C
from sim import World

CLIENT_ADDRS = ["192.0.2.1", "2001:db8::1"]
SERVER_ADDRS = ["198.51.100.7", "2001:db8:1::7"]


def family_of(ip: str) -> int:
    return C.AF_INET6 if ":" in ip else C.AF_INET


def new_world():
    world = World()
    client_host = world.add_host("client", CLIENT_ADDRS)
    server_host = world.add_host("server", SERVER_ADDRS)
    return world, client_host, server_host


def tcp_listen(api, ip: str, port: int, dual_stack: bool = False) -> int:
    s = api.socket(family_of(ip), C.SOCK_STREAM, C.IPPROTO_TCP)
    assert s != C.INVALID_SOCKET, api.WSAGetLastError()
    if dual_stack:
        opt = api.memory.alloc(4)
        api.memory.write_u32(opt, 0)
        assert api.setsockopt(s, C.IPPROTO_IPV6, C.IPV6_V6ONLY, opt, 4) == 0, api.WSAGetLastError()
    ptr, n = sockaddr(api, ip, port)
    assert api.bind(s, ptr, n) == 0, api.WSAGetLastError()
    assert api.listen(s, 16) == 0, api.WSAGetLastError()
    return s


def tcp_connect(api, ip: str, port: int) -> int:
    s = api.socket(family_of(ip), C.SOCK_STREAM, C.IPPROTO_TCP)
    assert s != C.INVALID_SOCKET, api.WSAGetLastError()
    ptr, n = sockaddr(api, ip, port)
    assert api.connect(s, ptr, n) == 0, api.WSAGetLastError()
    return s


def try_connect(api, ip: str, port: int):
    """(socket, 0) or (None, WSA error)."""
    s = api.socket(family_of(ip), C.SOCK_STREAM, C.IPPROTO_TCP)
    ptr, n = sockaddr(api, ip, port)
    if api.connect(s, ptr, n) == 0:
        return s, 0
    err = api.WSAGetLastError()
    api.closesocket(s)
    return None, err


def accept(api, lst) -> int:
    s = api.accept(lst, 0, 0)
    assert s != C.INVALID_SOCKET, api.WSAGetLastError()
    return s


def send(api, s, data: bytes, chunk: int | None = None) -> None:
    chunk = chunk or len(data) or 1
    for i in range(0, len(data), chunk):
        piece = data[i:i + chunk]
        ptr = api.memory.alloc(len(piece))
        api.memory.write(ptr, piece)
        assert api.send(s, ptr, len(piece), 0) == len(piece), api.WSAGetLastError()


def recv_exactly(api, s, n: int) -> bytes:
    out = bytearray()
    buf = api.memory.alloc(max(n, 1))
    while len(out) < n:
        got = api.recv(s, buf, n - len(out), 0)
        assert got > 0, (got, api.WSAGetLastError())
        out += api.memory.read(buf, got)
    return bytes(out)


def close(api, *socks) -> None:
    for s in socks:
        api.shutdown(s, C.SD_SEND)
    for s in socks:
        api.closesocket(s)


def udp_bind(api, ip: str, port: int = 0) -> int:
    s = api.socket(family_of(ip), C.SOCK_DGRAM, C.IPPROTO_UDP)
    ptr, n = sockaddr(api, ip, port)
    assert api.bind(s, ptr, n) == 0, api.WSAGetLastError()
    return s


def sendto(api, s, data: bytes, ip: str, port: int) -> None:
    ptr = api.memory.alloc(len(data))
    api.memory.write(ptr, data)
    to, tolen = sockaddr(api, ip, port)
    assert api.sendto(s, ptr, len(data), 0, to, tolen) == len(data), api.WSAGetLastError()


def recvfrom(api, s, size: int = 2048) -> bytes:
    buf = api.memory.alloc(size)
    got = api.recvfrom(s, buf, size, 0, 0, 0)
    assert got >= 0, api.WSAGetLastError()
    return api.memory.read(buf, got)


REQUEST = b"GET /index.html HTTP/1.1\r\nHost: example.test\r\n\r\n" + bytes(range(256)) * 4
RESPONSE = b"HTTP/1.1 200 OK\r\n\r\n" + bytes((i * 7) & 0xFF for i in range(5000))


def relay_tcp(proxy, inbound, outbound, request_len: int, response_len: int, chunk: int = 100) -> None:
    """A proxy's relay: request in, out in `chunk`-sized pieces; response back in one piece."""
    data = recv_exactly(proxy, inbound, request_len)
    send(proxy, outbound, data, chunk)
    answer = recv_exactly(proxy, outbound, response_len)
    send(proxy, inbound, answer)


def direct_tcp(ip="198.51.100.7", port=443):
    world, ch, sh = new_world()
    server = world.start_process(sh, "server")
    client = world.start_process(ch, "client")
    lst = tcp_listen(server, "::" if ":" in ip else "0.0.0.0", port)
    c = tcp_connect(client, ip, port)
    s = accept(server, lst)
    send(client, c, REQUEST)
    assert recv_exactly(server, s, len(REQUEST)) == REQUEST
    send(server, s, RESPONSE)
    assert recv_exactly(client, c, len(RESPONSE)) == RESPONSE
    close(client, c)
    close(server, s)
    world.run_until_idle()
    return world


def proxied_tcp(proxy_ips=("127.0.0.1",), dest=("198.51.100.7", 443), dual_stack=False):
    """Client -> proxy 1 (port 5000) -> proxy 2 (port 6000) ... -> server.

    Each proxy listens on a loopback address of the client's machine,
    accepts, opens its own connection to the next hop and relays.
    """
    world, ch, sh = new_world()
    server = world.start_process(sh, "server")
    client = world.start_process(ch, "client")
    dest_ip, dest_port = dest
    lst = tcp_listen(server, "::" if ":" in dest_ip else "0.0.0.0", dest_port)
    proxies = []
    for n, ip in enumerate(proxy_ips):
        api = world.start_process(ch, f"proxy-{n}")
        listen_ip = "::" if dual_stack and n == 0 else ip
        proxies.append((api, tcp_listen(api, listen_ip, 5000 + 1000 * n, dual_stack=dual_stack and n == 0),
                        ip, 5000 + 1000 * n))
    # The client's connection goes to the first proxy (as a redirect would send it).
    c = tcp_connect(client, proxy_ips[0], 5000)
    inbound = []
    for n, (api, plst, _ip, _port) in enumerate(proxies):
        a = accept(api, plst)
        nxt = (proxies[n + 1][2], proxies[n + 1][3]) if n + 1 < len(proxies) else dest
        b = tcp_connect(api, *nxt)
        inbound.append((api, a, b))
    s = accept(server, lst)
    send(client, c, REQUEST)
    for api, a, b in inbound:
        data = recv_exactly(api, a, len(REQUEST))
        send(api, b, data, 100)                   # re-segmented on the way
    assert recv_exactly(server, s, len(REQUEST)) == REQUEST
    send(server, s, RESPONSE)
    for api, a, b in reversed(inbound):
        send(api, a, recv_exactly(api, b, len(RESPONSE)))
    assert recv_exactly(client, c, len(RESPONSE)) == RESPONSE
    close(client, c)
    close(server, s)
    for api, a, b in inbound:
        close(api, a, b)
    world.run_until_idle()
    return world


def looping_proxy(times: int = 3, with_data: bool = True):
    """A proxy whose outbound connections come back to its own listening port (no SET).

    It connects back to itself `times` times, relaying the client's bytes
    each time (with_data), then gives up and resets everything.
    """
    world, ch, _sh = new_world()
    client = world.start_process(ch, "client")
    proxy = world.start_process(ch, "proxy")
    plst = tcp_listen(proxy, "127.0.0.1", 5000)
    c = tcp_connect(client, "127.0.0.1", 5000)
    if with_data:
        send(client, c, REQUEST)
    socks = []
    for _ in range(times):
        a = accept(proxy, plst)
        b = tcp_connect(proxy, "127.0.0.1", 5000)       # "the original destination" -> redirected to itself
        if with_data:
            send(proxy, b, recv_exactly(proxy, a, len(REQUEST)))
        socks += [a, b]
    last = accept(proxy, plst)
    socks.append(last)
    linger_reset(proxy, socks)
    client.closesocket(c)
    world.run_until_idle()
    return world


def linger_reset(api, socks) -> None:
    """Abortive close (SO_LINGER 0): RST, as a proxy giving up does."""
    from harness.winsock.layouts import LINGER
    for s in socks:
        data = LINGER.pack(l_onoff=1, l_linger=0)
        ptr = api.memory.alloc(len(data))
        api.memory.write(ptr, data)
        assert api.setsockopt(s, C.SOL_SOCKET, C.SO_LINGER, ptr, len(data)) == 0, api.WSAGetLastError()
        api.closesocket(s)


QUERY = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x04test\x00\x00\x01\x00\x01"
ANSWER = QUERY[:2] + b"\x81\x80" + QUERY[4:] + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\xc6\x33\x64\x07"


def udp_relay(dest_ip="198.51.100.7", relay_ip="127.0.0.1", client_ip=None):
    """Client -> UDP relay on the client's machine -> server (port 53) and back."""
    world, ch, sh = new_world()
    server = world.start_process(sh, "dns")
    client = world.start_process(ch, "client")
    relay = world.start_process(ch, "relay")
    srv = udp_bind(server, "::" if ":" in dest_ip else "0.0.0.0", 53)
    rin = udp_bind(relay, relay_ip, 5353)
    rout = udp_bind(relay, "::" if ":" in dest_ip else "0.0.0.0", 0)
    cs = udp_bind(client, client_ip or relay_ip, 0)
    sendto(client, cs, QUERY, relay_ip, 5353)
    buf = relay.memory.alloc(2048)
    frm = relay.memory.alloc(128)
    fromlen = relay.memory.alloc(4)
    relay.memory.write_u32(fromlen, 128)
    got = relay.recvfrom(rin, buf, 2048, 0, frm, fromlen)
    query = relay.memory.read(buf, got)
    client_addr = relay.memory.read(frm, relay.memory.read_u32(fromlen))
    sendto(relay, rout, query, dest_ip, 53)
    # the server answers whoever asked
    sbuf = server.memory.alloc(2048)
    sfrm = server.memory.alloc(128)
    sfl = server.memory.alloc(4)
    server.memory.write_u32(sfl, 128)
    n = server.recvfrom(srv, sbuf, 2048, 0, sfrm, sfl)
    assert server.memory.read(sbuf, n) == QUERY
    reply = server.memory.alloc(len(ANSWER))
    server.memory.write(reply, ANSWER)
    assert server.sendto(srv, reply, len(ANSWER), 0, sfrm, server.memory.read_u32(sfl)) == len(ANSWER)
    answer = recvfrom(relay, rout)
    out = relay.memory.alloc(len(answer))
    relay.memory.write(out, answer)
    assert relay.sendto(rin, out, len(answer), 0, frm, len(client_addr)) == len(answer)
    assert recvfrom(client, cs) == ANSWER
    world.run_until_idle()
    return world


def udp_to_closed_port(dest_ip="198.51.100.7"):
    world, ch, _sh = new_world()
    client = world.start_process(ch, "client")
    cs = udp_bind(client, "::" if ":" in dest_ip else "0.0.0.0", 0)
    sendto(client, cs, QUERY, dest_ip, 9999)
    world.run_until_idle()
    return world
