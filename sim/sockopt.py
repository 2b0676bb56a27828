"""setsockopt/getsockopt: which options exist on which socket, their lengths, what they store.

Every rule of options lives here: the table `OPTIONS` says where each option exists and
how its value is read and written; `inherit` says what an accepted socket takes from its
listener. Values live in the socket's `options` mapping (`sock.options[(level, name)]`),
except SO_LINGER/SO_DONTLINGER (`sock.linger`) and SO_ERROR (`sock.so_error`).

Evidence (Wine's tests run on real Windows: an ok() outside todo_wine, not satisfied only
through broken(), is Windows behaviour; a todo_wine ok() is one Windows passes and Wine not):

* Wine dlls/ws2_32/tests/sock.c test_set_getsockopt, its option-length table
  (accepts_short_len, sizes, values, accepts_large_value, bool_value) and the cases before it:
  - SOL_SOCKET BOOLs (SO_BROADCAST, SO_REUSEADDR, SO_EXCLUSIVEADDRUSE, SO_OOBINLINE,
    SO_DONTLINGER) take any length, 0 included; getsockopt with a length below 4 writes that
    many bytes of the value and reports 1;
  - 1-byte BOOLEANs (SO_KEEPALIVE, SO_DONTROUTE, TCP_NODELAY, IPV6_V6ONLY) read and write one
    byte whatever the length (TCP_NODELAY with optlen 42 works; 0x100 reads back 0); length 0 fails;
  - SOL_SOCKET integers (SO_RCVBUF, SO_SNDBUF, SO_RCVTIMEO, SO_SNDTIMEO, SO_LINGER) need 4 bytes
    both ways; a short getsockopt of SO_RCVBUF, SO_SNDBUF or SO_LINGER zeroes the bytes it was
    given; any length >= 4, and a negative one, sets them;
  - other levels: a negative setsockopt length fails (WSAENOBUFS; WSAEFAULT on Windows 7 to
    10 21H1: decision point sockopt_negative_length); a failing getsockopt sets *optlen to 0;
    IP_TOS, IP_TTL, IP_MULTICAST_TTL, IPV6_UNICAST_HOPS, IPV6_MULTICAST_HOPS take 1-3 bytes and
    refuse 0x100 with WSAEINVAL; IP_PKTINFO and its kind need 4 bytes;
  - a negative getsockopt length is WSAEFAULT with *optlen untouched; a NULL or invalid optval
    is WSAEFAULT (SO_LINGER, SO_DONTLINGER, SO_DONTROUTE with optval 1);
  - SO_ERROR can be set, and getsockopt reads back what was set (todo_wine there);
  - a successful setsockopt leaves WSAGetLastError() 0.
* Wine test_sockopt_validity: on TCP, IP_MULTICAST_*, IP_PKTINFO, IP_RECVTTL, IP_RECVTOS,
  IP_HDRINCL (and the IPv6 equivalents) fail with WSAEINVAL; memberships and unknown names
  with WSAENOPROTOOPT; IP_TOS, IP_TTL, IP_DONTFRAGMENT, IP_UNICAST_IF, IPV6_DONTFRAG exist.
* Wine test_so_debug: SO_DEBUG is a BOOL (2 reads back 1). test_extendedSocketOptions:
  SO_LINGER on UDP is WSAENOPROTOOPT; SO_DONTLINGER is !l_onoff; a level such as 0xffffffff
  or 0x8000 is WSAEINVAL.
* Wine test_accept_inheritance: an accepted socket has its listener's SOL_SOCKET options,
  SO_LINGER included, and TCP_NODELAY.
* Wine test_set_getsockopt (its IP_DONTFRAGMENT loop, IPv4 and IPv6): a new TCP socket reads
  IP_DONTFRAGMENT / IPV6_DONTFRAG 1 (0 only before Vista, through broken()); UDP and raw sockets 0.

Host-valued defaults (SO_RCVBUF, SO_SNDBUF, IP_TTL, IPV6_UNICAST_HOPS, TCP_KEEPALIVE): no
Windows-run test reads them, and Windows makes them the computer's configuration, not ws2_32's
(learn.microsoft.com Set-NetIPv4Protocol / Set-NetIPv6Protocol -DefaultHopLimit; the WSK SO_RCVBUF
page: the default size "is transport-specific"). The values below are assumptions about the
simulated world's host; harness/replay/hostvalues.py compares them as values the host chose.

Assumed where the sources are silent (each marked "assumed" below): setsockopt on an option
whose getsockopt fails fails the same way; a zero length on a SOL_SOCKET BOOL changes nothing.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from harness.winsock import constants as C
from sim import addresses
from sim.decision_points import DECISIONS
from sim.errors import WsaError

# Decision points this module reads (sim/decision_points.py), checked when it is imported.
_WFP_SOCKOPT_ON_TCP_ERROR = {DECISIONS["wfp_sockopt_on_tcp"].choice("WSAEINVAL"): C.WSAEINVAL,
                             DECISIONS["wfp_sockopt_on_tcp"].choice("WSAENOPROTOOPT"): C.WSAENOPROTOOPT}
_NEGATIVE_LENGTH_ERROR = {DECISIONS["sockopt_negative_length"].choice("WSAENOBUFS"): C.WSAENOBUFS,
                          DECISIONS["sockopt_negative_length"].choice("WSAEFAULT"): C.WSAEFAULT}
_KEEPCNT_ABSENT = DECISIONS["tcp_keepcnt_keepintvl"].choice("WSAENOPROTOOPT")
# Decision point ipv6_protection_level_default: the level a new socket reads.
_PROTECTION_DEFAULTS = {DECISIONS["ipv6_protection_level_default"].choice("unspecified"): C.PROTECTION_LEVEL_DEFAULT,
                        DECISIONS["ipv6_protection_level_default"].choice("unrestricted"): C.PROTECTION_LEVEL_UNRESTRICTED,
                        DECISIONS["ipv6_protection_level_default"].choice("edge_restricted"): C.PROTECTION_LEVEL_EDGERESTRICTED}
# The IPV6_PROTECTION_LEVEL socket option page and ws2ipdef.h name these four; another value is
# WSAEINVAL (assumed: no page lists the error).
_PROTECTION_LEVELS = frozenset({C.PROTECTION_LEVEL_UNRESTRICTED, C.PROTECTION_LEVEL_EDGERESTRICTED,
                                C.PROTECTION_LEVEL_RESTRICTED, C.PROTECTION_LEVEL_DEFAULT})
_PROTECTION = (C.IPPROTO_IPV6, C.IPV6_PROTECTION_LEVEL)

_LEVELS = (C.SOL_SOCKET, C.IPPROTO_IP, C.IPPROTO_IPV6, C.IPPROTO_TCP, C.IPPROTO_UDP)


@dataclass(frozen=True)
class Opt:
    default: int = 0
    tcp_default: int = None     # the default on a TCP socket, where it differs
    width: int = 4          # 1: a BOOLEAN read and written as one byte
    short: bool = False     # setsockopt/getsockopt take a length of 1 to 3
    boolean: bool = False   # stored as 0 or 1
    maximum: int = None     # a larger value is WSAEINVAL
    zero_short: bool = False    # a short getsockopt zeroes the bytes it was given
    on: str = "any"         # "tcp" or "dgram": the socket type it exists on
    elsewhere: int = C.WSAEINVAL    # the error on the other type
    read_only: bool = False


_SOL_BOOL = Opt(short=True, boolean=True)
_BYTE = Opt(width=1, boolean=True)
_IP_BYTE = Opt(short=True, maximum=255)
_DGRAM_BOOL = Opt(boolean=True, on="dgram")

OPTIONS = {
    (C.SOL_SOCKET, C.SO_DEBUG): _SOL_BOOL,
    (C.SOL_SOCKET, C.SO_REUSEADDR): _SOL_BOOL,
    (C.SOL_SOCKET, C.SO_EXCLUSIVEADDRUSE): _SOL_BOOL,
    (C.SOL_SOCKET, C.SO_BROADCAST): _SOL_BOOL,
    (C.SOL_SOCKET, C.SO_OOBINLINE): _SOL_BOOL,
    (C.SOL_SOCKET, C.SO_DONTLINGER): Opt(short=True, boolean=True, on="tcp", elsewhere=C.WSAENOPROTOOPT),  # assumed: as SO_LINGER
    (C.SOL_SOCKET, C.SO_KEEPALIVE): _BYTE,
    (C.SOL_SOCKET, C.SO_DONTROUTE): _BYTE,
    (C.SOL_SOCKET, C.SO_LINGER): Opt(zero_short=True, on="tcp", elsewhere=C.WSAENOPROTOOPT),
    (C.SOL_SOCKET, C.SO_RCVBUF): Opt(65536, zero_short=True),       # host-valued default (assumed)
    (C.SOL_SOCKET, C.SO_SNDBUF): Opt(65536, zero_short=True),       # host-valued default (assumed)
    (C.SOL_SOCKET, C.SO_RCVTIMEO): Opt(),
    (C.SOL_SOCKET, C.SO_SNDTIMEO): Opt(),
    (C.SOL_SOCKET, C.SO_ERROR): Opt(),
    (C.SOL_SOCKET, C.SO_TYPE): Opt(read_only=True),
    (C.SOL_SOCKET, C.SO_ACCEPTCONN): Opt(read_only=True),
    # Wine test_extendedSocketOptions: 65507 (or 65527) on UDP. TCP: the SOL_SOCKET page says it
    # "has no meaning for stream oriented sockets"; WSAENOPROTOOPT there is assumed.
    (C.SOL_SOCKET, C.SO_MAX_MSG_SIZE): Opt(65507, read_only=True, on="dgram", elsewhere=C.WSAENOPROTOOPT),
    (C.IPPROTO_TCP, C.TCP_NODELAY): _BYTE,
    (C.IPPROTO_TCP, C.TCP_KEEPALIVE): Opt(7200),                    # seconds; host-valued default (assumed)
    (C.IPPROTO_TCP, C.TCP_KEEPCNT): Opt(10, maximum=255),
    (C.IPPROTO_TCP, C.TCP_KEEPINTVL): Opt(1),
    (C.IPPROTO_IP, C.IP_OPTIONS): Opt(),                           # bytes, not an integer: _OPTIONS_BYTES
    (C.IPPROTO_IP, C.IP_HDRINCL): Opt(on="raw"),
    (C.IPPROTO_IP, C.IP_TOS): _IP_BYTE,                             # accepted and stored; no effect on packets
    (C.IPPROTO_IP, C.IP_TTL): Opt(128, short=True, maximum=255),    # host-valued default (assumed)
    (C.IPPROTO_IP, C.IP_MULTICAST_IF): Opt(on="dgram"),
    (C.IPPROTO_IP, C.IP_MULTICAST_TTL): Opt(1, short=True, maximum=255, on="dgram"),
    (C.IPPROTO_IP, C.IP_MULTICAST_LOOP): Opt(1, short=True, boolean=True, on="dgram"),
    (C.IPPROTO_IP, C.IP_DONTFRAGMENT): Opt(boolean=True, tcp_default=1),
    (C.IPPROTO_IP, C.IP_PKTINFO): _DGRAM_BOOL,
    (C.IPPROTO_IP, C.IP_RECVTTL): _DGRAM_BOOL,
    (C.IPPROTO_IP, C.IP_RECVTOS): _DGRAM_BOOL,
    (C.IPPROTO_IP, C.IP_UNICAST_IF): Opt(),
    (C.IPPROTO_IPV6, C.IPV6_HDRINCL): Opt(on="raw"),
    (C.IPPROTO_IPV6, C.IPV6_UNICAST_HOPS): Opt(128, short=True, maximum=255),    # host-valued default (assumed)
    (C.IPPROTO_IPV6, C.IPV6_MULTICAST_IF): Opt(on="dgram"),
    (C.IPPROTO_IPV6, C.IPV6_MULTICAST_HOPS): Opt(1, short=True, maximum=255, on="dgram"),
    (C.IPPROTO_IPV6, C.IPV6_MULTICAST_LOOP): Opt(1, short=True, boolean=True, on="dgram"),
    (C.IPPROTO_IPV6, C.IPV6_DONTFRAG): Opt(short=True, boolean=True, tcp_default=1),
    (C.IPPROTO_IPV6, C.IPV6_PKTINFO): _DGRAM_BOOL,
    (C.IPPROTO_IPV6, C.IPV6_HOPLIMIT): _DGRAM_BOOL,
    (C.IPPROTO_IPV6, C.IPV6_RECVTCLASS): _DGRAM_BOOL,
    (C.IPPROTO_IPV6, C.IPV6_V6ONLY): Opt(1, width=1, boolean=True),
    (C.IPPROTO_IPV6, C.IPV6_UNICAST_IF): Opt(),
    # Wine test_sockopt_validity (on Windows): it exists on IPv6 TCP and UDP sockets; the default
    # is decision point ipv6_protection_level_default (_read).
    (C.IPPROTO_IPV6, C.IPV6_PROTECTION_LEVEL): Opt(),
}
_WFP = {(C.IPPROTO_IP, C.IP_WFP_REDIRECT_RECORDS), (C.IPPROTO_IP, C.IP_WFP_REDIRECT_CONTEXT),
        (C.IPPROTO_IPV6, C.IPV6_WFP_REDIRECT_RECORDS), (C.IPPROTO_IPV6, C.IPV6_WFP_REDIRECT_CONTEXT)}
_KEEPCNT = {(C.IPPROTO_TCP, C.TCP_KEEPCNT), (C.IPPROTO_TCP, C.TCP_KEEPINTVL)}
_LINGER = (C.SOL_SOCKET, C.SO_LINGER)
_DONTLINGER = (C.SOL_SOCKET, C.SO_DONTLINGER)
_ERROR = (C.SOL_SOCKET, C.SO_ERROR)
# IP_OPTIONS holds the IPv4 header options, up to 40 bytes (RFC 791); Wine test_sockopt_validity:
# it reads (empty at first) and takes back what it read on TCP and UDP. A longer value is
# WSAEINVAL (assumed: the IPPROTO_IP options page gives no error for it).
_IP_OPTIONS = (C.IPPROTO_IP, C.IP_OPTIONS)
_IP_OPTIONS_MAX = 40
# Wine test_accept_inheritance: SOL_SOCKET options and TCP_NODELAY pass to the accepted socket;
# the rest of both levels alike (assumed); IP-level values are not inherited (assumed).
INHERITED_LEVELS = (C.SOL_SOCKET, C.IPPROTO_TCP)


def _spec(sock, level: int, name: int):
    """The option's Opt after the existence checks, or None for a WFP option; raises the error."""
    if level not in _LEVELS:
        raise WsaError(C.WSAEINVAL)
    key = (level, name)
    if key in _WFP:
        # docs/windows-observed.md item 124: TCP gets WSAEINVAL (older Windows: WSAENOPROTOOPT).
        if sock.is_tcp:
            raise WsaError(_WFP_SOCKOPT_ON_TCP_ERROR[sock.process.profile.wfp_sockopt_on_tcp])
        return None
    spec = OPTIONS.get(key)
    if spec is None:
        raise WsaError(C.WSAENOPROTOOPT)
    # Assumed (no source shows either): IPPROTO_TCP on a non-TCP socket is WSAENOPROTOOPT, an
    # IPPROTO_IPV6 option on an AF_INET socket WSAEINVAL.
    if level == C.IPPROTO_TCP and not sock.is_tcp:
        raise WsaError(C.WSAENOPROTOOPT)
    if level == C.IPPROTO_IPV6 and sock.family != C.AF_INET6:
        raise WsaError(C.WSAEINVAL)
    if key in _KEEPCNT and sock.process.profile.tcp_keepcnt_keepintvl == _KEEPCNT_ABSENT:
        raise WsaError(C.WSAENOPROTOOPT)
    kind = "tcp" if sock.is_tcp else "raw" if sock.type == C.SOCK_RAW else "dgram"
    if spec.on != "any" and spec.on != kind and not (spec.on == "dgram" and kind == "raw"):
        raise WsaError(spec.elsewhere)
    return spec


