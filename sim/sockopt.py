"""setsockopt/getsockopt for the options a redirect service uses.

Option values live in `Socket.options`; this module validates levels,
names, lengths and pointers the way the setsockopt/getsockopt pages
describe: an unreadable/unwritable value or a short length is WSAEFAULT, an
unknown level WSAEINVAL, an unknown option WSAENOPROTOOPT.
"""
from __future__ import annotations

import struct

from harness.winsock import constants as C
from harness.winsock.layouts import LINGER
from sim import addresses
from sim.errors import WsaError
from sim.decision_points import DECISIONS

# Decision points this module reads (sim/decision_points.py), checked when it is imported.
_WFP_SOCKOPT_ON_TCP_ERROR = {DECISIONS["wfp_sockopt_on_tcp"].choice("WSAEINVAL"): C.WSAEINVAL,
                             DECISIONS["wfp_sockopt_on_tcp"].choice("WSAENOPROTOOPT"): C.WSAENOPROTOOPT}


_BOOL_OR_INT = {
    (C.SOL_SOCKET, C.SO_REUSEADDR), (C.SOL_SOCKET, C.SO_EXCLUSIVEADDRUSE), (C.SOL_SOCKET, C.SO_KEEPALIVE),
    (C.SOL_SOCKET, C.SO_BROADCAST), (C.SOL_SOCKET, C.SO_RCVBUF), (C.SOL_SOCKET, C.SO_SNDBUF),
    (C.SOL_SOCKET, C.SO_RCVTIMEO), (C.SOL_SOCKET, C.SO_SNDTIMEO), (C.SOL_SOCKET, C.SO_OOBINLINE),
    (C.SOL_SOCKET, C.SO_DEBUG),
    (C.IPPROTO_IP, C.IP_TTL), (C.IPPROTO_IPV6, C.IPV6_UNICAST_HOPS),
    (C.IPPROTO_IP, C.IP_PKTINFO), (C.IPPROTO_IPV6, C.IPV6_PKTINFO), (C.IPPROTO_IPV6, C.IPV6_V6ONLY),
    (C.IPPROTO_TCP, C.TCP_NODELAY),
}
_WFP = {(C.IPPROTO_IP, C.IP_WFP_REDIRECT_RECORDS), (C.IPPROTO_IP, C.IP_WFP_REDIRECT_CONTEXT),
        (C.IPPROTO_IPV6, C.IPV6_WFP_REDIRECT_RECORDS), (C.IPPROTO_IPV6, C.IPV6_WFP_REDIRECT_CONTEXT)}
_READ_ONLY = {(C.SOL_SOCKET, C.SO_TYPE), (C.SOL_SOCKET, C.SO_ERROR), (C.SOL_SOCKET, C.SO_ACCEPTCONN)}
_LEVELS = (C.SOL_SOCKET, C.IPPROTO_IP, C.IPPROTO_IPV6, C.IPPROTO_TCP, C.IPPROTO_UDP)


def _check_applicable(sock, level: int, name: int) -> None:
    if level not in _LEVELS:
        raise WsaError(C.WSAEINVAL)
    key = (level, name)
    if key in _WFP:
        # docs/windows-observed.md item 124: TCP gets WSAEINVAL (older Windows: WSAENOPROTOOPT).
        if sock.is_tcp:
            raise WsaError(_WFP_SOCKOPT_ON_TCP_ERROR[sock.process.profile.wfp_sockopt_on_tcp])
        return
    if key not in _BOOL_OR_INT and key not in _READ_ONLY and key != (C.SOL_SOCKET, C.SO_LINGER):
        raise WsaError(C.WSAENOPROTOOPT)
    if level == C.IPPROTO_TCP and not sock.is_tcp:
        raise WsaError(C.WSAENOPROTOOPT)
    if level == C.IPPROTO_IPV6 and sock.family != C.AF_INET6:
        raise WsaError(C.WSAEINVAL)
    if key == (C.SOL_SOCKET, C.SO_LINGER) and not sock.is_tcp:
        raise WsaError(C.WSAENOPROTOOPT)
    if key in ((C.IPPROTO_IP, C.IP_PKTINFO), (C.IPPROTO_IPV6, C.IPV6_PKTINFO)) and sock.is_tcp:
        raise WsaError(C.WSAEINVAL)


