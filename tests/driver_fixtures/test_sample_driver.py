"""Unit and property tests of harness.sample_driver (POLICY.md)."""
from __future__ import annotations

import ipaddress
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from harness.winsock import constants as C
from harness import sample_driver as sd
from harness.sample_driver import Decision, Endpoint, RedirectPolicy

ROOT = Path(__file__).resolve().parents[2]
KEY = sd.PARAMETERS_KEY
HEADER = f"Windows Registry Editor Version 5.00\r\n\r\n[{KEY}]\r\n"


def multi_sz_hex(*strings: str) -> str:
    raw = "".join(s + "\0" for s in strings).encode("utf-16-le") + b"\0\0"
    return ",".join(f"{b:02x}" for b in raw)


def reg(*lines: str) -> str:
    return HEADER + "\r\n".join(lines) + "\r\n"


GOOD = RedirectPolicy(tcp_ports=(443, 80), udp_ports=(53,), tcp_proxy_port=15001, udp_proxy_port=15053,
                      proxy_process_id=4242, excluded_process_ids=(7, 11))


# --- parsing the good cases ------------------------------------------------------
def test_round_trip_through_reg_text_and_registry_values():
    assert GOOD.tcp_ports == (80, 443)                      # kept sorted
    assert RedirectPolicy.from_reg(GOOD.to_reg()) == GOOD
    assert RedirectPolicy.from_registry_values(GOOD.to_registry_values()) == GOOD


def test_policy_md_example_is_what_it_says():
    text = (ROOT / "driver-fixtures" / "wfp-redirect-callout" / "POLICY.md").read_text()
    example = re.search(r"## Example `\.reg`\n\n```\n(.*?)```", text, re.S).group(1)
    policy = RedirectPolicy.from_reg(example)
    assert policy == RedirectPolicy(tcp_ports=(80, 443), udp_ports=(53,), tcp_proxy_port=15001,
                                    udp_proxy_port=15053, proxy_process_id=4242)
    assert policy.to_reg().replace("\r\n", "\n") == example


def test_defaults_are_inert():
    policy = sd.parse_registry_values({})
    assert policy == RedirectPolicy()
    assert not policy.is_active
    assert not policy.matches(C.IPPROTO_TCP, 80, 1234)


def test_regedit_export_with_bom_comments_continuations_and_other_keys():
    long_list = [str(p) for p in range(1000, 1030)]
    hexdata = multi_sz_hex(*long_list)
    wrapped = ",\\\r\n  ".join(hexdata[i:i + 72].strip(",") for i in range(0, len(hexdata), 72))
    text = ("\ufeffWindows Registry Editor Version 5.00\r\n\r\n"
            "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Other]\r\n\"TcpPorts\"=\"junk ignored\"\r\n\r\n"
            f"; comment\r\n[{KEY.upper()}]\r\n"
            f"\"tcpports\"=hex(7):{wrapped}\r\n"
            "\"TcpProxyPort\"=dword:00003a99\r\n\"ProxyProcessId\"=dword:10\r\n"
            "\"Description\"=\"unknown names are ignored\"\r\n")
    policy = RedirectPolicy.from_reg(text)
    assert policy.tcp_ports == tuple(range(1000, 1030))
    assert policy.proxy_process_id == 16 and policy.tcp_proxy_port == 15001


def test_value_deletion_and_key_deletion():
    text = reg('"TcpPorts"=hex(7):' + multi_sz_hex("80"), '"TcpProxyPort"=dword:00000050',
               '"TcpProxyPort"=-', '"TcpPorts"=-')
    assert sd.parse_reg(text) == {}
    with pytest.raises(ValueError, match="not found"):
        sd.parse_reg(text + f"[-{KEY}]\r\n")


def test_multi_sz_walk_stops_at_empty_string_and_tolerates_missing_terminator():
    raw = "80\0\0" "443\0".encode("utf-16-le")
    assert sd.parse_registry_values({"TcpPorts": (sd.REG_MULTI_SZ, raw),
                                     "TcpProxyPort": (sd.REG_DWORD, 9000)}).tcp_ports == (80,)
    unterminated = "80\0" "443".encode("utf-16-le")
    assert sd.parse_registry_values({"TcpPorts": (sd.REG_MULTI_SZ, unterminated),
                                     "TcpProxyPort": (sd.REG_DWORD, 9000)}).tcp_ports == (80, 443)


