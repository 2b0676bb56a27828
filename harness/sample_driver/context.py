"""The redirect context the driver attaches to each redirected connection
(WFPRC_REDIRECT_CONTEXT in include/wfp_redirect_callout.h), and `Endpoint`."""
from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from harness.winsock import constants as C
from harness.winsock import sockaddr
from harness.winsock.layouts import Field, Layout
from harness.sample_driver.common import MAX_DWORD, _check_int

# --- redirect context (WFPRC_REDIRECT_CONTEXT) --------------------------------
CONTEXT_MAGIC = 0x58435257      # bytes "WRCX" in memory (little endian)
CONTEXT_VERSION = 1
CONTEXT_SIZE = 280

# Two SOCKADDR_STORAGEs like WFPSampler (docs/facts.md §5.6), plus what a proxy
# cannot learn otherwise: the connecting process (metadata processId, lost
# once the connection is proxied), the protocol (so one parser serves the
# TCP ioctl and the UDP cmsg) and the policy generation that decided (to
# tell a reload race from a bug). SOCKADDR_STORAGE is 8-aligned, hence
# the explicit reserved tail.
REDIRECT_CONTEXT = Layout("WFPRC_REDIRECT_CONTEXT", CONTEXT_SIZE, (
    Field("magic", 0, "<I"),
    Field("version", 4, "<H"),
    Field("size", 6, "<H"),
    Field("original_remote", 8, "128s", "originalRemote"),
    Field("original_local", 136, "128s", "originalLocal"),
    Field("process_id", 264, "<Q", "processId"),
    Field("policy_generation", 272, "<I", "policyGeneration"),
    Field("protocol", 276, "<B"),
    Field("reserved", 277, "3s"),
), header="wfp_redirect_callout.h")


def _parsed_host(host) -> tuple:
    """(canonical text, IP version, packed bytes) of an address; ValueError when it is not one."""
    try:
        return _parsed(host)
    except (ValueError, TypeError):
        raise ValueError(f"{host!r} is not an IPv4 or IPv6 address") from None


# Pure, and cached apart from the ports: every connection has its own source port, but
# drivers and proxies see the same few addresses again and again.
@functools.lru_cache(maxsize=4096)
def _parsed(host) -> tuple:
    addr = ipaddress.ip_address(host)
    return str(addr), addr.version, addr.packed


@dataclass(frozen=True)
class Endpoint:
    """An IPv4/IPv6 address and port, as held in a SOCKADDR_STORAGE."""

    host: str
    port: int
    flowinfo: int = 0
    scope_id: int = 0

    def __post_init__(self):
        host, version, _packed = _parsed_host(self.host)
        object.__setattr__(self, "host", host)
        port, flowinfo, scope_id = self.port, self.flowinfo, self.scope_id
        # The checks below in one test for the usual case (on every connection a proxy takes).
        if not (type(port) is int and 0 <= port <= 0xFFFF and type(flowinfo) is int and type(scope_id) is int
                and 0 <= flowinfo <= MAX_DWORD and 0 <= scope_id <= MAX_DWORD):
            _check_int("port", port, 0, 0xFFFF, "port")
            _check_int("flowinfo", flowinfo, 0, MAX_DWORD, "value")
            _check_int("scope_id", scope_id, 0, MAX_DWORD, "value")
        if version == 4 and (flowinfo or scope_id):
            raise ValueError("flowinfo/scope_id are IPv6 only")

    @property
    def family(self) -> int:
        return C.AF_INET6 if ":" in self.host else C.AF_INET


def _endpoint(value) -> Endpoint:
    if isinstance(value, Endpoint):
        return value
    if isinstance(value, tuple) and 2 <= len(value) <= 4:
        return Endpoint(*value)
    raise ValueError(f"expected an Endpoint or a (host, port[, flowinfo, scope_id]) tuple, got {value!r}")


def storage_of(endpoint) -> bytes:
    """A SOCKADDR_STORAGE (128 bytes) holding ``endpoint``."""
    return _storage_of(_endpoint(endpoint))


@functools.lru_cache(maxsize=4096)
def _storage_of(ep: Endpoint) -> bytes:
    return sockaddr.pack_storage(_parsed(ep.host)[2], ep.port, ep.flowinfo, ep.scope_id)   # ep.host is canonical


