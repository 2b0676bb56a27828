"""Address reservation: a second bind to an address in use, SO_REUSEADDR, SO_EXCLUSIVEADDRUSE.

Sources: the sharing table of learn.microsoft.com "Sharing Transport Addresses"
(https://learn.microsoft.com/en-us/windows-hardware/drivers/network/sharing-transport-addresses),
the kernel's rules that the Winsock page "Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE"
(https://learn.microsoft.com/en-us/windows/win32/winsock/using-so-reuseaddr-and-so-exclusiveaddruse)
describes for Winsock: the result of a second bind from both sockets' options and whether each
bound the wildcard or a specific address (INUSE is WSAEADDRINUSE, DENIED WSAEACCES, CHECK an
access check that the same user passes); Wine dlls/ws2_32/tests/sock.c test_reuseaddr,
test_ipv6only, test_bind and test_listen, and Wine afd.c test_bind, which run on Windows
("Wine test_reuseaddr" below; a todo_wine line there is one Windows passes and Wine does not).
"""
import pytest

from harness.conformance.support import Guarded, dword, local_name, sockaddr
from harness.winsock import constants as C

NONE, REUSE, EXCL = "none", "SO_REUSEADDR", "SO_EXCLUSIVEADDRUSE"
WILD4, LOOP4, WILD6, LOOP6 = "0.0.0.0", "127.0.0.1", "::", "::1"
MAPPED_WILD, MAPPED_LOOP = "::ffff:0.0.0.0", "::ffff:127.0.0.1"
KINDS = {"wildcard": WILD4, "specific": LOOP4}
_TYPES = {"tcp": (C.SOCK_STREAM, C.IPPROTO_TCP), "udp": (C.SOCK_DGRAM, C.IPPROTO_UDP)}


def free_port(api) -> int:
    """A port free for TCP and UDP, IPv4 and IPv6, as far as a bind to port 0 can tell."""
    s = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    ptr, n = sockaddr(api, WILD4, 0)
    assert api.bind(s, ptr, n) == 0, api.WSAGetLastError()
    port = local_name(api, s)[1]
    assert api.closesocket(s) == 0
    return port


def _set(api, s, level, name, value) -> int:
    """setsockopt of a DWORD: 0, or the error."""
    rc = api.setsockopt(s, level, name, dword(api, value).ptr, 4)
    return 0 if rc == 0 else api.WSAGetLastError()


def make(api, ip: str, option=NONE, proto="tcp", dual=False):
    """A socket of `ip`'s family with `option` set (and IPV6_V6ONLY off when `dual`), not bound."""
    family = C.AF_INET6 if ":" in ip else C.AF_INET
    s = api.socket(family, *_TYPES[proto])
    assert s != C.INVALID_SOCKET, api.WSAGetLastError()
    if option != NONE:
        assert _set(api, s, C.SOL_SOCKET, getattr(C, option), 1) == 0
    if dual:
        assert _set(api, s, C.IPPROTO_IPV6, C.IPV6_V6ONLY, 0) == 0
    return s


def bind(api, s, ip: str, port: int) -> int:
    """bind: 0, or the error."""
    ptr, n = sockaddr(api, ip, port)
    return 0 if api.bind(s, ptr, n) == 0 else api.WSAGetLastError()


def bound(api, ip, port, option=NONE, proto="tcp", dual=False):
    s = make(api, ip, option, proto, dual)
    assert bind(api, s, ip, port) == 0, api.WSAGetLastError()
    return s


def connect_to(api, ip: str, port: int) -> int:
    """A client connected (blocking) to (ip, port)."""
    c = make(api, ip)
    ptr, n = sockaddr(api, ip, port)
    assert api.connect(c, ptr, n) == 0, api.WSAGetLastError()
    return c


def accepts(api, lst) -> bool:
    """Whether `lst` has a connection waiting (a non-blocking accept takes it)."""
    assert api.ioctlsocket(lst, C.FIONBIO, dword(api, 1).ptr) == 0
    api.SleepEx(20, False)                # the handshake completes on the loopback
    s = api.accept(lst, 0, 0)
    if s == C.INVALID_SOCKET:
        assert api.WSAGetLastError() == C.WSAEWOULDBLOCK
        return False
    assert api.closesocket(s) == 0
    return True


# --- the sharing table, IPv4 ---------------------------------------------------------------------

