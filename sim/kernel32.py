"""kernel32 for a simulated process: events and waits, completion ports, handles, thread facts.

WSACreateEvent and its siblings are ws2_32's names for kernel32 events, and
WSAWaitForMultipleEvents is WaitForMultipleObjectsEx, so they live here too.
"""
from __future__ import annotations

import struct

from harness.winsock import constants as C
from harness.winsock.ctype import cfunc
from harness.winsock.layouts import OVERLAPPED_ENTRY
from sim.c_entry import ws2_call
from sim import overlapped as ov
from sim import status as st
from sim.kernel import CompletionPort, Event
from sim.decision_points import DECISIONS

# Decision points this module reads (sim/decision_points.py), checked when it is imported.
_APCS_FIRST = DECISIONS["wait_satisfaction_order"].choice("apcs_first")
_ZERO_COUNT_EMPTY = DECISIONS["gqcsex_zero_count"].choice("empty_success")
_EMPTY_COUNT_ONE = DECISIONS["gqcsex_count_when_empty"].choice("one")

_ENTRY_SIZE = OVERLAPPED_ENTRY.size
_ENTRY_HEAD = struct.Struct("<QQI")     # lpCompletionKey, lpOverlapped, Internal's low half
_INFORMATION = struct.Struct("<Q")


