"""Named end-to-end stories (docs/decisions.md §6), run in the simulator.

    python -m sim scenario list
    python -m sim scenario run two-vendors --json --pcap two-vendors.pcapng

Each story builds a world: a client host with an application, one or two
vendors' sample drivers and their reference proxies, and a server host with
echo services. The application connects (or sends datagrams) to the
server and checks the echo. The result names each connection's original
destination, every hop (which vendor redirected it, to which proxy PID,
and the redirect state each callout asked for), the final destination,
whether the bytes arrived intact, and a verdict: `ok`, `loop` (with the hop
chain) or `error`. The world's side of it is the public `story(world)`
(sim.wfp.story), which any world can tell; a scenario adds what its
application saw.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from harness.winsock import constants as C
from harness.winsock import sockaddr
from harness.proxy import redirect as rd
from harness.proxy.reference import IocpRedirectProxy, RedirectProxy
from harness.sample_driver import RedirectPolicy
from sim.worlds.ready import SERVER, client_server_world
from sim.worlds.services import CompletionEchoServer
from sim.worlds.sample_callout import install_sample_driver
from sim.wfp.story import story as world_story

TCP_PORT, UDP_PORT = 80, 53
VENDORS = {"VendorX": (9000, 9053), "VendorY": (9100, 9153), "VendorZ": (9200, 9253)}
# The proxies and echo server a Story runs unless told: completion-port driven, as high-throughput
# Windows proxies are, so a connection costs the same whatever the world holds (bench/RESULTS.md).
DEFAULT_PROXY = IocpRedirectProxy
DEFAULT_ECHO = CompletionEchoServer
PAYLOAD = b"GET /redirect-me HTTP/1.1\r\nHost: server\r\n\r\n"


@dataclass
class Connection:
    label: str
    protocol: str
    original_destination: str
    payload_sent: int = 0
    payload_back: int = 0
    intact: bool = False
    error: str = ""
    hops: list = field(default_factory=list)
    final_destination: str = ""
    loop: bool = False
    loop_chain: list = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.loop:
            return "loop"
        return "ok" if self.intact and not self.error else "error"

    def as_dict(self) -> dict:
        return {"label": self.label, "protocol": self.protocol,
                "original_destination": self.original_destination, "hops": self.hops,
                "final_destination": self.final_destination, "bytes_sent": self.payload_sent,
                "bytes_back": self.payload_back, "intact": self.intact, "error": self.error,
                "verdict": self.verdict, "loop_chain": self.loop_chain}


class Story:
    """A world with a client and a server host, vendors, proxies and an application."""

    def __init__(self, profile="documented", vendors=("VendorX",), set_records=True, proxy_elevated=True,
                 udp=True, proxy=None, echo=None):
        """`vendors` in order of sublayer weight (first = heaviest); `set_records` True, False,
        or the names of the vendors whose proxies forward the records; `proxy`: the proxy class
        (default DEFAULT_PROXY, the completion-port proxy; or RedirectProxy, the WSAPoll model of event
        loops), `echo` the server's echo class (default DEFAULT_ECHO; or EchoServer)."""
        proxy_class = proxy or DEFAULT_PROXY
        hosts = client_server_world(profile, tcp_port=TCP_PORT, udp_port=UDP_PORT, echo=echo or DEFAULT_ECHO)
        self.world, self.client_host, self.server_host, self.echo = (hosts.world, hosts.client, hosts.server,
                                                                     hosts.echo)
        self.inspected: dict = {}
        self.proxies = {}
        self.errors: list[str] = []
        for index, vendor in enumerate(vendors):
            tcp_port, udp_port = VENDORS[vendor]
            weight = 0x8000 - 0x1000 * index
            forwards = set_records if isinstance(set_records, bool) else vendor in set_records
            api = self.world.start_process(self.client_host, f"{vendor.lower()}-proxy", elevated=proxy_elevated)
            proxy = proxy_class(api, vendor, tcp_port=tcp_port, udp_port=udp_port if udp else 0,
                                  set_records=forwards,
                                  inspect=self._inspect).start()
            self.world.add_service(proxy.poll, proxy.api)
            self.proxies[vendor] = proxy
            policy = RedirectPolicy(tcp_ports=(TCP_PORT,), udp_ports=(UDP_PORT,), tcp_proxy_port=tcp_port,
                                    udp_proxy_port=udp_port, proxy_process_id=api.GetCurrentProcessId())
            install_sample_driver(self.world, self.client_host, policy, vendor=vendor, sublayer_weight=weight)
        self.app = self.world.start_process(self.client_host, "app", elevated=False)
        self.scratch = rd.Scratch(self.app)
        self.connections: list[Connection] = []

    def _inspect(self, proxy, conn, direction, data) -> None:
        key = (proxy.name, direction)
        self.inspected[key] = self.inspected.get(key, 0) + len(data)

    # -- the application ---------------------------------------------------
    def _timeout(self, s, ms: int) -> None:
        api = self.app
        api.memory.write_u32(self.scratch.value, ms)
        api.setsockopt(s, C.SOL_SOCKET, C.SO_RCVTIMEO, self.scratch.value, 4)

    def tcp(self, label: str, family: int, destination: str, port: int = TCP_PORT) -> Connection:
        api, sc = self.app, self.scratch
        conn = Connection(label, "tcp", sockaddr.host_port(destination, port))
        s = api.socket(family, C.SOCK_STREAM, 0)
        self._timeout(s, 2000)
        if family == C.AF_INET6 and destination.startswith("::ffff:"):
            api.memory.write_u32(sc.value, 0)          # a dual-stack socket: IPV6_V6ONLY off
            api.setsockopt(s, C.IPPROTO_IPV6, C.IPV6_V6ONLY, sc.value, 4)
        name = sockaddr.from_text(destination, port)
        api.memory.write(sc.addr, name)
        if api.connect(s, sc.addr, len(name)):
            conn.error = f"connect: {C.error_name(api.WSAGetLastError())}"
        else:
            api.memory.write(sc.buf, PAYLOAD)
            conn.payload_sent = api.send(s, sc.buf, len(PAYLOAD), 0)
            got = b""
            while len(got) < len(PAYLOAD):
                n = api.recv(s, sc.buf, sc.size, 0)
                if n <= 0:
                    if n < 0:
                        conn.error = f"recv: {C.error_name(api.WSAGetLastError())}"
                    break
                got += api.memory.read(sc.buf, n)
            conn.payload_back = len(got)
            conn.intact = got == PAYLOAD
        api.closesocket(s)
        self.connections.append(conn)
        return conn

    def udp(self, label: str, family: int, destination: str, port: int = UDP_PORT) -> Connection:
        api, sc = self.app, self.scratch
        conn = Connection(label, "udp", sockaddr.host_port(destination, port))
        s = api.socket(family, C.SOCK_DGRAM, 0)
        self._timeout(s, 2000)
        name = sockaddr.from_text(destination, port)
        api.memory.write(sc.addr, name)
        got = b""
        for _ in range(2):              # the flow-creating datagram and one more
            api.memory.write(sc.buf, PAYLOAD)
            if api.sendto(s, sc.buf, len(PAYLOAD), 0, sc.addr, len(name)) < 0:
                conn.error = f"sendto: {C.error_name(api.WSAGetLastError())}"
                break
            conn.payload_sent += len(PAYLOAD)
            n = api.recvfrom(s, sc.buf, sc.size, 0, 0, 0)
            if n < 0:
                conn.error = f"recvfrom: {C.error_name(api.WSAGetLastError())}"
                break
            got += api.memory.read(sc.buf, n)
        conn.payload_back = len(got)
        conn.intact = got == PAYLOAD * 2
        api.closesocket(s)
        self.connections.append(conn)
        return conn

    # -- the report ------------------------------------------------------------
    def finish(self) -> None:
        self.world.run(10)
        told = list(world_story(self.world).connections)
        for conn in self.connections:
            want = _normal(conn.original_destination)
            chain = next((c for c in told if c.protocol == conn.protocol and c.original_destination == want), None)
            if chain is None:
                conn.final_destination = conn.original_destination if conn.intact else ""
                continue
            told.remove(chain)
            conn.hops, conn.loop, conn.loop_chain = chain.hops, chain.loop, chain.loop_chain
            conn.final_destination = chain.final_destination if conn.intact else ""
        for proxy in self.proxies.values():
            self.errors += [f"{proxy.name}: {e}" for e in proxy.stats.errors]

    def report(self, name: str) -> dict:
        verdicts = [c.verdict for c in self.connections]
        verdict = "loop" if "loop" in verdicts else "error" if "error" in verdicts or not verdicts else "ok"
        return {
            "scenario": name, "profile": self.world.profile.name, "verdict": verdict,
            "connections": [c.as_dict() for c in self.connections],
            "inspected_bytes": {f"{v}/{d}": n for (v, d), n in sorted(self.inspected.items())},
            "proxy_errors": self.errors,
            "diagnostics": [{"kind": d.kind, "message": d.message} for d in self.world.kernel.diagnostics],
            "virtual_time_ns": self.world.now_ns,
            "packets": len(self.world.network.packets),
        }