# Rows: the second bind (its option, wildcard or specific); columns: the first bind's, in the
# page's order: none W, none S, SO_REUSEADDR W, S, SO_EXCLUSIVEADDRUSE W, S.
_COLUMNS = [(NONE, "wildcard"), (NONE, "specific"), (REUSE, "wildcard"), (REUSE, "specific"),
            (EXCL, "wildcard"), (EXCL, "specific")]
SHARING_TABLE = {
    (NONE, "wildcard"): "INUSE SUCCESS INUSE SUCCESS INUSE SUCCESS",
    (NONE, "specific"): "CHECK INUSE CHECK DENIED DENIED INUSE",
    (REUSE, "wildcard"): "DENIED SUCCESS SUCCESS SUCCESS DENIED SUCCESS",
    (REUSE, "specific"): "CHECK DENIED SUCCESS SUCCESS DENIED DENIED",
    (EXCL, "wildcard"): "INUSE INUSE INUSE INUSE INUSE INUSE",
    (EXCL, "specific"): "CHECK INUSE CHECK INUSE DENIED INUSE",
}
# CHECK: the access check passes for the same user (both sockets here are the same process's).
_RESULT = {"SUCCESS": 0, "CHECK": 0, "INUSE": C.WSAEADDRINUSE, "DENIED": C.WSAEACCES}
CELLS = [(first, second, cell) for second, row in SHARING_TABLE.items()
         for first, cell in zip(_COLUMNS, row.split())]


def _cell_id(case) -> str:
    (fo, fk), (so, sk), cell = case
    short = {NONE: "none", REUSE: "reuse", EXCL: "excl"}
    return f"{short[fo]}-{fk}-then-{short[so]}-{sk}-{cell}"


@pytest.mark.parametrize("proto", ["tcp", pytest.param("udp", marks=pytest.mark.udp)])
@pytest.mark.parametrize("case", CELLS, ids=[_cell_id(c) for c in CELLS])
def test_sharing_table(api, proto, case):
    """The page's table, cell by cell, on 0.0.0.0 (wildcard) and 127.0.0.1 (specific): the second
    bind's result is SUCCESS (or CHECK, which one user passes), WSAEADDRINUSE (INUSE) or WSAEACCES
    (DENIED); the first socket keeps its address either way."""
    (first_option, first_kind), (second_option, second_kind), cell = case
    port = free_port(api)
    first = bound(api, KINDS[first_kind], port, first_option, proto)
    second = make(api, KINDS[second_kind], second_option, proto)
    assert bind(api, second, KINDS[second_kind], port) == _RESULT[cell]
    assert local_name(api, first) == (KINDS[first_kind], port)


# --- Wine test_reuseaddr's SO_EXCLUSIVEADDRUSE list, IPv4, IPv6 and dual-stack -----------------

# (first: address, exclusive; second: address, exclusive; the second bind's result). IPv6
# sockets have IPV6_V6ONLY off (Wine sets it so for every AF_INET6 socket of the list).
EXCLUSIVE_LIST = [
    ((WILD4, True), (LOOP4, False), C.WSAEACCES),
    ((WILD6, True), (LOOP4, False), C.WSAEACCES),
    ((WILD4, False), (LOOP4, True), 0),
    ((WILD4, True), (LOOP4, True), C.WSAEACCES),
    ((LOOP4, True), (WILD4, False), 0),
    ((LOOP4, False), (WILD4, True), C.WSAEADDRINUSE),
    ((LOOP4, False), (WILD6, True), C.WSAEADDRINUSE),
    ((LOOP6, False), (WILD4, True), 0),
    ((LOOP6, True), (LOOP4, True), 0),
    ((MAPPED_LOOP, False), (WILD4, True), C.WSAEADDRINUSE),
    ((WILD6, True), (WILD4, False), C.WSAEACCES),
    ((WILD6, False), (WILD4, True), 0),
    ((WILD4, False), (WILD4, True), C.WSAEADDRINUSE),
    ((WILD4, False), (WILD4, False), C.WSAEADDRINUSE),
    ((WILD6, False), (WILD4, False), 0),
    ((MAPPED_WILD, False), (WILD4, False), C.WSAEADDRINUSE),
    ((MAPPED_LOOP, False), (LOOP4, False), C.WSAEADDRINUSE),
    ((LOOP4, False), (MAPPED_LOOP, False), C.WSAEADDRINUSE),
    ((LOOP4, True), (LOOP4, False), C.WSAEADDRINUSE),
    ((LOOP4, False), (LOOP4, True), C.WSAEADDRINUSE),
]


def _excl_id(case) -> str:
    (a, ax), (b, bx), err = case
    return f"{a}{'-excl' if ax else ''}-then-{b}{'-excl' if bx else ''}-{err}"