def setsockopt(sock, mem, level: int, name: int, optval: int, optlen: int) -> None:
    _check_applicable(sock, level, name)
    key = (level, name)
    if key in _READ_ONLY:
        raise WsaError(C.WSAENOPROTOOPT)
    if optlen < 0 or (optlen and (optval == 0 or not mem.check(optval, optlen, False))):
        raise WsaError(C.WSAEFAULT)
    if key == (C.SOL_SOCKET, C.SO_LINGER):
        if optlen < LINGER.size:
            raise WsaError(C.WSAEFAULT)
        fields = LINGER.unpack(mem.kread(optval, LINGER.size))
        sock.linger = (fields["l_onoff"], fields["l_linger"])
        return
    if key in _WFP:
        # A DWORD switches delivery of the redirect cmsg on or off; a longer value is a
        # records blob attached to the socket's next flow (sim.wfp validates it).
        if optlen < 4:
            raise WsaError(C.WSAEFAULT)
        data = mem.kread(optval, optlen)
        if optlen == 4:
            sock.options[key] = struct.unpack("<I", data)[0]
        else:
            sock.set_wfp_option_blob(key, data)
        return
    if optlen < 1:
        raise WsaError(C.WSAEFAULT)
    # BOOL options accept a 1-byte value as well as an int (setsockopt page: 'optlen ... BOOL').
    raw = mem.kread(optval, min(optlen, 4))
    value = int.from_bytes(raw, "little", signed=False)
    if key == (C.IPPROTO_IPV6, C.IPV6_V6ONLY) and sock.local is not None:
        raise WsaError(C.WSAEINVAL)          # cannot change after bind
    addresses.check_option(sock, key, value)     # SO_REUSEADDR and SO_EXCLUSIVEADDRUSE exclude each other
    if key in ((C.SOL_SOCKET, C.SO_RCVBUF), (C.SOL_SOCKET, C.SO_SNDBUF), (C.SOL_SOCKET, C.SO_RCVTIMEO),
               (C.SOL_SOCKET, C.SO_SNDTIMEO), (C.IPPROTO_IP, C.IP_TTL), (C.IPPROTO_IPV6, C.IPV6_UNICAST_HOPS)):
        if optlen < 4:
            raise WsaError(C.WSAEFAULT)
        sock.options[key] = value
    else:
        sock.options[key] = 1 if value else 0


def getsockopt(sock, mem, level: int, name: int, optval: int, optlen_ptr: int) -> None:
    if optlen_ptr == 0 or not mem.check(optlen_ptr, 4, True):
        raise WsaError(C.WSAEFAULT)
    _check_applicable(sock, level, name)
    key = (level, name)
    if key == (C.SOL_SOCKET, C.SO_LINGER):
        data = LINGER.pack(l_onoff=sock.linger[0], l_linger=sock.linger[1])
    elif key == (C.SOL_SOCKET, C.SO_TYPE):
        data = struct.pack("<i", sock.type)
    elif key == (C.SOL_SOCKET, C.SO_ACCEPTCONN):
        data = struct.pack("<i", 1 if sock.state == "listening" else 0)
    elif key == (C.SOL_SOCKET, C.SO_ERROR):
        data = struct.pack("<i", sock.so_error)
    else:
        data = struct.pack("<I", sock.options.get(key, 0))
    have = mem.kread_i32(optlen_ptr)
    if have < len(data) or optval == 0 or not mem.check(optval, len(data), True):
        raise WsaError(C.WSAEFAULT)
    mem.kwrite(optval, data)
    mem.kwrite_u32(optlen_ptr, len(data))
    if key == (C.SOL_SOCKET, C.SO_ERROR):
        sock.so_error = 0