def test_raw_dword_bytes_are_accepted():
    policy = sd.parse_registry_values({"ProxyProcessId": (sd.REG_DWORD, struct.pack("<I", 77))})
    assert policy.proxy_process_id == 77


# --- hostile input: every failure is a ValueError naming the value -----------
HOSTILE_REG = [
    ("REGEDIT4\r\n\r\n[x]\r\n", "not a .reg file"),
    ("", "not a .reg file"),
    (HEADER.replace(KEY, "HKEY_LOCAL_MACHINE\\SOFTWARE\\Else"), "not found"),
    (reg('"TcpPorts"=hex(7):38,00,30,00,\\'), "truncated"),
    (reg('"TcpPorts"=hex(7):38,00,3'), "^TcpPorts: .*bad hex byte"),
    (reg('"TcpPorts"=hex(7):38,00,30'), "^TcpPorts: .*odd length"),
    (reg('"TcpPorts"="80"'), "^TcpPorts: expected REG_MULTI_SZ, got REG_SZ"),
    (reg('"TcpPorts"=dword:00000050'), "^TcpPorts: expected REG_MULTI_SZ, got REG_DWORD"),
    (reg('"TcpProxyPort"="8080"'), "^TcpProxyPort: expected REG_DWORD, got REG_SZ"),
    (reg('"TcpProxyPort"=hex(b):01,00,00,00,00,00,00,00'), "^TcpProxyPort: expected REG_DWORD, got REG_QWORD"),
    (reg('"TcpProxyPort"=hex(4):01,00'), "^TcpProxyPort: REG_DWORD data must be 4 bytes"),
    (reg('"TcpProxyPort"=dword:123456789'), "^TcpProxyPort: .*bad dword"),
    (reg('"TcpProxyPort"=dword:00011170'), "^TcpProxyPort: port 70000 is out of range"),
    (reg('"TcpPorts"=hex(7):' + multi_sz_hex("70000"), '"TcpProxyPort"=dword:1'), "^TcpPorts: port 70000"),
    (reg('"TcpPorts"=hex(7):' + multi_sz_hex("0"), '"TcpProxyPort"=dword:1'), "^TcpPorts: port 0"),
    (reg('"TcpPorts"=hex(7):' + multi_sz_hex("080"), '"TcpProxyPort"=dword:1'), "^TcpPorts: '080'"),
    (reg('"TcpPorts"=hex(7):' + multi_sz_hex(" 80"), '"TcpProxyPort"=dword:1'), "^TcpPorts: ' 80'"),
    (reg('"TcpPorts"=hex(7):' + multi_sz_hex("-1"), '"TcpProxyPort"=dword:1'), "^TcpPorts: '-1'"),
    (reg('"TcpPorts"=hex(7):' + multi_sz_hex("80", "80"), '"TcpProxyPort"=dword:1'), "^TcpPorts: port 80 is listed twice"),
    (reg('"UdpPorts"=hex(7):' + multi_sz_hex("53")), "^UdpProxyPort: must be set"),
    (reg('"UdpPorts"=hex(7):' + multi_sz_hex("53"), '"UdpProxyPort"=dword:35'), "^UdpProxyPort: 53 is also listed"),
    (reg('"ExcludedProcessIds"=hex(7):' + multi_sz_hex("4294967296")), "^ExcludedProcessIds: process id 4294967296"),
    (reg('"ExcludedProcessIds"=hex(7):' + multi_sz_hex(*map(str, range(1, 34)))), "^ExcludedProcessIds: 33 entries"),
    (reg('"TcpPorts"=hex(7):' + multi_sz_hex(*map(str, range(1, 66))), '"TcpProxyPort"=dword:ffff'), "^TcpPorts: 65 entries"),
    (reg('"PolicyVersion"=dword:00000002'), "^PolicyVersion: version 2 is not supported"),
    (reg('"Enabled"=dword:00000002'), "^Enabled: must be 0 or 1"),
    (reg('"Name"="unterminated'), "unterminated string"),
    (reg('"Name"=bogus:1'), "unrecognised data"),
    (reg("no equals sign here"), "not a value line"),
    (reg("[unterminated key"), "unterminated key"),
    ("Windows Registry Editor Version 5.00\r\n\"TcpPorts\"=-\r\n", "outside any key"),
]


