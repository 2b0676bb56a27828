"""The packaged proxy's real-Winsock target (harness.proxy_service.targets.AgentTarget) under wine64.

The target a Windows guest runs (`run`/`service` with the winsock-agent as the
proxy's child process) is run here over Wine's ws2_32: the session start, the
listeners, WSAPoll idling, accept, the outbound connect and the relay are real
Winsock calls in a real agent process. Wine has no WFP: the redirect IOCTLs
answer WSAEOPNOTSUPP, which the proxy must survive. Where a test needs a
redirected connection, `CalloutStandIn` plays the sample driver's one part
Winsock cannot: it answers the two QUERY IOCTLs on accepted sockets with the
records and context the driver would attach (and says so in its name). The
SET still goes to Wine and fails with WSAEOPNOTSUPP.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness import sample_driver as sd
from harness.proxy_service import core
from harness.proxy_service.targets import AgentTarget
from harness.winsock import constants as C

ROOT = Path(__file__).resolve().parents[2]
RECORDS = b"opaque redirect records from the callout stand-in".ljust(64, b".")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EchoServer:
    """The original destination: a Linux TCP echo server on loopback."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.peers = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer)
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data)

    def close(self):
        self.sock.close()


class CalloutStandIn:
    """The WinsockApi of the agent, except that the QUERY IOCTLs on sockets this process
    accepted answer what the sample driver would have attached to a connection it
    redirected to ``original`` (Wine's Winsock has no WFP, so it answers WSAEOPNOTSUPP).
    Everything else, the SET included, is the real call."""

    def __init__(self, api, original: tuple[str, int]):
        self._api, self.original = api, original
        self.accepted: set[int] = set()
        self.answered: list[str] = []

    def __getattr__(self, name):
        return getattr(self._api, name)

    def accept(self, s, addr, addrlen):
        client = self._api.accept(s, addr, addrlen)
        if client != C.INVALID_SOCKET:
            self.accepted.add(client)
        return client

    def WSAIoctl(self, s, code, inbuf, inlen, outbuf, outlen, returned, overlapped, routine):
        rc = self._api.WSAIoctl(s, code, inbuf, inlen, outbuf, outlen, returned, overlapped, routine)
        queries = {C.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS: RECORDS,
                   C.SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT: sd.pack_context(
                       self.original, ("127.0.0.1", 50000), protocol=C.IPPROTO_TCP)}
        if rc == 0 or code not in queries or s not in self.accepted:
            return rc
        assert self._api.WSAGetLastError() == C.WSAEOPNOTSUPP       # what Wine answers, as a pre-Windows-8 stack
        blob = queries[code]
        self.answered.append(hex(code))
        mem = self._api.memory
        mem.write_u32(returned, len(blob))
        if outlen < len(blob):
            self._api.WSASetLastError(C.WSAEFAULT)
            return C.SOCKET_ERROR
        mem.write(outbuf, blob)
        return 0


class StandInTarget(AgentTarget):
    def __init__(self, original=None, **kw):
        super().__init__("wine", **kw)
        self.original, self.stand_in = original, None

    def open_api(self):
        api = super().open_api()
        if self.original is None:
            return api
        self.stand_in = CalloutStandIn(api, self.original)
        return self.stand_in


class DriverStandIn:
    """The sample driver's Parameters key and reload IOCTL (no driver under Wine): the
    policy redirects TCP 80 to ``tcp_proxy_port``; reload parses what was written."""

    def __init__(self, tcp_proxy_port: int):
        policy = sd.RedirectPolicy(tcp_ports=(80,), tcp_proxy_port=tcp_proxy_port)
        self.values = {n: (t, core.encode_value(t, v)) for n, (t, v) in policy.to_registry_values().items()}
        self.generation = 1
        self.reloads = []

    def __call__(self):
        return self

    def read_values(self):
        return dict(self.values)

    def write_value(self, name, regtype, data):
        self.values[name] = (regtype, bytes(data))

    def reload(self):
        policy = sd.parse_registry_values(self.values)
        self.generation += 1
        self.reloads.append(policy.proxy_process_id)
        return sd.RELOAD_RESULT.pack(generation=self.generation, proxy_process_id=policy.proxy_process_id,
                                     tcp_port_count=len(policy.tcp_ports), udp_port_count=len(policy.udp_ports))

    def close(self):
        pass


