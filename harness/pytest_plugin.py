"""pytest plugin: choose the target (simulator or native Windows) and the profile.

    pytest --pyargs harness.conformance --target sim --profile windows-observed
    WFP_TARGET=native WFP_PROFILE=documented pytest --pyargs harness.conformance

Registered by the `pytest11` entry point. Provides the `api` fixture (a
fresh WinsockApi per test), `profile` and `decide` (the active profile's
decision points: conformance cases take their expected values from here),
capability markers that skip with a reason, and JUnit testsuite properties
naming the target, profile, OS build and driver version.
"""
from __future__ import annotations

import os
import platform
import sys

import pytest

TARGETS = ("sim", "native", "wine", "agent")
MARKERS = {
    "requires_redirect": "needs a WFP callout that redirects connections (the sample driver on native)",
    "udp": "exercises UDP",
    "ipv6": "needs IPv6",
    "sim_only": "uses simulator-only controls (world building, fault injection)",
    "elevated": "needs an elevated (administrator) process",
}


def pytest_addoption(parser):
    group = parser.getgroup("wfp-harness")
    group.addoption("--target", default=None, choices=None,
                    help="where WinsockApi calls go: sim (default), native (real ws2_32; Windows only), "
                         "wine (the winsock-agent under wine64) or agent (--agent-command); env WFP_TARGET")
    group.addoption("--agent-command", default=None,
                    help="--target agent: command that starts the winsock-agent, e.g. "
                         "\"ssh winhost C:\\wfp\\winsock-agent.exe\"; env WFP_AGENT_COMMAND")
    group.addoption("--profile", default=None,
                    help="behaviour profile for expected values: documented (default), windows-observed, "
                         "or a profile file; env WFP_PROFILE")


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    target = config.getoption("--target") or os.environ.get("WFP_TARGET") or "sim"
    if target not in TARGETS:
        _bad_input(f"--target: unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if target == "native" and sys.platform != "win32":
        _bad_input("--target native: the native provider needs Windows (ws2_32.dll)")
    agent_options = {"agent_command": config.getoption("--agent-command")}
    if target in ("wine", "agent"):
        from harness.agent.targets import AgentError, check_target
        try:
            check_target(target, agent_options)
        except AgentError as exc:
            _bad_input(f"--target {target}: {exc}")
    from sim.profiles import ProfileError, load
    name = config.getoption("--profile") or os.environ.get("WFP_PROFILE") or "documented"
    try:
        profile = load(name)
    except ProfileError as exc:
        _bad_input(f"--profile: {exc}")
    config._wfp = {"target": target, "profile": profile, "agent_options": agent_options}


def _bad_input(message: str):
    """One line naming what is wrong, and exit code 2, like every wfp-harness command."""
    pytest.exit(f"wfp-harness: {message}", returncode=2)


def _capabilities(target: str, agent_options=None) -> set:
    if target == "sim":
        return {"requires_redirect", "udp", "ipv6", "sim_only", "elevated"}
    if target in ("wine", "agent"):
        from harness.agent.targets import AgentError, capabilities
        try:
            return capabilities(target, agent_options)        # starts the agent (pooled for the tests)
        except AgentError as exc:
            _bad_input(f"--target {target}: the agent did not start: {exc}")
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


def pytest_collection_modifyitems(config, items):
    state = getattr(config, "_wfp", None)
    if state is None:
        return
    caps = _capabilities(state["target"], state.get("agent_options"))
    for item in items:
        for name in MARKERS:
            if item.get_closest_marker(name) and name not in caps:
                item.add_marker(pytest.mark.skip(
                    reason=f"target {state['target']!r} lacks capability {name!r}: {MARKERS[name]}"))


@pytest.fixture(scope="session")
def wfp_target(pytestconfig) -> str:
    return pytestconfig._wfp["target"]


@pytest.fixture(scope="session")
def profile(pytestconfig):
    return pytestconfig._wfp["profile"]


@pytest.fixture(scope="session")
def decide(profile):
    """decide('query_size_probe') -> the active profile's answer."""
    return profile.value


@pytest.fixture(scope="session", autouse=True)
def _wfp_junit_properties(request, record_testsuite_property):
    state = request.config._wfp
    record_testsuite_property("wfp.target", state["target"])
    record_testsuite_property("wfp.profile", state["profile"].name)
    if state["target"] in ("wine", "agent"):
        from harness.agent.targets import describe
        os_build = describe(state["target"], state["agent_options"])
    else:
        os_build = platform.platform() if state["target"] == "native" else "simulated"
    record_testsuite_property("wfp.os_build", os_build)
    record_testsuite_property("wfp.driver_version", os.environ.get("WFP_DRIVER_VERSION", "none"))


@pytest.fixture
def redirected(request, wfp_target, profile):
    """A TCP connection a sample driver redirected to this process, accepted.

    On the simulator a world is built (sim.fixtures.redirected_tcp). On Windows
    the installed sample driver redirects a connect of this very process to its
    own listener (harness.redirect_fixture); that needs the driver (capability
    requires_redirect: WFP_DRIVER_INSTALLED=1) and an elevated process.
    """
    if wfp_target == "sim":
        from sim.fixtures import redirected_tcp
        yield redirected_tcp(profile)
        return
    from harness.proxy_service import win32
    from harness.redirect_fixture import NoRedirectPolicy, redirected_connection
    api = request.getfixturevalue("api")
    store = win32.DriverPolicyStore(win32.load())
    try:
        conn = redirected_connection(api, store)
    except NoRedirectPolicy as exc:
        store.close()
        pytest.skip(f"the installed driver cannot redirect for this test: {exc}")
    try:
        yield conn
    finally:
        conn.release()
        store.close()


@pytest.fixture
def two_vendor_world(wfp_target, profile):
    """Two vendors' sample drivers and reference proxies on one client host (sim.scenarios.Story).

    `.tcp(label, family, destination)` / `.udp(...)` make a connection through them;
    `.finish()` then fills in hops, final destination and verdicts.
    """
    if wfp_target != "sim":
        pytest.skip("a two-vendor world needs two installed callout drivers; only the simulator builds one")
    from sim.scenarios import Story
    return Story(profile, ("VendorX", "VendorY"))


@pytest.fixture
def api(request, wfp_target, profile):
    """A fresh WinsockApi for one test (WSAStartup already called)."""
    if wfp_target == "sim":
        from sim import SimulatedWinsock
        yield SimulatedWinsock(profile)
        return
    if wfp_target in ("wine", "agent"):
        from harness.agent.targets import make_agent_api
        provider = make_agent_api(wfp_target, request.config._wfp["agent_options"])
        try:
            yield provider
        finally:
            provider.close()          # cleans the agent for the next test (or discards it)
        return
    from harness import native
    provider = native.NativeWinsock()
    try:
        yield provider
    finally:
        provider.close()              # one WSACleanup per WSAStartup
