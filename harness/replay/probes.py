"""Observed profiles: answer each decision point by experiment on a target.

    result = probe_profile(lambda: sim.SimulatedWinsock("documented"))
    result.answers["sio_flush"]          # Observation(value="cancel_pending", evidence="...")
    result.write_toml("observed.toml", name="observed-win11-22631", target="agent", os_build="...")

Each probe runs on a fresh provider from `api_factory` and returns the
choice of the decision point that the target's behaviour matches, or
`Unmatched(evidence)` when it matches none (then the point is left out of the
profile file and listed in its header comment). Probes that need a
connection a WFP callout redirected take `redirected_factory`: a callable
returning a context manager that yields something with `.api` and `.sock`
(`lambda: harness.targets.redirected(target, profile)`); without it they are
`not probed`. Decision points with no probe are listed as such.

The written file inherits every unprobed answer from a base profile
(`windows-observed` by default) and says which answers were not probed.
"""
from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

from harness.winsock import constants as C
from harness.winsock import sockaddr
from harness.winsock.layouts import WSABUF, WSAMSG, WSAOVERLAPPED, WSAPOLLFD, guid_bytes
from harness.wording import plural, times

POISON = 0xDEADBEEF
RECORDS = C.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS
CONTEXT = C.SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT
SET = C.SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS
# Probes that can crash a real process (Vista+ dereferences the NULL out-pointer).
CRASHY = frozenset({"getoverlappedresult_null_out"})


@dataclass
class Observation:
    value: str
    evidence: str


@dataclass
class Unmatched:
    evidence: str


class NotProbed(Exception):
    """A probe could not run its experiment on this target (reason in the message)."""


@dataclass
class ProbeResult:
    target: str
    os_build: str
    answers: dict = field(default_factory=dict)      # decision -> Observation
    unmatched: dict = field(default_factory=dict)    # decision -> evidence
    not_probed: dict = field(default_factory=dict)   # decision -> reason
    # On the simulator: the profile it ran under. Probing it observes only the simulator, so each
    # answer keeps that profile's provenance and source; nothing is written as `observed`.
    profile: object = None

    def values(self) -> dict:
        return {k: o.value for k, o in self.answers.items()}

    def to_toml(self, name: str, inherit: str = "windows-observed", description: str = "", source: str = "") -> str:
        """source: what each answer was observed on (e.g. "wine-8.0 ws2_32"); default: the target and build."""
        from sim.decision_points import DECISIONS
        lines = ["# Observed profile written by `wfp-harness profile probe` (harness.replay.probes).",
                 f"# Target: {self.target}; OS build: {self.os_build}.",
                 f"# Probed: {plural(len(self.answers), 'decision point')}; every other answer is inherited from "
                 f"{inherit!r}."]
        if self.unmatched:
            lines.append("# Probed, but the target matched none of the known choices (left to the parent):")
            lines += [f"#   {k}: {ev}" for k, ev in self.unmatched.items()]
        if self.not_probed:
            lines.append("# Not probed (left to the parent):")
            lines += [f"#   {k}: {why}" for k, why in self.not_probed.items()]
        lines += [f"name = {_q(name)}",
                  f"description = {_q(description or f'Observed on {self.target} ({self.os_build}) by experiment')}",
                  f"inherit = {_q(inherit)}", ""]
        for key in DECISIONS:
            obs = self.answers.get(key)
            if obs is None:
                continue
            provenance, cited = self._provenance(key, obs, source)
            lines += [f"[decisions.{key}]", f"value = {_q(obs.value)}", f"provenance = {_q(provenance)}",
                      f"source = {_q(cited)}", ""]
        return "\n".join(lines)

    def _provenance(self, key: str, obs: Observation, source: str) -> tuple:
        """(provenance, source) of one answer: observed on a real target; on the simulator, the source
        profile's own when the simulator reproduced its answer, else assumed (the simulator's behaviour)."""
        if self.profile is None:
            return "observed", self._source(key, obs, source)
        given = self.profile.assignments.get(key)
        if given is not None and given.value == obs.value:
            return given.provenance, given.source
        return "assumed", f"simulator under profile {self.profile.name}: probe {key}: {obs.evidence}"

    def _source(self, key: str, obs: Observation, source: str) -> str:
        if source:
            return f"{source}: probe {key}: {obs.evidence}"
        return f"probe {key} on target {self.target} ({self.os_build}): {obs.evidence}"

    def write_toml(self, path, name: str, inherit: str = "windows-observed", description: str = "",
                   source: str = "") -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_toml(name, inherit, description, source), encoding="utf-8")
        return path