def _read(sock, key, spec) -> int:
    if key == _LINGER:
        return sock.linger[0] | sock.linger[1] << 16
    if key == _DONTLINGER:
        return 0 if sock.linger[0] else 1
    if key == _ERROR:
        return sock.so_error
    if key == (C.SOL_SOCKET, C.SO_TYPE):
        return sock.type
    if key == (C.SOL_SOCKET, C.SO_ACCEPTCONN):
        return 1 if sock.state == "listening" else 0
    if key == _PROTECTION and key not in sock.options:
        return _PROTECTION_DEFAULTS[sock.process.profile.ipv6_protection_level_default]
    default = spec.tcp_default if sock.is_tcp and spec.tcp_default is not None else spec.default
    return sock.options.get(key, default)


def _store(sock, key, value: int) -> None:
    if key == _LINGER:
        sock.linger = (value & 0xFFFF, value >> 16)
    elif key == _DONTLINGER:
        sock.linger = (0 if value else 1, sock.linger[1])
    elif key == _ERROR:
        sock.so_error = value
    else:
        sock.options[key] = value


def _u32(level: int, name: int):
    """Levels and names as the headers spell them (SO_DONTLINGER is ~SO_LINGER: an int -129)."""
    return level & 0xFFFFFFFF, name & 0xFFFFFFFF


