"""Overlapped completion: events, completion routines in alertable waits, ports, cancellation.

Sources: summary-of-overlapped-completion-indication-mechanisms-in-the-spi-2.md,
wsagetoverlappedresult.md, wsawaitformultipleevents.md, closesocket.md,
GetQueuedCompletionStatus / SetFileCompletionNotificationModes / CancelIoEx
pages (docs/facts.md §4.3-4.7), docs/windows-observed.md §E.
"""
import struct

import pytest

from harness.conformance.support import (POISON, Guarded, RoutineLog, dequeue, dword, internal, make_iocp,
                                         overlapped, wsabuf)
from harness.winsock import constants as C
from harness.winsock.layouts import OVERLAPPED_ENTRY



def _post_recv(api, sock, ovl, routine=0, size=16):
    arr, buf = wsabuf(api, size)
    flags = dword(api, 0)
    rc = api.WSARecv(sock, arr, 1, 0, flags.ptr, ovl, routine)
    return rc, buf


def _send(api, sock, data: bytes):
    buf = api.memory.alloc(len(data))
    api.memory.write(buf, data)
    assert api.send(sock, buf, len(data), 0) == len(data)


def _wait_one(api, event, timeout=1000, alertable=False):
    arr = api.memory.alloc(8)
    api.memory.write_u64(arr, event)
    return api.WSAWaitForMultipleEvents(1, arr, False, timeout, alertable)


