"""A redirected connection on any target: the installed sample driver redirects this very process.

For the conformance cases that need a connection a callout really
redirected (`redirected` fixture), on a guest with the sample driver:

1. read the driver's policy (its Parameters key) and take its first TCP port
   and its TCP proxy port;
2. listen on 127.0.0.1:<proxy port>;
3. register this process as the proxy (ProxyProcessId, then the reload IOCTL:
   harness.proxy_service.core, the same code the packaged proxy uses);
4. connect to 127.0.0.1:<redirected port>: the driver rewrites the connect to
   the listener, with this PID as localRedirectTargetPID and a context naming
   127.0.0.1:<redirected port>;
5. accept: that socket is what a redirect service holds when it queries.

`release()` puts ProxyProcessId back to 0 (only if it still names this PID)
and closes the sockets. The policy store is `DriverPolicyStore` on Windows and
`SimPolicyStore` in tests, so this logic runs here against the simulator.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.proxy_service import core
from harness.winsock import constants as C
from harness.winsock import sockaddr
from harness.proxy import redirect as rd
from harness import sample_driver as sd


class NoRedirectPolicy(RuntimeError):
    """The installed policy redirects no TCP port: there is nothing to test against."""


@dataclass
class RedirectedConnection:
    api: object
    sock: int                 # the accepted, redirected socket
    listener: int
    app: object               # the connecting side is this same process
    app_sock: int
    original: tuple           # (ip, port) the connect asked for
    store: object
    app_elevated: bool = True

    def release(self) -> None:
        api = self.api
        pid = api.GetCurrentProcessId()
        try:
            plan = core.plan_unregistration(self.store.read_values(), pid)
            if plan is not None:
                core.apply_plan(self.store, plan)
        finally:
            for s in (self.sock, self.app_sock, self.listener):
                api.closesocket(s)


def _check(api, rc: int, what: str) -> None:
    if rc:
        raise rd.WinsockError(what, api.WSAGetLastError())


def redirected_connection(api, store) -> RedirectedConnection:
    """Make the installed driver redirect a connection of this process to itself."""
    try:
        policy = sd.parse_registry_values(store.read_values())
    except ValueError as exc:
        raise NoRedirectPolicy(f"the driver's policy is invalid: {exc}") from None
    if not policy.enabled or not policy.tcp_ports or not policy.tcp_proxy_port:
        raise NoRedirectPolicy("the driver's policy redirects no TCP port (TcpPorts, TcpProxyPort, Enabled)")
    port = policy.tcp_ports[0]
    scratch = rd.Scratch(api, 256)
    mem = api.memory
    listener = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    name = sockaddr.from_text("127.0.0.1", policy.tcp_proxy_port)
    mem.write(scratch.addr, name)
    _check(api, api.bind(listener, scratch.addr, len(name)), "bind(proxy port)")
    _check(api, api.listen(listener, 4), "listen")
    pid = api.GetCurrentProcessId()
    core.apply_plan(store, core.plan_registration(store.read_values(), pid, tcp_port=policy.tcp_proxy_port))
    client = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    original = ("127.0.0.1", port)
    name = sockaddr.from_text(*original)
    mem.write(scratch.addr, name)
    try:
        _check(api, api.connect(client, scratch.addr, len(name)), f"connect({original})")
        accepted = api.accept(listener, 0, 0)
        if accepted == C.INVALID_SOCKET:
            raise rd.WinsockError("accept", api.WSAGetLastError())
    except rd.WinsockError:
        plan = core.plan_unregistration(store.read_values(), pid)
        if plan is not None:
            core.apply_plan(store, plan)
        api.closesocket(client)
        api.closesocket(listener)
        raise
    return RedirectedConnection(api, accepted, listener, api, client, original, store)