@pytest.mark.ipv6
@pytest.mark.parametrize("case", EXCLUSIVE_LIST, ids=[_excl_id(c) for c in EXCLUSIVE_LIST])
def test_exclusive_list(api, case):
    """Wine test_reuseaddr's tests_exclusive (runs on Windows, no todo_wine): TCP sockets, IPv6 ones
    dual-stack; a dual-stack :: reaches IPv4 wider than 0.0.0.0, a v4-mapped address is its IPv4
    address, and IPv6 and IPv4 addresses never meet."""
    (first_ip, first_excl), (second_ip, second_excl), error = case
    port = free_port(api)
    first = make(api, first_ip, EXCL if first_excl else NONE, dual=":" in first_ip)
    second = make(api, second_ip, EXCL if second_excl else NONE, dual=":" in second_ip)
    assert bind(api, first, first_ip, port) == 0
    assert bind(api, second, second_ip, port) == error


# --- SO_REUSEADDR on one or both sockets ---------------------------------------------------------

@pytest.mark.parametrize("family", [C.AF_INET, pytest.param(C.AF_INET6, marks=pytest.mark.ipv6)])
def test_reuseaddr_needs_both_sockets(api, family):
    """Wine test_reuseaddr (on Windows): SO_REUSEADDR on the second socket only is WSAEACCES; with it on
    the first, the second fails without it and binds with it (the page: enhanced socket security, the
    first socket must consent). SO_REUSEADDR reads 0 on a new socket."""
    ip = "127.0.0.1" if family == C.AF_INET else "::1"
    port = free_port(api)
    first = bound(api, ip, port)
    assert bind(api, make(api, ip, REUSE), ip, port) == C.WSAEACCES
    assert api.closesocket(first) == 0
    first = bound(api, ip, port, REUSE)
    second = make(api, ip)
    value, length = dword(api, 0x1234), dword(api, 4)
    assert api.getsockopt(second, C.SOL_SOCKET, C.SO_REUSEADDR, value.ptr, length.ptr) == 0
    assert value.u32() == 0
    assert bind(api, second, ip, port) == C.WSAEACCES          # the table: none/specific after reuse/specific
    assert _set(api, second, C.SOL_SOCKET, C.SO_REUSEADDR, 1) == 0
    assert bind(api, second, ip, port) == 0


@pytest.mark.parametrize("family", [C.AF_INET, pytest.param(C.AF_INET6, marks=pytest.mark.ipv6)])
def test_shared_address_listeners_take_turns(api, family):
    """Wine test_reuseaddr (on Windows): two sockets bound to one address with SO_REUSEADDR both listen
    (todo_wine), the connection goes to the first; closed, the next one listening gets them: a socket
    only bound does not, and one that listens later does."""
    ip = "127.0.0.1" if family == C.AF_INET else "::1"
    port = free_port(api)
    s1, s2, s3, s4 = (bound(api, ip, port, REUSE) for _ in range(4))
    assert api.listen(s1, 1) == 0
    assert api.listen(s2, 1) == 0
    connect_to(api, ip, port)
    assert accepts(api, s1)
    assert api.closesocket(s1) == 0
    connect_to(api, ip, port)
    assert accepts(api, s2)                      # s3 and s4 are only bound
    assert api.closesocket(s2) == 0
    assert api.listen(s3, 1) == 0
    connect_to(api, ip, port)
    assert accepts(api, s3)
    assert api.closesocket(s3) == 0
    assert api.listen(s4, 1) == 0
    connect_to(api, ip, port)
    assert accepts(api, s4)


@pytest.mark.parametrize("family", [C.AF_INET, pytest.param(C.AF_INET6, marks=pytest.mark.ipv6)])
@pytest.mark.parametrize("wildcard_first", [True, False], ids=["wildcard-first", "specific-first"])
def test_wildcard_and_specific_listeners(api, family, wildcard_first):
    """Wine test_reuseaddr (on Windows; todo_wine): with no options, a listener on the wildcard and one
    on the loopback address share the port in either order (the table: SUCCESS, and CHECK for the
    same user), and a connection to the loopback address goes to the loopback listener."""
    wild, loop = ("0.0.0.0", "127.0.0.1") if family == C.AF_INET else ("::", "::1")
    port = free_port(api)
    order = [wild, loop] if wildcard_first else [loop, wild]
    sockets = {}
    for ip in order:
        sockets[ip] = make(api, ip)
        assert bind(api, sockets[ip], ip, port) == 0
        assert api.listen(sockets[ip], 1) == 0
    connect_to(api, loop, port)
    assert accepts(api, sockets[loop])
    assert not accepts(api, sockets[wild])


