"""Address reservation: whether a bind may share its port with the sockets already bound there.

The rule is one table, the kernel's (tcpip under AFD and WSK alike): learn.microsoft.com
"Sharing Transport Addresses" (windows-hardware/drivers/network/sharing-transport-addresses)
gives the result of a second bind from the options of both sockets (none, SO_REUSEADDR,
SO_EXCLUSIVEADDRUSE) and whether each bound the wildcard or a specific address; the Winsock
page "Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE"
(learn.microsoft.com/windows/win32/winsock/using-so-reuseaddr-and-so-exclusiveaddruse)
describes the same enhanced socket security for Winsock (Windows Server 2003 and later).
Wine dlls/ws2_32/tests/sock.c test_reuseaddr and test_ipv6only run the table's cells on
Windows, IPv4, IPv6 and dual-stack (docs/windows-observed.md items 150-153), and settle what
the pages leave open:

* a dual-stack socket bound to :: (IPV6_V6ONLY off) takes IPv4 as a wildcard wider than
  0.0.0.0: against 0.0.0.0 it plays the table's wildcard and 0.0.0.0 its specific
  (test_reuseaddr's tests_exclusive: dual :: exclusive then 0.0.0.0 is WSAEACCES, dual ::
  plain then 0.0.0.0 exclusive or plain succeeds, 0.0.0.0 plain then dual :: exclusive would
  be the INUSE cell);
* an IPv4-mapped address (::ffff:a.b.c.d, ::ffff:0.0.0.0) is that IPv4 address
  (tests_exclusive: ::ffff:127.0.0.1 against 127.0.0.1, ::ffff:0.0.0.0 against 0.0.0.0);
* IPv6 addresses never meet IPv4 ones (::1 against 0.0.0.0 exclusive succeeds).

The options count as they were at bind: "To have any effect, the SO_EXCLUSIVADDRUSE option
must be set before the bind function is called (this also applies to the SO_REUSEADDR
option)" (https://learn.microsoft.com/en-us/previous-versions/ms740618(v=vs.85)); setting
either afterwards is assumed to succeed and change nothing for the bound socket.

The table's CHECK (an access check of the second caller against the first socket's
security descriptor) grants the socket's own user account; the simulator runs every process
as one user, so CHECK succeeds (Wine test_reuseaddr: a specific bind beside a plain wildcard
one succeeds on Windows, todo_wine).

Reservations live in the host's per-protocol PortIndex (sim/net.py), grouped per port by
(level, address) with a count per option, so a bind looks only at its own port's few
distinct addresses, never at every socket (issue 16).
"""
from __future__ import annotations

from harness.winsock import constants as C
from sim.errors import WsaError
from sim.net import ANY4, ANY6, is_v4_mapped

DEFAULT, REUSE, EXCLUSIVE = 0, 1, 2
SPECIFIC, WILDCARD, DUAL = 0, 1, 2          # the width of a claim on an address family
_SUCCESS, _INUSE, _DENIED, _CHECK = "SUCCESS", "INUSE", "DENIED", "CHECK"

# The page's table. Rows: the second bind (its options, wildcard or specific); columns: the
# first bind, in the page's order (none W, none S, SO_REUSEADDR W, S, SO_EXCLUSIVEADDRUSE W, S).
_COLUMNS = ((DEFAULT, WILDCARD), (DEFAULT, SPECIFIC), (REUSE, WILDCARD), (REUSE, SPECIFIC),
            (EXCLUSIVE, WILDCARD), (EXCLUSIVE, SPECIFIC))
_ROWS = {
    (DEFAULT, WILDCARD): "INUSE SUCCESS INUSE SUCCESS INUSE SUCCESS",
    (DEFAULT, SPECIFIC): "CHECK INUSE CHECK DENIED DENIED INUSE",
    (REUSE, WILDCARD): "DENIED SUCCESS SUCCESS SUCCESS DENIED SUCCESS",
    (REUSE, SPECIFIC): "CHECK DENIED SUCCESS SUCCESS DENIED DENIED",
    (EXCLUSIVE, WILDCARD): "INUSE INUSE INUSE INUSE INUSE INUSE",
    (EXCLUSIVE, SPECIFIC): "CHECK INUSE CHECK INUSE DENIED INUSE",
}
TABLE = {(row, column): cell for row, cells in _ROWS.items() for column, cell in zip(_COLUMNS, cells.split())}
# INUSE is STATUS_ADDRESS_ALREADY_EXISTS, DENIED STATUS_ACCESS_DENIED (the WSK page); through
# Winsock WSAEADDRINUSE and WSAEACCES (Wine test_reuseaddr on Windows). CHECK: one user (above).
_ERRORS = {_SUCCESS: 0, _CHECK: 0, _INUSE: C.WSAEADDRINUSE, _DENIED: C.WSAEACCES}


