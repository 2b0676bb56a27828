"""Where the proxy runs: a real Winsock through the winsock-agent, or the simulator.

Both targets give :class:`~harness.proxy_service.core.ProxySession` the same
things (a WinsockApi, an elevation answer, a policy store, idle and clock), so
the session, the proxy and the registration are one code path. The real
Winsock is always reached through the winsock-agent started as a child
process of the proxy (`harness.targets.make_api`): on a Windows guest the
agent is the local `winsock-agent.exe` (`--target agent --agent PATH`);
here, `--target wine` runs the same agent under wine64, so the path a guest
takes is the path the tests exercise. The simulator is imported only when
the sim target is built.
"""
from __future__ import annotations

import shlex
import struct
import sys
import threading
import time

from harness.winsock import constants as C
from harness.winsock import sockaddr
from harness.proxy import redirect as rd
from harness import sample_driver as sd

from . import core

REDIRECTED_TCP, REDIRECTED_UDP = 80, 53       # the ports the demo policy redirects


def agent_options(agent: str | None):
    """harness.targets options that start `agent` (a path) as a local child process.

    launch.start_command splits with POSIX shlex, which would eat a Windows
    path's backslashes; single quotes keep them."""
    return {"agent_command": shlex.quote(agent)} if agent else None


def no_driver_here() -> core.StartupError:
    return core.StartupError(f"--register-policy needs the sample driver's registry key and device, on Windows "
                             f"(this is {sys.platform!r})", exit_code=core.EXIT_USAGE)


class AgentTarget:
    """Real ws2_32 in a winsock-agent child process; the real driver through win32.py.

    The proxy's sockets live in the agent, so the agent's PID is the one the
    driver must redirect to: RedirectProxy.pid is GetCurrentProcessId() called
    in the agent, and that is what --register-policy writes. The agent inherits
    this process's token, so its HELLO answers the elevation question for the
    process that will SET the records. ``store`` (a factory) replaces the
    driver's registry key and device where there is none (Wine, tests).
    """

    def __init__(self, target: str = "agent", agent: str | None = None, fns=None, store=None):
        self.target, self.options, self.fns, self._store = target, agent_options(agent), fns, store
        self.api = None
        self.proxy = None

    def _open(self):
        if self.api is None:
            from harness import targets
            from harness.agent import AgentError
            try:
                self.api = targets.make_api(self.target, None, self.options)
            except (OSError, targets.TargetError, AgentError) as exc:
                raise core.StartupError(f"winsock-agent did not start: {' '.join(str(exc).split())}") from None
        return self.api

    def is_elevated(self):
        return bool(self._open().hello.elevated)

    def open_api(self):
        return self._open()

    def policy_store(self):
        if self._store is not None:
            return self._store()
        if self.fns is None:
            raise no_driver_here()
        from . import win32
        return win32.DriverPolicyStore(self.fns)

    def idle(self, api, ms: int) -> None:
        # Wait in the proxy's own WSAPoll: a new connection or datagram ends the idle at once
        # instead of after the sleep. Before the proxy is attached, an alertable sleep.
        if self.proxy is not None:
            self.proxy.poll(ms)
        else:
            api.SleepEx(ms, 1)

    @staticmethod
    def clock() -> float:
        return time.monotonic()

    def attach(self, proxy) -> None:
        self.proxy = proxy

    def close(self) -> None:
        if self.api is not None:
            from harness import targets
            targets.close_api(self.api)
            self.api = None


