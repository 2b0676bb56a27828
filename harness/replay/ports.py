"""Ports the system chose, as symbols: each compares by its order of first appearance.

An implicit bind, a bind to port 0, an accepted connection's peer: the system picks the port,
and two targets pick different numbers (the simulator counts up from 49152, Wine takes Linux's
random ones). Where a port can be such a choice, it is replaced by its order of first appearance
on that target, so two runs compare equal when they use "the same" ports in the same places.

Ports are numbered per space (TCP, UDP): the simulator hands the same number to a TCP and a UDP
socket, as Windows may, where Linux does not. The one implementation: tests/differential's
lockstep and the replayer both use it.
"""
from __future__ import annotations

from harness.winsock import constants as C

_FAMILIES = (C.AF_INET, C.AF_INET6)
MARK = 0xEE                 # the high byte of a port rewritten as an ordinal


def space_of(sock_type: int | None) -> str:
    """The port space of a socket type: "udp" for datagrams, else "tcp" (raw sockets have no ports)."""
    return "udp" if sock_type == C.SOCK_DGRAM else "tcp"


class PortOrdinals:
    """One target's ports, each numbered by its first appearance within its space."""

    def __init__(self):
        self._ordinal: dict[tuple, int] = {}

    def ordinal(self, port: int, space: str = "tcp") -> int:
        return self._ordinal.setdefault((space, port), len(self._ordinal))

    def normalise(self, data: bytes, start: int, space: str = "tcp") -> bytes:
        """`data` (a buffer's bytes from offset `start`, SOCKADDR_IN/IN6 2-aligned in it) with every
        nonzero port of an AF_INET/AF_INET6 address replaced by MARK and its ordinal."""
        buf = bytearray(data)
        for i in range((-start) % 2, len(buf) - 3, 2):
            family = buf[i] | buf[i + 1] << 8
            port = buf[i + 2] << 8 | buf[i + 3]
            if family in _FAMILIES and port:
                buf[i + 2:i + 4] = bytes((MARK, self.ordinal(port, space) & 0xFF))
        return bytes(buf)


# --- in a trace: which arguments hold addresses, and of which space -----------------------------
# function -> (index of the socket argument, indices of the arguments pointing at socket addresses)
ADDRESS_ARGS = {"bind": (0, (1,)), "accept": (0, (1,)), "connect": (0, (1,)), "sendto": (0, (4,)),
                "recvfrom": (0, (4,)), "getsockname": (0, (1,)), "getpeername": (0, (1,)),
                "AcceptEx": (0, (2,)), "ConnectEx": (0, (1,))}
_CREATORS = {"socket", "WSASocketW"}


class TracePorts:
    """One target's view of a trace's ports: the space of each socket symbol (from the calls that made
    it), the ordinals of the ports the system chose (registered from what calls wrote into address
    arguments), and the rewriting of a recorded port into this target's port of the same ordinal."""

    def __init__(self):
        self.ordinals = PortOrdinals()
        self._space: dict = {}              # str(handle symbol) -> "tcp" | "udp"

    def note_call(self, step: dict) -> None:
        """Learn a new socket's space from the call that made it."""
        fn, ret = step.get("fn"), step.get("ret")
        if fn in _CREATORS and isinstance(ret, list):
            self._space[str(ret)] = space_of(step["args"][1])
        elif fn == "accept" and isinstance(ret, list):
            self._space[str(ret)] = "tcp"

    def socket_space(self, sock) -> str:
        """The port space of a socket symbol ("tcp" where no call made it known)."""
        return self._space.get(str(sock), "tcp")

    def address_allocs(self, step: dict) -> dict:
        """{allocation index: space} of the address arguments of a call step."""
        spec = ADDRESS_ARGS.get(step.get("fn"))
        if spec is None:
            return {}
        args = step.get("args", [])
        sock = args[spec[0]] if spec[0] < len(args) else None
        space = self._space.get(str(sock), "tcp")
        return {args[i][1]: space for i in spec[1] if i < len(args) and isinstance(args[i], list)
                and args[i][:1] == ["alloc"]}

    def normalise_runs(self, runs: list, allocs: dict) -> list:
        """Write runs with the ports in `allocs` (index -> space) as ordinals (registering new ones)."""
        out = []
        for run in runs:
            space = allocs.get(run["alloc"])
            if space is not None:
                run = {**run, "hex": self.ordinals.normalise(bytes.fromhex(run["hex"]), run["offset"], space).hex()}
            out.append(run)
        return out

    def port_at(self, ordinal: int, space: str):
        for (sp, port), k in self.ordinals._ordinal.items():
            if k == ordinal and sp == space:
                return port
        return None

    def ordinal_of(self, port: int, space: str):
        return self.ordinals._ordinal.get((space, port))


def translate(data: bytes, space: str, recorded: TracePorts, replayed: TracePorts) -> bytes:
    """A socket address the program wrote (at offset 0 of `data`), its port rewritten from the recorded
    target's port to this target's port of the same ordinal, where the port is one the system chose."""
    if len(data) < 4 or (data[0] | data[1] << 8) not in _FAMILIES:
        return data
    port = data[2] << 8 | data[3]
    mine = None
    # A port the system chose in one space may be carried to the other: a program that asks a TCP
    # socket for a free port and binds a UDP socket to it (test_address_reservation's free_port).
    for where in (space, *(other for other in ("tcp", "udp") if other != space)):
        ordinal = recorded.ordinal_of(port, where)
        mine = replayed.port_at(ordinal, where) if ordinal is not None else None
        if mine is not None:
            break
    if mine is None:
        return data
    return data[:2] + bytes((mine >> 8, mine & 0xFF)) + data[4:]
