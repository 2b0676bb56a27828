"""Contract between the sample WFP redirect callout driver and Python.

The sample driver lives in ``driver-fixtures/wfp-redirect-callout``. This
module is the Python half of what it shares with user mode:

* the **policy**: registry values under the service's ``Parameters`` key
  (format documented in ``driver-fixtures/wfp-redirect-callout/POLICY.md``);
  :class:`RedirectPolicy` parses them from a dict of registry values or from
  ``.reg`` text, validates them exactly as the driver does, and renders them
  back;
* the **redirect context** the driver attaches to each redirected connection
  (``WFPRC_REDIRECT_CONTEXT`` in ``include/wfp_redirect_callout.h``):
  :func:`pack_context` / :func:`unpack_context`;
* the **decision** the callout takes at ALE_CONNECT_REDIRECT
  (:func:`decide`), in the same order as ``src/classify.c``, so the
  simulator's model of the callout and the C code cannot drift apart
  silently.

Pure standard library; imports only the contract modules
(docs/decisions.md §2). tests/driver_fixtures compiles static asserts generated
from the constants and layouts below against the C header.
"""
from __future__ import annotations

import enum
import functools
import ipaddress
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from harness.winsock import constants as C
from harness.winsock.layouts import SOCKADDR_IN, SOCKADDR_IN6, SOCKADDR_STORAGE, Field, Layout

__all__ = [
    "SERVICE_NAME", "PARAMETERS_KEY", "DEVICE_PATH", "IOCTL_WFPRC_RELOAD_POLICY",
    "RELOAD_RESULT", "REDIRECT_CONTEXT", "CONTEXT_MAGIC", "CONTEXT_VERSION", "CONTEXT_SIZE",
    "POLICY_VERSION", "MAX_PORTS", "MAX_EXCLUDED_PIDS", "VALUE_TYPES",
    "RedirectPolicy", "Endpoint", "RedirectContext", "Decision",
    "parse_registry_values", "parse_reg", "render_reg", "pack_context", "unpack_context",
    "sockaddr_bytes", "parse_sockaddr", "decide", "may_redirect_in_state", "CTL_CODE",
]

# --- names shared with the INF and the driver --------------------------------
SERVICE_NAME = "WfpRedirectCallout"
PARAMETERS_KEY = ("HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\"
                  f"{SERVICE_NAME}\\Parameters")
DEVICE_NAME = "\\Device\\WfpRedirectCallout"
DEVICE_PATH = "\\\\.\\WfpRedirectCallout"        # what CreateFileW opens

# WFP object keys the driver registers (include/wfp_redirect_callout.h).
PROVIDER_KEY = "5f0c7a1e-3d52-4b8e-9c61-2a7b9e4d1f30"
SUBLAYER_KEY = "8a3e6b2d-71c4-4f09-b5d8-0e9c2f6a4b17"
CALLOUT_V4_KEY = "c2d41f8b-5a6e-4c3d-9f27-7b1e0a8d6c52"
CALLOUT_V6_KEY = "d7e59a3c-6b8f-4d1e-a038-8c2f1b9e7d63"
FILTER_V4_KEY = "1b6f3e9a-0c7d-4a52-8e14-3d9b7c2a5f86"
FILTER_V6_KEY = "2c7a4f0b-1d8e-4b63-9f25-4e0c8d3b6a97"
SUBLAYER_WEIGHT = 0x7F00


# --- registry value types (winnt.h) -------------------------------------------
REG_NONE = 0
REG_SZ = 1
REG_EXPAND_SZ = 2
REG_BINARY = 3
REG_DWORD = 4
REG_DWORD_BIG_ENDIAN = 5
REG_LINK = 6
REG_MULTI_SZ = 7
REG_QWORD = 11
REG_TYPE_NAMES = {REG_NONE: "REG_NONE", REG_SZ: "REG_SZ", REG_EXPAND_SZ: "REG_EXPAND_SZ",
                  REG_BINARY: "REG_BINARY", REG_DWORD: "REG_DWORD",
                  REG_DWORD_BIG_ENDIAN: "REG_DWORD_BIG_ENDIAN", REG_LINK: "REG_LINK",
                  REG_MULTI_SZ: "REG_MULTI_SZ", REG_QWORD: "REG_QWORD"}


