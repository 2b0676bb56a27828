"""Fixtures shared by the conformance cases (the plugin provides `api`, `profile`, `decide`)."""
import pytest

from harness.conformance import support
from harness.winsock import constants as C


@pytest.fixture
def tcp(api):
    """A fresh, unconnected IPv4 TCP socket."""
    s = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    assert s != C.INVALID_SOCKET
    return s


@pytest.fixture
def pair(api):
    """(client, server, listener): a connected IPv4 TCP pair over loopback."""
    return support.tcp_pair(api)
