"""Receives with no buffer, or a buffer of length 0.

Source: Wine dlls/ws2_32/tests/sock.c test_empty_recv, which runs on real Windows.
"""
import struct

from harness.conformance.support import Guarded, dword, internal, overlapped, tcp_pair
from harness.winsock import constants as C
from harness.winsock.layouts import WSABUF


def test_wsarecv_without_buffers_is_einval(api):
    """No buffers, with a NULL array or with a real one, is WSAEINVAL."""
    client, _server, _ = tcp_pair(api)
    flags = dword(api, 0)
    arr = api.memory.alloc(WSABUF.size)
    api.memory.write(arr, WSABUF.pack(len=0, buf=Guarded(api, 5).ptr))
    for lpBuffers in (0, arr):
        ovl = overlapped(api, api.WSACreateEvent())
        assert api.WSARecv(client, lpBuffers, 0, 0, flags.ptr, ovl, 0) == C.SOCKET_ERROR
        assert api.WSAGetLastError() == C.WSAEINVAL


def test_zero_length_buffer_waits_for_data_and_takes_none(api):
    """One buffer of length 0: the receive pends until data arrives and completes with 0
    bytes; with data there it completes at once with 0 bytes; the data stays for the next
    receive (recv(NULL, 0) returns 0 too)."""
    client, server, _ = tcp_pair(api)
    flags = dword(api, 0)
    arr = api.memory.alloc(WSABUF.size)
    api.memory.write(arr, WSABUF.pack(len=0, buf=Guarded(api, 5).ptr))
    event = api.WSACreateEvent()
    ovl = overlapped(api, event)
    assert api.WSARecv(client, arr, 1, 0, flags.ptr, ovl, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSA_IO_PENDING
    data = api.memory.alloc(5)
    api.memory.write(data, b"data\0")
    assert api.send(server, data, 5, 0) == 5
    events = api.memory.alloc(8)
    api.memory.write(events, struct.pack("<Q", event))
    assert api.WSAWaitForMultipleEvents(1, events, 0, 1000, 0) == C.WSA_WAIT_EVENT_0
    assert internal(api, ovl) == (C.STATUS_SUCCESS, 0)
    size = dword(api)
    assert api.WSARecv(client, arr, 1, size.ptr, flags.ptr, overlapped(api, event), 0) == 0
    assert size.u32() == 0
    assert api.recv(client, 0, 0, 0) == 0
    buf = Guarded(api, 5)
    assert api.recv(client, buf.ptr, 5, 0) == 5 and buf.read() == b"data\0"