def _type_name(regtype) -> str:
    return REG_TYPE_NAMES.get(regtype, f"type {regtype!r}")


# --- IOCTL (winioctl.h CTL_CODE) ----------------------------------------------
FILE_DEVICE_WFPRC = 0x8A57          # vendor range: >= 0x8000 (winioctl.h)
METHOD_BUFFERED = 0
FILE_WRITE_ACCESS = 0x0002


def CTL_CODE(device_type: int, function: int, method: int, access: int) -> int:
    return (device_type << 16) | (access << 14) | (function << 2) | method


IOCTL_WFPRC_RELOAD_POLICY = CTL_CODE(FILE_DEVICE_WFPRC, 0x801, METHOD_BUFFERED, FILE_WRITE_ACCESS)

# Output of IOCTL_WFPRC_RELOAD_POLICY (WFPRC_RELOAD_RESULT): what the driver now uses.
RELOAD_RESULT = Layout("WFPRC_RELOAD_RESULT", 16, (
    Field("generation", 0, "<I"), Field("proxy_process_id", 4, "<I", "proxyProcessId"),
    Field("tcp_port_count", 8, "<I", "tcpPortCount"), Field("udp_port_count", 12, "<I", "udpPortCount"),
), header="wfp_redirect_callout.h")


# --- policy --------------------------------------------------------------------
POLICY_VERSION = 1
MAX_PORTS = 64              # per protocol (WFPRC_MAX_PORTS)
MAX_EXCLUDED_PIDS = 32      # WFPRC_MAX_EXCLUDED_PIDS
MAX_DWORD = 0xFFFFFFFF
# The driver reads a REG_MULTI_SZ into a fixed buffer: MAX_PORTS strings of
# up to 10 digits plus NUL, plus the final NUL (WFPRC_MAX_MULTI_SZ_BYTES).
MAX_MULTI_SZ_BYTES = (MAX_PORTS * 11 + 1) * 2

VALUE_POLICY_VERSION = "PolicyVersion"
VALUE_ENABLED = "Enabled"
VALUE_TCP_PORTS = "TcpPorts"
VALUE_UDP_PORTS = "UdpPorts"
VALUE_TCP_PROXY_PORT = "TcpProxyPort"
VALUE_UDP_PROXY_PORT = "UdpProxyPort"
VALUE_PROXY_PROCESS_ID = "ProxyProcessId"
VALUE_EXCLUDED_PROCESS_IDS = "ExcludedProcessIds"

# Value name -> registry type, in the order render_reg writes them.
VALUE_TYPES = {
    VALUE_POLICY_VERSION: REG_DWORD,
    VALUE_ENABLED: REG_DWORD,
    VALUE_TCP_PORTS: REG_MULTI_SZ,
    VALUE_UDP_PORTS: REG_MULTI_SZ,
    VALUE_TCP_PROXY_PORT: REG_DWORD,
    VALUE_UDP_PROXY_PORT: REG_DWORD,
    VALUE_PROXY_PROCESS_ID: REG_DWORD,
    VALUE_EXCLUDED_PROCESS_IDS: REG_MULTI_SZ,
}

# The driver reads names case-insensitively (the registry does); so do we.
_CANONICAL_NAME = {name.lower(): name for name in VALUE_TYPES}
# Canonical decimal: no sign, no blanks, no leading zeros; bounds the length
# the driver must buffer (5 digits for a port, 10 for a PID).
_DECIMAL = re.compile(r"(0|[1-9][0-9]{0,9})")


def _check_int(name: str, value, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: {what} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name}: {what} {value} is out of range {low}..{high}")
    return value


def _check_list(name: str, items, low: int, high: int, limit: int, what: str) -> tuple[int, ...]:
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise ValueError(f"{name}: expected a list of {what}s, got {type(items).__name__}")
    items = list(items)
    if len(items) > limit:
        raise ValueError(f"{name}: {len(items)} entries, at most {limit} allowed")
    seen = set()
    for item in items:
        _check_int(name, item, low, high, what)
        if item in seen:
            raise ValueError(f"{name}: {what} {item} is listed twice")
        seen.add(item)
    return tuple(sorted(items))


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