def _frozen(cls, **fields):
    """An instance of frozen dataclass `cls` with `fields` (every one) as they are: for values
    already checked, the cost of one dict update instead of __init__ and __post_init__."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


def endpoint_of(data: bytes) -> Endpoint:
    """Inverse of :func:`storage_of` (accepts SOCKADDR_IN/IN6/STORAGE bytes)."""
    _family, ip, port, flowinfo, scope_id = sockaddr.unpack(data)
    # Text from the address bytes is canonical and each field is in range by its width: the
    # Endpoint is built without __post_init__'s parsing and checks.
    return _frozen(Endpoint, host=sockaddr.ip_text(ip), port=port, flowinfo=flowinfo, scope_id=scope_id)


@dataclass(frozen=True)
class RedirectContext:
    """Decoded WFPRC_REDIRECT_CONTEXT: what the proxy gets back from WFP."""

    original_remote: Endpoint
    original_local: Endpoint
    protocol: int
    process_id: int = 0
    policy_generation: int = 0

    def pack(self) -> bytes:
        return pack_context(self.original_remote, self.original_local, protocol=self.protocol,
                            process_id=self.process_id, policy_generation=self.policy_generation)


def pack_context(original_remote, original_local, *, protocol: int, process_id: int = 0,
                 policy_generation: int = 0) -> bytes:
    """The bytes the driver stores as localRedirectContext (280 bytes).

    Endpoints are :class:`Endpoint` or ``(host, port[, flowinfo, scope_id])``;
    both must be of the same family.
    """
    remote, local = _endpoint(original_remote), _endpoint(original_local)
    if remote.family != local.family:
        raise ValueError("original_remote and original_local must be of the same address family")
    return _context(storage_of(remote), storage_of(local), protocol, process_id, policy_generation)


def pack_context_raw(remote_ip: bytes, remote_port: int, local_ip: bytes, local_port: int, *,
                     protocol: int, process_id: int = 0, policy_generation: int = 0) -> bytes:
    """:func:`pack_context` from packed addresses (4 or 16 bytes each) and ports.

    What classify.c does: it copies the connect request's SOCKADDR_STORAGEs
    as they are, with no text form on the way (the simulated callout runs
    this on every redirect). Flow info and scope id are zero.
    """
    if len(remote_ip) != len(local_ip) or len(remote_ip) not in (4, 16):
        raise ValueError("original_remote and original_local must be packed addresses of the same family")
    return _context(_storage_raw(remote_ip, remote_port), _storage_raw(local_ip, local_port), protocol,
                    process_id, policy_generation)


def _storage_raw(ip: bytes, port: int) -> bytes:
    try:
        return sockaddr.pack_storage(ip, port)
    except ValueError:
        _check_int("port", port, 0, 0xFFFF, "port")        # the policy's wording for a bad port
        raise


def _context(remote: bytes, local: bytes, protocol: int, process_id: int, policy_generation: int) -> bytes:
    if protocol not in (C.IPPROTO_TCP, C.IPPROTO_UDP) or isinstance(protocol, bool):
        raise ValueError(f"protocol {protocol} is neither IPPROTO_TCP nor IPPROTO_UDP")
    _check_int("process_id", process_id, 0, 0xFFFFFFFFFFFFFFFF, "value")
    _check_int("policy_generation", policy_generation, 0, MAX_DWORD, "value")
    # Not cached: each connection's context differs (the original local port).
    return REDIRECT_CONTEXT.pack(
        magic=CONTEXT_MAGIC, version=CONTEXT_VERSION, size=CONTEXT_SIZE, original_remote=remote,
        original_local=local, process_id=process_id, policy_generation=policy_generation,
        protocol=int(protocol), reserved=b"\0\0\0")


def unpack_context(data: bytes) -> RedirectContext:
    """Parse a context blob; ValueError on wrong size, magic, version or content."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"redirect context must be bytes, not {type(data).__name__}")
    return _unpacked_context(bytes(data))


def _unpacked_context(data: bytes) -> RedirectContext:
    if len(data) < 8:
        raise ValueError(f"redirect context too short: {len(data)} bytes, need {CONTEXT_SIZE}")
    f = REDIRECT_CONTEXT.unpack(data + bytes(max(0, CONTEXT_SIZE - len(data))))
    if f["magic"] != CONTEXT_MAGIC:
        raise ValueError(f"redirect context: bad magic 0x{f['magic']:08X} (expected 0x{CONTEXT_MAGIC:08X})")
    if f["version"] != CONTEXT_VERSION:
        raise ValueError(f"redirect context: unsupported version {f['version']} (expected {CONTEXT_VERSION})")
    if f["size"] != CONTEXT_SIZE:
        raise ValueError(f"redirect context: size field {f['size']} != {CONTEXT_SIZE}")
    if len(data) != CONTEXT_SIZE:
        raise ValueError(f"redirect context: {len(data)} bytes, expected {CONTEXT_SIZE}")
    if f["reserved"] != b"\0\0\0":
        raise ValueError("redirect context: reserved bytes are not zero")
    remote, local = _endpoint_in_context(f["original_remote"]), _endpoint_in_context(f["original_local"])
    if remote.family != local.family:
        raise ValueError("redirect context: endpoints of different address families")
    if f["protocol"] not in (C.IPPROTO_TCP, C.IPPROTO_UDP):
        raise ValueError(f"redirect context: protocol {f['protocol']} is neither TCP nor UDP")
    return _frozen(RedirectContext, original_remote=remote, original_local=local, protocol=f["protocol"],
                   process_id=f["process_id"], policy_generation=f["policy_generation"])




def _endpoint_in_context(data: bytes) -> Endpoint:
    try:
        return endpoint_of(data)
    except ValueError:
        family = int.from_bytes(data[:2], "little")
        raise ValueError(f"sockaddr family {family} is not AF_INET/AF_INET6 (or data too short)") from None
