"""ws2_32's own checks, before any provider sees the call.

docs/windows-observed.md §A (items 1-9) and docs/decisions.md §4 'order of checks':
WSANOTINITIALISED, then the handle, then lpcbBytesReturned, then the code.
"""
import struct

import pytest

from harness.conformance.support import POISON, Guarded, RoutineLog, dword, overlapped
from harness.winsock import constants as C

CODES = [C.FIONREAD, C.SIOCATMARK, C.FIONBIO, C.SIO_KEEPALIVE_VALS, 0xDEADBEEF, C.SIO_FLUSH,
         C.SIO_BASE_HANDLE, C.SIO_GET_EXTENSION_FUNCTION_POINTER,
         C.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS, C.SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT,
         C.SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS]


@pytest.mark.parametrize("code", CODES, ids=hex)
def test_null_bytes_returned_is_efault(api, tcp, code):
    """Items 1 and 4: NULL lpcbBytesReturned fails with WSAEFAULT, before the code is looked at."""
    out = Guarded(api, 16)
    api.WSASetLastError(POISON)
    assert api.WSAIoctl(tcp, code, 0, 0, out.ptr, 16, 0, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEFAULT
    assert out.read() == b"\xcc" * 16 and out.guards_intact()


@pytest.mark.parametrize("code", CODES, ids=hex)
def test_null_bytes_returned_with_overlapped_is_efault_and_posts_nothing(api, tcp, code):
    """Items 2 and 3: the pointer is required even for overlapped calls; no APC, no packet, OVERLAPPED untouched."""
    log = RoutineLog(api)
    ovl = overlapped(api)
    port = api.CreateIoCompletionPort(tcp, 0, 123, 0)
    assert api.WSAIoctl(tcp, code, 0, 0, 0, 0, 0, ovl, log.ptr) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEFAULT
    assert api.SleepEx(0, True) == 0
    assert log.calls == []
    assert api.memory.read_u64(ovl) == POISON
    n, key, o = dword(api), Guarded(api, 8), Guarded(api, 8)
    assert api.GetQueuedCompletionStatus(port, n.ptr, key.ptr, o.ptr, 0) == 0
    assert api.GetLastError() == C.WAIT_TIMEOUT


@pytest.mark.parametrize("bad", ["invalid", "kernel", "readonly"])
def test_unwritable_bytes_returned_is_efault(api, tcp, bad):
    """WSAIoctl page: WSAEFAULT when lpcbBytesReturned is not wholly in valid user memory."""
    mem = api.memory
    if bad == "invalid":
        ptr = mem.invalid_pointer()
    elif bad == "kernel":
        ptr = 0xFFFFF80000001000
    else:
        ptr = mem.alloc(4, prot="r") if hasattr(mem, "protect") else pytest.skip("no read-only memory")
    assert api.WSAIoctl(tcp, C.FIONREAD, 0, 0, Guarded(api, 4).ptr, 4, ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEFAULT


@pytest.mark.parametrize("handle", [0, 0xDEADBEEF, C.INVALID_SOCKET, 0xFFFFFFFF])
def test_invalid_handle_is_enotsock_before_pointer_checks(api, handle, decide):
    """Item 5 ([INFERRED]: ReactOS ws2_32 layering), decision point wsaioctl_check_order: the handle is
    validated before lpcbBytesReturned and FIONREAD's output, or after them (Wine 8.0)."""
    n = dword(api)
    handle_first = decide("wsaioctl_check_order") == "handle_first"
    pseudo = handle & 0xFFFFFFFF == 0xFFFFFFFF         # the process pseudo-handle: no buffer check before it
    assert api.WSAIoctl(handle, C.FIONREAD, 0, 0, 0, 0, 0, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == (C.WSAENOTSOCK if handle_first else C.WSAEFAULT)
    assert api.WSAIoctl(handle, C.FIONREAD, 0, 0, 0, 0, n.ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == (C.WSAENOTSOCK if handle_first or pseudo else C.WSAEFAULT)
    assert api.WSAIoctl(handle, C.FIONREAD, 0, 0, Guarded(api, 4).ptr, 4, n.ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAENOTSOCK
    assert n.u32() == POISON


def test_event_handle_is_not_a_socket(api):
    """Item 6/8: ws2_32 keeps its own socket table; an event handle is WSAENOTSOCK."""
    event = api.WSACreateEvent()
    assert api.WSAIoctl(event, C.FIONREAD, 0, 0, Guarded(api, 4).ptr, 4, dword(api).ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAENOTSOCK


def test_closed_socket_is_enotsock(api, tcp):
    """closesocket.md: the handle is gone; calls on it fail with WSAENOTSOCK (handles are not reused here)."""
    assert api.closesocket(tcp) == 0
    assert api.WSAIoctl(tcp, C.FIONREAD, 0, 0, Guarded(api, 4).ptr, 4, dword(api).ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAENOTSOCK
    assert api.closesocket(tcp) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAENOTSOCK


def test_cleanup_destroys_sockets(api, tcp):
    """Item 9: after the last WSACleanup sockets are gone; a second cleanup is WSANOTINITIALISED."""
    assert api.WSACleanup() == 0
    assert api.WSAIoctl(tcp, C.FIONREAD, 0, 0, 0, 0, dword(api).ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSANOTINITIALISED
    assert api.WSACleanup() == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSANOTINITIALISED
    data = api.memory.alloc(408)
    assert api.WSAStartup(0x0202, data) == 0
    assert api.WSAIoctl(tcp, C.FIONREAD, 0, 0, Guarded(api, 4).ptr, 4, dword(api).ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAENOTSOCK


def test_not_initialised_comes_first(api, tcp):
    """docs/decisions.md §4: WSANOTINITIALISED before the handle and pointer checks."""
    assert api.WSACleanup() == 0
    assert api.WSAIoctl(0xDEADBEEF, 0xDEADBEEF, 0, 0, 0, 0, 0, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSANOTINITIALISED
    assert api.socket(C.AF_INET, C.SOCK_STREAM, 0) == C.INVALID_SOCKET
    assert api.WSAGetLastError() == C.WSANOTINITIALISED


def test_startup_reference_counts(api):
    """WSAStartup page: each WSAStartup needs a WSACleanup; the version is negotiated down to 2.2."""
    data = Guarded(api, 408)
    assert api.WSAStartup(0x0303, data.ptr) == 0
    assert int.from_bytes(data.read(2), "little") == 0x0202
    assert data.guards_intact()
    assert api.WSACleanup() == 0
    s = api.socket(C.AF_INET, C.SOCK_DGRAM, 0)
    assert s != C.INVALID_SOCKET


@pytest.mark.parametrize("requested,negotiated", [
    (0x0001, 0x0001), (0x0101, 0x0101), (0x0201, 0x0101), (0xFF01, 0x0101), (0x0002, 0x0002), (0x0102, 0x0102),
    (0x0202, 0x0202), (0x0302, 0x0202), (0x0003, 0x0202), (0xFFFF, 0x0202)], ids=hex)
def test_startup_version_negotiation(api, requested, negotiated):
    """WSAStartup page: Ws2_32.dll supports 1.0, 1.1, 2.0, 2.1 and 2.2, and answers the highest of
    them not above the request; iMaxSockets/iMaxUdpDg are 32767/65467 for a 1.x caller, 0 for 2.x,
    and only the fields are written (lpVendorInfo untouched): ReactOS dll/win32/ws2_32/src/startup.c,
    whose 1.x values were "taken straight from a Winsock test app on Windows" (Wine 8.0 alike,
    found by tests/differential)."""
    data = Guarded(api, 408, fill=0xA5)
    assert api.WSAStartup(requested, data.ptr) == 0
    version, high, max_sockets, max_udp, vendor = struct.unpack_from("<HHHHQ", data.read(16))
    assert (version, high) == (negotiated, 0x0202)
    assert (max_sockets, max_udp) == ((32767, 65467) if requested & 0xFF == 1 else (0, 0))
    assert vendor == 0xA5A5A5A5A5A5A5A5
    assert data.read()[16:29] == b"WinSock 2.0\0\xA5" and data.read()[273:282] == b"Running\0\xA5"
    assert data.guards_intact()
    assert api.WSACleanup() == 0


def test_startup_bad_arguments(api):
    """WSAStartup page: WSAEFAULT for a bad lpWSAData, WSAVERNOTSUPPORTED for a major version 0 (with
    2.2 offered in wVersion: ReactOS dll/win32/ws2_32/src/startup.c); returned, not via last error."""
    assert api.WSAStartup(0x0202, 0) == C.WSAEFAULT
    assert api.WSAStartup(0x0202, api.memory.invalid_pointer()) == C.WSAEFAULT
    data = api.memory.alloc(408)
    assert api.WSAStartup(0x0000, data) == C.WSAVERNOTSUPPORTED
    assert api.memory.read(data, 4) == b"\x02\x02\x02\x02"
    assert api.WSAStartup(0x0300, data) == C.WSAVERNOTSUPPORTED


def test_last_error_is_per_thread(api):
    """WSAGetLastError page: the error is per thread."""
    other = api.new_thread("other") if hasattr(api, "new_thread") else pytest.skip("needs simulated threads")
    api.WSASetLastError(11)
    with api.as_thread(other):
        assert api.WSAGetLastError() == 0
        api.WSASetLastError(22)
    assert api.WSAGetLastError() == 11


def test_success_clears_last_error(api, tcp):
    """Item 119: a successful WSAIoctl sets the last error to 0."""
    api.WSASetLastError(POISON)
    assert api.WSAIoctl(tcp, C.FIONREAD, 0, 0, Guarded(api, 4).ptr, 4, dword(api).ptr, 0, 0) == 0
    assert api.WSAGetLastError() == 0
