"""The decision points: every place where the documentation is silent or contradicts itself.

A decision point is one object: its question, its choices, how a target is
probed for it, and where the simulator reads it. A profile
(sim/profiles/*.toml) answers every one and records where its answer comes
from (documented, observed, field, assumed); a profile naming a choice that
does not exist fails at load. The simulator reads a point through
`DECISIONS[name].choice("x")`, evaluated when its module is imported, so
code naming a choice that does not exist fails at load too; it never
compares a profile value with a bare string. `wfp-harness fidelity` prints
this ledger with each built-in profile's answers.

tests/test_decision_points.py checks that every point with more than one
choice is read in the modules its `read_in` names, that every single-choice
point's module names it, and that every point is probed or says why not.
"""
from __future__ import annotations

from dataclasses import dataclass

PROVENANCES = ("documented", "observed", "field", "assumed")

# How `wfp-harness profile probe` answers a point (harness/replay/probes.py, probe_<name>):
API = "api"                    # on a fresh provider
REDIRECTED = "redirected"      # on a connection a WFP callout redirected


@dataclass(frozen=True)
class DecisionPoint:
    name: str
    question: str
    choices: dict          # value -> what it means
    area: str
    read_in: tuple         # the simulator modules that implement it
    probe: str             # API, REDIRECTED, or why no experiment answers it

    def choice(self, value: str) -> str:
        """`value`, checked to be one of this point's choices (for the code that reads the point)."""
        if value not in self.choices:
            raise ValueError(f"decision point {self.name}: {value!r} is not one of {sorted(self.choices)}")
        return value

    @property
    def probed(self) -> bool:
        return self.probe in (API, REDIRECTED)


def _dp(name, area, question, *, read_in, probe=API, **choices):
    return DecisionPoint(name, question, choices, area, (read_in,) if isinstance(read_in, str) else read_in, probe)