class TestEvents:
    def test_pending_recv_signals_event(self, api, pair):
        """wsagetoverlappedresult.md: the call resets hEvent; completion sets it; the result is then readable."""
        client, server, _ = pair
        event = api.WSACreateEvent()
        api.WSASetEvent(event)
        ovl = overlapped(api, event)
        rc, buf = _post_recv(api, server, ovl)
        assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSA_IO_PENDING
        assert _wait_one(api, event, timeout=0) == C.WSA_WAIT_TIMEOUT       # reset by the call
        assert internal(api, ovl)[0] == C.STATUS_PENDING
        n, flags = dword(api), dword(api)
        assert api.WSAGetOverlappedResult(server, ovl, n.ptr, False, flags.ptr) == 0
        assert api.WSAGetLastError() == C.WSA_IO_INCOMPLETE
        _send(api, client, b"hi there")
        assert _wait_one(api, event) == C.WSA_WAIT_EVENT_0
        assert api.WSAGetOverlappedResult(server, ovl, n.ptr, False, flags.ptr) == 1
        assert (n.u32(), flags.u32()) == (8, 0)
        assert buf.read(8) == b"hi there" and buf.guards_intact()
        assert internal(api, ovl) == (0, 8)

    def test_getoverlappedresult_waits(self, api, pair):
        """fWait TRUE waits for completion (event-based notification)."""
        client, server, _ = pair
        event = api.WSACreateEvent()
        ovl = overlapped(api, event)
        _post_recv(api, server, ovl)
        _send(api, client, b"x" * 3)
        n, flags = dword(api), dword(api)
        assert api.WSAGetOverlappedResult(server, ovl, n.ptr, True, flags.ptr) == 1
        assert n.u32() == 3

    def test_getoverlappedresult_bad_pointers(self, api, pair, decide):
        """wsagetoverlappedresult.md: lpOverlapped, lpcbTransfer, lpdwFlags must be valid: WSAEFAULT; decision
        point getoverlappedresult_null_out (the page's answer was Server 2003's): or WSA_INVALID_PARAMETER for
        a NULL lpOverlapped and WSAEINVAL for a NULL out-pointer (Wine 8.0)."""
        server = pair[1]
        ovl = overlapped(api)
        n, flags = dword(api), dword(api)
        page = decide("getoverlappedresult_null_out") == "WSAEFAULT"
        for args, other in (((0, n.ptr, flags.ptr), C.WSA_INVALID_PARAMETER), ((ovl, 0, flags.ptr), C.WSAEINVAL),
                            ((ovl, n.ptr, 0), C.WSAEINVAL)):
            assert api.WSAGetOverlappedResult(server, args[0], args[1], False, args[2]) == 0
            assert api.WSAGetLastError() == (C.WSAEFAULT if page else other)
        assert api.WSAGetOverlappedResult(0xDEADBEEF, ovl, n.ptr, False, flags.ptr) == 0
        assert api.WSAGetLastError() == C.WSAENOTSOCK        # item 8

    def test_getoverlappedresult_unwritable_overlapped(self, api, pair):
        """wsagetoverlappedresult.md: an lpOverlapped outside valid memory is WSAEFAULT."""
        n, flags = dword(api), dword(api)
        assert api.WSAGetOverlappedResult(pair[1], api.memory.invalid_pointer(), n.ptr, False, flags.ptr) == 0
        assert api.WSAGetLastError() == C.WSAEFAULT

    def test_wait_any_lowest_index_and_wait_all(self, api):
        """wsawaitformultipleevents.md: lowest signalled index; wait-all needs every event."""
        events = [api.WSACreateEvent() for _ in range(3)]
        arr = api.memory.alloc(24)
        api.memory.write(arr, struct.pack("<3Q", *events))
        api.WSASetEvent(events[2])
        api.WSASetEvent(events[1])
        assert api.WSAWaitForMultipleEvents(3, arr, False, 0, False) == 1
        assert api.WSAWaitForMultipleEvents(3, arr, True, 0, False) == C.WSA_WAIT_TIMEOUT
        api.WSASetEvent(events[0])
        assert api.WSAWaitForMultipleEvents(3, arr, True, 0, False) == 0
        assert api.WSAResetEvent(events[0]) == 1
        assert api.WSAWaitForMultipleEvents(3, arr, False, 5, False) == 1

    def test_wait_argument_errors(self, api):
        """wsawaitformultipleevents.md: WSA_INVALID_PARAMETER for a bad count, WSA_INVALID_HANDLE for a bad handle."""
        arr = api.memory.alloc(8 * 65)
        assert api.WSAWaitForMultipleEvents(0, arr, False, 0, False) == C.WSA_WAIT_FAILED
        assert api.WSAGetLastError() == C.WSA_INVALID_PARAMETER
        assert api.WSAWaitForMultipleEvents(65, arr, False, 0, False) == C.WSA_WAIT_FAILED
        assert api.WSAGetLastError() == C.WSA_INVALID_PARAMETER
        api.memory.write_u64(arr, 0xDEADBEEF)
        assert api.WSAWaitForMultipleEvents(1, arr, False, 0, False) == C.WSA_WAIT_FAILED
        assert api.WSAGetLastError() == C.WSA_INVALID_HANDLE

    def test_event_functions_reject_bad_handles(self, api):
        """WSASetEvent/WSAResetEvent/WSACloseEvent: WSA_INVALID_HANDLE for a handle that is not an event."""
        for fn in (api.WSASetEvent, api.WSAResetEvent, api.WSACloseEvent):
            assert fn(0xDEADBEEF) == 0 and api.WSAGetLastError() == C.WSA_INVALID_HANDLE
        event = api.WSACreateEvent()
        assert api.WSACloseEvent(event) == 1
        assert api.WSASetEvent(event) == 0 and api.WSAGetLastError() == C.WSA_INVALID_HANDLE

    def test_wait_timeout_passes_virtual_time(self, api):
        """A wait with a timeout returns WSA_WAIT_TIMEOUT when nothing is signalled."""
        event = api.WSACreateEvent()
        assert _wait_one(api, event, timeout=250) == C.WSA_WAIT_TIMEOUT


