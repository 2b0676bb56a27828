"""Fixtures for the winsock-agent tests: the real agent under the real wine64 (no mocks).

Tests that need Wine skip, naming the Debian package to install, when wine64
or the mingw-w64 compiler is missing (`./run tests` installs both).
"""
import pytest


@pytest.fixture
def wapi(wine_available):
    """A fresh AgentWinsock on a (pooled) agent under wine64."""
    from harness.agent.pool import make_agent_api
    api = make_agent_api("wine")
    try:
        yield api
    finally:
        api.close()
