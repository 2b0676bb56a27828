"""NTSTATUS and the two error dialects it is reported in.

An overlapped operation ends with an NTSTATUS in OVERLAPPED.Internal.
WSAGetOverlappedResult and completion routines report it as a Winsock code;
GetQueuedCompletionStatus reports the Win32 code (RtlNtStatusToDosError).
docs/windows-observed.md ("Two error dialects"): STATUS_NOT_SUPPORTED reaches a completion
routine as 10045 but GetQueuedCompletionStatus as 50 (items 13, 14, 54, 55).
"""
from __future__ import annotations

from harness.winsock import constants as C

# NTSTATUS -> (Winsock error, Win32 error)
_MAP = {
    C.STATUS_SUCCESS: (0, 0),
    C.STATUS_PENDING: (C.WSA_IO_PENDING, C.ERROR_IO_PENDING),
    C.STATUS_NOT_SUPPORTED: (C.WSAEOPNOTSUPP, C.ERROR_NOT_SUPPORTED),            # items 13, 14
    C.STATUS_BUFFER_TOO_SMALL: (C.WSAEFAULT, C.ERROR_INSUFFICIENT_BUFFER),      # item 54
    C.STATUS_BUFFER_OVERFLOW: (C.WSAEMSGSIZE, C.ERROR_MORE_DATA),
    C.STATUS_CANCELLED: (C.WSA_OPERATION_ABORTED, C.ERROR_OPERATION_ABORTED),
    C.STATUS_CONNECTION_ABORTED: (C.WSAECONNABORTED, C.ERROR_CONNECTION_ABORTED),
    C.STATUS_LOCAL_DISCONNECT: (C.WSAECONNABORTED, C.ERROR_NETNAME_DELETED),
    C.STATUS_REMOTE_DISCONNECT: (C.WSAECONNRESET, C.ERROR_NETNAME_DELETED),
    C.STATUS_CONNECTION_RESET: (C.WSAECONNRESET, C.ERROR_NETNAME_DELETED),
    C.STATUS_CONNECTION_REFUSED: (C.WSAECONNREFUSED, C.ERROR_CONNECTION_REFUSED),
    C.STATUS_INVALID_PARAMETER: (C.WSAEINVAL, C.ERROR_INVALID_PARAMETER),
    C.STATUS_INVALID_HANDLE: (C.WSAENOTSOCK, C.ERROR_INVALID_HANDLE),
    C.STATUS_ACCESS_DENIED: (C.WSAEACCES, C.ERROR_ACCESS_DENIED),
    C.STATUS_NETWORK_BUSY: (C.WSAENETDOWN, 54),
    C.STATUS_NETWORK_UNREACHABLE: (C.WSAENETUNREACH, 1231),
    C.STATUS_INVALID_CONNECTION: (C.WSAENOTCONN, 1229),
    C.STATUS_IO_TIMEOUT: (C.WSAETIMEDOUT, 121),
    C.STATUS_NOT_FOUND: (C.ERROR_NOT_FOUND, C.ERROR_NOT_FOUND),
    # FWP's NTSTATUS facility maps to the FWP_E_* HRESULTs (assumed for the Win32 side).
    C.STATUS_FWP_NOT_FOUND: (C.FWP_E_NOT_FOUND, C.FWP_E_NOT_FOUND & 0xFFFFFFFF),
}

# Winsock error -> NTSTATUS, for operations that fail after going pending.
_FROM_WSA = {wsa: status for status, (wsa, _) in _MAP.items() if status not in (
    C.STATUS_LOCAL_DISCONNECT, C.STATUS_REMOTE_DISCONNECT, C.STATUS_PENDING)}
_FROM_WSA[C.ERROR_INSUFFICIENT_BUFFER] = C.STATUS_BUFFER_TOO_SMALL
_FROM_WSA[C.WSAEINTR] = C.STATUS_CANCELLED
_FROM_WSA[C.WSAESHUTDOWN] = C.STATUS_INVALID_CONNECTION
_FROM_WSA[C.WSAENOBUFS] = 0xC000009A   # STATUS_INSUFFICIENT_RESOURCES
_EXTRA = {0xC000009A: (C.WSAENOBUFS, 1450)}


def to_winsock(status: int) -> int:
    if status in _MAP:
        return _MAP[status][0]
    if status in _EXTRA:
        return _EXTRA[status][0]
    return C.WSAEINVAL if status & 0xC0000000 == 0xC0000000 else 0


def to_win32(status: int) -> int:
    if status in _MAP:
        return _MAP[status][1]
    if status in _EXTRA:
        return _EXTRA[status][1]
    return C.ERROR_INVALID_PARAMETER if status & 0xC0000000 == 0xC0000000 else 0


def from_winsock(error: int) -> int:
    return _FROM_WSA.get(error, C.STATUS_INVALID_PARAMETER)


def nt_success(status: int) -> bool:
    """NT_SUCCESS: success and informational codes; warnings and errors are failures."""
    return not status & 0x80000000