class TestCompletionRoutines:
    def test_routine_runs_only_in_alertable_wait(self, api, pair):
        """docs/facts.md §4.4: the routine is an APC; it runs only when the issuing thread waits alertably."""
        client, server, _ = pair
        log = RoutineLog(api)
        ovl = overlapped(api)
        rc, buf = _post_recv(api, server, ovl, log.ptr)
        assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSA_IO_PENDING
        _send(api, client, b"abc")
        event = api.WSACreateEvent()
        assert _wait_one(api, event, timeout=50, alertable=False) == C.WSA_WAIT_TIMEOUT
        assert log.calls == []
        assert _wait_one(api, event, timeout=50, alertable=True) == C.WSA_WAIT_IO_COMPLETION
        assert log.calls == [(0, 3, ovl, 0)]
        assert buf.read(3) == b"abc"

    def test_routine_runs_on_issuing_thread_only(self, api, pair):
        """overlapped-i-o-2.md: the APC is queued to the thread that issued the call."""
        client, server, _ = pair
        if not hasattr(api, "new_thread"):
            pytest.skip("needs simulated threads")
        log = RoutineLog(api)
        issuer = api.new_thread("issuer")
        ovl = overlapped(api)
        with api.as_thread(issuer):
            _post_recv(api, server, ovl, log.ptr)
        _send(api, client, b"zz")
        assert api.SleepEx(20, True) == 0             # this thread has no APC
        assert log.calls == []
        with api.as_thread(issuer):
            assert api.SleepEx(0, True) == C.WAIT_IO_COMPLETION
        assert log.calls == [(0, 2, ovl, 0)]

    def test_inline_ioctl_queues_routine(self, api, tcp):
        """WSPIoctl page: when an overlapped request returns 0 the routine is already scheduled."""
        log = RoutineLog(api)
        ovl = overlapped(api)
        out = Guarded(api, 4)
        assert api.WSAIoctl(tcp, C.FIONREAD, 0, 0, out.ptr, 4, dword(api).ptr, ovl, log.ptr) == 0
        assert api.SleepEx(0, True) == C.WAIT_IO_COMPLETION
        assert len(log.calls) == 1 and log.calls[0][0] == 0 and log.calls[0][2] == ovl

    def test_routine_on_port_bound_socket(self, api, pair, decide):
        """Decision point routine_on_port_socket (sim/decision_points.py): a WSARecv with a routine on
        a socket associated with a completion port either proceeds or is refused with WSAEINVAL when
        it reaches the kernel (Internal already STATUS_PENDING, as docs/windows-observed.md item 10
        says of requests that enter it), indicating nothing (Wine 8.0: refused, found by
        tests/differential)."""
        client, server, _ = pair
        port = make_iocp(api, server, key=5)
        log = RoutineLog(api)
        ovl = overlapped(api)
        rc, buf = _post_recv(api, server, ovl, log.ptr)
        if decide("routine_on_port_socket") == "WSAEINVAL":
            assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEINVAL
            assert internal(api, ovl) == (C.STATUS_PENDING, POISON)
            _send(api, client, b"abc")
            assert api.SleepEx(50, True) == 0 and log.calls == []
            assert dequeue(api, port)[0] == 0
            return
        assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSA_IO_PENDING
        _send(api, client, b"abc")
        while api.SleepEx(100, True) == C.WAIT_IO_COMPLETION and not log.calls:
            pass
        assert log.calls == [(0, 3, ovl, 0)] and buf.read(3) == b"abc"

    def test_ioctl_routine_on_port_bound_socket(self, api, pair, decide):
        """Decision points routine_on_port_socket and routine_and_port, for WSAIoctl: FIONBIO with a
        routine on a port-bound socket is refused with WSAEINVAL where sends and receives are (Internal
        untouched, nothing indicated), else it completes inline; an inline FIONREAD runs its routine, and
        its packet (routine_and_port) names the OVERLAPPED, or the routine (Wine 8.0, tests/differential)."""
        _client, server, _ = pair
        port = make_iocp(api, server, key=5)
        log = RoutineLog(api)
        one = dword(api, 1)
        ovl = overlapped(api)
        rc = api.WSAIoctl(server, C.FIONBIO, one.ptr, 4, 0, 0, dword(api).ptr, ovl, log.ptr)
        if decide("routine_on_port_socket") == "WSAEINVAL":
            assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEINVAL
            assert internal(api, ovl) == (POISON, POISON)
        else:
            assert rc == 0
        assert api.SleepEx(0, True) == (0 if rc else C.WAIT_IO_COMPLETION)
        if rc == 0 and decide("routine_and_port") != "routine_only":
            dequeue(api, port)
        ovl = overlapped(api)
        rc = api.WSAIoctl(server, C.FIONREAD, 0, 0, Guarded(api, 4).ptr, 4, dword(api).ptr, ovl, log.ptr)
        assert rc == 0 and api.SleepEx(0, True) == C.WAIT_IO_COMPLETION and log.calls[-1][2] == ovl
        ok, _err, _n, key, packet = dequeue(api, port)
        answer = decide("routine_and_port")
        if answer == "routine_only":
            assert ok == 0
        else:
            assert (ok, key, packet) == (1, 5, log.ptr if answer == "both_packet_names_routine" else ovl)

    def test_invalid_routine_pointer_is_efault(self, api, tcp):
        """WSAIoctl page: a completion routine not in user space is WSAEFAULT (docs/decisions.md §3)."""
        ovl = overlapped(api)
        rc = api.WSAIoctl(tcp, C.FIONREAD, 0, 0, Guarded(api, 4).ptr, 4, dword(api).ptr, ovl, 0x1234)
        assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEFAULT
        assert internal(api, ovl) == (POISON, POISON)

    def test_invalid_overlapped_is_efault(self, api, tcp):
        """WSAIoctl page: lpOverlapped not wholly in user space is WSAEFAULT."""
        rc = api.WSAIoctl(tcp, 0xDEADBEEF, 0, 0, 0, 0, dword(api).ptr, api.memory.invalid_pointer(), 0)
        assert rc == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAEFAULT


