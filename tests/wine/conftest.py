"""Tests of the wine conformance target: they run the real winsock-agent under wine64 and skip,
naming the Debian package, when wine64 or mingw-w64 is missing (`./run tests` installs both)."""
import pytest

from harness.agent.protocol import AgentUnavailable


@pytest.fixture(scope="session")
def wine_available():
    from harness.agent.pool import check_target
    try:
        check_target("wine")
    except AgentUnavailable as exc:
        pytest.skip(str(exc))
