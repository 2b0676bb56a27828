"""Targets: where WinsockApi calls go. The one factory every entry point uses.

    api = make_api("sim", profile)          # a fresh provider, WSAStartup done
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
import platform
import sys


class TargetError(ValueError):
    """A target that does not exist or cannot run here; the message is one line for the user."""


# name -> what it is, for --help texts and errors
TARGETS: dict[str, str] = {
    "sim": "the embedded simulator (default)",
    "native": "the real ws2_32.dll through ctypes (Windows only)",
}

# What each target can do: conformance cases marked with a capability it lacks are skipped.
_SIM_CAPABILITIES = frozenset({"requires_redirect", "udp", "ipv6", "sim_only", "elevated"})


def names() -> str:
    return ", ".join(TARGETS)


def check(target: str) -> None:
    """TargetError when `target` is unknown or cannot run on this machine."""
    if target not in TARGETS:
        raise TargetError(f"--target: unknown target {target!r}; choose one of {names()}")
    if target == "native" and sys.platform != "win32":
        raise TargetError("--target native: the native provider needs Windows (ws2_32.dll); "
                          "off Windows use --target sim")


def make_api(target: str, profile):
    """A fresh WinsockApi on `target` (WSAStartup already called), answering decision points per `profile`."""
    check(target)
    if target == "sim":
        from sim import SimulatedWinsock
        return SimulatedWinsock(profile)
    from harness import native
    return native.NativeWinsock()


def close_api(api) -> None:
    """End what make_api started (the simulator needs nothing)."""
    close = getattr(api, "close", None)
    if close is not None:
        close()


def capabilities(target: str) -> set:
    if target == "sim":
        return set(_SIM_CAPABILITIES)
    caps = {"udp", "ipv6"}
    if os.environ.get("WFP_DRIVER_INSTALLED") == "1":
        caps.add("requires_redirect")
    try:
        import ctypes
        if ctypes.windll.shell32.IsUserAnAdmin():    # type: ignore[attr-defined]
            caps.add("elevated")
    except (AttributeError, OSError):
        pass
    return caps


def os_build(target: str) -> str:
    return "simulated" if target == "sim" else platform.platform()


class NoRedirect(RuntimeError):
    """This target cannot make a redirected connection here (no driver, or its policy redirects nothing)."""


@contextlib.contextmanager
def redirected(target: str, profile, api=None):
    """A TCP connection a sample driver redirected to this process, accepted; released on exit.

    On the simulator a world is built (sim.worlds.ready.redirected_tcp). On a
    real Winsock the installed sample driver redirects a connect of this very
    process to its own listener (harness.redirected_connection); that needs
    the driver (WFP_DRIVER_INSTALLED=1) and an elevated process, else
    NoRedirect.
    """
    check(target)
    if target == "sim":
        from sim.worlds.ready import redirected_tcp
        yield redirected_tcp(profile)
        return
    if "requires_redirect" not in capabilities(target):
        raise NoRedirect(f"target {target!r} has no sample driver installed (WFP_DRIVER_INSTALLED=1)")
    from harness.proxy_service import win32
    from harness.redirected_connection import NoRedirectPolicy, redirected_connection
    own = api is None
    api = make_api(target, profile) if own else api
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