class TestCompletionPorts:
    def test_packet_for_pending_recv(self, api, pair):
        """GetQueuedCompletionStatus page: a completion queues {bytes, key, lpOverlapped}."""
        client, server, _ = pair
        port = make_iocp(api, server, key=7)
        ovl = overlapped(api)
        _post_recv(api, server, ovl)
        assert dequeue(api, port)[1] == C.WAIT_TIMEOUT
        _send(api, client, b"12345")
        assert dequeue(api, port, timeout_ms=1000)[:5] == (1, POISON, 5, 7, ovl)

    def test_event_low_bit_suppresses_packet(self, api, pair):
        """GetQueuedCompletionStatus page: hEvent with the low bit set: the event is set, no packet."""
        client, server, _ = pair
        port = make_iocp(api, server)
        event = api.WSACreateEvent()
        ovl = overlapped(api, event | 1)
        _post_recv(api, server, ovl)
        _send(api, client, b"q")
        assert _wait_one(api, event) == C.WSA_WAIT_EVENT_0
        assert dequeue(api, port)[1] == C.WAIT_TIMEOUT

    def test_skip_completion_port_on_success(self, api, tcp):
        """FILE_SKIP_COMPLETION_PORT_ON_SUCCESS: an inline success posts no packet; a pending one still does."""
        port = make_iocp(api, tcp)
        assert api.SetFileCompletionNotificationModes(tcp, C.FILE_SKIP_COMPLETION_PORT_ON_SUCCESS) == 1
        assert api.WSAIoctl(tcp, C.FIONREAD, 0, 0, Guarded(api, 4).ptr, 4, dword(api).ptr, overlapped(api), 0) == 0
        assert dequeue(api, port)[1] == C.WAIT_TIMEOUT

    def test_association_rules(self, api, tcp):
        """CreateIoCompletionPort: a second association fails; a non-overlapped socket cannot be associated."""
        port = make_iocp(api, tcp)
        assert api.CreateIoCompletionPort(tcp, port, 1, 0) == 0
        assert api.GetLastError() == C.ERROR_INVALID_PARAMETER
        sync = api.WSASocketW(C.AF_INET, C.SOCK_STREAM, 0, 0, 0, 0)
        assert api.CreateIoCompletionPort(sync, port, 1, 0) == 0
        assert api.GetLastError() == C.ERROR_INVALID_PARAMETER
        assert api.CreateIoCompletionPort(0xDEADBEEF, port, 1, 0) == 0
        assert api.GetLastError() == C.ERROR_INVALID_HANDLE
        assert api.CreateIoCompletionPort(C.INVALID_HANDLE_VALUE, port, 0, 0) == 0
        assert api.GetLastError() == C.ERROR_INVALID_PARAMETER

    def test_post_and_timeout(self, api):
        """PostQueuedCompletionStatus delivers verbatim; an empty port times out with *lpOverlapped = NULL."""
        port = api.CreateIoCompletionPort(C.INVALID_HANDLE_VALUE, 0, 0, 0)
        assert port
        ok, err, n, key, ovl = dequeue(api, port, timeout_ms=10)
        assert (ok, err, ovl) == (0, C.WAIT_TIMEOUT, 0)
        assert api.PostQueuedCompletionStatus(port, 42, 9, 0x1000) == 1
        assert dequeue(api, port)[:5] == (1, POISON, 42, 9, 0x1000)

    def test_closed_port(self, api):
        """A port closed under a waiter ends the wait with ERROR_ABANDONED_WAIT_0; a closed handle is invalid."""
        port = api.CreateIoCompletionPort(C.INVALID_HANDLE_VALUE, 0, 0, 0)
        assert api.CloseHandle(port) == 1
        assert dequeue(api, port)[1] == C.ERROR_INVALID_HANDLE

    def test_gqcs_bad_out_pointer_keeps_packet(self, api, decide):
        """Ledger gqcs_bad_out_pointer: an unwritable out-pointer fails and removes no packet."""
        port = api.CreateIoCompletionPort(C.INVALID_HANDLE_VALUE, 0, 0, 0)
        api.PostQueuedCompletionStatus(port, 1, 2, 3)
        n, key = dword(api), Guarded(api, 8)
        assert api.GetQueuedCompletionStatus(port, n.ptr, key.ptr, api.memory.invalid_pointer(), 0) == 0
        assert api.GetLastError() == getattr(C, decide("gqcs_bad_out_pointer"))
        assert dequeue(api, port)[:5] == (1, POISON, 1, 2, 3)


