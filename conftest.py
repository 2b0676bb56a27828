"""Repository-level pytest configuration.

The wfp-harness plugin (harness.pytest_plugin) is registered by its entry
point when the project is installed; this file sets the hypothesis
profiles: `ci` (the default, fast) and `deep` (nightly), chosen with
HYPOTHESIS_PROFILE, and builds the vCenter simulator the lab tests need
before they start, where pytest's output shows it.
"""
import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent
LAB_TESTS = (ROOT / "tests" / "vm_vsphere", ROOT / "tests" / "vm_orchestrator")

settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _runs_lab_tests(config) -> bool:
    for arg in config.args:
        path = Path(arg.split("::", 1)[0]).resolve()
        if any(path == lab or lab.is_relative_to(path) or path.is_relative_to(lab) for lab in LAB_TESTS):
            return True
    return False


def pytest_sessionstart(session):
    """Build tools/vcsim (about 40 s, once per source; cached) here, in the main process before any
    xdist worker starts, saying so with the time it takes, rather than silently inside a test."""
    config = session.config
    if hasattr(config, "workerinput") or not _runs_lab_tests(config):
        return
    sys.path.insert(0, str(LAB_TESTS[0]))
    import vsphere_testlib
    from harness.long_step import long_step
    say = config.pluginmanager.get_plugin("terminalreporter").write_line
    binary = vsphere_testlib.vcsim_path()
    if binary is None:
        return                       # the lab tests skip, naming the missing Debian packages
    if binary.exists():
        say(f"vCenter simulator for the lab tests: cached ({binary})")
        return
    try:
        with long_step(say, "building the vCenter simulator for the lab tests (tools/vcsim, about 40 s once)"):
            vsphere_testlib.build_vcsim()
    except BaseException as exc:     # noqa: BLE001 - pytest.fail: the lab tests report it again
        say(f"  building tools/vcsim failed: {exc}")
