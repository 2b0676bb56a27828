"""Targets served by the winsock-agent: `wine` (this machine's wine64) and `agent` (any command).

    api = make_agent_api("wine")                                      # a fresh AgentWinsock
    api = make_agent_api("agent", {"agent_command": "ssh winhost C:\\\\wfp\\\\winsock-agent.exe"})
    ...
    api.close()

Agent processes are pooled per target and command: closing a provider cleans
the agent (closes the sockets, events and ports the test left, balances
WSAStartup, ends the provider's agent threads, decommits its memory) and
returns it to the pool, so each test starts from a clean state without paying
an agent start (about 0.2 s under a warm wineserver, against about 2 ms for
the cleanup; the conformance suite runs in half the time). A provider closed
while a call is still in flight, one during which a call faulted, or one
whose agent died, hung or broke the protocol, discards the process; the next
provider gets a fresh one. WFP_AGENT_REUSE=0 starts one agent per provider.

`options` is a mapping (or an object with attributes) that may name
`agent_command`; for `agent` it falls back to env WFP_AGENT_COMMAND.
"""
from __future__ import annotations

import atexit
import os
import threading

from harness.agent import build, launch
from harness.agent.protocol import AgentError, AgentUnavailable
from harness.agent.provider import AgentWinsock

AGENT_TARGETS = ("wine", "agent")

_pool: dict[tuple, list] = {}
_pool_lock = threading.Lock()


def _option(options, name: str):
    if options is None:
        return None
    if isinstance(options, dict):
        return options.get(name)
    return getattr(options, name, None)


def agent_command(target: str, options=None) -> str | None:
    if target != "agent":
        return None
    return _option(options, "agent_command") or os.environ.get("WFP_AGENT_COMMAND") or None


def _key(target: str, options) -> tuple:
    if target not in AGENT_TARGETS:
        raise ValueError(f"unknown agent target {target!r}; choose one of {', '.join(AGENT_TARGETS)}")
    return (target, agent_command(target, options))


def check_target(target: str, options=None) -> None:
    """Raise AgentUnavailable/AgentError with a one-line message if `target` cannot run here."""
    target, command = _key(target, options)
    if target == "wine":
        launch.find_wine()
        if not os.environ.get("WFP_AGENT_EXE"):
            build.find_compiler()
    elif not command:
        raise AgentError("needs --agent-command \"COMMAND\" (or env WFP_AGENT_COMMAND), "
                         "e.g. \"ssh winhost C:\\wfp\\winsock-agent.exe\"")


def _start(key: tuple):
    target, command = key
    return launch.start_wine() if target == "wine" else launch.start_command(command)


def _lease(key: tuple):
    with _pool_lock:
        idle = _pool.setdefault(key, [])
        while idle:
            session = idle.pop()
            if session.alive:
                return session, True
    return _start(key), False


def _give_back(key: tuple):
    def on_close(session, clean: bool) -> None:
        if clean and os.environ.get("WFP_AGENT_REUSE", "1") != "0":
            with _pool_lock:
                _pool.setdefault(key, []).append(session)
        else:
            session.close()
    return on_close


def make_agent_api(target: str, options=None) -> AgentWinsock:
    """A fresh AgentWinsock for `target` ('wine' or 'agent'), WSAStartup already called."""
    key = _key(target, options)
    session, reused = _lease(key)
    try:
        return AgentWinsock(session, on_close=_give_back(key), name=target)
    except AgentError:
        session.kill("discarded: it failed while a provider was being set up")
        if not reused:
            raise
    session, _ = _start(key), False             # a pooled agent that went bad: one fresh try
    return AgentWinsock(session, on_close=_give_back(key), name=target)


def _hello(target: str, options=None):
    key = _key(target, options)
    session, _ = _lease(key)
    _give_back(key)(session, session.alive)
    return session.hello


def capabilities(target: str, options=None) -> set:
    """The conformance capabilities of an agent target: UDP and IPv6, `elevated` if the
    agent's token is elevated. Never `requires_redirect` (no WFP callout is driven
    through the agent) nor `sim_only`."""
    caps = {"udp", "ipv6"}
    if _hello(target, options).elevated:
        caps.add("elevated")
    return caps


def describe(target: str, options=None) -> str:
    """The OS the agent reports, and its build id (for JUnit properties)."""
    hello = _hello(target, options)
    return f"{hello.os}; winsock-agent {hello.build_id}"


def shutdown() -> None:
    """Close every pooled agent."""
    with _pool_lock:
        sessions = [s for idle in _pool.values() for s in idle]
        _pool.clear()
    for session in sessions:
        session.close(timeout=1.0)


atexit.register(shutdown)

__all__ = ["AGENT_TARGETS", "make_agent_api", "check_target", "capabilities", "describe", "shutdown",
           "agent_command", "AgentUnavailable"]
