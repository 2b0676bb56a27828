"""The driver's redirect policy (POLICY.md): `RedirectPolicy`, validated as the driver does."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from harness.winsock import constants as C
from harness.sample_driver.common import (
    MAX_DWORD, MAX_EXCLUDED_PIDS, MAX_PORTS, PARAMETERS_KEY, POLICY_VERSION, REG_DWORD, REG_MULTI_SZ, VALUE_ENABLED, VALUE_EXCLUDED_PROCESS_IDS, VALUE_POLICY_VERSION, VALUE_PROXY_PROCESS_ID, VALUE_TCP_PORTS, VALUE_TCP_PROXY_PORT, VALUE_UDP_PORTS, VALUE_UDP_PROXY_PORT, _CANONICAL_NAME, _DECIMAL, _check_int, _check_list)
from harness.sample_driver.regfile import _dword, _multi_sz_strings, parse_reg, render_reg

@dataclass(frozen=True)
class RedirectPolicy:
    """The driver's redirect policy (POLICY.md). Lists are kept sorted.

    ``proxy_process_id == 0`` means "no proxy registered yet": the driver
    then redirects nothing. The proxy's own PID is *not* excluded
    implicitly: its outbound connections are recognised through the
    redirect records it copies onto them (docs/facts.md §5.7), which is exactly what
    the ``missing-set-loop`` scenario exercises.
    """

    tcp_ports: tuple[int, ...] = ()
    udp_ports: tuple[int, ...] = ()
    tcp_proxy_port: int = 0
    udp_proxy_port: int = 0
    proxy_process_id: int = 0
    excluded_process_ids: tuple[int, ...] = ()
    enabled: bool = True

    def __post_init__(self):
        if not isinstance(self.enabled, bool):
            if self.enabled in (0, 1) and isinstance(self.enabled, int):
                object.__setattr__(self, "enabled", bool(self.enabled))
            else:
                raise ValueError(f"{VALUE_ENABLED}: must be 0 or 1, not {self.enabled!r}")
        for attr, name in (("tcp_ports", VALUE_TCP_PORTS), ("udp_ports", VALUE_UDP_PORTS)):
            object.__setattr__(self, attr, _check_list(name, getattr(self, attr), 1, 0xFFFF,
                                                       MAX_PORTS, "port"))
        object.__setattr__(self, "excluded_process_ids",
                           _check_list(VALUE_EXCLUDED_PROCESS_IDS, self.excluded_process_ids,
                                       1, MAX_DWORD, MAX_EXCLUDED_PIDS, "process id"))
        _check_int(VALUE_PROXY_PROCESS_ID, self.proxy_process_id, 0, MAX_DWORD, "process id")
        for ports, proxy, pname, lname in (
                (self.tcp_ports, self.tcp_proxy_port, VALUE_TCP_PROXY_PORT, VALUE_TCP_PORTS),
                (self.udp_ports, self.udp_proxy_port, VALUE_UDP_PROXY_PORT, VALUE_UDP_PORTS)):
            _check_int(pname, proxy, 0, 0xFFFF, "port")
            if ports and proxy == 0:
                raise ValueError(f"{pname}: must be set (1..65535) when {lname} is not empty")
            if proxy in ports:
                # The redirected connection goes to loopback:proxy; if that port
                # were redirected too, the proxy could never be reached.
                raise ValueError(f"{pname}: {proxy} is also listed in {lname}")

    # -- queries ----------------------------------------------------------
    @property
    def is_active(self) -> bool:
        """True when the driver would redirect anything at all."""
        return self.enabled and self.proxy_process_id != 0 and bool(self.tcp_ports or self.udp_ports)

    def proxy_port_for(self, protocol: int) -> int:
        """Proxy port for IPPROTO_TCP / IPPROTO_UDP (0 if none)."""
        if protocol == C.IPPROTO_TCP:
            return self.tcp_proxy_port
        if protocol == C.IPPROTO_UDP:
            return self.udp_proxy_port
        return 0

    def matches(self, protocol: int, remote_port: int, process_id: int) -> bool:
        """Would the driver redirect a connect by ``process_id`` to ``remote_port``?

        This is the policy part only (WfprcPolicyMatch in src/policy.c); the
        redirect state and the previousVersion chain are checked by
        :func:`decide`.
        """
        if not self.enabled or self.proxy_process_id == 0:
            return False
        if protocol == C.IPPROTO_TCP:
            ports = self.tcp_ports
        elif protocol == C.IPPROTO_UDP:
            ports = self.udp_ports
        else:
            return False
        return remote_port in ports and process_id not in self.excluded_process_ids

    def redirect_target(self, protocol: int, family: int) -> tuple[str, int]:
        """Where a matching connection goes: loopback of its family, proxy port."""
        host = {C.AF_INET: "127.0.0.1", C.AF_INET6: "::1"}.get(family)
        if host is None:
            raise ValueError(f"address family {family} is neither AF_INET nor AF_INET6")
        port = self.proxy_port_for(protocol)
        if port == 0:
            raise ValueError(f"no proxy port for protocol {protocol}")
        return host, port

    def with_proxy_process_id(self, pid: int) -> "RedirectPolicy":
        """Copy with a new ProxyProcessId (what the proxy writes at start-up)."""
        return replace(self, proxy_process_id=pid)

    # -- conversions ------------------------------------------------------
    def to_registry_values(self) -> dict[str, tuple[int, object]]:
        """name -> (REG type, decoded value), every value written explicitly."""
        return {
            VALUE_POLICY_VERSION: (REG_DWORD, POLICY_VERSION),
            VALUE_ENABLED: (REG_DWORD, int(self.enabled)),
            VALUE_TCP_PORTS: (REG_MULTI_SZ, [str(p) for p in self.tcp_ports]),
            VALUE_UDP_PORTS: (REG_MULTI_SZ, [str(p) for p in self.udp_ports]),
            VALUE_TCP_PROXY_PORT: (REG_DWORD, self.tcp_proxy_port),
            VALUE_UDP_PROXY_PORT: (REG_DWORD, self.udp_proxy_port),
            VALUE_PROXY_PROCESS_ID: (REG_DWORD, self.proxy_process_id),
            VALUE_EXCLUDED_PROCESS_IDS: (REG_MULTI_SZ, [str(p) for p in self.excluded_process_ids]),
        }

    def to_reg(self, key: str = PARAMETERS_KEY) -> str:
        return render_reg(self.to_registry_values(), key)

    @classmethod
    def from_registry_values(cls, values: Mapping[str, tuple[int, object]]) -> "RedirectPolicy":
        return parse_registry_values(values)

    @classmethod
    def from_reg(cls, text: str, key: str = PARAMETERS_KEY) -> "RedirectPolicy":
        return parse_registry_values(parse_reg(text, key))


def _decimal_list(name: str, strings: list[str], high: int, what: str) -> list[int]:
    numbers = []
    for s in strings:
        if not _DECIMAL.fullmatch(s):
            raise ValueError(f"{name}: {s!r} is not a canonical decimal {what}")
        n = int(s)
        if not 1 <= n <= high:
            raise ValueError(f"{name}: {what} {n} is out of range 1..{high}")
        numbers.append(n)
    return numbers


def parse_registry_values(values: Mapping[str, tuple[int, object]]) -> RedirectPolicy:
    """Build a policy from ``{name: (REG_type, value)}``.

    ``value`` is either decoded (int for REG_DWORD, list of str for
    REG_MULTI_SZ) or the raw registry bytes. Unknown names are ignored, as
    the driver ignores them; a known name with the wrong type, bad data or
    an out-of-range number raises ValueError naming the value.
    """
    if not isinstance(values, Mapping):
        raise ValueError(f"registry values must be a mapping, not {type(values).__name__}")
    found: dict[str, tuple[int, object]] = {}
    for raw_name, item in values.items():
        if not isinstance(raw_name, str):
            raise ValueError(f"registry value name {raw_name!r} is not a str")
        name = _CANONICAL_NAME.get(raw_name.lower())
        if name is None:
            continue
        if name in found:
            raise ValueError(f"{name}: given twice (names are case-insensitive)")
        if not isinstance(item, tuple) or len(item) != 2:
            raise ValueError(f"{name}: expected a (REG type, value) pair, got {item!r}")
        found[name] = item

    def dword(name, default):
        return _dword(name, *found[name]) if name in found else default

    version = dword(VALUE_POLICY_VERSION, POLICY_VERSION)
    if version != POLICY_VERSION:
        raise ValueError(f"{VALUE_POLICY_VERSION}: version {version} is not supported "
                         f"(this driver reads version {POLICY_VERSION})")
    enabled = dword(VALUE_ENABLED, 1)
    if enabled not in (0, 1):
        raise ValueError(f"{VALUE_ENABLED}: must be 0 or 1, got {enabled}")

    def numbers(name, high, what):
        if name not in found:
            return []
        return _decimal_list(name, _multi_sz_strings(name, *found[name]), high, what)

    return RedirectPolicy(
        tcp_ports=numbers(VALUE_TCP_PORTS, 0xFFFF, "port"),
        udp_ports=numbers(VALUE_UDP_PORTS, 0xFFFF, "port"),
        tcp_proxy_port=_port(VALUE_TCP_PROXY_PORT, dword(VALUE_TCP_PROXY_PORT, 0)),
        udp_proxy_port=_port(VALUE_UDP_PROXY_PORT, dword(VALUE_UDP_PROXY_PORT, 0)),
        proxy_process_id=dword(VALUE_PROXY_PROCESS_ID, 0),
        excluded_process_ids=numbers(VALUE_EXCLUDED_PROCESS_IDS, MAX_DWORD, "process id"),
        enabled=bool(enabled),
    )


def _port(name: str, value: int) -> int:
    if value > 0xFFFF:
        raise ValueError(f"{name}: port {value} is out of range 0..65535")
    return value


