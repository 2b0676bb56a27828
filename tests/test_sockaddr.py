"""The contract's sockaddr codec against the layouts it follows (layouts.py, ws2def.h/ws2ipdef.h)."""
import ipaddress

import pytest
from hypothesis import given, strategies as st

from harness.winsock import constants as C
from harness.winsock import sockaddr
from harness.winsock.layouts import SOCKADDR_IN, SOCKADDR_IN6, SOCKADDR_STORAGE

ports = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@given(st.binary(min_size=4, max_size=4), ports)
def test_ipv4_is_sockaddr_in(ip, port):
    data = sockaddr.pack(ip, port)
    assert data == SOCKADDR_IN.pack(sin_family=C.AF_INET, sin_port=port, sin_addr=ip)
    assert sockaddr.unpack(data) == (C.AF_INET, ip, port, 0, 0)


@given(st.binary(min_size=16, max_size=16), ports, u32, u32)
def test_ipv6_is_sockaddr_in6(ip, port, flowinfo, scope_id):
    data = sockaddr.pack(ip, port, flowinfo, scope_id)
    assert data == SOCKADDR_IN6.pack(sin6_family=C.AF_INET6, sin6_port=port, sin6_flowinfo=flowinfo,
                                     sin6_addr=ip, sin6_scope_id=scope_id)
    assert sockaddr.unpack(data) == (C.AF_INET6, ip, port, flowinfo, scope_id)
    storage = sockaddr.pack_storage(ip, port, flowinfo, scope_id)
    assert len(storage) == SOCKADDR_STORAGE.size and storage.startswith(data) and not storage[len(data):].strip(b"\0")


@given(st.ip_addresses(), ports)
def test_text_round_trip(addr, port):
    data = sockaddr.from_text(str(addr), port)
    assert sockaddr.to_text(data) == (str(addr), port)
    assert sockaddr.text_family(str(addr)) == (C.AF_INET if addr.version == 4 else C.AF_INET6)


def test_a_socket_reports_its_own_family():
    v4 = ipaddress.ip_address("192.0.2.1").packed
    assert sockaddr.pack_for(C.AF_INET6, v4, 80) == sockaddr.from_text("::ffff:192.0.2.1", 80)
    assert sockaddr.pack_for(C.AF_INET, sockaddr.v4_mapped(v4), 80) == sockaddr.from_text("192.0.2.1", 80)


@pytest.mark.parametrize("data", [b"", b"\x02", b"\x02\x00" + bytes(10), b"\x17\x00" + bytes(20), b"\x05\x00" + bytes(30)])
def test_short_or_foreign_bytes_are_a_value_error(data):
    with pytest.raises(ValueError):
        sockaddr.unpack(data)


@pytest.mark.parametrize("port", [-1, 0x10000, True, "80"])
def test_bad_port_is_a_value_error(port):
    with pytest.raises(ValueError):
        sockaddr.pack(bytes(4), port)