def _normal(text: str) -> str:
    """Compare endpoints the way the hop tracker prints them (v4-mapped shown as IPv4)."""
    host, port = text.rsplit(":", 1)
    addr = ipaddress.ip_address(host.strip("[]"))
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return sockaddr.host_port(str(addr), int(port))


# -- the stories ---------------------------------------------------------------

def single_proxy(profile):
    """One vendor's driver redirects an HTTP connection to its proxy, which forwards it."""
    story = Story(profile, ("VendorX",))
    story.tcp("app -> server:80", C.AF_INET, SERVER[0])
    return story


def two_vendors(profile):
    """Two vendors' drivers and proxies: each inspects the stream exactly once, no loop (docs/facts.md §5.7)."""
    story = Story(profile, ("VendorX", "VendorY"))
    story.tcp("app -> server:80", C.AF_INET, SERVER[0])
    return story


def missing_set_loop(profile):
    """The proxy forgets SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS: its own driver redirects it back."""
    story = Story(profile, ("VendorX",), set_records=False)
    story.tcp("app -> server:80", C.AF_INET, SERVER[0])
    return story


def dual_stack(profile):
    """IPv4, IPv6 and a dual-stack socket to an IPv4 address, all through one proxy."""
    story = Story(profile, ("VendorX",))
    story.tcp("v4 app -> server:80", C.AF_INET, SERVER[0])
    story.tcp("v6 app -> server:80", C.AF_INET6, SERVER[1])
    story.tcp("dual-stack app -> v4-mapped server:80", C.AF_INET6, "::ffff:" + SERVER[0])
    return story