DECISIONS: dict[str, DecisionPoint] = {d.name: d for d in (
    # --- generic WSAIoctl -------------------------------------------------
    _dp("unknown_ioctl_error", "winsock",
        "Error for a code the provider does not know, called synchronously.",
        read_in="sim/ioctls.py",
        WSAEOPNOTSUPP="fails with WSAEOPNOTSUPP, *lpcbBytesReturned = 0",
        WSAEINVAL="fails with WSAEINVAL ('not a valid command'), *lpcbBytesReturned = 0"),
    _dp("unknown_ioctl_overlapped", "winsock",
        "An unknown code issued with an OVERLAPPED.",
        read_in="sim/ioctls.py",
        pending="returns WSA_IO_PENDING, then completes with STATUS_NOT_SUPPORTED through its mechanism",
        immediate="fails at once like the synchronous call; nothing is posted"),
    _dp("sio_flush", "winsock",
        "What SIO_FLUSH does on a TCP socket.",
        read_in="sim/ioctls.py",
        cancel_pending="supported: completes pending overlapped IOCTLs with WSA_OPERATION_ABORTED",
        unsupported="unknown code (WSAEOPNOTSUPP / pending with STATUS_NOT_SUPPORTED)"),
    _dp("inline_ioctl_signals_event", "overlapped",
        "Whether an overlapped IOCTL that completes inline sets hEvent.",
        read_in="sim/provider.py",
        yes="the event is set, as for every posted completion",
        no="the event is left as it was"),
    _dp("routine_and_port", "overlapped",
        "A completion routine on a socket associated with a completion port.",
        read_in="sim/overlapped.py",
        routine_only="the routine is queued as an APC; no packet is posted",
        both="the routine is queued and a packet is posted",
        both_packet_names_routine="the routine is queued and a packet is posted whose lpOverlapped is the routine's "
                                  "address (the APC context), not the OVERLAPPED"),
    _dp("routine_on_port_socket", "overlapped",
        "An overlapped WSARecv, WSASend, WSARecvMsg, WSASendMsg or WSAIoctl with a completion routine, on a "
        "socket associated with a completion port.",
        read_in="sim/provider.py",
        accepted="the request proceeds; its routine is queued as routine_and_port says",
        WSAEINVAL="refused with WSAEINVAL once Internal is STATUS_PENDING: NT refuses an APC routine on a file that has a "
                  "completion port (STATUS_INVALID_PARAMETER), nothing is indicated; of the IOCTLs only FIONBIO, "
                  "which reaches that check (Internal untouched): the others complete without it"),
    _dp("bad_event_at_issue", "overlapped",
        "An overlapped call whose hEvent is not an event handle (and no routine).",
        read_in="sim/provider.py",
        WSA_INVALID_HANDLE="fails at once with WSA_INVALID_HANDLE",
        ignored="the call proceeds; nothing is signalled"),
    _dp("close_cancel_status", "overlapped",
        "Status of a pending receive when closesocket cancels it.",
        read_in="sim/winsock.py",
        cancelled="STATUS_CANCELLED: WSA_OPERATION_ABORTED (995) in both dialects",
        connection_aborted="STATUS_CONNECTION_ABORTED: WSAECONNABORTED / ERROR_CONNECTION_ABORTED (1236)"),
    _dp("getoverlappedresult_null_out", "overlapped",
        "WSAGetOverlappedResult with a NULL lpOverlapped, lpcbTransfer or lpdwFlags.",
        read_in="sim/winsock.py",
        WSAEFAULT="returns FALSE with WSAEFAULT (Server 2003 behaviour; Vista+ would crash)",
        invalid_parameter="a NULL lpOverlapped is WSA_INVALID_PARAMETER (87), a NULL lpcbTransfer or lpdwFlags "
                          "WSAEINVAL; an unwritable non-NULL one is still WSAEFAULT here (where it would fault)"),
    _dp("wait_satisfaction_order", "kernel",
        "An alertable wait finds both a signalled object and a queued APC.",
        read_in="sim/kernel32.py",
        objects_first="the object satisfies the wait; APCs wait for a later alertable wait",
        apcs_first="APCs run and the wait returns WAIT_IO_COMPLETION"),
    _dp("wait_bad_handle_array", "kernel",
        "WSAWaitForMultipleEvents with an unreadable lphEvents.",
        read_in="sim/kernel32.py",
        WSA_INVALID_PARAMETER="WSA_WAIT_FAILED with WSA_INVALID_PARAMETER"),
    _dp("gqcs_bad_out_pointer", "kernel",
        "GetQueuedCompletionStatus (or GetQueuedCompletionStatusEx) with an unwritable out-pointer.",
        read_in="sim/kernel32.py",
        ERROR_NOACCESS="FALSE with ERROR_NOACCESS; no packet is removed"),
    # issue 16 (scale): GetQueuedCompletionStatusEx
    _dp("gqcsex_zero_count", "kernel",
        "GetQueuedCompletionStatusEx with ulCount 0 (the page says only that it is the maximum to remove).",
        read_in="sim/kernel32.py",
        ERROR_INVALID_PARAMETER="FALSE with ERROR_INVALID_PARAMETER; nothing is removed",
        empty_success="TRUE, *ulNumEntriesRemoved 1, no entry written and nothing removed"),
    _dp("ipv6_protection_level_default", "winsock",
        "The IPV6_PROTECTION_LEVEL a new IPv6 socket reads (Wine test_sockopt_validity, on Windows: the "
        "option exists on TCP and UDP; no Windows-run test reads its value).",
        read_in="sim/sockopt.py",
        unspecified="PROTECTION_LEVEL_DEFAULT, (UINT)-1 (the .NET IPProtectionLevel page: Windows 7 and "
                    "Server 2008 R2)",
        unrestricted="PROTECTION_LEVEL_UNRESTRICTED, 10 (the same page: Vista and Server 2008)",
        edge_restricted="PROTECTION_LEVEL_EDGERESTRICTED, 20 (the same page: XP and Server 2003)"),
    _dp("gqcsex_count_when_empty", "kernel",
        "What GetQueuedCompletionStatusEx writes to *ulNumEntriesRemoved when it returns FALSE having removed "
        "nothing (the wait timed out, or APCs ran): Wine dlls/ntdll/tests/file.c test_set_io_completion, run "
        "on Windows, allows 0 or 1 (count <= 1 after 0xdeadbeef).",
        read_in="sim/kernel32.py",
        zero="0, the number of entries actually removed (the GetQueuedCompletionStatusEx page)",
        one="1, as if one entry had been removed"),
    _dp("acceptex_short_address", "winsock",
        "AcceptEx with an address length below sizeof(sockaddr) + 16.",
        read_in="sim/mswsock.py",
        WSAEFAULT="fails at once with WSAEFAULT (the page: 'at least 16 bytes more than the maximum address length')",
        pending_buffer_too_small="only a zero remote length fails at once; otherwise it goes pending and the "
                                 "completion fails with STATUS_BUFFER_TOO_SMALL"),
    # --- socket options (sim/sockopt.py) ---------------------------------
    _dp("sockopt_negative_length", "winsock",
        "setsockopt with a negative optlen on an option outside SOL_SOCKET or a 1-byte BOOLEAN "
        "(Wine dlls/ws2_32/tests/sock.c test_set_getsockopt: WSAENOBUFS, broken() WSAEFAULT "
        "between Windows 7 and Windows 10 21H1).",
        read_in="sim/sockopt.py",
        WSAENOBUFS="fails with WSAENOBUFS (Windows 10 21H1 and later)",
        WSAEFAULT="fails with WSAEFAULT, the pages' 'optlen too small' (Windows 7 to 10 21H1)"),
    _dp("tcp_keepcnt_keepintvl", "winsock",
        "Whether IPPROTO_TCP TCP_KEEPCNT and TCP_KEEPINTVL exist (Wine test_set_getsockopt: "
        "supported, broken() WSAENOPROTOOPT before Windows 10).",
        read_in="sim/sockopt.py",
        supported="get and set work (TCP_KEEPCNT refuses values above 255 with WSAEINVAL)",
        WSAENOPROTOOPT="both fail with WSAENOPROTOOPT (before Windows 10 1709)"),
    _dp("poll_no_valid_socket", "winsock",
        "WSAPoll when no entry of the array names a socket (negative fds, closed or foreign handles).",
        read_in="sim/poll.py",
        WSAEINVAL="fails with WSAEINVAL (the page: 'none of the sockets specified ... were valid')",
        WSAENOTSOCK="fails with WSAENOTSOCK; every revents is POLLNVAL"),
    _dp("poll_nval_counted", "winsock",
        "Whether WSAPoll's return value counts entries whose fd is negative or not a socket (revents POLLNVAL).",
        read_in="sim/poll.py",
        counted="counted: the return value is 'the number of elements ... for which revents is nonzero'",
        not_counted="not counted: only the sockets' entries with revents are"),
    _dp("udp_shared_address_delivery", "winsock",
        "Which of several UDP sockets bound to the same address and port (SO_REUSEADDR on all) receives a "
        "unicast datagram; the Winsock page 'Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE' calls it "
        "non-deterministic.",
        read_in="sim/socket.py",
        first="the socket bound first, until it closes (as Wine test_reuseaddr shows for TCP listeners on Windows)",
        newest="the socket bound last, until it closes"),
    _dp("connect_pair_in_use", "winsock",
        "connect from a local address shared with another socket (SO_REUSEADDR on both) to the destination "
        "that socket is already connected to: the same local and remote pair twice.",
        read_in="sim/socket.py",
        WSAEADDRINUSE="fails with WSAEADDRINUSE (the connect page: 'the socket's local address is already in use')",
        WSAEADDRNOTAVAIL="fails with WSAEADDRNOTAVAIL (the pair is not available)"),
    _dp("zero_length_probe", "memory",
        "Is a zero-length buffer at an invalid address a fault?",
        read_in="sim/memory.py",
        valid="no: a zero-length range is never probed"),
    # --- met by tests/differential (the simulator against Wine) -------------
    _dp("extension_pointer_sizes", "winsock",
        "SIO_GET_EXTENSION_FUNCTION_POINTER with an input other than a GUID's 16 bytes or an output "
        "shorter than a pointer (docs/windows-observed.md §P: no public oracle); SIO_BASE_HANDLE with an "
        "output shorter than a SOCKET alike (Wine's test_base_handle passes 8 bytes only).",
        read_in="sim/ioctls.py",
        checked="a short input or output fails with WSAEFAULT before the GUID is looked up",
        unchecked="the lengths are not looked at: the GUID is read, an unknown one is WSAEINVAL, a known "
                  "one's pointer (the base handle) is written, 8 bytes, and the size is 8"),
    _dp("stream_recv_flags_out", "winsock",
        "What *lpFlags holds after a WSARecv on a stream socket completes at once (no output flag applies: "
        "MSG_PARTIAL is a datagram flag, the WSARecvEx page).",
        read_in="sim/winsock.py",
        written="the output flags are written: 0, whatever the caller passed (MSG_PEEK included)",
        unchanged="left as the caller set it"),
    _dp("ideal_backlog_overlapped", "overlapped",
        "SIO_IDEAL_SEND_BACKLOG_QUERY issued with an OVERLAPPED (no Windows-run test issues it overlapped).",
        read_in="sim/provider.py",
        indicated="answered inline and indicated like the other inline codes (docs/windows-observed.md item 47): "
                  "Internal 0, event set, routine queued, packet posted",
        ignored="the OVERLAPPED and routine are not looked at: answered like the synchronous call, nothing indicated"),
    _dp("ideal_backlog_check_order", "winsock",
        "SIO_IDEAL_SEND_BACKLOG_QUERY with an output under 4 bytes on a socket it does not serve (UDP, or TCP "
        "not connected): which check answers (Wine's Windows-run test_backlog_query passes 4 bytes only).",
        read_in="sim/ioctls.py",
        socket_first="the socket's: WSAEOPNOTSUPP (not TCP) or WSAENOTCONN (not connected), then the output's WSAEFAULT",
        buffer_first="the output's: WSAEFAULT, then the socket's"),
    _dp("wsaioctl_check_order", "winsock",
        "WSAIoctl on a handle that is not a socket, with a NULL lpcbBytesReturned or a buffer its code refuses "
        "(docs/windows-observed.md item 5: no Windows-run test; [INFERRED] from ReactOS's ws2_32).",
        read_in="sim/winsock.py",
        handle_first="the handle first (WSAENOTSOCK), then lpcbBytesReturned, then the provider",
        bytes_returned_first="lpcbBytesReturned first (WSAEFAULT), then the buffer checks ws2_32 makes before it "
                             "asks for the handle (FIONREAD's output under 4 bytes, FIONBIO's NULL input, "
                             "SIO_KEEPALIVE_VALS' input under 12 bytes: WSAEFAULT) unless the handle is the "
                             "process pseudo-handle -1, then the handle"),
    _dp("siocatmark_datagram", "winsock",
        "SIOCATMARK on a datagram socket (the Winsock IOCTLs page: it applies to stream-style sockets; no "
        "Windows-run test issues it on UDP).",
        read_in="sim/ioctls.py",
        at_mark="TRUE, as on a stream socket with no urgent data (docs/windows-observed.md item 20)",
        WSAEINVAL="fails with WSAEINVAL after the output check"),
    # --- the WFP redirect IOCTL family ------------------------------------
    _dp("wfp_query_check_order", "wfp",
        "Order of the query's own checks after the ws2_32 ones.",
        read_in="sim/wfp/ioctls.py",
        probe="the order of the query's own checks needs several crafted failures at once; "
              "no single experiment separates the orders",
        buffers_then_socket="output range, then size < ULONG, then socket type/state, then records, then size"),
    _dp("query_size_probe", "wfp",
        "Query with cbOutBuffer == 0 (the probe the Remarks recommend).",
        read_in="sim/wfp/ioctls.py", probe=REDIRECTED,
        insufficient_buffer="fails, last error ERROR_INSUFFICIENT_BUFFER (122), *lpcbBytesReturned = required size",
        WSAEFAULT="fails with WSAEFAULT, *lpcbBytesReturned = required size",
        WSAEINVAL="fails with WSAEINVAL, *lpcbBytesReturned = 0"),
    _dp("query_tiny_buffer", "wfp",
        "Query with 0 < cbOutBuffer < sizeof(ULONG).",
        read_in="sim/wfp/ioctls.py", probe=REDIRECTED,
        WSAEINVAL="fails with WSAEINVAL, *lpcbBytesReturned = 0",
        as_short="treated like any short buffer"),
    _dp("query_short_buffer", "wfp",
        "Query with sizeof(ULONG) <= cbOutBuffer < required size.",
        read_in="sim/wfp/ioctls.py", probe=REDIRECTED,
        insufficient_buffer="fails, ERROR_INSUFFICIENT_BUFFER, *lpcbBytesReturned = required, buffer untouched",
        WSAEFAULT="fails with WSAEFAULT, *lpcbBytesReturned = required, buffer untouched",
        WSAENOBUFS="fails with WSAENOBUFS, *lpcbBytesReturned = required, buffer untouched",
        WSAEINVAL="fails with WSAEINVAL, *lpcbBytesReturned = 0"),
    _dp("query_not_redirected", "wfp",
        "Records or context query on a connected socket whose flow was not redirected.",
        read_in="sim/wfp/ioctls.py",
        FWP_E_NOT_FOUND="fails, last error FWP_E_NOT_FOUND (0x80320008)",
        WSAEINVAL="fails with WSAEINVAL"),
    _dp("context_absent", "wfp",
        "Context query on a redirected socket without a context for the caller.",
        read_in="sim/wfp/ioctls.py",
        probe="needs a redirected connection whose callout set no context (the sample driver always sets one)",
        FWP_E_NOT_FOUND="fails, last error FWP_E_NOT_FOUND (0x80320008)",
        success_zero="returns 0 with *lpcbBytesReturned = 0"),
    _dp("query_unconnected", "wfp",
        "Query on a TCP socket that is not connected (or is listening).",
        read_in="sim/wfp/ioctls.py",
        WSAENOTCONN="fails with WSAENOTCONN"),
    _dp("query_udp_socket", "wfp",
        "Records/context query on a UDP socket.",
        read_in="sim/wfp/ioctls.py",
        WSAEINVAL="fails with WSAEINVAL (UDP gets its record as a cmsg)"),
    _dp("query_raw_socket", "wfp",
        "Records/context query on a protocol with no redirect support (raw).",
        read_in="sim/wfp/ioctls.py",
        WSAENOPROTOOPT="fails with WSAENOPROTOOPT"),
    _dp("wfp_query_completion", "wfp",
        "A records/context query issued overlapped.",
        read_in="sim/wfp/ioctls.py", probe=REDIRECTED,
        inline="completes inline: returns 0, writes the size, and still signals its mechanism",
        pending="returns WSA_IO_PENDING; the simulated kernel completes it later"),
    _dp("wfp_completion_bytes", "wfp",
        "Byte count carried by the completion of an overlapped query (InternalHigh, packet, routine).",
        read_in="sim/wfp/ioctls.py", probe=REDIRECTED,
        actual="the blob's size", zero="0, like the inline user-mode IOCTLs"),
    _dp("set_bad_blob", "wfp",
        "SET with an empty input, cbOutBuffer != 0, or bytes that are not a records blob.",
        read_in="sim/wfp/ioctls.py",
        WSAEINVAL="fails with WSAEINVAL; the socket is untouched"),
    _dp("set_requires_elevation", "wfp",
        "SET by a process that is not elevated.",
        read_in="sim/wfp/ioctls.py",
        probe="needs a second, non-elevated process",
        WSAEACCES="fails with WSAEACCES (after pointers and sizes, before the blob's content)",
        allowed="succeeds"),
    _dp("set_after_connect", "wfp",
        "SET on a socket that is already connected.",
        read_in="sim/wfp/ioctls.py",
        WSAEINVAL="fails with WSAEINVAL"),
    _dp("wfp_sockopt_on_tcp", "wfp",
        "getsockopt/setsockopt IP_WFP_REDIRECT_RECORDS/CONTEXT on a TCP socket.",
        read_in="sim/sockopt.py",
        WSAEINVAL="fails with WSAEINVAL", WSAENOPROTOOPT="fails with WSAENOPROTOOPT (older Windows)"),
    _dp("wfp_v4_layer_dual_stack", "wfp",
        "What FWPS_CONNECT_REQUEST0 holds at ALE_CONNECT_REDIRECT_V4 for a dual-mode AF_INET6 socket "
        "that connects to an IPv4 address (docs/facts.md §5.9).",
        read_in="sim/wfp/engine.py",
        probe="kernel side: only a callout running on Windows sees the layer data, no Winsock call shows it",
        plain="AF_INET SOCKADDR_STORAGEs: the IPv4 addresses, in the layer's family",
        mapped="AF_INET6 SOCKADDR_STORAGEs holding the v4-mapped addresses, in the socket's family"),
    # issue 14 (areas 4, 5): completion on immediate failure
    _dp("overflow_at_issue", "overlapped",
        "An overlapped WSARecvMsg or WSARecv without a completion routine whose datagram or control data "
        "is truncated when the call is made (STATUS_BUFFER_OVERFLOW at issue). Wine test_ip_pktinfo shows "
        "Windows only without an OVERLAPPED (WSAEMSGSIZE) and with a routine (WSA_IO_PENDING).",
        read_in="sim/winsock.py",
        WSAEMSGSIZE="-1 with WSAEMSGSIZE; a warning completes the request all the same: Internal "
                    "STATUS_BUFFER_OVERFLOW, the event set, a packet (ERROR_MORE_DATA) queued",
        pending="-1 with WSA_IO_PENDING, as with a routine; indicated the same way"),
)}