# --- the simulator -----------------------------------------------------------------------
class SimPolicyStore:
    """The simulated driver's Parameters key (raw registry bytes) and its reload IOCTL."""

    def __init__(self, target: SimTarget):
        self.target = target

    def read_values(self) -> dict:
        return dict(self.target.registry)

    def write_value(self, name: str, regtype: int, data: bytes) -> None:
        self.target.registry[name] = (regtype, bytes(data))

    def reload(self) -> bytes:
        """What the driver's WfprcPolicyReload does: parse; refuse, or swap and bump the generation."""
        try:
            policy = sd.parse_registry_values(self.target.registry)
        except ValueError as exc:
            raise core.PolicyRefused(f"the driver refused the policy (ERROR_INVALID_PARAMETER): {exc}; the "
                                     f"previous policy stays in force",
                                     win32_error=core.ERROR_INVALID_PARAMETER) from None
        callout = self.target.callout
        callout.reload(policy)
        return sd.RELOAD_RESULT.pack(generation=callout.generation, proxy_process_id=policy.proxy_process_id,
                                     tcp_port_count=len(policy.tcp_ports), udp_port_count=len(policy.udp_ports))

    def close(self) -> None:
        pass


class DemoClient:
    """An application making ``count`` TCP connections, one after the other, each
    sending a request and reading its echo. Non-blocking, polled by the world."""

    PAYLOAD = b"GET /through-the-packaged-proxy HTTP/1.1\r\nHost: server\r\n\r\n"

    def __init__(self, api, host: str, port: int, count: int):
        self.api, self.host, self.port, self.count = api, host, port, count
        self.scratch = rd.Scratch(api, 4096)
        self.select_sets = api.memory.alloc(40)      # writefds, exceptfds (one socket each), timeval 0
        self.results: list[tuple[bool, str]] = []     # (intact, error) per connection
        self.current = None
        self.done = False

    @property
    def intact(self) -> int:
        return sum(1 for ok, _ in self.results if ok)

    def poll(self) -> bool:
        progress = False
        while not self.done and self._step():
            progress = True
        return progress

    def _finish(self, intact: bool, error: str = "") -> bool:
        self.api.closesocket(self.current["s"])
        self.results.append((intact, error))
        self.current = None
        return True

    def _step(self) -> bool:
        api, sc, mem = self.api, self.scratch, self.api.memory
        c = self.current
        if c is None:
            if len(self.results) >= self.count:
                self.done = True
                return True
            s = api.socket(sockaddr.text_family(self.host), C.SOCK_STREAM, 0)
            mem.write_u32(sc.value, 1)
            api.ioctlsocket(s, C.FIONBIO, sc.value)
            name = sockaddr.from_text(self.host, self.port)
            mem.write(sc.addr, name)
            self.current = {"s": s, "state": "connecting", "got": b""}
            if api.connect(s, sc.addr, len(name)) and api.WSAGetLastError() != C.WSAEWOULDBLOCK:
                return self._finish(False, f"connect: {C.error_name(api.WSAGetLastError())}")
            return True
        s = c["s"]
        if c["state"] == "connecting":
            # The select page: a non-blocking connect has succeeded when the socket is writable,
            # failed when it is in exceptfds. (getpeername is no test: it succeeds while the
            # connect is in progress, Wine dlls/ws2_32/tests/sock.c test_connecting_socket.)
            sel = self.select_sets
            mem.write(sel, struct.pack("<IIQIIQii", 1, 0, s, 1, 0, s, 0, 0))
            if api.select(0, 0, sel, sel + 16, sel + 32) <= 0:
                return False
            if mem.read_u32(sel + 16):                      # in exceptfds: the connect failed
                mem.write_u32(sc.addrlen, 4)
                api.getsockopt(s, C.SOL_SOCKET, C.SO_ERROR, sc.value, sc.addrlen)
                return self._finish(False, f"connect: {C.error_name(mem.read_u32(sc.value))}")
            mem.write(sc.buf, self.PAYLOAD)
            if api.send(s, sc.buf, len(self.PAYLOAD), 0) != len(self.PAYLOAD):
                return self._finish(False, f"send: {C.error_name(api.WSAGetLastError())}")
            c["state"] = "receiving"
            return True
        n = api.recv(s, sc.buf, sc.size, 0)
        if n > 0:
            c["got"] += mem.read(sc.buf, n)
            if len(c["got"]) >= len(self.PAYLOAD):
                return self._finish(c["got"] == self.PAYLOAD)
            return True
        if n == 0:
            return self._finish(False, f"closed after {len(c['got'])} bytes")
        err = api.WSAGetLastError()
        if err == C.WSAEWOULDBLOCK:
            return False
        return self._finish(False, f"recv: {C.error_name(err)}")


