"""The `WinsockApi` protocol: the C-shaped surface every provider offers.

Functions keep their Win32 names and parameter order (docs/decisions.md §3).
Pointers are ints in the calling process's address space, 0 is NULL; the C
return value is returned; out-parameters are written into memory. The simulator
(`sim.SimulatedWinsock`) and the winsock-agent provider (`harness.agent`: a
real ws2_32 under Wine or on Windows) implement it, so conformance cases and
proxies written against it run on either.
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

CompletionRoutine = Callable[[int, int, int, int], None]


@runtime_checkable
class Memory(Protocol):
    """Memory of the calling process. `prot` is "rw", "r" or "none" (PAGE_NOACCESS)."""

    def alloc(self, size: int, prot: str = "rw") -> int: ...
    def protect(self, ptr: int, prot: str) -> None: ...
    def free(self, ptr: int) -> None: ...
    def read(self, ptr: int, n: int) -> bytes: ...
    def write(self, ptr: int, data: bytes) -> None: ...
    def read_u32(self, ptr: int) -> int: ...
    def write_u32(self, ptr: int, value: int) -> None: ...
    def read_u64(self, ptr: int) -> int: ...
    def write_u64(self, ptr: int, value: int) -> None: ...
    def invalid_pointer(self) -> int: ...


# The C prototypes, in order; used by the agent provider, the trace recorder
# and the tests that attack every pointer and size argument.
PROTOTYPES: dict[str, tuple[str, str]] = {
    # name: (return C type, 'TYPE name, ...')
    "WSAStartup": ("int", "WORD wVersionRequested, LPVOID lpWSAData"),
    "WSACleanup": ("int", ""),
    "WSAGetLastError": ("int", ""),
    "WSASetLastError": ("void", "int iError"),
    "socket": ("SOCKET", "int af, int type, int protocol"),
    "WSASocketW": ("SOCKET", "int af, int type, int protocol, LPVOID lpProtocolInfo, UINT g, DWORD dwFlags"),
    "bind": ("int", "SOCKET s, LPVOID name, int namelen"),
    "listen": ("int", "SOCKET s, int backlog"),
    "accept": ("SOCKET", "SOCKET s, LPVOID addr, LPVOID addrlen"),
    "connect": ("int", "SOCKET s, LPVOID name, int namelen"),
    "closesocket": ("int", "SOCKET s"),
    "shutdown": ("int", "SOCKET s, int how"),
    "send": ("int", "SOCKET s, LPVOID buf, int len, int flags"),
    "recv": ("int", "SOCKET s, LPVOID buf, int len, int flags"),
    "sendto": ("int", "SOCKET s, LPVOID buf, int len, int flags, LPVOID to, int tolen"),
    "recvfrom": ("int", "SOCKET s, LPVOID buf, int len, int flags, LPVOID from_, LPVOID fromlen"),
    "getsockname": ("int", "SOCKET s, LPVOID name, LPVOID namelen"),
    "getpeername": ("int", "SOCKET s, LPVOID name, LPVOID namelen"),
    "setsockopt": ("int", "SOCKET s, int level, int optname, LPVOID optval, int optlen"),
    "getsockopt": ("int", "SOCKET s, int level, int optname, LPVOID optval, LPVOID optlen"),
    "ioctlsocket": ("int", "SOCKET s, LONG cmd, LPVOID argp"),
    "WSAIoctl": ("int", "SOCKET s, DWORD dwIoControlCode, LPVOID lpvInBuffer, DWORD cbInBuffer, "
                        "LPVOID lpvOutBuffer, DWORD cbOutBuffer, LPVOID lpcbBytesReturned, "
                        "LPVOID lpOverlapped, LPVOID lpCompletionRoutine"),
    "WSARecv": ("int", "SOCKET s, LPVOID lpBuffers, DWORD dwBufferCount, LPVOID lpNumberOfBytesRecvd, "
                       "LPVOID lpFlags, LPVOID lpOverlapped, LPVOID lpCompletionRoutine"),
    "WSASend": ("int", "SOCKET s, LPVOID lpBuffers, DWORD dwBufferCount, LPVOID lpNumberOfBytesSent, "
                       "DWORD dwFlags, LPVOID lpOverlapped, LPVOID lpCompletionRoutine"),
    "WSAGetOverlappedResult": ("BOOL", "SOCKET s, LPVOID lpOverlapped, LPVOID lpcbTransfer, BOOL fWait, "
                                       "LPVOID lpdwFlags"),
    "WSACreateEvent": ("WSAEVENT", ""),
    "WSACloseEvent": ("BOOL", "WSAEVENT hEvent"),
    "WSASetEvent": ("BOOL", "WSAEVENT hEvent"),
    "WSAResetEvent": ("BOOL", "WSAEVENT hEvent"),
    "WSAWaitForMultipleEvents": ("DWORD", "DWORD cEvents, LPVOID lphEvents, BOOL fWaitAll, DWORD dwTimeout, "
                                          "BOOL fAlertable"),
    "WSAPoll": ("int", "LPVOID fdArray, ULONG fds, INT timeout"),
    "select": ("int", "int nfds, LPVOID readfds, LPVOID writefds, LPVOID exceptfds, LPVOID timeout"),
    "WSAEventSelect": ("int", "SOCKET s, WSAEVENT hEventObject, LONG lNetworkEvents"),
    "WSAEnumNetworkEvents": ("int", "SOCKET s, WSAEVENT hEventObject, LPVOID lpNetworkEvents"),
    "SleepEx": ("DWORD", "DWORD dwMilliseconds, BOOL bAlertable"),
    "CreateIoCompletionPort": ("HANDLE", "HANDLE FileHandle, HANDLE ExistingCompletionPort, "
                                         "ULONG_PTR CompletionKey, DWORD NumberOfConcurrentThreads"),
    "GetQueuedCompletionStatus": ("BOOL", "HANDLE CompletionPort, LPVOID lpNumberOfBytesTransferred, "
                                          "LPVOID lpCompletionKey, LPVOID lpOverlapped, DWORD dwMilliseconds"),
    "GetQueuedCompletionStatusEx": ("BOOL", "HANDLE CompletionPort, LPVOID lpCompletionPortEntries, "
                                            "ULONG ulCount, LPVOID ulNumEntriesRemoved, DWORD dwMilliseconds, "
                                            "BOOL fAlertable"),
    "PostQueuedCompletionStatus": ("BOOL", "HANDLE CompletionPort, DWORD dwNumberOfBytesTransferred, "
                                           "ULONG_PTR dwCompletionKey, LPVOID lpOverlapped"),
    "SetFileCompletionNotificationModes": ("BOOL", "HANDLE FileHandle, UCHAR Flags"),
    "CancelIoEx": ("BOOL", "HANDLE hFile, LPVOID lpOverlapped"),
    "CloseHandle": ("BOOL", "HANDLE hObject"),
    "GetLastError": ("DWORD", ""),
    "GetCurrentProcessId": ("DWORD", ""),
    "GetCurrentThreadId": ("DWORD", ""),
}

# Which DLL exports each function of PROTOTYPES (everything else is ws2_32): the
# winsock-agent resolves each name there; tests/test_contract_prototypes.py checks
# it against mingw-w64's import libraries.
KERNEL32_FUNCTIONS = frozenset({
    "SleepEx", "CreateIoCompletionPort", "GetQueuedCompletionStatus", "GetQueuedCompletionStatusEx",
    "PostQueuedCompletionStatus",
    "SetFileCompletionNotificationModes", "CancelIoEx", "CloseHandle", "GetLastError",
    "GetCurrentProcessId", "GetCurrentThreadId",
})
DLL_OF: dict[str, str] = {name: "kernel32" if name in KERNEL32_FUNCTIONS else "ws2_32" for name in PROTOTYPES}

# Extension functions, called through `api.call(fnptr, *args)`.
EXTENSION_PROTOTYPES: dict[str, tuple[str, str]] = {
    "WSARecvMsg": ("int", "SOCKET s, LPVOID lpMsg, LPVOID lpdwNumberOfBytesRecvd, LPVOID lpOverlapped, "
                          "LPVOID lpCompletionRoutine"),
    "WSASendMsg": ("int", "SOCKET Handle, LPVOID lpMsg, DWORD dwFlags, LPVOID lpNumberOfBytesSent, "
                          "LPVOID lpOverlapped, LPVOID lpCompletionRoutine"),
    # mswsock.h LPFN_ACCEPTEX / LPFN_CONNECTEX / LPFN_GETACCEPTEXSOCKADDRS (Win64 widths).
    "AcceptEx": ("BOOL", "SOCKET sListenSocket, SOCKET sAcceptSocket, LPVOID lpOutputBuffer, "
                         "DWORD dwReceiveDataLength, DWORD dwLocalAddressLength, DWORD dwRemoteAddressLength, "
                         "LPVOID lpdwBytesReceived, LPVOID lpOverlapped"),
    "ConnectEx": ("BOOL", "SOCKET s, LPVOID name, int namelen, LPVOID lpSendBuffer, DWORD dwSendDataLength, "
                          "LPVOID lpdwBytesSent, LPVOID lpOverlapped"),
    "GetAcceptExSockaddrs": ("void", "LPVOID lpOutputBuffer, DWORD dwReceiveDataLength, "
                                     "DWORD dwLocalAddressLength, DWORD dwRemoteAddressLength, "
                                     "LPVOID LocalSockaddr, LPVOID LocalSockaddrLength, "
                                     "LPVOID RemoteSockaddr, LPVOID RemoteSockaddrLength"),
}


@runtime_checkable
class WinsockApi(Protocol):
    """What a provider offers. Each method mirrors the Win32 function."""

    memory: Memory

    def completion_routine(self, fn: CompletionRoutine) -> int:
        """A routine pointer that calls `fn(dwError, cbTransferred, lpOverlapped, dwFlags)`."""

    def call(self, fnptr: int, *args: int) -> int:
        """Call an extension function pointer obtained with SIO_GET_EXTENSION_FUNCTION_POINTER."""

    def WSAStartup(self, wVersionRequested: int, lpWSAData: int) -> int: ...
    def WSACleanup(self) -> int: ...
    def WSAGetLastError(self) -> int: ...
    def WSASetLastError(self, iError: int) -> None: ...
    def socket(self, af: int, type: int, protocol: int) -> int: ...
    def WSASocketW(self, af: int, type: int, protocol: int, lpProtocolInfo: int, g: int, dwFlags: int) -> int: ...
    def bind(self, s: int, name: int, namelen: int) -> int: ...
    def listen(self, s: int, backlog: int) -> int: ...
    def accept(self, s: int, addr: int, addrlen: int) -> int: ...
    def connect(self, s: int, name: int, namelen: int) -> int: ...
    def closesocket(self, s: int) -> int: ...
    def shutdown(self, s: int, how: int) -> int: ...
    def send(self, s: int, buf: int, len: int, flags: int) -> int: ...
    def recv(self, s: int, buf: int, len: int, flags: int) -> int: ...
    def sendto(self, s: int, buf: int, len: int, flags: int, to: int, tolen: int) -> int: ...
    def recvfrom(self, s: int, buf: int, len: int, flags: int, from_: int, fromlen: int) -> int: ...
    def getsockname(self, s: int, name: int, namelen: int) -> int: ...
    def getpeername(self, s: int, name: int, namelen: int) -> int: ...
    def setsockopt(self, s: int, level: int, optname: int, optval: int, optlen: int) -> int: ...
    def getsockopt(self, s: int, level: int, optname: int, optval: int, optlen: int) -> int: ...
    def ioctlsocket(self, s: int, cmd: int, argp: int) -> int: ...
    def WSAIoctl(self, s: int, dwIoControlCode: int, lpvInBuffer: int, cbInBuffer: int,
                 lpvOutBuffer: int, cbOutBuffer: int, lpcbBytesReturned: int,
                 lpOverlapped: int, lpCompletionRoutine: int) -> int: ...
    def WSARecv(self, s: int, lpBuffers: int, dwBufferCount: int, lpNumberOfBytesRecvd: int,
                lpFlags: int, lpOverlapped: int, lpCompletionRoutine: int) -> int: ...
    def WSASend(self, s: int, lpBuffers: int, dwBufferCount: int, lpNumberOfBytesSent: int,
                dwFlags: int, lpOverlapped: int, lpCompletionRoutine: int) -> int: ...
    def WSAGetOverlappedResult(self, s: int, lpOverlapped: int, lpcbTransfer: int, fWait: int,
                               lpdwFlags: int) -> int: ...
    def WSACreateEvent(self) -> int: ...
    def WSACloseEvent(self, hEvent: int) -> int: ...
    def WSASetEvent(self, hEvent: int) -> int: ...
    def WSAResetEvent(self, hEvent: int) -> int: ...
    def WSAWaitForMultipleEvents(self, cEvents: int, lphEvents: int, fWaitAll: int, dwTimeout: int,
                                 fAlertable: int) -> int: ...
    def WSAPoll(self, fdArray: int, fds: int, timeout: int) -> int: ...
    def select(self, nfds: int, readfds: int, writefds: int, exceptfds: int, timeout: int) -> int: ...
    def WSAEventSelect(self, s: int, hEventObject: int, lNetworkEvents: int) -> int: ...
    def WSAEnumNetworkEvents(self, s: int, hEventObject: int, lpNetworkEvents: int) -> int: ...
    def SleepEx(self, dwMilliseconds: int, bAlertable: int) -> int: ...
    def CreateIoCompletionPort(self, FileHandle: int, ExistingCompletionPort: int, CompletionKey: int,
                               NumberOfConcurrentThreads: int) -> int: ...
    def GetQueuedCompletionStatus(self, CompletionPort: int, lpNumberOfBytesTransferred: int,
                                  lpCompletionKey: int, lpOverlapped: int, dwMilliseconds: int) -> int: ...
    def GetQueuedCompletionStatusEx(self, CompletionPort: int, lpCompletionPortEntries: int, ulCount: int,
                                    ulNumEntriesRemoved: int, dwMilliseconds: int, fAlertable: int) -> int: ...
    def PostQueuedCompletionStatus(self, CompletionPort: int, dwNumberOfBytesTransferred: int,
                                   dwCompletionKey: int, lpOverlapped: int) -> int: ...
    def SetFileCompletionNotificationModes(self, FileHandle: int, Flags: int) -> int: ...
    def CancelIoEx(self, hFile: int, lpOverlapped: int) -> int: ...
    def CloseHandle(self, hObject: int) -> int: ...
    def GetLastError(self) -> int: ...
    def GetCurrentProcessId(self) -> int: ...
    def GetCurrentThreadId(self) -> int: ...