# --- before and after listen, TCP and UDP (no options) -------------------------------------------

def test_bound_tcp_port_is_in_use_before_listen(api):
    """Wine test_bind (sock.c, on Windows) and afd.c test_bind (STATUS_SHARING_VIOLATION): a TCP socket
    only bound, never listening, holds its address: a second bind to it is WSAEADDRINUSE; Wine
    test_listen: so after listen too. A bound port is not handed out to a bind to port 0."""
    port = free_port(api)
    first = bound(api, LOOP4, port)
    assert bind(api, make(api, LOOP4), LOOP4, port) == C.WSAEADDRINUSE
    assert api.listen(first, 1) == 0
    assert bind(api, make(api, LOOP4), LOOP4, port) == C.WSAEADDRINUSE
    assert api.closesocket(first) == 0
    assert bind(api, make(api, LOOP4), LOOP4, port) == 0       # released by closesocket


@pytest.mark.udp
def test_bound_udp_port_is_in_use(api):
    """The table (none/specific after none/specific: INUSE) on UDP; a second bind of the same socket is
    WSAEINVAL (the bind page; Wine test_bind)."""
    port = free_port(api)
    first = bound(api, LOOP4, port, proto="udp")
    assert bind(api, first, LOOP4, port) == C.WSAEINVAL
    assert bind(api, make(api, LOOP4, proto="udp"), LOOP4, port) == C.WSAEADDRINUSE
    assert bind(api, make(api, WILD4, proto="udp"), WILD4, port) == 0    # the table: SUCCESS
    assert api.closesocket(first) == 0


@pytest.mark.parametrize("option", [NONE, EXCL])
def test_accepted_connection_outlives_its_listener(api, option):
    """"If a listening socket with SO_EXCLUSIVEADDRUSE set accepts a connection and is then
    subsequently closed, another socket (also with SO_EXCLUSIVEADDRUSE) cannot bind to the same port
    as the first socket until the original connection becomes inactive" (the "Using SO_REUSEADDR
    and SO_EXCLUSIVEADDRUSE" page). Without the option the closed listener's port is free again
    while its connection lives (assumed: the page names the lingering only for the option)."""
    port = free_port(api)
    listener = bound(api, WILD4, port, option)
    assert api.listen(listener, 1) == 0
    client = connect_to(api, LOOP4, port)
    accepted = api.accept(listener, 0, 0)
    assert accepted != C.INVALID_SOCKET, api.WSAGetLastError()
    assert api.closesocket(listener) == 0
    again = make(api, WILD4, option)
    assert bind(api, again, WILD4, port) == (C.WSAEADDRINUSE if option == EXCL else 0)
    if option == EXCL:
        assert api.closesocket(accepted) == 0
        assert bind(api, again, WILD4, port) == 0             # the connection is gone
    for s in (again, client):
        assert api.closesocket(s) == 0


# --- the two options on one socket, and after bind -----------------------------------------------

@pytest.mark.parametrize("first", [REUSE, EXCL])
def test_reuseaddr_and_exclusiveaddruse_exclude_each_other(api, first):
    """Wine test_reuseaddr and test_ipv6only (on Windows): with one of the two options on, setting the
    other fails with WSAEINVAL, in either order; switched off again, the other can be set."""
    other = EXCL if first == REUSE else REUSE
    s = make(api, LOOP4, first)
    assert _set(api, s, C.SOL_SOCKET, getattr(C, other), 1) == C.WSAEINVAL
    assert _set(api, s, C.SOL_SOCKET, getattr(C, other), 0) == 0        # switching the other off is no conflict
    assert _set(api, s, C.SOL_SOCKET, getattr(C, first), 0) == 0
    assert _set(api, s, C.SOL_SOCKET, getattr(C, other), 1) == 0
    value, length = dword(api, 0), dword(api, 4)
    assert api.getsockopt(s, C.SOL_SOCKET, getattr(C, first), value.ptr, length.ptr) == 0 and value.u32() == 0


