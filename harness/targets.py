"""Targets: where WinsockApi calls go. The one factory every entry point uses.

A real Winsock is always reached through the winsock-agent (`wine`: Wine's
ws2_32 on this machine; `agent`: any command that starts the agent, such as
its path on a Windows guest or an SSH exec channel to one), so the path CI
exercises under Wine is the path a Windows guest takes.

    api = make_api("sim", profile)          # a fresh provider, WSAStartup done
    api = make_api("agent", profile, {"agent_command": "ssh winhost C:\\wfp\\winsock-agent.exe"})
    ...
    close_api(api)                          # one WSACleanup per WSAStartup, memory released

    with redirected("sim", profile) as conn: ...   # a TCP connection a sample driver redirected

Used by the pytest plugin (`api`, `redirected` fixtures), trace record and
replay, profile probes and the CLI. A target that is unknown, or that cannot
run here, raises `TargetError` with a one-line reason, before anything starts.
"""
from __future__ import annotations

import contextlib
import os
import sys


class TargetError(ValueError):
    """A target that does not exist or cannot run here; the message is one line for the user."""


# name -> what it is, for --help texts and errors
TARGETS: dict[str, str] = {
    "sim": "the embedded simulator (default)",
    "wine": "Wine's real ws2_32: the winsock-agent under wine64 (built with mingw-w64 when missing)",
    "agent": "the winsock-agent started by --agent-command (e.g. through ssh on a Windows guest)",
}
AGENT_TARGETS = ("wine", "agent")
# `options`, where a function takes them: a mapping (or an object with attributes) that may name
# `agent_command` (the `agent` target; env WFP_AGENT_COMMAND otherwise).

# What each target can do: conformance cases marked with a capability it lacks are skipped.
_SIM_CAPABILITIES = frozenset({"requires_redirect", "udp", "ipv6", "sim_only", "elevated"})


# The profile a target's expected values come from when none is named. Wine is not Windows: it
# answers the decision points as observed on it (sim/profiles/wine-8.0.toml, written by
# `wfp-harness profile probe --target wine`); where it deviates from Windows outright, the case
# is a known deviation (harness/conformance/wine-deviations.toml) instead.
DEFAULT_PROFILES = {"wine": "wine-8.0"}
DEFAULT_PROFILE = "documented"


def default_profile(target: str) -> str:
    return DEFAULT_PROFILES.get(target, DEFAULT_PROFILE)


def names() -> str:
    return ", ".join(TARGETS)


def check(target: str, options=None) -> None:
    """TargetError when `target` is unknown or cannot run on this machine (a missing wine64 or mingw-w64
    names the Debian package to install)."""
    if target == "native":
        raise TargetError("--target native: retired; on Windows use --target agent --agent-command "
                          "PATH\\TO\\winsock-agent.exe (the same real ws2_32, tested under Wine with --target wine)")
    if target not in TARGETS:
        raise TargetError(f"--target: unknown target {target!r}; choose one of {names()}")
    if target in AGENT_TARGETS:
        from harness.agent import AgentError, pool
        try:
            pool.check_target(target, options)
        except AgentError as exc:
            raise TargetError(f"--target {target}: {exc}") from None


def make_api(target: str, profile, options=None):
    """A fresh WinsockApi on `target` (WSAStartup already called); on the simulator decision
    points take `profile`'s answers, a real Winsock answers for itself."""
    check(target, options)
    if target == "sim":
        from sim import SimulatedWinsock
        return SimulatedWinsock(profile)
    from harness.agent import pool
    return pool.make_agent_api(target, options)


def close_api(api) -> None:
    """End what make_api started (the simulator needs nothing)."""
    close = getattr(api, "close", None)
    if close is not None:
        close()


def capabilities(target: str, options=None) -> set:
    """What `target` can do; an agent target is asked (its agent starts). TargetError if it cannot."""
    if target == "sim":
        return set(_SIM_CAPABILITIES)
    check(target, options)
    from harness.agent import AgentError, pool
    try:
        caps = pool.capabilities(target, options)
    except AgentError as exc:
        raise TargetError(f"--target {target}: the agent did not start: {exc}") from None
    if driver_here(target):
        caps.add("requires_redirect")
    return caps


def driver_here(target: str) -> bool:
    """The sample driver is installed on this very Windows machine (the lab sets
    WFP_DRIVER_INSTALLED=1 on a guest) and the agent runs here too, as a local
    program: `redirected` then registers the agent's PID through this machine's
    registry and the driver's device (harness.proxy_service.win32)."""
    return target == "agent" and sys.platform == "win32" and os.environ.get("WFP_DRIVER_INSTALLED") == "1"


def os_build(target: str, options=None) -> str:
    """What the calls ran on, for reports and JUnit properties."""
    if target == "sim":
        return "simulated"
    from harness.agent import pool
    return pool.describe(target, options)


class NoRedirect(RuntimeError):
    """This target cannot make a redirected connection here (no driver, or its policy redirects nothing)."""


@contextlib.contextmanager
def redirected(target: str, profile, api=None, options=None):
    """A TCP connection a sample driver redirected to this process, accepted; released on exit.

    On the simulator a world is built (sim.worlds.ready.redirected_tcp). On a
    real Winsock the installed sample driver redirects a connect of the agent
    process to its own listener (harness.redirected_connection); that needs
    the driver on this machine with the agent started locally (driver_here)
    and an elevated agent, else NoRedirect.
    """
    check(target, options)
    if target == "sim":
        from sim.worlds.ready import redirected_tcp
        yield redirected_tcp(profile)
        return
    if "requires_redirect" not in capabilities(target, options):
        raise NoRedirect(f"target {target!r} has no sample driver installed on this machine "
                         f"(WFP_DRIVER_INSTALLED=1, agent started locally)")
    from harness.proxy_service import win32
    from harness.redirected_connection import NoRedirectPolicy, redirected_connection
    own = api is None
    api = make_api(target, profile, options) if own else api
    store = win32.DriverPolicyStore(win32.load())
    try:
        try:
            conn = redirected_connection(api, store)
        except NoRedirectPolicy as exc:
            raise NoRedirect(f"the installed driver cannot redirect for this test: {exc}") from None
        try:
            yield conn
        finally:
            conn.release()
    finally:
        store.close()
        if own:
            close_api(api)