class TestCancellation:
    def test_closesocket_cancels_pending(self, api, pair, decide):
        """closesocket.md: pending operations complete through their mechanism with the cancel status."""
        client, server, _ = pair
        port = make_iocp(api, server)
        ovl = overlapped(api)
        _post_recv(api, server, ovl)
        assert api.closesocket(server) == 0
        ok, err, n, key, o = dequeue(api, port)
        expected = C.ERROR_OPERATION_ABORTED if decide("close_cancel_status") == "cancelled" \
            else C.ERROR_CONNECTION_ABORTED
        assert (ok, err, n, key, o) == (0, expected, 0, 123, ovl)

    def test_closesocket_cancels_routine_with_wsa_code(self, api, pair, decide):
        """The routine gets the Winsock dialect of the cancel status."""
        client, server, _ = pair
        log = RoutineLog(api)
        ovl = overlapped(api)
        _post_recv(api, server, ovl, log.ptr)
        api.closesocket(server)
        assert api.SleepEx(0, True) == C.WAIT_IO_COMPLETION
        expected = C.WSA_OPERATION_ABORTED if decide("close_cancel_status") == "cancelled" else C.WSAECONNABORTED
        assert log.calls == [(expected, 0, ovl, 0)]

    def test_cancelioex(self, api, pair):
        """CancelIoEx: cancels the matching request (ERROR_OPERATION_ABORTED); nothing left is ERROR_NOT_FOUND."""
        client, server, _ = pair
        port = make_iocp(api, server)
        ovl1, ovl2 = overlapped(api), overlapped(api)
        _post_recv(api, server, ovl1)
        _post_recv(api, server, ovl2)
        assert api.CancelIoEx(server, ovl2) == 1
        assert dequeue(api, port)[:5] == (0, C.ERROR_OPERATION_ABORTED, 0, 123, ovl2)
        assert api.CancelIoEx(server, 0) == 1
        assert dequeue(api, port)[4] == ovl1
        assert api.CancelIoEx(server, 0) == 0 and api.GetLastError() == C.ERROR_NOT_FOUND
        assert api.CancelIoEx(0xDEADBEEF, 0) == 0 and api.GetLastError() == C.ERROR_INVALID_HANDLE

    def test_each_request_completes_exactly_once(self, api, pair):
        """A request cancelled and then 'completed' by data is indicated once only."""
        client, server, _ = pair
        log = RoutineLog(api)
        ovl = overlapped(api)
        _post_recv(api, server, ovl, log.ptr)
        api.CancelIoEx(server, ovl)
        _send(api, client, b"late")
        while api.SleepEx(10, True) == C.WAIT_IO_COMPLETION:
            pass
        assert len(log.calls) == 1 and log.calls[0][0] == C.WSA_OPERATION_ABORTED


