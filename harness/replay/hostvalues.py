"""Values the host chose, as symbols: each compares by its order of first appearance on its side.

Like the ports the system chose (harness.replay.ports), two values a replay meets are the host's
and not the Winsock's under test, so two targets answer them differently without either being wrong:

* the local address routing picked: a socket connecting to a TEST-NET address, bound to no
  address, gets the simulated world host's address (192.0.2.10) on the simulator and the
  machine's on Wine. An IPv4 or IPv6 address in an address argument is replaced by its ordinal
  unless it is loopback or the wildcard, or the caller named it (bind, connect, sendto, ConnectEx:
  such an address is the program's and compares as it is);
* the default of a host-valued socket option (SO_RCVBUF, SO_SNDBUF, IP_TTL, IPV6_UNICAST_HOPS,
  TCP_KEEPALIVE): Windows makes these the computer's configuration (learn.microsoft.com
  Set-NetIPv4Protocol / Set-NetIPv6Protocol -DefaultHopLimit; the WSK SO_RCVBUF page: the default
  size "is transport-specific"), no Windows-run test reads them, and Wine hands over Linux's
  (Wine server/sock.c init_socket takes the buffer sizes from the host socket; dlls/ntdll/unix/socket.c
  sock_ioctl asks Linux for the hop limits). What getsockopt reads compares as an ordinal per option,
  unless it is a value the caller set for that option in the session (then it compares as it is).

A side numbers its values within a session, per address family and per option, so the simulator's
192.0.2.10 and Wine's 192.0.2.2 read alike when both appear first, and two different addresses on
one side stay two on the other. Ordinals are written as multicast addresses (238.238.238.k,
ff0e::eeee:k) or as the bytes EE 48 k EE, which no unicast address or option default takes.
"""
from __future__ import annotations

from harness.winsock import constants as C

from .ports import ADDRESS_ARGS

_NAMING = frozenset({"bind", "connect", "sendto", "ConnectEx"})      # the caller names the address
_V4_LOOPBACK_NET, _V4_WILDCARD = 127, bytes(4)
_V6_LOOPBACK, _V6_WILDCARD = bytes(15) + b"\x01", bytes(16)
_V4_MAPPED = bytes(10) + b"\xff\xff"
HOST_VALUED_OPTIONS = frozenset({(C.SOL_SOCKET, C.SO_RCVBUF), (C.SOL_SOCKET, C.SO_SNDBUF),
                                 (C.IPPROTO_IP, C.IP_TTL), (C.IPPROTO_IPV6, C.IPV6_UNICAST_HOPS),
                                 (C.IPPROTO_TCP, C.TCP_KEEPALIVE)})
_OPTION_MARK = 0xEE


def _address_span(family: int) -> tuple[int, int] | None:
    """(offset, length) of the address in a SOCKADDR_IN / SOCKADDR_IN6."""
    return {C.AF_INET: (4, 4), C.AF_INET6: (8, 16)}.get(family)


def chosen_by_system(family: int, ip: bytes) -> bool:
    """Whether an address can be one the host picked: not loopback, not the wildcard."""
    if family == C.AF_INET6 and ip[:12] == _V4_MAPPED:
        family, ip = C.AF_INET, ip[12:]
    if family == C.AF_INET:
        return ip[0] != _V4_LOOPBACK_NET and ip != _V4_WILDCARD
    return ip not in (_V6_LOOPBACK, _V6_WILDCARD)


def _address_mark(family: int, ordinal: int) -> bytes:
    if family == C.AF_INET:
        return bytes((0xEE, 0xEE, 0xEE, ordinal & 0xFF))
    return b"\xff\x0e" + bytes(10) + bytes((0xEE, 0xEE, 0, ordinal & 0xFF))


class HostAddresses:
    """One side's addresses the system picked, each numbered by first appearance per family."""

    def __init__(self):
        self._ordinal: dict[tuple, int] = {}
        self.named: set[tuple] = set()

    def note_named(self, data: bytes) -> None:
        """A socket address the caller passed (from its family on): its address is the program's."""
        if len(data) < 2:
            return
        family = data[0] | data[1] << 8
        span = _address_span(family)
        if span and len(data) >= span[0] + span[1]:
            self.named.add((family, bytes(data[span[0]:span[0] + span[1]])))

    def ordinal(self, family: int, ip: bytes) -> int:
        count = sum(1 for f, _ip in self._ordinal if f == family)
        return self._ordinal.setdefault((family, ip), count)

    def normalise(self, data: bytes, start: int) -> bytes:
        """`data` (a buffer's bytes from offset `start`, socket addresses 2-aligned in it) with every
        address of an AF_INET/AF_INET6 socket address with a port that the system picked replaced by
        its ordinal's mark (a port of 0 is no address: harness.replay.ports skips it too)."""
        buf = bytearray(data)
        for i in range((-start) % 2, len(buf) - 3, 2):
            family = buf[i] | buf[i + 1] << 8
            span = _address_span(family)
            if not span or not (buf[i + 2] or buf[i + 3]) or i + span[0] + span[1] > len(buf):
                continue
            at = slice(i + span[0], i + span[0] + span[1])
            ip = bytes(buf[at])
            if chosen_by_system(family, ip) and (family, ip) not in self.named:
                buf[at] = _address_mark(family, self.ordinal(family, ip))
        return bytes(buf)