class SimTarget:
    """A simulated client host with the sample driver installed and the proxy as a process.

    The driver's policy redirects TCP 80 (and UDP 53 when the proxy has a UDP
    port) to the proxy's ports. Without --register-policy the policy already
    names the proxy's PID (an administrator wrote it); with it, ProxyProcessId
    starts at 0, as the INF creates it, and only the proxy's registration makes
    the driver redirect. With ``demo`` an app makes that many connections to an
    echo server on another host; when they are done (and the proxy has closed
    them, or 5 virtual seconds passed) ``stop`` is set, as Ctrl-C would.
    """

    DEMO_TIMEOUT_S = 120.0
    DRAIN_S = 5.0

    def __init__(self, config: core.ProxyConfig, *, demo: int = 0, profile: str = "documented",
                 stop: threading.Event | None = None, realtime: bool = True):
        from sim.worlds.ready import client_server_world
        self.config, self.demo_count, self.realtime = config, demo, realtime
        self.stop = stop if stop is not None else threading.Event()
        hosts = client_server_world(profile, tcp_port=REDIRECTED_TCP, udp_port=REDIRECTED_UDP)
        self.world, self.client_host, self.server_host, self.echo = (hosts.world, hosts.client, hosts.server,
                                                                     hosts.echo)
        self.registry: dict = {}
        self.callout = None
        self.demo: DemoClient | None = None
        self.proxy = None
        self.api = None
        self._done_at = None
        self.timed_out = False

    def is_elevated(self):
        return True                           # the proxy process is started elevated, as services run

    def open_api(self):
        from sim.worlds.ready import SERVER
        from sim.worlds.sample_callout import install_sample_driver
        cfg = self.config
        self.api = self.world.start_process(self.client_host, cfg.name, elevated=True)
        pid = 0 if cfg.register_policy else self.api.GetCurrentProcessId()
        policy = sd.RedirectPolicy(tcp_ports=(REDIRECTED_TCP,) if cfg.tcp_port else (),
                                   udp_ports=(REDIRECTED_UDP,) if cfg.udp_port else (),
                                   tcp_proxy_port=cfg.tcp_port, udp_proxy_port=cfg.udp_port,
                                   proxy_process_id=pid)
        self.registry = {name: (regtype, core.encode_value(regtype, value))
                         for name, (regtype, value) in policy.to_registry_values().items()}
        self.callout = install_sample_driver(self.world, self.client_host, policy, vendor="Contoso")
        if self.demo_count:
            app = self.world.start_process(self.client_host, "demo-app", elevated=False)
            self.demo = DemoClient(app, SERVER[0], REDIRECTED_TCP, self.demo_count)   # the echo host
            self.world.add_service(self.demo.poll)
        self._started_ns = self.world.now_ns
        return self.api

    def policy_store(self):
        return SimPolicyStore(self)

    def attach(self, proxy) -> None:
        self.proxy = proxy

    def idle(self, api, ms: int) -> None:
        self.world.run(ms)
        now = self.clock()
        if self.demo is not None:
            if self.demo.done and self._done_at is None:
                self._done_at = now
            if self._done_at is not None and (not self.proxy.connections or now - self._done_at > self.DRAIN_S):
                self.stop.set()
            elif now - self._started_ns / 1e9 > self.DEMO_TIMEOUT_S:
                self.timed_out = True
                self.stop.set()
        elif self.realtime:
            time.sleep(ms / 1000)             # nothing drives the world: keep to wall time, spare the CPU

    def clock(self) -> float:
        return self.world.now_ns / 1e9        # virtual seconds: the demo is deterministic

    def close(self) -> None:
        pass