def test_sleepex_alertable_returns_io_completion_after_routine(api, tcp):
    """SleepEx page: WAIT_IO_COMPLETION when APCs ran, 0 when the interval elapsed."""
    assert api.SleepEx(5, True) == 0
    log = RoutineLog(api)
    api.WSAIoctl(tcp, C.FIONBIO, dword(api, 0).ptr, 4, 0, 0, dword(api).ptr, overlapped(api), log.ptr)
    assert api.SleepEx(C.INFINITE, True) == C.WAIT_IO_COMPLETION
    assert len(log.calls) == 1


def _entries(api, count):
    """An OVERLAPPED_ENTRY array of `count`, every byte POISON's, and a ULONG for the count removed."""
    arr = Guarded(api, count * OVERLAPPED_ENTRY.size)
    api.memory.write(arr.ptr, struct.pack("<I", POISON) * (count * OVERLAPPED_ENTRY.size // 4))
    return arr, dword(api)


def _count_when_empty(decide) -> int:
    """*ulNumEntriesRemoved of a GetQueuedCompletionStatusEx that removed nothing (gqcsex_count_when_empty)."""
    return 1 if decide("gqcsex_count_when_empty") == "one" else 0


def _dequeue_ex(api, port, count, timeout_ms=0, alertable=False):
    """(result, error, [(key, overlapped, status, bytes)] of the entries removed, the count written).

    The status is Internal's low half: IO_STATUS_BLOCK's 32-bit Status shares it with a pointer, and
    only the Status is written (Wine 8.0 and the simulator leave the high half as it was)."""
    arr, removed = _entries(api, count)
    api.WSASetLastError(POISON)
    ok = api.GetQueuedCompletionStatusEx(port, arr.ptr, count, removed.ptr, timeout_ms, alertable)
    error = api.GetLastError()
    n = removed.u32()
    got = []
    for i in range(min(n, count)):
        e = OVERLAPPED_ENTRY.unpack(arr.read()[i * OVERLAPPED_ENTRY.size:])
        got.append((e["lpCompletionKey"], e["lpOverlapped"], e["Internal"] & 0xFFFFFFFF,
                    e["dwNumberOfBytesTransferred"]))
    return ok, error, got, n


class TestGetQueuedCompletionStatusEx:
    """The GetQueuedCompletionStatusEx page (https://learn.microsoft.com/en-us/windows/win32/api/ioapiset/nf-ioapiset-getqueuedcompletionstatusex)
    and Wine dlls/ntdll/tests/file.c test_set_io_completion (NtRemoveIoCompletionEx, which it calls)."""

    def test_batch_in_order_up_to_ulcount(self, api):
        """Up to ulCount packets, oldest first; ulNumEntriesRemoved says how many; the rest stay queued."""
        port = api.CreateIoCompletionPort(C.INVALID_HANDLE_VALUE, 0, 0, 0)
        for i in range(3):
            assert api.PostQueuedCompletionStatus(port, 10 + i, 20 + i, 0x1000 * (i + 1)) == 1
        ok, err, got, n = _dequeue_ex(api, port, 2)
        assert (ok, err, n) == (1, POISON, 2)
        assert got == [(20, 0x1000, 0, 10), (21, 0x2000, 0, 11)]
        ok, err, got, n = _dequeue_ex(api, port, 4)
        assert (ok, n, got) == (1, 1, [(22, 0x3000, 0, 12)])

    def test_empty_port_times_out(self, api, decide):
        """dwMilliseconds passes with no packet: FALSE, WAIT_TIMEOUT (258); *ulNumEntriesRemoved 0 or 1
        (test_set_io_completion: count <= 1), which one is decision point gqcsex_count_when_empty."""
        port = api.CreateIoCompletionPort(C.INVALID_HANDLE_VALUE, 0, 0, 0)
        ok, err, _got, n = _dequeue_ex(api, port, 2, timeout_ms=10)
        assert (ok, err, n) == (0, C.WAIT_TIMEOUT, _count_when_empty(decide))

    def test_argument_errors(self, api, decide):
        """A handle that is not a port: ERROR_INVALID_HANDLE. ulCount 0: decision point gqcsex_zero_count.
        Neither removes the packet."""
        port = api.CreateIoCompletionPort(C.INVALID_HANDLE_VALUE, 0, 0, 0)
        api.PostQueuedCompletionStatus(port, 1, 2, 3)
        arr, removed = _entries(api, 1)
        rc = api.GetQueuedCompletionStatusEx(port, arr.ptr, 0, removed.ptr, 0, False)
        if decide("gqcsex_zero_count") == "empty_success":
            assert (rc, removed.u32(), arr.read()[:8]) == (1, 1, struct.pack("<I", POISON) * 2)
        else:
            assert rc == 0 and api.GetLastError() == C.ERROR_INVALID_PARAMETER
        assert api.GetQueuedCompletionStatusEx(0xDEADBEEF, arr.ptr, 1, removed.ptr, 0, False) == 0
        assert api.GetLastError() == C.ERROR_INVALID_HANDLE
        assert _dequeue_ex(api, port, 1)[2] == [(2, 3, 0, 1)]      # the packet is still there

    def test_failed_operation_status_in_entry(self, api, pair):
        """A cancelled WSARecv's packet: the call succeeds; Internal carries the NTSTATUS."""
        client, server, _ = pair
        port = make_iocp(api, server, key=9)
        ovl = overlapped(api)
        _post_recv(api, server, ovl)
        assert api.CancelIoEx(server, ovl) == 1
        ok, err, got, n = _dequeue_ex(api, port, 4, timeout_ms=1000)
        assert (ok, err, n, got) == (1, POISON, 1, [(9, ovl, C.STATUS_CANCELLED, 0)])

    def test_alertable_wait_runs_apcs(self, api, tcp, decide):
        """fAlertable TRUE and no entries: an alertable wait; a queued routine runs, FALSE and
        WAIT_IO_COMPLETION. fAlertable FALSE leaves it queued (test_set_io_completion)."""
        port = api.CreateIoCompletionPort(C.INVALID_HANDLE_VALUE, 0, 0, 0)
        log = RoutineLog(api)
        ovl = overlapped(api)
        assert api.WSAIoctl(tcp, C.FIONREAD, 0, 0, Guarded(api, 4).ptr, 4, dword(api).ptr, ovl, log.ptr) == 0
        ok, err, _got, _n = _dequeue_ex(api, port, 2)
        assert (ok, err, log.calls) == (0, C.WAIT_TIMEOUT, [])
        ok, err, _got, n = _dequeue_ex(api, port, 2, alertable=True)
        assert (ok, err, n) == (0, C.WAIT_IO_COMPLETION, _count_when_empty(decide))
        assert len(log.calls) == 1 and log.calls[0][2] == ovl

    def test_apc_first_until_thread_associated(self, api, tcp):
        """test_set_io_completion: with an APC queued and a packet waiting, a thread that never removed
        a packet from this port runs the APC; once it has, it gets the packet and the APC waits."""
        port = api.CreateIoCompletionPort(C.INVALID_HANDLE_VALUE, 0, 0, 0)
        log = RoutineLog(api)
        ioctl = lambda: api.WSAIoctl(tcp, C.FIONREAD, 0, 0, Guarded(api, 4).ptr, 4, dword(api).ptr,
                                     overlapped(api), log.ptr)
        assert ioctl() == 0
        api.PostQueuedCompletionStatus(port, 1, 2, 3)
        assert _dequeue_ex(api, port, 2, alertable=True)[:2] == (0, C.WAIT_IO_COMPLETION)
        assert len(log.calls) == 1
        assert _dequeue_ex(api, port, 2, alertable=True)[2] == [(2, 3, 0, 1)]    # now associated
        assert ioctl() == 0
        api.PostQueuedCompletionStatus(port, 4, 5, 6)
        assert _dequeue_ex(api, port, 2, alertable=True)[2] == [(5, 6, 0, 4)]
        assert len(log.calls) == 1
        assert api.SleepEx(0, True) == C.WAIT_IO_COMPLETION and len(log.calls) == 2