@pytest.mark.parametrize("text, message", HOSTILE_REG, ids=range(len(HOSTILE_REG)))
def test_hostile_reg_input_gets_a_clean_value_error(text, message):
    with pytest.raises(ValueError, match=message):
        RedirectPolicy.from_reg(text)


HOSTILE_VALUES = [
    ({"TcpPorts": (sd.REG_MULTI_SZ, "80")}, "^TcpPorts: REG_MULTI_SZ value must be a list"),
    ({"TcpPorts": (sd.REG_MULTI_SZ, [80])}, "^TcpPorts: REG_MULTI_SZ items must be str"),
    ({"TcpPorts": (sd.REG_MULTI_SZ, ["8\x000"])}, "^TcpPorts: .*contains NUL"),
    ({"TcpPorts": (sd.REG_MULTI_SZ, b"\xff\xd8\x00\x00")}, "^TcpPorts: .*not UTF-16"),
    ({"TcpPorts": (sd.REG_MULTI_SZ, b"8\x00" * 800)}, "^TcpPorts: REG_MULTI_SZ data is 1600 bytes"),
    ({"ProxyProcessId": (sd.REG_DWORD, -1)}, "^ProxyProcessId: -1 does not fit"),
    ({"ProxyProcessId": (sd.REG_DWORD, True)}, "^ProxyProcessId: REG_DWORD value must be an int"),
    ({"ProxyProcessId": (sd.REG_DWORD, "5")}, "^ProxyProcessId: REG_DWORD value must be an int"),
    ({"ProxyProcessId": 5}, r"^ProxyProcessId: expected a \(REG type, value\) pair"),
    ({"ProxyProcessId": (sd.REG_DWORD, 1), "proxyprocessid": (sd.REG_DWORD, 2)}, "^ProxyProcessId: given twice"),
    ({1: (sd.REG_DWORD, 1)}, "is not a str"),
]


@pytest.mark.parametrize("values, message", HOSTILE_VALUES, ids=range(len(HOSTILE_VALUES)))
def test_hostile_registry_values_get_a_clean_value_error(values, message):
    with pytest.raises(ValueError, match=message):
        sd.parse_registry_values(values)


def test_constructor_validates_too():
    with pytest.raises(ValueError, match="^TcpPorts: port 65536"):
        RedirectPolicy(tcp_ports=[65536], tcp_proxy_port=1)
    with pytest.raises(ValueError, match="^ProxyProcessId"):
        RedirectPolicy(proxy_process_id=1 << 32)
    with pytest.raises(ValueError, match="^Enabled"):
        RedirectPolicy(enabled=3)


# --- matching and the decision table -------------------------------------------
def test_matches_by_protocol_port_and_pid():
    assert GOOD.matches(C.IPPROTO_TCP, 443, 1000)
    assert GOOD.matches(C.IPPROTO_UDP, 53, 1000)
    assert not GOOD.matches(C.IPPROTO_UDP, 443, 1000)        # port of the other protocol
    assert not GOOD.matches(C.IPPROTO_TCP, 8443, 1000)
    assert not GOOD.matches(C.IPPROTO_TCP, 443, 7)           # excluded
    assert not GOOD.matches(C.IPPROTO_ICMP, 443, 1000)
    assert GOOD.matches(C.IPPROTO_TCP, 443, GOOD.proxy_process_id)   # proxy not implicitly excluded
    assert not GOOD.with_proxy_process_id(0).matches(C.IPPROTO_TCP, 443, 1000)
    assert not RedirectPolicy(**{**GOOD.__dict__, "enabled": False}).matches(C.IPPROTO_TCP, 443, 1000)
    assert GOOD.redirect_target(C.IPPROTO_TCP, C.AF_INET) == ("127.0.0.1", 15001)
    assert GOOD.redirect_target(C.IPPROTO_UDP, C.AF_INET6) == ("::1", 15053)
    with pytest.raises(ValueError):
        RedirectPolicy().redirect_target(C.IPPROTO_TCP, C.AF_INET)


@pytest.mark.parametrize("state, expected", [
    (C.FWPS_CONNECTION_NOT_REDIRECTED, Decision.REDIRECT),
    (C.FWPS_CONNECTION_REDIRECTED_BY_OTHER, Decision.REDIRECT),
    (C.FWPS_CONNECTION_REDIRECTED_BY_SELF, Decision.PERMIT),
    (C.FWPS_CONNECTION_PREVIOUSLY_REDIRECTED_BY_SELF, Decision.PERMIT),
    (C.FWPS_CONNECTION_REDIRECT_STATE_MAX, Decision.PERMIT),
])
def test_decision_follows_the_redirect_state_table(state, expected):
    assert sd.decide(GOOD, protocol=C.IPPROTO_TCP, remote_port=80, process_id=99,
                     redirect_state=state) is expected


