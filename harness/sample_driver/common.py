"""Names the sample driver shares with its INF and with user mode, registry value types,
the IOCTL code, and the value checks every part of the policy and context uses."""
from __future__ import annotations

import re
from collections.abc import Iterable

from harness.winsock.layouts import Field, Layout

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