def udp_single_proxy(profile):
    """A UDP flow: the record arrives as a cmsg on the first datagram and is forwarded on the first one out."""
    story = Story(profile, ("VendorX",))
    story.udp("app -> server:53/udp", C.AF_INET, SERVER[0])
    return story


def udp_missing_records_loop(profile):
    """A UDP proxy forgets to forward the records cmsg: its own driver sends its datagram back to it."""
    story = Story(profile, ("VendorX",), set_records=False)
    story.udp("app -> server:53/udp", C.AF_INET, SERVER[0])
    return story


def udp_two_vendors(profile):
    """Two vendors on a UDP flow: each proxy forwards the records on its first datagram out."""
    story = Story(profile, ("VendorX", "VendorY"))
    story.udp("app -> server:53/udp", C.AF_INET, SERVER[0])
    return story


class _ListenerQueryingProxy(RedirectProxy):
    """A proxy with a classic bug: it queries the listening socket instead of the accepted one."""

    def _accept(self, lst) -> bool:
        api = self.api
        client = api.accept(lst, 0, 0)
        if client == C.INVALID_SOCKET:
            return False
        self.stats.accepted += 1
        try:
            rd.query_records(api, lst, self.scratch)
        except rd.WinsockError as exc:
            self._error(f"query on the listening socket: {C.error_name(exc.code)}")
        api.closesocket(client)
        self.stats.refused += 1
        return True


def query_listening_socket(profile):
    """The records query on a listening socket fails (WSAENOTCONN): nothing can be forwarded."""
    story = Story(profile, ())
    api = story.world.start_process(story.client_host, "buggy-proxy")
    proxy = _ListenerQueryingProxy(api, "VendorX", tcp_port=VENDORS["VendorX"][0]).start()
    story.world.add_service(proxy.poll, proxy.api)
    story.proxies["VendorX"] = proxy
    install_sample_driver(story.world, story.client_host,
                          RedirectPolicy(tcp_ports=(TCP_PORT,), tcp_proxy_port=VENDORS["VendorX"][0],
                                         proxy_process_id=api.GetCurrentProcessId()), vendor="VendorX")
    story.tcp("app -> server:80", C.AF_INET, SERVER[0])
    return story


def non_elevated_set(profile):
    """A proxy that is not elevated: SET fails with WSAEACCES, so its connection comes back to it."""
    story = Story(profile, ("VendorX",), proxy_elevated=False)
    story.tcp("app -> server:80", C.AF_INET, SERVER[0])
    return story


SCENARIOS = {
    "single-proxy": single_proxy,
    "two-vendors": two_vendors,
    "missing-set-loop": missing_set_loop,
    "dual-stack": dual_stack,
    "udp-single-proxy": udp_single_proxy,
    "udp-two-vendors": udp_two_vendors,
    "udp-missing-records-loop": udp_missing_records_loop,
    "query-listening-socket": query_listening_socket,
    "non-elevated-set": non_elevated_set,
}


def run(name: str, profile="documented"):
    """Run a scenario; returns (report dict, world)."""
    story = SCENARIOS[name](profile)
    story.finish()
    return story.report(name), story.world