class Kernel32:
    @cfunc("")
    def GetLastError(self):
        with self._lock:
            return self.process.current_thread().last_error & 0xFFFFFFFF

    @cfunc("")
    def GetCurrentProcessId(self):
        return self.process.pid

    @cfunc("")
    def GetCurrentThreadId(self):
        with self._lock:
            self.kernel.enter()
            return self.process.current_thread().tid

    @cfunc("")
    def WSACreateEvent(self):
        with self._lock:
            thread = self._enter()
            return self._ok(thread, self.process.new_handle(Event(False, True)))

    def _event(self, h):
        obj = self.process.handles.get(h)
        return obj if getattr(obj, "kind", "") == "event" else None

    @cfunc("WSAEVENT hEvent")
    def WSACloseEvent(self, hEvent):
        with self._lock:
            thread = self._enter()
            if self._event(hEvent) is None:
                return self._err(thread, C.WSA_INVALID_HANDLE, C.FALSE)
            del self.process.handles[hEvent]
            return C.TRUE

    @cfunc("WSAEVENT hEvent")
    def WSASetEvent(self, hEvent):
        with self._lock:
            thread = self._enter()
            event = self._event(hEvent)
            if event is None:
                return self._err(thread, C.WSA_INVALID_HANDLE, C.FALSE)
            event.signalled = True
            self.kernel.poke()
            return C.TRUE

    @cfunc("WSAEVENT hEvent")
    def WSAResetEvent(self, hEvent):
        with self._lock:
            thread = self._enter()
            event = self._event(hEvent)
            if event is None:
                return self._err(thread, C.WSA_INVALID_HANDLE, C.FALSE)
            event.signalled = False
            return C.TRUE

    def _waitable(self, h):
        obj = self.process.handles.get(h)
        kind = getattr(obj, "kind", "")
        if kind == "event":
            return lambda: obj.signalled
        if kind == "socket":
            return lambda: obj.file_signalled
        return None

    @ws2_call("DWORD cEvents, LPVOID lphEvents, BOOL fWaitAll, DWORD dwTimeout, BOOL fAlertable", C.WSA_WAIT_FAILED, on_socket=False)
    def WSAWaitForMultipleEvents(self, thread, cEvents, lphEvents, fWaitAll, dwTimeout, fAlertable):
        mem = self.memory
        if cEvents == 0 or cEvents > C.WSA_MAXIMUM_WAIT_EVENTS:
            return self._err(thread, C.WSA_INVALID_PARAMETER, C.WSA_WAIT_FAILED)
        raw = mem.kread(lphEvents, cEvents * 8) if lphEvents else None
        # Decision point wait_bad_handle_array: an unreadable lphEvents is WSA_INVALID_PARAMETER.
        if raw is None:
            return self._err(thread, C.WSA_INVALID_PARAMETER, C.WSA_WAIT_FAILED)
        handles = struct.unpack(f"<{cEvents}Q", raw)
        probes = [self._waitable(h) for h in handles]
        if any(p is None for p in probes):
            return self._err(thread, C.WSA_INVALID_HANDLE, C.WSA_WAIT_FAILED)
        if fWaitAll and len(set(handles)) != len(handles):
            return self._err(thread, C.WSA_INVALID_PARAMETER, C.WSA_WAIT_FAILED)

        def ready():
            if fWaitAll:
                return 0 if all(p() for p in probes) else None
            for i, p in enumerate(probes):
                if p():
                    return i
            return None
        return self._wait(thread, ready, dwTimeout, bool(fAlertable), "WSAWaitForMultipleEvents",
                          C.WSA_WAIT_EVENT_0, C.WSA_WAIT_TIMEOUT)

    def _wait(self, thread, ready, timeout, alertable, what, base, timeout_value):
        if alertable and thread.apcs and self.process.profile.wait_satisfaction_order == _APCS_FIRST:
            self.kernel.run_apcs(thread)
            return C.WAIT_IO_COMPLETION
        kind, value = self.kernel.wait(thread, ready, timeout, alertable, what)
        if kind == "ready":
            return base + value
        if kind == "apc":
            return C.WAIT_IO_COMPLETION
        return timeout_value

    @cfunc("DWORD dwMilliseconds, BOOL bAlertable")
    def SleepEx(self, dwMilliseconds, bAlertable):
        with self._lock:
            thread = self._enter()
            if dwMilliseconds == 0 and not (bAlertable and thread.apcs):
                return 0
            return self._wait(thread, lambda: None, dwMilliseconds, bool(bAlertable), "SleepEx", 0, 0)

    def _port(self, h):
        obj = self.process.handles.get(h)
        return obj if getattr(obj, "kind", "") == "iocp" else None

    @cfunc("HANDLE FileHandle, HANDLE ExistingCompletionPort, ULONG_PTR CompletionKey, "
           "DWORD NumberOfConcurrentThreads")
    def CreateIoCompletionPort(self, FileHandle, ExistingCompletionPort, CompletionKey,
                               NumberOfConcurrentThreads):
        with self._lock:
            thread = self._enter()
            process = self.process
            if FileHandle == C.INVALID_HANDLE_VALUE:
                if ExistingCompletionPort:
                    return self._err(thread, C.ERROR_INVALID_PARAMETER, 0)
                return process.new_handle(CompletionPort())
            sock = process.handles.get(FileHandle)
            if getattr(sock, "kind", "") != "socket":
                return self._err(thread, C.ERROR_INVALID_HANDLE, 0)
            if ExistingCompletionPort:
                port = self._port(ExistingCompletionPort)
                if port is None:
                    return self._err(thread, C.ERROR_INVALID_HANDLE, 0)
                port_handle = ExistingCompletionPort
            else:
                port = CompletionPort()
                port_handle = None
            if sock.port is not None or not sock.overlapped_attr:
                # Already associated, or a synchronous-I/O file: NtSetInformationFile refuses.
                return self._err(thread, C.ERROR_INVALID_PARAMETER, 0)
            if port_handle is None:
                port_handle = process.new_handle(port)
            sock.port = port
            sock.port_key = CompletionKey
            return port_handle

    @cfunc("HANDLE CompletionPort, LPVOID lpNumberOfBytesTransferred, LPVOID lpCompletionKey, "
           "LPVOID lpOverlapped, DWORD dwMilliseconds")
    def GetQueuedCompletionStatus(self, CompletionPort, lpNumberOfBytesTransferred, lpCompletionKey,
                                  lpOverlapped, dwMilliseconds):
        with self._lock:
            thread = self._enter()
            mem = self.memory
            port = self._port(CompletionPort)
            if port is None:
                if lpOverlapped and mem.check(lpOverlapped, 8, True):
                    mem.kwrite_u64(lpOverlapped, 0)
                return self._err(thread, C.ERROR_INVALID_HANDLE, C.FALSE)
            if not all(p and mem.check(p, n, True) for p, n in
                       ((lpNumberOfBytesTransferred, 4), (lpCompletionKey, 8), (lpOverlapped, 8))):
                # Decision point gqcs_bad_out_pointer: ERROR_NOACCESS, and the packet stays queued.
                return self._err(thread, C.ERROR_NOACCESS, C.FALSE)
            kind, _ = self.kernel.wait(thread, lambda: True if port.packets or port.closed else None,
                                       dwMilliseconds, False, "GetQueuedCompletionStatus")
            if kind != "ready" or not port.packets:
                mem.kwrite_u64(lpOverlapped, 0)
                code = C.ERROR_ABANDONED_WAIT_0 if port.closed else C.WAIT_TIMEOUT
                return self._err(thread, code, C.FALSE)
            packet = port.packets.popleft()
            thread.port = port
            mem.kwrite_u32(lpNumberOfBytesTransferred, packet.information)
            mem.kwrite_u64(lpCompletionKey, packet.key)
            mem.kwrite_u64(lpOverlapped, packet.overlapped)
            if st.nt_success(packet.status):
                return C.TRUE          # the last error is left alone (docs/windows-observed.md item 121)
            return self._err(thread, st.to_win32(packet.status), C.FALSE)

    def _removed_when_empty(self) -> int:
        """*ulNumEntriesRemoved of a GetQueuedCompletionStatusEx that removed nothing (decision point
        gqcsex_count_when_empty)."""
        return 1 if self.process.profile.gqcsex_count_when_empty == _EMPTY_COUNT_ONE else 0

    @cfunc("HANDLE CompletionPort, LPVOID lpCompletionPortEntries, ULONG ulCount, LPVOID ulNumEntriesRemoved, "
           "DWORD dwMilliseconds, BOOL fAlertable")
    def GetQueuedCompletionStatusEx(self, CompletionPort, lpCompletionPortEntries, ulCount, ulNumEntriesRemoved,
                                    dwMilliseconds, fAlertable):
        """Up to ulCount packets at once, each as an OVERLAPPED_ENTRY {key, overlapped, NTSTATUS, bytes}.

        The GetQueuedCompletionStatusEx page: an alertable call performs an alertable wait only when no
        entries are available, and returns when an APC ran (WAIT_IO_COMPLETION). Wine
        dlls/ntdll/tests/file.c test_set_io_completion (run on Windows): with an APC queued and a
        packet waiting, a thread not yet associated with this port (it never removed a packet from it)
        runs the APC first; once associated, it gets the packet; a call that ran APCs does not
        associate it. Packet statuses travel in the entries: the call itself succeeds.
        """
        with self._lock:
            thread = self._enter()
            mem = self.memory
            port = self._port(CompletionPort)
            if port is None:
                return self._err(thread, C.ERROR_INVALID_HANDLE, C.FALSE)
            if ulCount == 0:
                if self.process.profile.gqcsex_zero_count == _ZERO_COUNT_EMPTY:
                    mem.kwrite_u32(ulNumEntriesRemoved, 1)
                    return C.TRUE
                return self._err(thread, C.ERROR_INVALID_PARAMETER, C.FALSE)
            if not (lpCompletionPortEntries and ulNumEntriesRemoved
                    and mem.check(lpCompletionPortEntries, _ENTRY_SIZE, True) and mem.check(ulNumEntriesRemoved, 4, True)):
                # Decision point gqcs_bad_out_pointer, as for GetQueuedCompletionStatus: no packet is removed.
                return self._err(thread, C.ERROR_NOACCESS, C.FALSE)
            packets = port.packets
            alertable = bool(fAlertable)
            if alertable and thread.apcs and not (packets and thread.port is port):
                self.kernel.run_apcs(thread)
                mem.kwrite_u32(ulNumEntriesRemoved, self._removed_when_empty())
                return self._err(thread, C.WAIT_IO_COMPLETION, C.FALSE)
            if not packets:
                kind, _ = self.kernel.wait(thread, lambda: True if packets or port.closed else None,
                                           dwMilliseconds, alertable, "GetQueuedCompletionStatusEx")
                if kind != "ready" or not packets:
                    mem.kwrite_u32(ulNumEntriesRemoved, self._removed_when_empty())
                    code = (C.WAIT_IO_COMPLETION if kind == "apc"
                            else C.ERROR_ABANDONED_WAIT_0 if port.closed else C.WAIT_TIMEOUT)
                    return self._err(thread, code, C.FALSE)
            # Only as many entries as the array (checked whole) holds.
            room = min(ulCount, len(packets))
            if room > 1 and not mem.check(lpCompletionPortEntries, room * _ENTRY_SIZE, True):
                return self._err(thread, C.ERROR_NOACCESS, C.FALSE)
            # Internal is IO_STATUS_BLOCK's union of a 32-bit Status and a pointer: only its low half is
            # written; dwNumberOfBytesTransferred is the low half of the 64-bit Information, written whole.
            pop = packets.popleft
            out = bytearray(mem.kread(lpCompletionPortEntries, room * _ENTRY_SIZE))
            at = 0
            for _ in range(room):
                p = pop()
                _ENTRY_HEAD.pack_into(out, at, p.key, p.overlapped, p.status & 0xFFFFFFFF)
                _INFORMATION.pack_into(out, at + 24, p.information)
                at += _ENTRY_SIZE
            mem.kwrite(lpCompletionPortEntries, bytes(out))
            mem.kwrite_u32(ulNumEntriesRemoved, room)
            thread.port = port
            return C.TRUE          # the last error is left alone, as by GetQueuedCompletionStatus

    @cfunc("HANDLE CompletionPort, DWORD dwNumberOfBytesTransferred, ULONG_PTR dwCompletionKey, "
           "LPVOID lpOverlapped")
    def PostQueuedCompletionStatus(self, CompletionPort, dwNumberOfBytesTransferred, dwCompletionKey,
                                   lpOverlapped):
        from sim.kernel import CompletionPacket
        with self._lock:
            thread = self._enter()
            port = self._port(CompletionPort)
            if port is None:
                return self._err(thread, C.ERROR_INVALID_HANDLE, C.FALSE)
            port.packets.append(CompletionPacket(dwCompletionKey, dwNumberOfBytesTransferred, lpOverlapped, 0))
            self.kernel.poke()
            return C.TRUE

    @cfunc("HANDLE FileHandle, UCHAR Flags")
    def SetFileCompletionNotificationModes(self, FileHandle, Flags):
        with self._lock:
            thread = self._enter()
            sock = self.process.handles.get(FileHandle)
            if getattr(sock, "kind", "") != "socket":
                return self._err(thread, C.ERROR_INVALID_HANDLE, C.FALSE)
            if Flags & ~(C.FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | C.FILE_SKIP_SET_EVENT_ON_HANDLE):
                return self._err(thread, C.ERROR_INVALID_PARAMETER, C.FALSE)
            sock.notify_modes |= Flags
            return C.TRUE

    @cfunc("HANDLE hFile, LPVOID lpOverlapped")
    def CancelIoEx(self, hFile, lpOverlapped):
        with self._lock:
            thread = self._enter()
            sock = self.process.handles.get(hFile)
            if getattr(sock, "kind", "") != "socket":
                return self._err(thread, C.ERROR_INVALID_HANDLE, C.FALSE)
            victims = [r for r in sock.pending if not lpOverlapped or r.overlapped == lpOverlapped]
            if not victims:
                return self._err(thread, C.ERROR_NOT_FOUND, C.FALSE)
            for req in victims:
                ov.cancel(req)
            return C.TRUE

    @cfunc("HANDLE hObject")
    def CloseHandle(self, hObject):
        with self._lock:
            thread = self._enter()
            process = self.process
            obj = process.handles.get(hObject)
            kind = getattr(obj, "kind", "")
            if kind == "socket":
                self._close(obj)
                return C.TRUE
            if kind in ("event", "iocp", "thread"):
                del process.handles[hObject]
                if kind == "iocp":
                    obj.closed = True
                    self.kernel.poke()
                return C.TRUE
            return self._err(thread, C.ERROR_INVALID_HANDLE, C.FALSE)