def test_options_set_after_bind_change_nothing(api):
    """The options count as they were at bind ('To have any effect, the SO_EXCLUSIVADDRUSE option must
    be set before the bind function is called (this also applies to the SO_REUSEADDR option)',
    learn.microsoft.com previous-versions ms740618): setting them on a bound socket succeeds
    (assumed), and a second bind gets what the first socket's options at its bind give."""
    port = free_port(api)
    first = bound(api, LOOP4, port)
    assert _set(api, first, C.SOL_SOCKET, C.SO_REUSEADDR, 1) == 0
    assert bind(api, make(api, LOOP4, REUSE), LOOP4, port) == C.WSAEACCES    # still none/specific first
    wildcard = bound(api, WILD4, free_port(api))
    port = local_name(api, wildcard)[1]
    assert _set(api, wildcard, C.SOL_SOCKET, C.SO_EXCLUSIVEADDRUSE, 1) == 0
    assert bind(api, make(api, LOOP4), LOOP4, port) == 0                     # CHECK, not DENIED


# --- dual-stack and IPV6_V6ONLY ------------------------------------------------------------------

@pytest.mark.ipv6
def test_ipv6only_sockets_and_ipv4_share_the_port(api):
    """Wine test_ipv6only (on Windows): an IPv6 socket on :: with IPV6_V6ONLY on (the default) and an
    IPv4 socket on 0.0.0.0 bind the same port; with IPV6_V6ONLY off and SO_EXCLUSIVEADDRUSE, the
    IPv4 socket's bind with SO_REUSEADDR is WSAEACCES, and IPV6_V6ONLY stays off after bind."""
    port = free_port(api)
    v6 = make(api, WILD6)
    assert bind(api, v6, WILD6, port) == 0
    assert bind(api, make(api, WILD4), WILD4, port) == 0
    port = free_port(api)
    dual = make(api, WILD6, EXCL, dual=True)
    assert bind(api, dual, WILD6, port) == 0
    value, length = dword(api, 2), dword(api, 4)
    assert api.getsockopt(dual, C.IPPROTO_IPV6, C.IPV6_V6ONLY, value.ptr, length.ptr) == 0 and value.u32() == 0
    assert bind(api, make(api, WILD4, REUSE), WILD4, port) == C.WSAEACCES


# --- connect when two sockets share an address ---------------------------------------------------

def test_connect_from_a_shared_address(api, decide):
    """Two sockets bound to one address (SO_REUSEADDR on both) connect to different destinations and
    keep the shared local address; to the same destination the second connect fails: WSAEADDRINUSE
    by the connect page ('The socket's local address is already in use'), the profile's answer
    (connect_pair_in_use)."""
    lst1, lst2 = (bound(api, LOOP4, free_port(api)) for _ in range(2))
    for lst in (lst1, lst2):
        assert api.listen(lst, 4) == 0
    port = free_port(api)
    a, b, c = (bound(api, LOOP4, port, REUSE) for _ in range(3))
    for s, lst in ((a, lst1), (b, lst2)):
        ptr, n = sockaddr(api, LOOP4, local_name(api, lst)[1])
        assert api.connect(s, ptr, n) == 0, api.WSAGetLastError()
        assert local_name(api, s) == (LOOP4, port)
    ptr, n = sockaddr(api, LOOP4, local_name(api, lst1)[1])
    assert api.connect(c, ptr, n) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == getattr(C, decide("connect_pair_in_use"))


@pytest.mark.udp
def test_udp_datagram_to_a_shared_address(api, decide):
    """Two UDP sockets bound to one address with SO_REUSEADDR: the Winsock page calls the delivery
    non-deterministic; which one gets a unicast datagram is the profile's answer
    (udp_shared_address_delivery); when it closes, the other one gets the next datagram."""
    port = free_port(api)
    first, second = (bound(api, LOOP4, port, REUSE, "udp") for _ in range(2))
    sender = make(api, LOOP4, proto="udp")
    to, tolen = sockaddr(api, LOOP4, port)
    data = Guarded(api, 4)
    api.memory.write(data.ptr, b"ping")

    def receiver() -> int:
        assert api.sendto(sender, data.ptr, 4, 0, to, tolen) == 4
        api.SleepEx(20, False)
        got = [s for s in (first, second) if _readable(api, s)]
        assert len(got) == 1
        return got[0]

    expected = first if decide("udp_shared_address_delivery") == "first" else second
    assert receiver() == expected
    other = second if expected == first else first
    assert api.closesocket(expected) == 0
    buf = Guarded(api, 8)
    assert api.sendto(sender, data.ptr, 4, 0, to, tolen) == 4
    api.SleepEx(20, False)
    assert api.recv(other, buf.ptr, 8, 0) == 4


def _readable(api, s) -> bool:
    n = dword(api, 0)
    assert api.ioctlsocket(s, C.FIONREAD, n.ptr) == 0
    return n.u32() > 0
