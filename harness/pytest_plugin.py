"""pytest plugin: choose the target (simulator, Wine, or a winsock-agent) and the profile.

    pytest --pyargs harness.conformance --target sim --profile windows-observed
    WFP_TARGET=wine WFP_PROFILE=documented pytest --pyargs harness.conformance

Registered by the `pytest11` entry point. Provides the `api` fixture (a
fresh WinsockApi per test), `profile` and `decide` (the active profile's
decision points: conformance cases take their expected values from here;
the default profile is the target's, harness.targets.default_profile),
capability markers that skip with a reason, the target's known deviations
(harness.conformance.deviations) marked xfail(strict=True) with their
reason, and JUnit testsuite properties naming the target, profile, OS build
and driver version.
"""
from __future__ import annotations

import os

import pytest

MARKERS = {
    "requires_redirect": "needs a WFP callout that redirects connections (the sample driver installed where the agent runs)",
    "udp": "exercises UDP",
    "ipv6": "needs IPv6",
    "sim_only": "uses simulator-only controls (world building, fault injection)",
    "elevated": "needs an elevated (administrator) process",
}


def pytest_addoption(parser):
    group = parser.getgroup("wfp-harness")
    from harness import targets
    group.addoption("--target", default=None, choices=None,
                    help="where WinsockApi calls go: " + "; ".join(f"{k}: {v}" for k, v in targets.TARGETS.items())
                         + "; env WFP_TARGET")
    group.addoption("--agent-command", default=None,
                    help="--target agent: the command that starts the winsock-agent, e.g. "
                         "\"ssh winhost C:\\wfp\\winsock-agent.exe\"; env WFP_AGENT_COMMAND")
    group.addoption("--profile", default=None,
                    help="behaviour profile for expected values: documented (the default; wine-8.0 for "
                         "--target wine), windows-observed, or a profile file; env WFP_PROFILE")


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    from harness import targets
    target = config.getoption("--target") or os.environ.get("WFP_TARGET") or "sim"
    options = {"agent_command": config.getoption("--agent-command")}
    try:
        targets.check(target, options)
    except targets.TargetError as exc:
        _bad_input(str(exc))
    from sim.profiles import ProfileError, load
    name = config.getoption("--profile") or os.environ.get("WFP_PROFILE") or targets.default_profile(target)
    try:
        profile = load(name)
    except ProfileError as exc:
        _bad_input(f"--profile: {exc}")
    from harness.conformance.deviations import DeviationError, load_target
    try:
        deviations = load_target(target)
    except DeviationError as exc:
        _bad_input(str(exc))
    config._wfp = {"target": target, "profile": profile, "options": options, "deviations": deviations}


def _bad_input(message: str):
    """One line naming what is wrong, and exit code 2, like every wfp-harness command."""
    pytest.exit(f"wfp-harness: {message}", returncode=2)


def pytest_collection_modifyitems(config, items):
    state = getattr(config, "_wfp", None)
    if state is None:
        return
    from harness import targets
    try:
        caps = targets.capabilities(state["target"], state["options"])
    except targets.TargetError as exc:
        _bad_input(str(exc))
    deviations = state.get("deviations")
    for item in items:
        for name in MARKERS:
            if item.get_closest_marker(name) and name not in caps:
                item.add_marker(pytest.mark.skip(
                    reason=f"target {state['target']!r} lacks capability {name!r}: {MARKERS[name]}"))
        known = deviations.match(item.nodeid) if deviations is not None else None
        if known is not None:
            # strict: a target that stops deviating fails the case (XPASS) until the entry goes
            item.add_marker(pytest.mark.xfail(strict=True, reason=known.reason))


@pytest.fixture(scope="session")
def wfp_target(pytestconfig) -> str:
    return pytestconfig._wfp["target"]


@pytest.fixture(scope="session")
def profile(pytestconfig):
    return pytestconfig._wfp["profile"]


@pytest.fixture
def decide(profile, request):
    """decide('query_size_probe') -> the active profile's answer. The case's JUnit entry names each
    point it consulted (property wfp.decision), so a report can show the answer behind a failure."""
    consulted = set()

    def answer(name):
        if name not in consulted:
            consulted.add(name)
            # user_properties, not record_property: the same <properties> in the JUnit testcase,
            # without record_property's warning about the xunit2 schema
            request.node.user_properties.append(("wfp.decision", name))
        return profile.value(name)

    return answer


@pytest.fixture(scope="session", autouse=True)
def _wfp_junit_properties(request, record_testsuite_property):
    state = request.config._wfp
    record_testsuite_property("wfp.target", state["target"])
    record_testsuite_property("wfp.profile", state["profile"].name)
    from harness import targets
    record_testsuite_property("wfp.os_build", targets.os_build(state["target"], state["options"]))
    record_testsuite_property("wfp.driver_version", os.environ.get("WFP_DRIVER_VERSION", "none"))
    selection = getattr(request.config, "_wfp_selection", "")
    if selection:
        record_testsuite_property("wfp.selection", selection)


@pytest.fixture
def target_options(pytestconfig):
    return pytestconfig._wfp["options"]


@pytest.fixture
def redirected(request, wfp_target, profile, target_options):
    """A TCP connection a sample driver redirected to this process, accepted (harness.targets.redirected).

    On the simulator a world is built; on a real Winsock the installed sample
    driver redirects a connect of this very process to its own listener.
    """
    from harness import targets
    api = None if wfp_target == "sim" else request.getfixturevalue("api")
    try:
        with targets.redirected(wfp_target, profile, api, target_options) as conn:
            yield conn
    except targets.NoRedirect as exc:
        pytest.skip(str(exc))


@pytest.fixture
def two_vendor_world(wfp_target, profile):
    """Two vendors' sample drivers and reference proxies on one client host (sim.worlds.scenarios.Story).

    `.tcp(label, family, destination)` / `.udp(...)` make a connection through them;
    `.finish()` then fills in hops, final destination and verdicts.
    """
    if wfp_target != "sim":
        pytest.skip("a two-vendor world needs two installed callout drivers; only the simulator builds one")
    from sim.worlds.scenarios import Story
    return Story(profile, ("VendorX", "VendorY"))


@pytest.fixture
def api(wfp_target, profile, target_options):
    """A fresh WinsockApi for one test (WSAStartup already called)."""
    from harness import targets
    provider = targets.make_api(wfp_target, profile, target_options)
    try:
        yield provider
    finally:
        targets.close_api(provider)            # one WSACleanup per WSAStartup