def setsockopt(sock, mem, level: int, name: int, optval: int, optlen: int) -> None:
    level, name = _u32(level, name)
    spec = _spec(sock, level, name)
    key = (level, name)
    if spec is None:
        return _set_wfp(sock, mem, key, optval, optlen)
    if spec.read_only:
        raise WsaError(C.WSAENOPROTOOPT)
    if optval == 0:
        raise WsaError(C.WSAEFAULT)
    if key == _IP_OPTIONS:
        return _set_ip_options(sock, mem, optval, optlen)
    sol = level == C.SOL_SOCKET
    if optlen < 0:
        if not (sol and spec.width == 4):
            raise WsaError(_NEGATIVE_LENGTH_ERROR[sock.process.profile.sockopt_negative_length])
        optlen = 4                      # SOL_SOCKET 4-byte options read their 4 bytes
    if optlen == 0:
        if sol and spec.boolean and spec.width == 4:
            if not mem.check(optval, 1, False):
                raise WsaError(C.WSAEFAULT)
            return                      # accepted; nothing to read (assumed: nothing changes)
        raise WsaError(C.WSAEFAULT)
    if optlen < 4 and spec.width == 4 and not spec.short:
        raise WsaError(C.WSAEFAULT)
    take = min(optlen, spec.width)
    if not mem.check(optval, take, False):
        raise WsaError(C.WSAEFAULT)
    value = int.from_bytes(mem.kread(optval, take), "little")
    if spec.maximum is not None and value > spec.maximum:
        raise WsaError(C.WSAEINVAL)
    if key == _PROTECTION and value not in _PROTECTION_LEVELS:
        raise WsaError(C.WSAEINVAL)
    if key == (C.IPPROTO_IPV6, C.IPV6_V6ONLY) and sock.local is not None:
        raise WsaError(C.WSAEINVAL)          # cannot change after bind
    addresses.check_option(sock, key, value)     # SO_REUSEADDR and SO_EXCLUSIVEADDRUSE exclude each other
    _store(sock, key, (1 if value else 0) if spec.boolean else value)