def _q(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


# --- small helpers (through the WinsockApi only) -----------------------------------

def _u32(api, value=POISON) -> int:
    ptr = api.memory.alloc(4)
    api.memory.write_u32(ptr, value)
    return ptr


def _err(api) -> int:
    """The last error as a signed int (WSAGetLastError's dialect; FWP_E_* are negative)."""
    return api.WSAGetLastError()


def _name(code: int) -> str:
    return f"{C.error_name(code)} ({code})" if code else "0 (no error)"


def _ovl(api, event=0) -> int:
    ptr = api.memory.alloc(WSAOVERLAPPED.size)
    api.memory.write(ptr, WSAOVERLAPPED.pack(Internal=POISON, InternalHigh=POISON, hEvent=event))
    return ptr


def _sockaddr(api, port=0) -> tuple[int, int]:
    data = struct.pack("<HH4s8x", C.AF_INET, 0, bytes([127, 0, 0, 1]))
    data = data[:2] + struct.pack(">H", port) + data[4:]
    ptr = api.memory.alloc(len(data))
    api.memory.write(ptr, data)
    return ptr, len(data)


def _tcp(api) -> int:
    s = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    if s == C.INVALID_SOCKET:
        raise NotProbed(f"socket(AF_INET, SOCK_STREAM) failed: {_name(_err(api))}")
    return s


def _pair(api):
    lst = _tcp(api)
    ptr, n = _sockaddr(api)
    if api.bind(lst, ptr, n) or api.listen(lst, 4):
        raise NotProbed(f"could not listen on loopback: {_name(_err(api))}")
    name, length = api.memory.alloc(16), _u32(api, 16)
    if api.getsockname(lst, name, length):
        raise NotProbed(f"getsockname failed: {_name(_err(api))}")
    client = _tcp(api)
    if api.connect(client, name, 16):
        raise NotProbed(f"connect over loopback failed: {_name(_err(api))}")
    server = api.accept(lst, 0, 0)
    if server == C.INVALID_SOCKET:
        raise NotProbed(f"accept failed: {_name(_err(api))}")
    return client, server


def _wait(api, event, alertable=False) -> int:
    arr = api.memory.alloc(8)
    api.memory.write_u64(arr, event)
    return api.WSAWaitForMultipleEvents(1, arr, False, 0, alertable)


def _dequeue(api, port):
    n, key, ovl = _u32(api), api.memory.alloc(8), api.memory.alloc(8)
    ok = api.GetQueuedCompletionStatus(port, n, key, ovl, 0)
    return ok, api.GetLastError(), api.memory.read_u32(n), api.memory.read_u64(ovl)


def _choose(mapping: dict, observed, evidence: str):
    value = mapping.get(observed)
    return Observation(value, evidence) if value else Unmatched(evidence)


# --- probes: (api) -> Observation | Unmatched; raise NotProbed --------------------------

def probe_unknown_ioctl_error(api):
    s, n = _tcp(api), _u32(api)
    rc = api.WSAIoctl(s, 0xDEADBEEF, 0, 0, 0, 0, n, 0, 0)
    err = _err(api)
    ev = f"WSAIoctl(tcp, 0xDEADBEEF) sync -> {rc}, last error {_name(err)}"
    return _choose({C.WSAEOPNOTSUPP: "WSAEOPNOTSUPP", C.WSAEINVAL: "WSAEINVAL"}, err if rc == -1 else None, ev)


def probe_unknown_ioctl_overlapped(api):
    s = _tcp(api)
    port = api.CreateIoCompletionPort(s, 0, 1, 0)
    if not port:
        raise NotProbed(f"CreateIoCompletionPort failed: {_name(api.GetLastError())}")
    rc = api.WSAIoctl(s, 0xDEADBEEF, 0, 0, 0, 0, _u32(api), _ovl(api), 0)
    err = _err(api)
    ok, perr, _, _ = _dequeue(api, port)
    ev = (f"WSAIoctl(tcp, 0xDEADBEEF, OVERLAPPED, port) -> {rc}, last error {_name(err)}; "
          f"then GetQueuedCompletionStatus -> {ok}, {_name(perr)}")
    if rc == -1 and err == C.WSA_IO_PENDING:
        return Observation("pending", ev)
    if rc == -1 and err in (C.WSAEOPNOTSUPP, C.WSAEINVAL) and perr == C.WAIT_TIMEOUT:
        return Observation("immediate", ev)
    return Unmatched(ev)


def probe_sio_flush(api):
    s, n = _tcp(api), _u32(api)
    rc = api.WSAIoctl(s, C.SIO_FLUSH, 0, 0, 0, 0, n, 0, 0)
    err = _err(api) if rc else 0
    ev = f"WSAIoctl(tcp, SIO_FLUSH) -> {rc}" + (f", last error {_name(err)}" if rc else "")
    if rc == 0:
        return Observation("cancel_pending", ev)
    return _choose({C.WSAEOPNOTSUPP: "unsupported", C.WSAEINVAL: "unsupported"}, err, ev)


def probe_inline_ioctl_signals_event(api):
    s = _tcp(api)
    event = api.WSACreateEvent()
    out = api.memory.alloc(4)
    rc = api.WSAIoctl(s, C.FIONREAD, 0, 0, out, 4, _u32(api), _ovl(api, event), 0)
    if rc != 0:
        raise NotProbed(f"overlapped FIONREAD did not complete inline: {rc}, {_name(_err(api))}")
    signalled = _wait(api, event) == C.WSA_WAIT_EVENT_0
    ev = f"overlapped FIONREAD returned 0; its event is {'set' if signalled else 'not set'}"
    return Observation("yes" if signalled else "no", ev)


def probe_routine_and_port(api):
    s = _tcp(api)
    port = api.CreateIoCompletionPort(s, 0, 5, 0)
    if not port:
        raise NotProbed(f"CreateIoCompletionPort failed: {_name(api.GetLastError())}")
    calls = []
    routine = api.completion_routine(lambda *a: calls.append(a))
    rc = api.WSAIoctl(s, C.FIONREAD, 0, 0, api.memory.alloc(4), 4, _u32(api), _ovl(api), routine)
    if rc != 0:
        raise NotProbed(f"overlapped FIONREAD with a routine did not complete inline: {rc}, {_name(_err(api))}")
    api.SleepEx(0, True)
    ok, perr, _, packet_ovl = _dequeue(api, port)
    names_routine = ok and packet_ovl == routine
    ev = (f"inline FIONREAD with a routine on a port-bound socket: routine ran {times(len(calls))}, packet "
          f"{('posted naming the routine' if names_routine else 'posted') if ok else 'none'}")
    if len(calls) == 1:
        return Observation(("both_packet_names_routine" if names_routine else "both") if ok else "routine_only", ev)
    return Unmatched(ev)


def probe_routine_on_port_socket(api):
    _client, server = _pair(api)
    port = api.CreateIoCompletionPort(server, 0, 5, 0)
    if not port:
        raise NotProbed(f"CreateIoCompletionPort failed: {_name(api.GetLastError())}")
    calls = []
    routine = api.completion_routine(lambda *a: calls.append(a))
    buf = api.memory.alloc(16)
    arr = api.memory.alloc(WSABUF.size)
    api.memory.write(arr, WSABUF.pack(len=16, buf=buf))
    rc = api.WSARecv(server, arr, 1, _u32(api, 0), _u32(api, 0), _ovl(api), routine)
    err = _err(api) if rc else 0
    ev = f"overlapped WSARecv with a routine on a port-bound socket -> {rc}" + (f", last error {_name(err)}" if rc else "")
    api.closesocket(server)
    api.SleepEx(0, True)
    if rc == -1 and err == C.WSA_IO_PENDING:
        return Observation("accepted", ev)
    return _choose({C.WSAEINVAL: "WSAEINVAL"}, err, ev)


def probe_overflow_at_issue(api):
    """An overlapped WSARecvMsg with an event and Control.len 1, the datagram (with IP_PKTINFO) already there."""
    recv_side, send_side = (api.socket(C.AF_INET, C.SOCK_DGRAM, C.IPPROTO_UDP) for _ in range(2))
    ptr, n = _sockaddr(api)
    length = _u32(api, n)
    if api.bind(recv_side, ptr, n) or api.getsockname(recv_side, ptr, length):
        raise NotProbed(f"could not bind a UDP socket on loopback: {_name(_err(api))}")
    if api.setsockopt(recv_side, C.IPPROTO_IP, C.IP_PKTINFO, _u32(api, 1), 4):
        raise NotProbed(f"setsockopt(IP_PKTINFO) failed: {_name(_err(api))}")
    guid, fn = api.memory.alloc(16), api.memory.alloc(8)
    api.memory.write(guid, guid_bytes(C.WSAID_WSARECVMSG))
    if api.WSAIoctl(recv_side, C.SIO_GET_EXTENSION_FUNCTION_POINTER, guid, 16, fn, 8, _u32(api), 0, 0):
        raise NotProbed(f"no WSARecvMsg: {_name(_err(api))}")
    if api.sendto(send_side, api.memory.alloc(6), 6, 0, ptr, n) != 6:
        raise NotProbed(f"sendto failed: {_name(_err(api))}")
    api.SleepEx(50, False)
    data, ctrl, arr, msg = (api.memory.alloc(size) for size in (16, 1, WSABUF.size, WSAMSG.size))
    api.memory.write(arr, WSABUF.pack(len=16, buf=data))
    api.memory.write(msg, WSAMSG.pack(name=0, namelen=0, lpBuffers=arr, dwBufferCount=1, Control_len=1,
                                      Control_buf=ctrl, dwFlags=0))
    event = api.WSACreateEvent()
    rc = api.call(api.memory.read_u64(fn), recv_side, msg, _u32(api), _ovl(api, event), 0)
    err = _err(api) if rc else 0
    ev = (f"overlapped WSARecvMsg with an event, a datagram queued, Control.len 1 -> {rc}"
          + (f", last error {_name(err)}" if rc else "") + f"; event {'set' if _wait(api, event) == 0 else 'not set'}")
    return _choose({C.WSAEMSGSIZE: "WSAEMSGSIZE", C.WSA_IO_PENDING: "pending"}, err if rc == -1 else None, ev)


def probe_bad_event_at_issue(api):
    s = _tcp(api)
    bogus = 0x7FFFFFF0            # a multiple of four that no event has
    rc = api.WSAIoctl(s, C.FIONREAD, 0, 0, api.memory.alloc(4), 4, _u32(api), _ovl(api, bogus), 0)
    err = _err(api) if rc else 0
    ev = f"overlapped FIONREAD with hEvent 0x{bogus:x} -> {rc}" + (f", last error {_name(err)}" if rc else "")
    if rc == 0:
        return Observation("ignored", ev)
    return _choose({C.WSA_INVALID_HANDLE: "WSA_INVALID_HANDLE"}, err, ev)


def probe_close_cancel_status(api):
    _client, server = _pair(api)
    port = api.CreateIoCompletionPort(server, 0, 9, 0)
    if not port:
        raise NotProbed(f"CreateIoCompletionPort failed: {_name(api.GetLastError())}")
    buf = api.memory.alloc(16)
    arr = api.memory.alloc(WSABUF.size)
    api.memory.write(arr, WSABUF.pack(len=16, buf=buf))
    rc = api.WSARecv(server, arr, 1, 0, _u32(api, 0), _ovl(api), 0)
    if not (rc == -1 and _err(api) == C.WSA_IO_PENDING):
        raise NotProbed(f"overlapped WSARecv did not pend: {rc}, {_name(_err(api))}")
    api.closesocket(server)
    ok, perr, _, _ = _dequeue(api, port)
    ev = f"pending WSARecv, then closesocket: GetQueuedCompletionStatus -> {ok}, {_name(perr)}"
    return _choose({C.ERROR_OPERATION_ABORTED: "cancelled", C.ERROR_CONNECTION_ABORTED: "connection_aborted"},
                   perr if not ok else None, ev)


def probe_getoverlappedresult_null_out(api):
    s = _tcp(api)
    ovl = _ovl(api)
    if api.WSAIoctl(s, C.FIONREAD, 0, 0, api.memory.alloc(4), 4, _u32(api), ovl, 0) != 0:
        raise NotProbed("overlapped FIONREAD did not complete inline")
    rc = api.WSAGetOverlappedResult(s, ovl, 0, False, _u32(api))
    err = _err(api)
    ev = f"WSAGetOverlappedResult(lpcbTransfer NULL) -> {rc}, last error {_name(err)}"
    return _choose({C.WSAEFAULT: "WSAEFAULT", C.WSAEINVAL: "invalid_parameter"}, err if rc == 0 else None, ev)


def probe_wait_satisfaction_order(api):
    s = _tcp(api)
    routine = api.completion_routine(lambda *a: None)
    if api.WSAIoctl(s, C.FIONREAD, 0, 0, api.memory.alloc(4), 4, _u32(api), _ovl(api), routine) != 0:
        raise NotProbed("overlapped FIONREAD with a routine did not complete inline (no APC to race)")
    event = api.WSACreateEvent()
    api.WSASetEvent(event)
    rc = _wait(api, event, alertable=True)
    api.SleepEx(0, True)
    ev = f"signalled event and a queued APC, alertable WSAWaitForMultipleEvents -> 0x{rc & 0xFFFFFFFF:x}"
    return _choose({C.WSA_WAIT_EVENT_0: "objects_first", C.WSA_WAIT_IO_COMPLETION: "apcs_first"}, rc, ev)


def probe_wait_bad_handle_array(api):
    rc = api.WSAWaitForMultipleEvents(1, api.memory.invalid_pointer(), False, 0, False)
    err = _err(api)
    ev = f"WSAWaitForMultipleEvents(lphEvents invalid) -> 0x{rc & 0xFFFFFFFF:x}, last error {_name(err)}"
    return _choose({C.WSA_INVALID_PARAMETER: "WSA_INVALID_PARAMETER"}, err if rc == C.WSA_WAIT_FAILED else None, ev)


def probe_gqcs_bad_out_pointer(api):
    port = api.CreateIoCompletionPort(C.INVALID_HANDLE_VALUE, 0, 0, 0)
    if not port:
        raise NotProbed(f"CreateIoCompletionPort failed: {_name(api.GetLastError())}")
    api.PostQueuedCompletionStatus(port, 1, 2, 3)
    rc = api.GetQueuedCompletionStatus(port, _u32(api), api.memory.alloc(8), api.memory.invalid_pointer(), 0)
    err = api.GetLastError()
    ok, _, n, ovl = _dequeue(api, port)
    kept = ok == 1 and (n, ovl) == (1, 3)
    ev = (f"GetQueuedCompletionStatus(lpOverlapped invalid) -> {rc}, {_name(err)}; packet "
          f"{'kept' if kept else 'removed'}")
    return _choose({C.ERROR_NOACCESS: "ERROR_NOACCESS"}, err if rc == 0 and kept else None, ev)


def probe_gqcsex_zero_count(api):
    port = api.CreateIoCompletionPort(C.INVALID_HANDLE_VALUE, 0, 0, 0)
    if not port:
        raise NotProbed(f"CreateIoCompletionPort failed: {_name(api.GetLastError())}")
    api.PostQueuedCompletionStatus(port, 1, 2, 3)
    removed = _u32(api)
    rc = api.GetQueuedCompletionStatusEx(port, api.memory.alloc(32), 0, removed, 0, False)
    err = api.GetLastError()
    count = api.memory.read_u32(removed)
    ok, _, n, ovl = _dequeue(api, port)
    kept = ok == 1 and (n, ovl) == (1, 3)
    ev = (f"GetQueuedCompletionStatusEx(ulCount 0) -> {rc}, {_name(err) if not rc else 'no error'}, "
          f"*ulNumEntriesRemoved {count}; packet {'kept' if kept else 'removed'}")
    if rc and count == 1 and kept:
        return Observation("empty_success", ev)
    return _choose({C.ERROR_INVALID_PARAMETER: "ERROR_INVALID_PARAMETER"}, err if rc == 0 and kept else None, ev)


def probe_ipv6_protection_level_default(api):
    s = api.socket(C.AF_INET6, C.SOCK_STREAM, C.IPPROTO_TCP)
    if s == C.INVALID_SOCKET:
        raise NotProbed(f"no IPv6 TCP socket: {_name(api.WSAGetLastError())}")
    value, length = _u32(api, 0), _u32(api, 4)
    rc = api.getsockopt(s, C.IPPROTO_IPV6, C.IPV6_PROTECTION_LEVEL, value, length)
    level = api.memory.read_u32(value)
    ev = (f"getsockopt(IPPROTO_IPV6, IPV6_PROTECTION_LEVEL) on a TCP socket -> {rc}"
          + (f", value {level}" if rc == 0 else f", {_name(_err(api))}"))
    return _choose({C.PROTECTION_LEVEL_DEFAULT: "unspecified", C.PROTECTION_LEVEL_UNRESTRICTED: "unrestricted",
                    C.PROTECTION_LEVEL_EDGERESTRICTED: "edge_restricted"}, level if rc == 0 else None, ev)


def probe_gqcsex_count_when_empty(api):
    port = api.CreateIoCompletionPort(C.INVALID_HANDLE_VALUE, 0, 0, 0)
    if not port:
        raise NotProbed(f"CreateIoCompletionPort failed: {_name(api.GetLastError())}")
    removed = _u32(api)
    rc = api.GetQueuedCompletionStatusEx(port, api.memory.alloc(64), 2, removed, 0, False)
    err = api.GetLastError()
    count = api.memory.read_u32(removed)
    ev = (f"GetQueuedCompletionStatusEx on an empty port, 0 ms -> {rc}, {_name(err)}, "
          f"*ulNumEntriesRemoved {count}")
    return _choose({0: "zero", 1: "one"}, count if rc == 0 and err == C.WAIT_TIMEOUT else None, ev)


def probe_zero_length_probe(api):
    client, _server = _pair(api)
    rc = api.send(client, api.memory.invalid_pointer(), 0, 0)
    err = _err(api) if rc else 0
    ev = f"send(connected, invalid pointer, 0 bytes) -> {rc}" + (f", last error {_name(err)}" if rc else "")
    return Observation("valid", ev) if rc == 0 else Unmatched(ev)


def probe_sockopt_negative_length(api):
    s = _tcp(api)
    rc = api.setsockopt(s, C.IPPROTO_TCP, C.TCP_NODELAY, _u32(api, 1), -1)
    err = _err(api) if rc else 0
    ev = f"setsockopt(tcp, TCP_NODELAY, optlen -1) -> {rc}, {_name(err)}"
    return _choose({C.WSAENOBUFS: "WSAENOBUFS", C.WSAEFAULT: "WSAEFAULT"}, err if rc == -1 else None, ev)


def probe_tcp_keepcnt_keepintvl(api):
    s = _tcp(api)
    rc = api.setsockopt(s, C.IPPROTO_TCP, C.TCP_KEEPCNT, _u32(api, 5), 4)
    err = _err(api) if rc else 0
    ev = f"setsockopt(tcp, TCP_KEEPCNT, 5) -> {rc}, {_name(err)}"
    return _choose({0: "supported", C.WSAENOPROTOOPT: "WSAENOPROTOOPT"}, err if rc in (0, -1) else None, ev)


def _query(api, sock, code, size=64):
    out = api.memory.alloc(max(size, 8))
    n = _u32(api)
    rc = api.WSAIoctl(sock, code, 0, 0, out if size else 0, size, n, 0, 0)
    return rc, (_err(api) if rc else 0), api.memory.read_u32(n)


def probe_query_unconnected(api):
    rc, err, _ = _query(api, _tcp(api), RECORDS)
    ev = f"records query on an unconnected TCP socket -> {rc}, {_name(err)}"
    return _choose({C.WSAENOTCONN: "WSAENOTCONN"}, err if rc == -1 else None, ev)


def probe_query_udp_socket(api):
    s = api.socket(C.AF_INET, C.SOCK_DGRAM, C.IPPROTO_UDP)
    if s == C.INVALID_SOCKET:
        raise NotProbed(f"UDP socket failed: {_name(_err(api))}")
    ptr, n = _sockaddr(api)
    api.bind(s, ptr, n)
    rc, err, _ = _query(api, s, RECORDS)
    ev = f"records query on a UDP socket -> {rc}, {_name(err)}"
    return _choose({C.WSAEINVAL: "WSAEINVAL"}, err if rc == -1 else None, ev)


def probe_query_raw_socket(api):
    s = api.socket(C.AF_INET, C.SOCK_RAW, 1)
    if s == C.INVALID_SOCKET:
        raise NotProbed(f"a raw socket needs an elevated process: {_name(_err(api))}")
    rc, err, _ = _query(api, s, RECORDS)
    ev = f"records query on a raw (ICMP) socket -> {rc}, {_name(err)}"
    return _choose({C.WSAENOPROTOOPT: "WSAENOPROTOOPT"}, err if rc == -1 else None, ev)


def probe_query_not_redirected(api):
    _client, server = _pair(api)
    rc, err, _ = _query(api, server, RECORDS)
    ev = f"records query on a loopback connection nobody redirected -> {rc}, {_name(err)}"
    return _choose({C.FWP_E_NOT_FOUND: "FWP_E_NOT_FOUND", C.WSAEINVAL: "WSAEINVAL"}, err if rc == -1 else None, ev)


def _set(api, sock, blob):
    inp = api.memory.alloc(len(blob))
    api.memory.write(inp, blob)
    rc = api.WSAIoctl(sock, SET, inp, len(blob), 0, 0, _u32(api), 0, 0)
    return rc, (_err(api) if rc else 0)


def probe_set_bad_blob(api):
    rc, err = _set(api, _tcp(api), b"\x01" * 200)
    ev = f"SET with 200 bytes that are not a records blob -> {rc}, {_name(err)}"
    return _choose({C.WSAEINVAL: "WSAEINVAL"}, err if rc == -1 else None, ev)


def probe_set_after_connect(api):
    client, _server = _pair(api)
    rc, err = _set(api, client, b"x" * 32)
    ev = f"SET on a connected (not redirected) TCP socket -> {rc}, {_name(err)}"
    return _choose({C.WSAEINVAL: "WSAEINVAL"}, err if rc == -1 else None, ev)


def probe_wfp_sockopt_on_tcp(api):
    s = _tcp(api)
    buf, length = api.memory.alloc(256), _u32(api, 256)
    rc = api.getsockopt(s, C.IPPROTO_IP, C.IP_WFP_REDIRECT_RECORDS, buf, length)
    err = _err(api) if rc else 0
    ev = f"getsockopt(tcp, IP_WFP_REDIRECT_RECORDS) -> {rc}, {_name(err)}"
    return _choose({C.WSAEINVAL: "WSAEINVAL", C.WSAENOPROTOOPT: "WSAENOPROTOOPT"}, err if rc == -1 else None, ev)


def _poll(api, entries):
    """WSAPoll(entries, timeout 0) -> (rc, last error, [revents])."""
    arr = api.memory.alloc(WSAPOLLFD.size * len(entries))
    api.memory.write(arr, b"".join(WSAPOLLFD.pack(fd=fd, events=events, revents=0x5A5A)
                                   for fd, events in entries))
    rc = api.WSAPoll(arr, len(entries), 0)
    err = _err(api)
    data = api.memory.read(arr, WSAPOLLFD.size * len(entries))
    return rc, err, [WSAPOLLFD.get(data[i * 16:(i + 1) * 16], "revents") for i in range(len(entries))]


def probe_poll_no_valid_socket(api):
    rc, err, got = _poll(api, [(C.INVALID_SOCKET, C.POLLRDNORM)])
    ev = f"WSAPoll({{INVALID_SOCKET, POLLRDNORM}}, 1, 0) -> {rc}, last error {_name(err)}, revents {got[0]:#x}"
    return _choose({C.WSAEINVAL: "WSAEINVAL", C.WSAENOTSOCK: "WSAENOTSOCK"}, err if rc == -1 else None, ev)


def probe_poll_nval_counted(api):
    s = _tcp(api)
    rc, err, got = _poll(api, [(C.INVALID_SOCKET, C.POLLRDNORM), (s, C.POLLRDNORM)])
    ev = (f"WSAPoll({{INVALID_SOCKET}}, {{unconnected tcp}}, timeout 0) -> {rc}, last error {_name(err)}, "
          f"revents {got[0]:#x}, {got[1]:#x}")
    if got != [C.POLLNVAL, 0]:
        return Unmatched(ev)
    return _choose({1: "counted", 0: "not_counted"}, rc, ev)


def _shared(api, type_, proto, count):
    """`count` sockets with SO_REUSEADDR bound to one loopback port; the port."""
    sockets, port = [], 0
    for _ in range(count):
        s = api.socket(C.AF_INET, type_, proto)
        if s == C.INVALID_SOCKET or api.setsockopt(s, C.SOL_SOCKET, C.SO_REUSEADDR, _u32(api, 1), 4):
            raise NotProbed(f"socket with SO_REUSEADDR: {_name(_err(api))}")
        ptr, n = _sockaddr(api, port)
        if api.bind(s, ptr, n):
            raise NotProbed(f"bind to a shared loopback port failed: {_name(_err(api))}")
        if not port:
            length = _u32(api, n)
            if api.getsockname(s, ptr, length):
                raise NotProbed(f"getsockname failed: {_name(_err(api))}")
            port = struct.unpack(">H", api.memory.read(ptr + 2, 2))[0]
        sockets.append(s)
    return sockets, port


def probe_udp_shared_address_delivery(api):
    (first, second), port = _shared(api, C.SOCK_DGRAM, C.IPPROTO_UDP, 2)
    sender = api.socket(C.AF_INET, C.SOCK_DGRAM, C.IPPROTO_UDP)
    to, tolen = _sockaddr(api, port)
    data = api.memory.alloc(4)
    api.memory.write(data, b"ping")
    if api.sendto(sender, data, 4, 0, to, tolen) != 4:
        raise NotProbed(f"sendto failed: {_name(_err(api))}")
    api.SleepEx(50, False)
    queued = []
    for s in (first, second):
        n = _u32(api, 0)
        api.ioctlsocket(s, C.FIONREAD, n)
        queued.append(api.memory.read_u32(n))
    ev = f"two UDP sockets with SO_REUSEADDR on one loopback port, one datagram: FIONREAD first {queued[0]}, second {queued[1]}"
    return _choose({(4, 0): "first", (0, 4): "newest"}, tuple(queued), ev)


def probe_connect_pair_in_use(api):
    lst = _tcp(api)
    ptr, n = _sockaddr(api)
    length = _u32(api, n)
    if api.bind(lst, ptr, n) or api.listen(lst, 4) or api.getsockname(lst, ptr, length):
        raise NotProbed(f"could not listen on loopback: {_name(_err(api))}")
    (a, b), _ = _shared(api, C.SOCK_STREAM, C.IPPROTO_TCP, 2)
    if api.connect(a, ptr, n):
        raise NotProbed(f"connect from the shared address failed: {_name(_err(api))}")
    rc = api.connect(b, ptr, n)
    err = _err(api)
    ev = f"second connect from a shared local address to the same listener -> {rc}, last error {_name(err)}"
    return _choose({C.WSAEADDRINUSE: "WSAEADDRINUSE", C.WSAEADDRNOTAVAIL: "WSAEADDRNOTAVAIL"},
                   err if rc == -1 else None, ev)


def probe_acceptex_short_address(api):
    from harness.proxy import redirect as rd
    from harness.winsock.layouts import SOCKADDR_IN
    lst = _tcp(api)
    name = sockaddr.from_text("127.0.0.1", 0)
    ptr = api.memory.alloc(128)
    api.memory.write(ptr, name)
    length = _u32(api, 128)
    if api.bind(lst, ptr, len(name)) or api.listen(lst, 4) or api.getsockname(lst, ptr, length):
        raise NotProbed(f"could not set up a listener: {_name(_err(api))}")
    port = sockaddr.to_text(api.memory.read(ptr, api.memory.read_u32(length)))[1]
    acceptex = rd.extension_function(api, lst, C.WSAID_ACCEPTEX)
    iocp = api.CreateIoCompletionPort(lst, 0, 1, 0)
    slot = SOCKADDR_IN.size + 16
    out, ovl = api.memory.alloc(2 * slot), _ovl(api)
    ok = api.call(acceptex, lst, _tcp(api), out, 0, slot - 1, slot, _u32(api), ovl)
    err = _err(api)
    ev = f"AcceptEx(local length {slot - 1}) -> {ok}, last error {_name(err)}"
    if not ok and err == C.WSAEFAULT:
        return Observation("WSAEFAULT", ev)
    if ok or err != C.WSA_IO_PENDING:
        return Unmatched(ev)
    client = _tcp(api)
    api.memory.write(ptr, sockaddr.from_text("127.0.0.1", port))
    api.connect(client, ptr, 16)
    n, key, got = _u32(api), api.memory.alloc(8), api.memory.alloc(8)
    done = api.GetQueuedCompletionStatus(iocp, n, key, got, 5000)
    perr = api.GetLastError()
    ev += f"; after a connect the completion -> {done}, {_name(perr)}"
    if not done and perr == C.ERROR_INSUFFICIENT_BUFFER:
        return Observation("pending_buffer_too_small", ev)
    return Unmatched(ev)


def probe_extension_pointer_sizes(api):
    s = _tcp(api)
    guid = api.memory.alloc(16)
    api.memory.write(guid, guid_bytes(C.WSAID_ACCEPTEX))
    out, n = api.memory.alloc(16), _u32(api)
    rc = api.WSAIoctl(s, C.SIO_GET_EXTENSION_FUNCTION_POINTER, guid, 15, out, 1, n, 0, 0)
    err = _err(api) if rc else 0
    ev = f"the AcceptEx GUID with input 15 and output 1 -> {rc}" + (f", last error {_name(err)}" if rc else
                                                                   f", size {api.memory.read_u32(n)}")
    if rc == 0:
        return Observation("unchecked", ev)
    return _choose({C.WSAEFAULT: "checked"}, err, ev)


def probe_stream_recv_flags_out(api):
    client, server = _pair(api)
    data = api.memory.alloc(4)
    api.memory.write(data, b"abcd")
    if api.send(client, data, 4, 0) != 4:
        raise NotProbed(f"send failed: {_name(_err(api))}")
    api.SleepEx(50, False)                      # let the bytes arrive
    buf, arr = api.memory.alloc(16), api.memory.alloc(WSABUF.size)
    api.memory.write(arr, WSABUF.pack(len=16, buf=buf))
    flags = _u32(api, C.MSG_PEEK)
    rc = api.WSARecv(server, arr, 1, _u32(api, 0), flags, 0, 0)
    if rc != 0:
        raise NotProbed(f"WSARecv with MSG_PEEK and data queued -> {rc}, {_name(_err(api))}")
    after = api.memory.read_u32(flags)
    ev = f"WSARecv with MSG_PEEK on a TCP socket with data queued -> 0, *lpFlags {after:#x}"
    return _choose({0: "written", C.MSG_PEEK: "unchanged"}, after, ev)


def probe_ideal_backlog_overlapped(api):
    client, _server = _pair(api)
    event = api.WSACreateEvent()
    ovl = _ovl(api, event)
    rc = api.WSAIoctl(client, C.SIO_IDEAL_SEND_BACKLOG_QUERY, 0, 0, api.memory.alloc(4), 4, _u32(api), ovl, 0)
    if rc != 0:
        raise NotProbed(f"overlapped SIO_IDEAL_SEND_BACKLOG_QUERY -> {rc}, {_name(_err(api))}")
    signalled = _wait(api, event) == C.WSA_WAIT_EVENT_0
    untouched = api.memory.read_u64(ovl) == POISON
    ev = (f"overlapped SIO_IDEAL_SEND_BACKLOG_QUERY with an event -> 0, Internal "
          f"{'untouched' if untouched else 'written'}, event {'set' if signalled else 'not set'}")
    if signalled and not untouched:
        return Observation("indicated", ev)
    if untouched and not signalled:
        return Observation("ignored", ev)
    return Unmatched(ev)


def probe_ideal_backlog_check_order(api):
    udp = api.socket(C.AF_INET, C.SOCK_DGRAM, C.IPPROTO_UDP)
    rc = api.WSAIoctl(udp, C.SIO_IDEAL_SEND_BACKLOG_QUERY, 0, 0, api.memory.alloc(4), 3, _u32(api), 0, 0)
    err = _err(api) if rc else 0
    ev = f"SIO_IDEAL_SEND_BACKLOG_QUERY with a 3-byte output on a UDP socket -> {rc}" + (f", {_name(err)}" if rc else "")
    return _choose({C.WSAEFAULT: "buffer_first", C.WSAEOPNOTSUPP: "socket_first"}, err, ev)


def probe_wsaioctl_check_order(api):
    bogus = 0xDEADBEEF                      # no socket has it
    rc = api.WSAIoctl(bogus, C.FIONREAD, 0, 0, api.memory.alloc(4), 4, 0, 0, 0)
    err = _err(api) if rc else 0
    ev = f"FIONREAD on handle 0x{bogus:x} with a NULL lpcbBytesReturned -> {rc}" + (f", {_name(err)}" if rc else "")
    return _choose({C.WSAENOTSOCK: "handle_first", C.WSAEFAULT: "bytes_returned_first"}, err, ev)


def probe_siocatmark_datagram(api):
    udp = api.socket(C.AF_INET, C.SOCK_DGRAM, C.IPPROTO_UDP)
    rc = api.WSAIoctl(udp, C.SIOCATMARK, 0, 0, api.memory.alloc(4), 4, _u32(api), 0, 0)
    err = _err(api) if rc else 0
    ev = f"SIOCATMARK on a UDP socket -> {rc}" + (f", {_name(err)}" if rc else "")
    if rc == 0:
        return Observation("at_mark", ev)
    return _choose({C.WSAEINVAL: "WSAEINVAL"}, err, ev)


# -- probes on a redirected connection (redirected_factory) --------------------------------

def _required(api, sock, code):
    rc, err, n = _query(api, sock, code, 8192)
    if rc:
        raise NotProbed(f"the redirected socket's query failed: {_name(err)}")
    return n


def _short(rc, err, n, required, ev):
    if rc != -1:
        return Unmatched(ev)
    if err == C.ERROR_INSUFFICIENT_BUFFER and n == required:
        return Observation("insufficient_buffer", ev)
    if err == C.WSAEINVAL and n == 0:
        return Observation("WSAEINVAL", ev)
    if err in (C.WSAEFAULT, C.WSAENOBUFS) and n == required:
        return Observation(C.error_name(err), ev)
    return Unmatched(ev)


def probe_query_size_probe(red):
    api, sock = red.api, red.sock
    required = _required(api, sock, RECORDS)
    rc, err, n = _query(api, sock, RECORDS, 0)
    return _short(rc, err, n, required, f"records query, cbOutBuffer 0 -> {rc}, {_name(err)}, *lpcbBytesReturned "
                                        f"{n} (required {required})")


def probe_query_short_buffer(red):
    api, sock = red.api, red.sock
    required = _required(api, sock, RECORDS)
    if required <= 4:
        raise NotProbed("the records blob is too small for a short-buffer experiment")
    rc, err, n = _query(api, sock, RECORDS, required - 1)
    return _short(rc, err, n, required, f"records query, cbOutBuffer required-1 -> {rc}, {_name(err)}, "
                                        f"*lpcbBytesReturned {n} (required {required})")


def probe_query_tiny_buffer(red):
    api, sock = red.api, red.sock
    rc, err, n = _query(api, sock, RECORDS, 2)
    ev = f"records query, cbOutBuffer 2 -> {rc}, {_name(err)}, *lpcbBytesReturned {n}"
    if rc == -1 and err == C.WSAEINVAL and n == 0:
        return Observation("WSAEINVAL", ev)
    if rc == -1 and err in (C.ERROR_INSUFFICIENT_BUFFER, C.WSAEFAULT, C.WSAENOBUFS):
        return Observation("as_short", ev)
    return Unmatched(ev)


def probe_wfp_query_completion(red):
    api, sock = red.api, red.sock
    event = api.WSACreateEvent()
    ovl = _ovl(api, event)
    out = api.memory.alloc(1024)
    rc = api.WSAIoctl(sock, RECORDS, 0, 0, out, 1024, _u32(api), ovl, 0)
    err = _err(api) if rc else 0
    ev = f"overlapped records query -> {rc}" + (f", {_name(err)}" if rc else "")
    if rc == 0:
        return Observation("inline", ev)
    return _choose({C.WSA_IO_PENDING: "pending"}, err, ev)


def probe_wfp_completion_bytes(red):
    api, sock = red.api, red.sock
    required = _required(api, sock, RECORDS)
    event = api.WSACreateEvent()
    ovl = _ovl(api, event)
    rc = api.WSAIoctl(sock, RECORDS, 0, 0, api.memory.alloc(1024), 1024, _u32(api), ovl, 0)
    if rc == -1 and _err(api) != C.WSA_IO_PENDING:
        raise NotProbed(f"overlapped records query failed: {_name(_err(api))}")
    arr = api.memory.alloc(8)
    api.memory.write_u64(arr, event)
    api.WSAWaitForMultipleEvents(1, arr, False, 5000, False)
    got, flags = _u32(api), _u32(api)
    ok = api.WSAGetOverlappedResult(sock, ovl, got, True, flags)
    n = api.memory.read_u32(got)
    ev = f"overlapped records query completed ({ok}) with {n} bytes; the blob is {required} bytes"
    if ok and n == required:
        return Observation("actual", ev)
    if ok and n == 0:
        return Observation("zero", ev)
    return Unmatched(ev)


def _probes_of(kind: str) -> dict:
    """decision point -> probe_<name>, for the points whose `probe` is `kind` (sim/decision_points.py)."""
    from sim.decision_points import DECISIONS
    return {name: globals()[f"probe_{name}"] for name, dp in DECISIONS.items() if dp.probe == kind}


def _no_probe() -> dict:
    from sim.decision_points import DECISIONS
    return {name: dp.probe for name, dp in DECISIONS.items() if not dp.probed}


API_PROBES = _probes_of("api")
REDIRECT_PROBES = _probes_of("redirected")
NO_PROBE = _no_probe()
PROBES = {**API_PROBES, **REDIRECT_PROBES}


@contextlib.contextmanager
def _opened_api(api_factory):
    api = api_factory()
    try:
        yield api
    finally:
        close = getattr(api, "close", None)
        if callable(close):
            close()


def probe_profile(api_factory, redirected_factory=None, *, target: str = "sim", os_build: str = "",
                  skip=(), only=None, source_profile=None) -> ProbeResult:
    """Answer each decision point by experiment; a fresh provider (or redirected connection) per probe.

    skip: decision points not to probe (e.g. CRASHY on a real target); only: probe just these;
    source_profile: the profile a simulator target runs under (its answers' provenance is kept).
    """
    from sim.decision_points import DECISIONS
    result = ProbeResult(target, os_build or ("simulated" if target == "sim" else "unknown"), profile=source_profile)
    for key in DECISIONS:
        if only is not None and key not in only:
            continue
        if key in skip:
            result.not_probed[key] = "skipped on this target" + (
                " (the experiment can crash a real process)" if key in CRASHY else "")
            continue
        if key in API_PROBES:
            opened, probe = _opened_api(api_factory), API_PROBES[key]
        elif key in REDIRECT_PROBES:
            if redirected_factory is None:
                result.not_probed[key] = "needs a redirected connection (no redirected fixture for this target)"
                continue
            opened, probe = redirected_factory(), REDIRECT_PROBES[key]
        else:
            result.not_probed[key] = NO_PROBE.get(key, "no probe written")
            continue
        try:
            with opened as subject:
                outcome = probe(subject)
        except NotProbed as exc:
            result.not_probed[key] = str(exc)
            continue
        except _target_failures() as exc:
            # The experiment itself is the observation: a call that faulted (an access
            # violation a real process would die of) or hung matches no choice.
            result.unmatched[key] = f"the experiment did not return: {_first_line(exc)}"
            continue
        if isinstance(outcome, Observation):
            if outcome.value not in DECISIONS[key].choices:
                result.unmatched[key] = f"{outcome.evidence} (answer {outcome.value!r} is not a known choice)"
            else:
                result.answers[key] = outcome
        else:
            result.unmatched[key] = outcome.evidence
    return result


def _target_failures() -> tuple:
    """What a real target raises when an experiment faults or hangs (never a simulator's answer)."""
    from harness.agent.protocol import AgentAccessViolation, AgentDied, AgentTimeout
    return (AgentAccessViolation, AgentTimeout, AgentDied)


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def diff_profiles(a, b) -> list:
    """[(decision, Assignment of a, Assignment of b)] where the two profiles' values differ."""
    from sim.decision_points import DECISIONS
    return [(key, a.assignments[key], b.assignments[key]) for key in DECISIONS
            if a.assignments[key].value != b.assignments[key].value]