def test_decision_order():
    common = dict(protocol=C.IPPROTO_TCP, remote_port=80, process_id=99,
                  redirect_state=C.FWPS_CONNECTION_NOT_REDIRECTED)
    assert sd.decide(GOOD, has_write_right=False, **common) is Decision.LEAVE
    assert sd.decide(GOOD, **{**common, "remote_port": 81}) is Decision.PERMIT
    assert sd.decide(GOOD, is_reauthorize=True, previous_modified_by_self=True, **common) is Decision.PERMIT
    # previous_modified_by_self only counts on a reauthorization (WFPSampler)
    assert sd.decide(GOOD, previous_modified_by_self=True, **common) is Decision.REDIRECT
    assert sd.decide(GOOD, foreign_local_redirect_in_chain=True, **common) is Decision.PERMIT


# --- redirect context --------------------------------------------------------------
def test_context_round_trip_v4_and_v6():
    blob = sd.pack_context(("203.0.113.9", 443), ("10.0.0.2", 50123), protocol=C.IPPROTO_TCP,
                           process_id=4321, policy_generation=7)
    assert len(blob) == sd.CONTEXT_SIZE == 280
    assert blob[:4] == b"WRCX"
    ctx = sd.unpack_context(blob)
    assert ctx.original_remote == Endpoint("203.0.113.9", 443)
    assert (ctx.process_id, ctx.policy_generation, ctx.protocol) == (4321, 7, C.IPPROTO_TCP)
    six = sd.RedirectContext(Endpoint("2001:db8::1", 53, 5, 3), Endpoint("::", 0), C.IPPROTO_UDP)
    assert sd.unpack_context(six.pack()) == six
    # The remote endpoint is a SOCKADDR_IN6 in network byte order at offset 8.
    assert six.pack()[8:12] == struct.pack("<H", C.AF_INET6) + struct.pack(">H", 53)


def _good_blob() -> bytearray:
    return bytearray(sd.pack_context(("1.2.3.4", 80), ("5.6.7.8", 9), protocol=C.IPPROTO_TCP))


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b.__setitem__(slice(0, 4), b"XXXX"), "bad magic"),
    (lambda b: b.__setitem__(slice(4, 6), struct.pack("<H", 2)), "unsupported version 2"),
    (lambda b: b.__setitem__(slice(6, 8), struct.pack("<H", 256)), "size field 256"),
    (lambda b: b.extend(b"\0"), "281 bytes"),
    (lambda b: b.__delitem__(slice(200, None)), "200 bytes"),
    (lambda b: b.__delitem__(slice(4, None)), "too short"),
    (lambda b: b.__setitem__(277, 1), "reserved"),
    (lambda b: b.__setitem__(276, 1), "protocol 1"),
    (lambda b: b.__setitem__(slice(8, 10), b"\x63\x00"), "family 99"),
    (lambda b: b.__setitem__(slice(136, 138), struct.pack("<H", C.AF_INET6)), "different address families"),
])
def test_bad_context_blobs_raise_value_error(mutate, message):
    blob = _good_blob()
    mutate(blob)
    with pytest.raises(ValueError, match=message):
        sd.unpack_context(bytes(blob))


def test_pack_context_rejects_bad_arguments():
    with pytest.raises(ValueError, match="same address family"):
        sd.pack_context(("1.2.3.4", 1), ("::1", 1), protocol=C.IPPROTO_TCP)
    with pytest.raises(ValueError, match="protocol 1"):
        sd.pack_context(("1.2.3.4", 1), ("1.2.3.4", 1), protocol=C.IPPROTO_ICMP)
    with pytest.raises(ValueError, match="not an IPv4 or IPv6"):
        sd.pack_context(("example.com", 1), ("1.2.3.4", 1), protocol=C.IPPROTO_TCP)


# --- properties ----------------------------------------------------------------------
ports = st.integers(1, 0xFFFF)
pids = st.integers(1, 0xFFFFFFFF)


