"""The differential tests run the winsock-agent under wine64: they skip, naming the Debian
package, where wine64 or mingw-w64 is missing (`./run tests` installs both, so CI runs them)."""
import pytest

from harness.agent.protocol import AgentUnavailable


@pytest.fixture(scope="session")
def wine_available():
    from harness.agent.pool import check_target
    try:
        check_target("wine")
    except AgentUnavailable as exc:
        pytest.skip(str(exc))