class HostOptionDefaults:
    """One side's host-valued option values, numbered by first appearance per option, except the
    values the caller set for that option (every side sees the same program, so the same values)."""

    def __init__(self):
        self._ordinal: dict[tuple, int] = {}
        self.set_values: dict[tuple, set] = {}

    def note_set(self, key: tuple, data: bytes) -> None:
        self.set_values.setdefault(key, set()).add(int.from_bytes(data[:4], "little"))

    def token(self, key: tuple, value: int, width: int) -> bytes | None:
        """The ordinal's bytes for a value read (its first `width` bytes), or None to compare it as it is."""
        if value in self.set_values.get(key, ()):
            return None
        count = sum(1 for k, _v in self._ordinal if k == key)
        ordinal = self._ordinal.setdefault((key, value), count)
        return bytes((_OPTION_MARK, 0x48, ordinal & 0xFF, _OPTION_MARK))[:width]


def _alloc_arg(args: list, index: int):
    arg = args[index] if index < len(args) else None
    return arg if isinstance(arg, list) and arg[:1] == ["alloc"] and len(arg) == 3 else None


def _read(memory: dict, arg, size: int) -> bytes:
    mem = memory.get(arg[1])
    return bytes(mem[arg[2]:arg[2] + size]) if mem is not None and arg[2] >= 0 else b""


def _written(runs: list, arg, size: int) -> bytes | None:
    """The `size` bytes at an allocation offset as one run of the call's writes holds them, or None."""
    for run in runs:
        start = arg[2] - run["offset"]
        if run["alloc"] == arg[1] and 0 <= start and start + size <= len(run["hex"]) // 2:
            return bytes.fromhex(run["hex"])[start:start + size]
    return None


def _rewrite(runs: list, arg, data: bytes) -> list:
    out = []
    for run in runs:
        start = arg[2] - run["offset"]
        if run["alloc"] == arg[1] and 0 <= start and start + len(data) <= len(run["hex"]) // 2:
            buf = bytearray.fromhex(run["hex"])
            buf[start:start + len(data)] = data
            run = {**run, "hex": buf.hex()}
        out.append(run)
    return out


class HostValues:
    """One side's view of a session's host-chosen values (the replayer holds one per side)."""

    def __init__(self):
        self.addresses = HostAddresses()
        self.options = HostOptionDefaults()

    def normalise(self, step: dict, memory: dict) -> dict:
        """A call step with the host-chosen values in its writes replaced by their ordinals.
        `memory` is the program's memory as the recording has it (alloc index -> bytes): where the
        caller's own addresses and option values are read."""
        fn, args = step.get("fn"), step.get("args", [])
        runs = step.get("writes", [])
        if fn in _NAMING:
            for index in ADDRESS_ARGS[fn][1]:
                arg = _alloc_arg(args, index)
                if arg:
                    self.addresses.note_named(_read(memory, arg, 28))
        elif fn in ADDRESS_ARGS:
            allocs = {arg[1] for arg in (_alloc_arg(args, i) for i in ADDRESS_ARGS[fn][1]) if arg}
            runs = [{**run, "hex": self.addresses.normalise(bytes.fromhex(run["hex"]), run["offset"]).hex()}
                    if run["alloc"] in allocs else run for run in runs]
        elif fn in ("setsockopt", "getsockopt") and len(args) == 5 and all(type(a) is int for a in args[1:3]) \
                and (args[1] & 0xFFFFFFFF, args[2] & 0xFFFFFFFF) in HOST_VALUED_OPTIONS:
            key, optval = (args[1] & 0xFFFFFFFF, args[2] & 0xFFFFFFFF), _alloc_arg(args, 3)
            if optval and fn == "setsockopt":
                length = args[4] if isinstance(args[4], int) and 0 < args[4] < 4 else 4
                self.options.note_set(key, _read(memory, optval, length))
            elif optval and step.get("ret") == 0:
                runs = self._option_read(step, key, optval, _alloc_arg(args, 4), memory)
        return {**step, "writes": runs} if runs is not step.get("writes", []) else step

    def _option_read(self, step: dict, key: tuple, optval, optlen, memory: dict) -> list:
        runs = step.get("writes", [])
        length = _written(runs, optlen, 4) if optlen else None
        if length is None and optlen:
            length = _read(memory, optlen, 4)
        width = max(0, min(4, int.from_bytes(length, "little", signed=True))) if length and len(length) == 4 else 4
        data = _written(runs, optval, width) if width else None
        if not data:
            return runs
        token = self.options.token(key, int.from_bytes(data, "little"), width)
        return runs if token is None else _rewrite(runs, optval, token)