# --- registry value decoding -------------------------------------------------
def _dword(name: str, regtype, value) -> int:
    if regtype != REG_DWORD:
        raise ValueError(f"{name}: expected REG_DWORD, got {_type_name(regtype)}")
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 4:
            raise ValueError(f"{name}: REG_DWORD data must be 4 bytes, got {len(value)}")
        return struct.unpack("<I", value)[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: REG_DWORD value must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_DWORD:
        raise ValueError(f"{name}: {value} does not fit in a REG_DWORD")
    return value


def _multi_sz_strings(name: str, regtype, value) -> list[str]:
    """Strings of a REG_MULTI_SZ as the driver walks them.

    The walk stops at the first empty string or at the end of the data
    (a missing final terminator is tolerated, like the driver does).
    """
    if regtype != REG_MULTI_SZ:
        raise ValueError(f"{name}: expected REG_MULTI_SZ, got {_type_name(regtype)}")
    if isinstance(value, (bytes, bytearray)):
        if len(value) % 2:
            raise ValueError(f"{name}: REG_MULTI_SZ data has an odd length ({len(value)} bytes)")
        try:
            text = bytes(value).decode("utf-16-le")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{name}: REG_MULTI_SZ data is not UTF-16: {exc}") from None
        strings = text.split("\0")
    elif isinstance(value, (list, tuple)):
        strings = []
        for s in value:
            if not isinstance(s, str):
                raise ValueError(f"{name}: REG_MULTI_SZ items must be str, not {type(s).__name__}")
            if "\0" in s:
                raise ValueError(f"{name}: REG_MULTI_SZ item {s!r} contains NUL")
            strings.append(s)
    else:
        raise ValueError(f"{name}: REG_MULTI_SZ value must be a list of str or bytes, "
                         f"not {type(value).__name__}")
    size = len(value) if isinstance(value, (bytes, bytearray)) else sum(len(s) + 1 for s in strings) * 2 + 2
    if size > MAX_MULTI_SZ_BYTES:
        raise ValueError(f"{name}: REG_MULTI_SZ data is {size} bytes, at most {MAX_MULTI_SZ_BYTES}")
    out = []
    for s in strings:
        if s == "":
            break
        out.append(s)
    return out


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


# --- .reg files ----------------------------------------------------------------
REG_HEADER = "Windows Registry Editor Version 5.00"
_VALUE_LINE = re.compile(r'(?:"((?:[^"\\]|\\.)*)"|(@))=(.*)\Z', re.S)
_HEX_PREFIX = re.compile(r"hex(?:\(([0-9a-fA-F]{1,8})\))?:(.*)\Z", re.S)


def _unescape(text: str, lineno: int) -> str:
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text):
                raise ValueError(f".reg line {lineno}: dangling backslash")
            out.append(text[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _logical_lines(text: str):
    """Join regedit's hex continuation lines; yields (first line number, text)."""
    pending, start = None, 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if pending is not None:
            line = line.lstrip()
        stripped = line.rstrip()
        if pending is None:
            start = lineno
            pending = ""
        if stripped.endswith("\\"):
            pending += stripped[:-1]
            continue
        yield start, pending + stripped
        pending = None
    if pending is not None:
        raise ValueError(f".reg line {start}: continuation line at end of file (truncated?)")


def _closing_quote(data: str) -> int:
    """Index of the quote closing the string that opens data[0], or -1."""
    i = 1
    while i < len(data):
        if data[i] == "\\":
            i += 2
        elif data[i] == '"':
            return i
        else:
            i += 1
    return -1


def _parse_data(name: str, data: str, lineno: int):
    """One value's data -> (REG type, decoded value), or None for a deletion."""
    where = f"{name}: .reg line {lineno}"
    if data == "-":
        return None
    if data.startswith('"'):
        end = _closing_quote(data)
        if end != len(data) - 1:
            raise ValueError(f"{where}: unterminated string or text after it")
        return REG_SZ, _unescape(data[1:-1], lineno)
    if data.lower().startswith("dword:"):
        digits = data[6:]
        if not re.fullmatch(r"[0-9a-fA-F]{1,8}", digits):
            raise ValueError(f"{where}: bad dword data {digits!r}")
        return REG_DWORD, int(digits, 16)
    m = _HEX_PREFIX.fullmatch(data)
    if m:
        regtype = int(m.group(1), 16) if m.group(1) else REG_BINARY
        body = m.group(2).strip()
        raw = bytearray()
        if body:
            for token in body.split(","):
                token = token.strip()
                if not re.fullmatch(r"[0-9a-fA-F]{2}", token):
                    raise ValueError(f"{where}: bad hex byte {token!r}")
                raw.append(int(token, 16))
        return regtype, _decode_raw(name, regtype, bytes(raw))
    raise ValueError(f"{where}: unrecognised data {data[:40]!r}")


def _decode_raw(name: str, regtype: int, raw: bytes):
    if regtype == REG_DWORD:
        return _dword(name, REG_DWORD, raw)
    if regtype == REG_MULTI_SZ:
        return _multi_sz_strings(name, REG_MULTI_SZ, raw)
    if regtype in (REG_SZ, REG_EXPAND_SZ):
        if len(raw) % 2:
            raise ValueError(f"{name}: string data has an odd length ({len(raw)} bytes)")
        return raw.decode("utf-16-le", errors="strict").split("\0", 1)[0]
    return raw


def parse_reg(text: str, key: str = PARAMETERS_KEY) -> dict[str, tuple[int, object]]:
    """Values of ``key`` in a ``Windows Registry Editor Version 5.00`` file.

    Returns ``{name: (REG type, decoded value)}`` (see
    :func:`parse_registry_values`). Other keys are skipped; ``"name"=-``
    deletes a value, ``[-key]`` the key. Raises ValueError on a missing
    header, a missing key, or malformed lines.
    """
    if not isinstance(text, str):
        raise ValueError(f".reg text must be str, not {type(text).__name__}")
    text = text.lstrip("\ufeff")
    lines = _logical_lines(text)
    header = None
    for lineno, line in lines:
        if line.strip():
            header = line.strip()
            break
    if header != REG_HEADER:
        raise ValueError(f"not a .reg file: expected header {REG_HEADER!r}, got {header!r}")
    wanted = key.lower()
    current = None
    seen_key = False
    values: dict[str, tuple[int, object]] = {}
    for lineno, line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith(";"):
            continue
        if stripped.startswith("["):
            if not stripped.endswith("]"):
                raise ValueError(f".reg line {lineno}: unterminated key {stripped[:60]!r}")
            name = stripped[1:-1]
            if name.startswith("-"):
                if name[1:].lower() == wanted:
                    values.clear()
                    seen_key = False
                current = None
                continue
            current = name.lower()
            if current == wanted:
                seen_key = True
            continue
        m = _VALUE_LINE.match(stripped)
        if not m:
            raise ValueError(f".reg line {lineno}: not a value line {stripped[:60]!r}")
        if current is None:
            raise ValueError(f".reg line {lineno}: value outside any key")
        vname = "" if m.group(2) else _unescape(m.group(1), lineno)
        parsed = _parse_data(vname or "@", m.group(3).strip(), lineno)
        if current != wanted:
            continue
        if parsed is None:
            values.pop(vname, None)
        else:
            values[vname] = parsed
    if not seen_key:
        raise ValueError(f"key [{key}] not found in the .reg text")
    return values


def _encode_raw(regtype: int, value) -> bytes:
    if regtype == REG_MULTI_SZ:
        return "".join(s + "\0" for s in value).encode("utf-16-le") + b"\0\0"
    if isinstance(value, str):
        return (value + "\0").encode("utf-16-le")
    return bytes(value)


def _hex_lines(prefix: str, raw: bytes) -> str:
    """Format like regedit: comma-separated bytes, wrapped with ``,\\``."""
    tokens = [f"{b:02x}" for b in raw]
    lines, line = [], prefix
    for i, token in enumerate(tokens):
        piece = token + ("," if i < len(tokens) - 1 else "")
        if len(line) + len(piece) > 78 and line.strip():
            lines.append(line + "\\")
            line = "  "
        line += piece
    lines.append(line)
    return "\r\n".join(lines)


def render_reg(values: Mapping[str, tuple[int, object]], key: str = PARAMETERS_KEY) -> str:
    """Render ``{name: (REG type, value)}`` as .reg text (CRLF, like regedit)."""
    out = [REG_HEADER, "", f"[{key}]"]
    for name, (regtype, value) in values.items():
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"='
        if regtype == REG_DWORD:
            out.append(f"{quoted}dword:{_dword(name, regtype, value):08x}")
        elif regtype == REG_SZ and isinstance(value, str):
            out.append(quoted + '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif regtype == REG_BINARY:
            out.append(_hex_lines(quoted + "hex:", _encode_raw(regtype, value)))
        else:
            out.append(_hex_lines(f"{quoted}hex({regtype:x}):", _encode_raw(regtype, value)))
    return "\r\n".join(out) + "\r\n"


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


def sockaddr_bytes(endpoint) -> bytes:
    """A SOCKADDR_STORAGE (128 bytes) holding ``endpoint``."""
    return _storage_of(_endpoint(endpoint))


@functools.lru_cache(maxsize=4096)
def _storage_of(ep: Endpoint) -> bytes:
    return _storage_raw(_parsed(ep.host)[2], ep.port, ep.flowinfo, ep.scope_id)   # ep.host is canonical


def _frozen(cls, **fields):
    """An instance of frozen dataclass `cls` with `fields` (every one) as they are: for values
    already checked, the cost of one dict update instead of __init__ and __post_init__."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


@functools.lru_cache(maxsize=4096)
def _address_text(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


# SOCKADDR_IN/IN6 mix byte orders (the port is big-endian), which Layout.unpack reads field by
# field; a proxy parses two sockaddrs a connection, so these read them in two struct calls.
_SIN = struct.Struct(">H4s")                 # sin_port, sin_addr
_SIN6_PORT = struct.Struct(">H")             # sin6_port
_SIN6_REST = struct.Struct("<I16sI")         # sin6_flowinfo, sin6_addr, sin6_scope_id
assert (SOCKADDR_IN.offset("sin_port"), SOCKADDR_IN.offset("sin_addr")) == (2, 2 + 2)
assert (SOCKADDR_IN6.offset("sin6_port"), SOCKADDR_IN6.offset("sin6_flowinfo"), SOCKADDR_IN6.offset("sin6_addr"),
        SOCKADDR_IN6.offset("sin6_scope_id")) == (2, 4, 4 + 4, 4 + 4 + 16)


def parse_sockaddr(data: bytes) -> Endpoint:
    """Inverse of :func:`sockaddr_bytes` (accepts SOCKADDR_IN/IN6/STORAGE bytes)."""
    if len(data) < 2:
        raise ValueError("sockaddr too short")
    family = SOCKADDR_STORAGE.get(data, "ss_family")
    # Text from the address bytes is canonical and each field is in range by its width: the
    # Endpoints are built without __post_init__'s parsing and checks.
    if family == C.AF_INET and len(data) >= SOCKADDR_IN.size:
        port, addr = _SIN.unpack_from(data, 2)
        return _frozen(Endpoint, host=_address_text(addr), port=port, flowinfo=0, scope_id=0)
    if family == C.AF_INET6 and len(data) >= SOCKADDR_IN6.size:
        flowinfo, addr, scope_id = _SIN6_REST.unpack_from(data, 4)
        return _frozen(Endpoint, host=_address_text(addr), port=_SIN6_PORT.unpack_from(data, 2)[0],
                       flowinfo=flowinfo, scope_id=scope_id)
    raise ValueError(f"sockaddr family {family} is not AF_INET/AF_INET6 (or data too short)")


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
    return _context(sockaddr_bytes(remote), sockaddr_bytes(local), protocol, process_id, policy_generation)


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


_FAMILY_IN, _FAMILY_IN6 = C.AF_INET.to_bytes(2, "little"), C.AF_INET6.to_bytes(2, "little")
_TAIL_IN = bytes(SOCKADDR_STORAGE.size - SOCKADDR_IN.offset("sin_zero"))
_TAIL_IN6 = bytes(SOCKADDR_STORAGE.size - SOCKADDR_IN6.size)


def _storage_raw(ip: bytes, port: int, flowinfo: int = 0, scope_id: int = 0) -> bytes:
    """The SOCKADDR_STORAGE (128 bytes) of a packed address: SOCKADDR_IN or SOCKADDR_IN6, then
    zeros (tested against the layouts)."""
    if not (type(port) is int and 0 <= port <= 0xFFFF):
        _check_int("port", port, 0, 0xFFFF, "port")
    if len(ip) == 4:
        return _FAMILY_IN + port.to_bytes(2, "big") + ip + _TAIL_IN
    return (_FAMILY_IN6 + port.to_bytes(2, "big") + flowinfo.to_bytes(4, "little") + ip
            + scope_id.to_bytes(4, "little") + _TAIL_IN6)


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
    remote, local = parse_sockaddr(f["original_remote"]), parse_sockaddr(f["original_local"])
    if remote.family != local.family:
        raise ValueError("redirect context: endpoints of different address families")
    if f["protocol"] not in (C.IPPROTO_TCP, C.IPPROTO_UDP):
        raise ValueError(f"redirect context: protocol {f['protocol']} is neither TCP nor UDP")
    return _frozen(RedirectContext, original_remote=remote, original_local=local, protocol=f["protocol"],
                   process_id=f["process_id"], policy_generation=f["policy_generation"])


# --- the callout's decision (src/classify.c, docs/facts.md §5.4, §5.5, §5.7) ---------
class Decision(enum.Enum):
    LEAVE = "leave"          # no FWPS_RIGHT_ACTION_WRITE: return, touch nothing
    PERMIT = "permit"        # FWP_ACTION_PERMIT, no redirect
    REDIRECT = "redirect"    # rewrite to loopback:proxy, then FWP_ACTION_PERMIT


def may_redirect_in_state(state: int) -> bool:
    """docs/facts.md §5.4: NOT_REDIRECTED / BY_OTHER may redirect; BY_SELF and
    PREVIOUSLY_BY_SELF never (the driver permits), unknown values neither."""
    return state in (C.FWPS_CONNECTION_NOT_REDIRECTED, C.FWPS_CONNECTION_REDIRECTED_BY_OTHER)


def decide(policy: RedirectPolicy, *, protocol: int, remote_port: int, process_id: int,
           redirect_state: int, has_write_right: bool = True, is_reauthorize: bool = False,
           previous_modified_by_self: bool = False,
           foreign_local_redirect_in_chain: bool = False) -> Decision:
    """What the sample callout does with one ALE_CONNECT_REDIRECT classify.

    Same order as WfprcClassify:
    1. without the write right, leave (docs/facts.md §5.5; EBPF bails too);
    2. not matched by the policy: permit;
    3. redirect state BY_SELF / PREVIOUSLY_BY_SELF (or unknown): permit;
    4. reauthorization whose previous version our filter made: permit
       (WFPSampler, docs/facts.md §5.7);
    5. an earlier version in the previousVersion chain carries another
       callout's localRedirectHandle: permit, a local proxy owns it
       (HOWTO, docs/facts.md §5.5; EBPF walks the whole chain);
    6. otherwise redirect.
    """
    if not has_write_right:
        return Decision.LEAVE
    if not policy.matches(protocol, remote_port, process_id):
        return Decision.PERMIT
    if not may_redirect_in_state(redirect_state):
        return Decision.PERMIT
    if is_reauthorize and previous_modified_by_self:
        return Decision.PERMIT
    if foreign_local_redirect_in_chain:
        return Decision.PERMIT
    return Decision.REDIRECT