@st.composite
def policies(draw):
    tcp = draw(st.lists(ports, unique=True, max_size=sd.MAX_PORTS))
    udp = draw(st.lists(ports, unique=True, max_size=sd.MAX_PORTS))
    tcp_proxy = draw(ports.filter(lambda p: p not in tcp)) if tcp else draw(st.integers(0, 0xFFFF).filter(lambda p: p not in tcp))
    udp_proxy = draw(ports.filter(lambda p: p not in udp)) if udp else draw(st.integers(0, 0xFFFF).filter(lambda p: p not in udp))
    return RedirectPolicy(tcp_ports=tcp, udp_ports=udp, tcp_proxy_port=tcp_proxy, udp_proxy_port=udp_proxy,
                          proxy_process_id=draw(st.integers(0, 0xFFFFFFFF)),
                          excluded_process_ids=draw(st.lists(pids, unique=True, max_size=sd.MAX_EXCLUDED_PIDS)),
                          enabled=draw(st.booleans()))


@settings(max_examples=150, deadline=None)
@given(policies())
def test_property_policy_round_trips(policy):
    assert RedirectPolicy.from_reg(policy.to_reg()) == policy
    assert RedirectPolicy.from_registry_values(policy.to_registry_values()) == policy


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_property_arbitrary_reg_text_never_escapes_value_error(body):
    try:
        RedirectPolicy.from_reg(HEADER + body)
    except ValueError:
        pass


endpoints_v4 = st.builds(Endpoint, st.ip_addresses(v=4).map(str), st.integers(0, 0xFFFF))
endpoints_v6 = st.builds(Endpoint, st.ip_addresses(v=6).map(str), st.integers(0, 0xFFFF),
                         st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.tuples(endpoints_v4, endpoints_v4), st.tuples(endpoints_v6, endpoints_v6)),
       st.sampled_from([C.IPPROTO_TCP, C.IPPROTO_UDP]), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1))
def test_property_context_round_trips(pair, protocol, pid, generation):
    ctx = sd.RedirectContext(pair[0], pair[1], protocol, pid, generation)
    assert sd.unpack_context(ctx.pack()) == ctx


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)),
                 st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=6))),
       st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.sampled_from([C.IPPROTO_TCP, C.IPPROTO_UDP]),
       st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1))
def test_property_context_from_packed_addresses_is_the_same_bytes(pair, rport, lport, protocol, pid, generation):
    remote, local = pair
    kw = dict(protocol=protocol, process_id=pid, policy_generation=generation)
    assert sd.pack_context_raw(remote.packed, rport, local.packed, lport, **kw) == \
        sd.pack_context((str(remote), rport), (str(local), lport), **kw)


@settings(max_examples=150, deadline=None)
@given(st.one_of(endpoints_v4, endpoints_v6))
def test_property_storage_of_is_the_layouts(ep):
    """storage_of builds its bytes with the contract codec: the same as packing SOCKADDR_IN/IN6, then zeros."""
    from harness.winsock.layouts import SOCKADDR_IN, SOCKADDR_IN6
    packed = ipaddress.ip_address(ep.host).packed
    if len(packed) == 4:
        raw = SOCKADDR_IN.pack(sin_family=C.AF_INET, sin_port=ep.port, sin_addr=packed)
    else:
        raw = SOCKADDR_IN6.pack(sin6_family=C.AF_INET6, sin6_port=ep.port, sin6_flowinfo=ep.flowinfo,
                                sin6_addr=packed, sin6_scope_id=ep.scope_id)
    assert sd.storage_of(ep) == raw + bytes(128 - len(raw))
    assert sd.endpoint_of(sd.storage_of(ep)) == ep


def test_pack_context_raw_rejects_bad_arguments():
    with pytest.raises(ValueError, match="same family"):
        sd.pack_context_raw(bytes(4), 1, bytes(16), 1, protocol=C.IPPROTO_TCP)
    with pytest.raises(ValueError, match="same family"):
        sd.pack_context_raw(bytes(5), 1, bytes(5), 1, protocol=C.IPPROTO_TCP)
    with pytest.raises(ValueError, match="port 65536 is out of range"):
        sd.pack_context_raw(bytes(4), 65536, bytes(4), 1, protocol=C.IPPROTO_TCP)
    with pytest.raises(ValueError, match="protocol 1"):
        sd.pack_context_raw(bytes(4), 1, bytes(4), 1, protocol=C.IPPROTO_ICMP)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_property_arbitrary_context_bytes_never_escape_value_error(blob):
    try:
        sd.unpack_context(blob)
    except ValueError:
        pass