def _set_ip_options(sock, mem, optval: int, optlen: int) -> None:
    if optlen < 0 or optlen > _IP_OPTIONS_MAX:
        raise WsaError(C.WSAEINVAL)
    if not mem.check(optval, optlen, False):
        raise WsaError(C.WSAEFAULT)
    sock.options[_IP_OPTIONS] = mem.kread(optval, optlen) if optlen else b""


def _get_ip_options(sock, mem, optval: int, optlen_ptr: int, have: int) -> None:
    data = sock.options.get(_IP_OPTIONS, b"")
    if have < len(data) or (data and (optval == 0 or not mem.check(optval, len(data), True))):
        raise WsaError(C.WSAEFAULT)
    mem.kwrite(optval, data)
    mem.kwrite_u32(optlen_ptr, len(data))


def _set_wfp(sock, mem, key, optval: int, optlen: int) -> None:
    # A DWORD switches delivery of the redirect cmsg on or off; a longer value is a
    # records blob attached to the socket's next flow (sim.wfp validates it).
    if optlen < 4 or optval == 0 or not mem.check(optval, optlen, False):
        raise WsaError(C.WSAEFAULT)
    data = mem.kread(optval, optlen)
    if optlen == 4:
        sock.options[key] = struct.unpack("<I", data)[0]
    else:
        sock.set_wfp_option_blob(key, data)


