"""Fixtures shared by the tests under tests/."""
import pytest


@pytest.fixture(scope="session")
def wine_available():
    """Skip, naming the Debian package to install, where wine64 or mingw-w64 is missing
    (`./run tests` installs both, so CI runs every test that asks for this)."""
    from harness.agent.pool import check_target
    from harness.agent.protocol import AgentUnavailable
    try:
        check_target("wine")
    except AgentUnavailable as exc:
        pytest.skip(str(exc))