def _serve(session):
    stop = threading.Event()
    thread = threading.Thread(target=session.serve, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def test_proxy_service_target_relays_a_loopback_connection_over_wines_winsock(wine_available):
    echo = EchoServer()
    port = _free_port()
    driver = DriverStandIn(port)
    target = StandInTarget(("127.0.0.1", echo.port), store=driver)
    cfg = core.ProxyConfig(tcp_port=port, addresses=("127.0.0.1",), register_policy=True, name="wine-proxy",
                           max_idle_ms=50)
    steps = []
    session = core.ProxySession(target, cfg, progress=steps.append).start()
    try:
        agent_pid = target.api.hello.pid
        # Registered the agent's PID (the process whose sockets the driver must redirect to).
        assert session.proxy.pid == agent_pid and driver.reloads == [agent_pid] and steps == ["listening", "registered"]
        stop, thread = _serve(session)
        payload = b"through the packaged proxy, over Wine's Winsock\r\n" * 40
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := client.recv(65536):
                got += chunk
        stop.set()
        thread.join(30)
    finally:
        session.close()
        echo.close()
    stats = session.proxy.stats
    assert got == payload
    assert (stats.accepted, stats.forwarded, stats.refused) == (1, 1, 0)
    assert stats.bytes_up == stats.bytes_down == len(payload)
    assert target.stand_in.answered == [hex(C.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS),
                                        hex(C.SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT)]
    # The SET went to Wine: WSAEOPNOTSUPP is logged as a proxy error and the connection still went out.
    assert stats.errors == ["set records: SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS failed: WSAEOPNOTSUPP (10045)"]
    assert driver.reloads == [agent_pid, 0]                  # unregistered at close
    assert target.api is None                                # the agent went back to the pool


def test_without_a_callout_wines_wsaeopnotsupp_refuses_the_connection_and_the_proxy_keeps_serving(wine_available):
    port = _free_port()
    target = StandInTarget(None)
    cfg = core.ProxyConfig(tcp_port=port, addresses=("127.0.0.1",), name="wine-proxy", max_idle_ms=50)
    session = core.ProxySession(target, cfg).start()
    try:
        stop, thread = _serve(session)
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
                client.settimeout(30)
                assert client.recv(1) == b""                 # closed by the proxy: nothing to forward to
        stop.set()
        thread.join(30)
    finally:
        session.close()
    stats = session.proxy.stats
    assert (stats.accepted, stats.forwarded, stats.refused) == (2, 0, 2)
    assert stats.errors == ["query: SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS failed: WSAEOPNOTSUPP (10045)"] * 2


def test_run_target_wine_is_the_same_command_and_register_policy_needs_windows(wine_available, tmp_path):
    """`run --target wine` starts, listens through the agent, and stops on a signal; the
    driver's key exists only on Windows, so --register-policy there is one line, exit 2."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    port = _free_port()
    proc = subprocess.run([sys.executable, "-m", "harness.proxy_service", "run", "--target", "wine", "--tcp-port",
                           str(port), "--address", "127.0.0.1", "--register-policy"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"python -m harness.proxy_service: --register-policy needs the sample driver's registry key and device, "
        f"on Windows (this is {sys.platform!r})"]
    log = tmp_path / "proxy.log"
    child = subprocess.Popen([sys.executable, "-m", "harness.proxy_service", "run", "--target", "wine",
                              "--tcp-port", str(port), "--address", "127.0.0.1", "--log", str(log)], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with socket.socket() as probe:
            probe.settimeout(1)
            for _ in range(120):                             # until the agent's listener answers
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
                if child.poll() is not None:
                    break
                threading.Event().wait(0.5)
            else:
                pytest.fail("the proxy never listened")
        for _ in range(120):               # until the proxy has taken and refused the probe's connection
            if log.exists() and "WSAEOPNOTSUPP" in log.read_text() or child.poll() is not None:
                break
            threading.Event().wait(0.5)
        child.send_signal(2)                                  # SIGINT: as Ctrl-C
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert out.startswith("WfpRedirectProxy stats: accepted=1 forwarded=0 closed=0 refused=1")
    text = log.read_text()
    assert "listening on 127.0.0.1 at TCP" in text
    assert "query: SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS failed: WSAEOPNOTSUPP (10045)" in text