def getsockopt(sock, mem, level: int, name: int, optval: int, optlen_ptr: int) -> None:
    if optlen_ptr == 0 or not mem.check(optlen_ptr, 4, True):
        raise WsaError(C.WSAEFAULT)
    level, name = _u32(level, name)
    spec = _spec(sock, level, name)
    key = (level, name)
    have = mem.kread_i32(optlen_ptr)
    if key == _IP_OPTIONS:
        return _get_ip_options(sock, mem, optval, optlen_ptr, have)
    if spec is None:
        value, width, short = sock.options.get(key, 0), 4, False
    else:
        value, width, short = _read(sock, key, spec), spec.width, spec.short
    data = struct.pack("<I", value & 0xFFFFFFFF)[:width]
    if have >= width:
        out, reported = data, width
    elif have >= 1 and short:
        # A short read of a BOOL or small value: SOL_SOCKET writes the bytes it was given,
        # the IP levels one; both report 1 (Wine test_set_getsockopt: sizes and values).
        out, reported = (data[:have] if level == C.SOL_SOCKET else data[:1]), 1
    else:
        if have >= 0 and spec is not None:
            if level != C.SOL_SOCKET:
                mem.kwrite_u32(optlen_ptr, 0)
            elif spec.zero_short and have and optval and mem.check(optval, have, True):
                mem.kwrite(optval, bytes(have))
        raise WsaError(C.WSAEFAULT)
    if optval == 0 or not mem.check(optval, len(out), True):
        raise WsaError(C.WSAEFAULT)
    mem.kwrite(optval, out)
    mem.kwrite_u32(optlen_ptr, reported)
    if key == _ERROR:
        sock.so_error = 0


def inherit(new, listener) -> None:
    """An accepted socket takes its listener's options (Wine test_accept_inheritance)."""
    for key, value in listener.options.items():
        if key[0] in INHERITED_LEVELS:
            new.options[key] = value
    new.linger = listener.linger