# Wine test_reuseaddr and test_ipv6only (run on Windows): "Setting both SO_EXCLUSIVEADDRUSE and
# SO_REUSEADDR on the same socket is not possible in either order, the later setsockopt call
# always fails" with WSAEINVAL; switching the first one off again makes the other settable.
_EXCLUDES = {(C.SOL_SOCKET, C.SO_REUSEADDR): (C.SOL_SOCKET, C.SO_EXCLUSIVEADDRUSE),
             (C.SOL_SOCKET, C.SO_EXCLUSIVEADDRUSE): (C.SOL_SOCKET, C.SO_REUSEADDR)}


def check_option(sock, key: tuple, value: int) -> None:
    """setsockopt of SO_REUSEADDR or SO_EXCLUSIVEADDRUSE: WSAEINVAL while the other one is on."""
    other = _EXCLUDES.get(key)
    if other is not None and value and sock.options[other]:
        raise WsaError(C.WSAEINVAL)


def option_of(sock) -> int:
    """The socket's sharing option now (the two cannot both be set: sim/sockopt.py)."""
    if sock.options[(C.SOL_SOCKET, C.SO_EXCLUSIVEADDRUSE)]:
        return EXCLUSIVE
    return REUSE if sock.options[(C.SOL_SOCKET, C.SO_REUSEADDR)] else DEFAULT


def claims(family: int, ip: bytes, v6only: bool) -> tuple:
    """The (width, plain address) pairs a bind to `ip` takes; the address's length is its family."""
    if family == C.AF_INET:
        return ((WILDCARD if ip == ANY4 else SPECIFIC, ip),)
    if is_v4_mapped(ip):                                     # IPv4-mapped: that IPv4 address
        plain = ip[12:]
        return ((WILDCARD if plain == ANY4 else SPECIFIC, plain),)
    if ip == ANY6:
        return ((WILDCARD, ANY6),) if v6only else ((WILDCARD, ANY6), (DUAL, ANY4))
    return ((SPECIFIC, ip),)


def _kinds(mine, theirs):
    """(second's kind, first's kind) in the table's terms, or None when the two claims do not meet."""
    (my_width, my_ip), (their_width, their_ip) = mine, theirs
    if len(my_ip) != len(their_ip):
        return None                                          # IPv4 and IPv6 never meet
    if my_width == their_width:
        if my_width == SPECIFIC and my_ip != their_ip:
            return None                                      # two different specific addresses
        kind = WILDCARD if my_width else SPECIFIC
        return kind, kind
    return (WILDCARD, SPECIFIC) if my_width > their_width else (SPECIFIC, WILDCARD)


def check(index, port: int, option: int, wanted: tuple) -> int:
    """0 when a bind with `option` taking `wanted` claims may share `port`, else its WSA error."""
    held = index.reserved.get(port)
    if not held:
        return 0
    for mine in wanted:
        for theirs, counts in held.items():
            kinds = _kinds(mine, theirs)
            if kinds is None:
                continue
            for their_option, count in enumerate(counts):
                if count:
                    error = _ERRORS[TABLE[(option, kinds[0]), (their_option, kinds[1])]]
                    if error:
                        return error
    return 0


class Reservation:
    """One socket's hold on a port: its claims, the option it was bound with, and how many sockets
    hold it (a listener bound with SO_EXCLUSIVEADDRUSE and the connections it accepted)."""

    __slots__ = ("index", "port", "option", "claims", "holders")

    def __init__(self, index, port, option, claims_):
        self.index, self.port, self.option, self.claims = index, port, option, claims_
        self.holders = 1

    def share(self):
        """The reservation an accepted connection holds, or None. "If a listening socket with
        SO_EXCLUSIVEADDRUSE set accepts a connection and is then subsequently closed, another
        socket (also with SO_EXCLUSIVEADDRUSE) cannot bind to the same port as the first socket
        until the original connection becomes inactive" (the "Using SO_REUSEADDR and
        SO_EXCLUSIVEADDRUSE" page). Assumed: the accepted connection keeps the listener's claims
        whole, so the table answers every later bind as if the listener were still bound; a
        listener bound without the option leaves its port free once it closes (the page names
        the lingering only for SO_EXCLUSIVEADDRUSE)."""
        if self.option != EXCLUSIVE:
            return None
        self.holders += 1
        return self

    def release(self) -> None:
        self.holders -= 1
        if self.holders:
            return
        held = self.index.reserved[self.port]
        for claim in self.claims:
            counts = held[claim]
            counts[self.option] -= 1
            if not any(counts):
                del held[claim]
            self.index.remove(claim[1], self.port)
        if not held:
            del self.index.reserved[self.port]


def reserve(sock, ip: bytes, port: int) -> Reservation:
    """Check that `sock` may bind (ip, port) and take the reservation; raise the table's error."""
    index = sock.host.ports["tcp" if sock.is_tcp else "udp"]
    option = option_of(sock)
    wanted = claims(sock.family, ip, bool(sock._v6only()))
    error = check(index, port, option, wanted)
    if error:
        raise WsaError(error)
    held = index.reserved.setdefault(port, {})
    for claim in wanted:
        held.setdefault(claim, [0, 0, 0])[option] += 1
        index.add(claim[1], port)            # a bound port is not handed out as an ephemeral one
    return Reservation(index, port, option, wanted)
