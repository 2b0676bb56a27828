"""Win64 structure layouts (sizes, field offsets, field formats).

Each layout is written once here and read by both providers: the simulator
marshals caller memory with it, the agent provider and the conformance cases
read and write agent memory with it. tests/test_contract_mingw.py compiles static asserts generated from
these tables with x86_64-w64-mingw32-gcc, so an offset that drifts from the
real headers fails the build.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    fmt: str          # struct format for one item ('<Q', '<I', '16s', ...)
    c_name: str = ""  # member path in C when it differs (e.g. 'u.Pointer')

    @property
    def size(self) -> int:
        return struct.calcsize(self.fmt)


@dataclass(frozen=True)
class Layout:
    name: str               # the C type name
    size: int
    fields: tuple[Field, ...]
    header: str = "winsock2.h"
    by_name: dict = field(default_factory=dict, compare=False, repr=False)
    # The whole structure as one struct.Struct (fields in offset order, pad bytes between), when its
    # fields do not overlap and share one byte order: one C call instead of one per field.
    whole: struct.Struct = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self):
        for f in self.fields:
            self.by_name[f.name] = f
        object.__setattr__(self, "whole", _whole_struct(self))

    def offset(self, name: str) -> int:
        return self.by_name[name].offset

    def pack(self, **values) -> bytes:
        whole = self.whole
        if whole is not None and values.keys() == self.by_name.keys():     # every field given
            return whole.pack(*[values[f.name] for f in self.fields])
        buf = bytearray(self.size)
        for name, value in values.items():
            f = self.by_name[name]
            struct.pack_into(f.fmt, buf, f.offset, value)
        return bytes(buf)

    def unpack(self, data: bytes) -> dict:
        whole = self.whole
        if whole is not None and len(data) >= self.size:
            return dict(zip(self.by_name, whole.unpack_from(data)))
        return {f.name: struct.unpack_from(f.fmt, data, f.offset)[0] for f in self.fields}

    def get(self, data: bytes, name: str):
        f = self.by_name[name]
        return struct.unpack_from(f.fmt, data, f.offset)[0]


def _whole_struct(layout: Layout):
    order = {f.fmt[0] for f in layout.fields if f.fmt[0] in "<>"}
    if len(order) != 1 or [f.offset for f in layout.fields] != sorted(f.offset for f in layout.fields):
        return None
    fmt, at = order.pop(), 0
    for f in layout.fields:
        if f.offset < at:
            return None                       # overlapping fields (a union)
        fmt += f"{f.offset - at}x" * (f.offset > at) + f.fmt.lstrip("<>")
        at = f.offset + f.size
    if at > layout.size:
        return None
    whole = struct.Struct(fmt + f"{layout.size - at}x" * (layout.size > at))
    return whole if whole.size == layout.size else None


PTR = "<Q"      # pointers, SIZE_T, ULONG_PTR, HANDLE, SOCKET on x64
U64 = "<Q"
U32 = "<I"
I32 = "<i"
U16 = "<H"
I16 = "<h"      # SHORT

GUID = Layout("GUID", 16, (
    Field("Data1", 0, U32), Field("Data2", 4, U16), Field("Data3", 6, U16),
    Field("Data4", 8, "8s"),
), header="guiddef.h")

WSAOVERLAPPED = Layout("WSAOVERLAPPED", 32, (
    Field("Internal", 0, PTR), Field("InternalHigh", 8, PTR),
    Field("Offset", 16, U32, "Offset"), Field("OffsetHigh", 20, U32, "OffsetHigh"),
    Field("hEvent", 24, PTR),
))

# GetQueuedCompletionStatusEx's array element (minwinbase.h): the packet's key, OVERLAPPED, status
# (the NTSTATUS: Internal) and byte count.
OVERLAPPED_ENTRY = Layout("OVERLAPPED_ENTRY", 32, (
    Field("lpCompletionKey", 0, PTR), Field("lpOverlapped", 8, PTR), Field("Internal", 16, PTR),
    Field("dwNumberOfBytesTransferred", 24, U32),
), header="minwinbase.h")

WSABUF = Layout("WSABUF", 16, (Field("len", 0, U32), Field("buf", 8, PTR)))

WSAMSG = Layout("WSAMSG", 56, (
    Field("name", 0, PTR), Field("namelen", 8, I32),
    Field("lpBuffers", 16, PTR), Field("dwBufferCount", 24, U32),
    Field("Control_len", 32, U32, "Control.len"), Field("Control_buf", 40, PTR, "Control.buf"),
    Field("dwFlags", 48, U32),
), header="ws2def.h")

WSACMSGHDR = Layout("WSACMSGHDR", 16, (
    Field("cmsg_len", 0, PTR), Field("cmsg_level", 8, I32), Field("cmsg_type", 12, I32),
), header="ws2def.h")

SOCKADDR = Layout("SOCKADDR", 16, (Field("sa_family", 0, U16), Field("sa_data", 2, "14s")),
                  header="ws2def.h")

SOCKADDR_IN = Layout("SOCKADDR_IN", 16, (
    Field("sin_family", 0, U16), Field("sin_port", 2, ">H"),
    Field("sin_addr", 4, "4s"), Field("sin_zero", 8, "8s"),
), header="ws2def.h")

SOCKADDR_IN6 = Layout("SOCKADDR_IN6", 28, (
    Field("sin6_family", 0, U16), Field("sin6_port", 2, ">H"),
    Field("sin6_flowinfo", 4, U32), Field("sin6_addr", 8, "16s"),
    Field("sin6_scope_id", 24, U32),
), header="ws2ipdef.h")

SOCKADDR_STORAGE = Layout("SOCKADDR_STORAGE", 128, (Field("ss_family", 0, U16),), header="ws2def.h")

IN_PKTINFO = Layout("IN_PKTINFO", 8, (Field("ipi_addr", 0, "4s"), Field("ipi_ifindex", 4, U32)),
                    header="ws2ipdef.h")

IN6_PKTINFO = Layout("IN6_PKTINFO", 20, (Field("ipi6_addr", 0, "16s"), Field("ipi6_ifindex", 16, U32)),
                     header="ws2ipdef.h")

WSADATA = Layout("WSADATA", 408, (
    Field("wVersion", 0, U16), Field("wHighVersion", 2, U16),
    Field("iMaxSockets", 4, U16), Field("iMaxUdpDg", 6, U16),
    Field("lpVendorInfo", 8, PTR),
    Field("szDescription", 16, "257s"), Field("szSystemStatus", 273, "129s"),
))

WSATHREADID = Layout("WSATHREADID", 16, (Field("ThreadHandle", 0, PTR), Field("Reserved", 8, PTR)),
                     header="ws2spi.h")

TCP_KEEPALIVE = Layout("struct tcp_keepalive", 12, (
    Field("onoff", 0, U32), Field("keepalivetime", 4, U32), Field("keepaliveinterval", 8, U32),
), header="mstcpip.h")

LINGER = Layout("LINGER", 4, (Field("l_onoff", 0, U16), Field("l_linger", 2, U16)))

# WSAPoll's array element (winsock2.h, Vista+; typedef struct pollfd ... WSAPOLLFD).
WSAPOLLFD = Layout("WSAPOLLFD", 16, (Field("fd", 0, PTR), Field("events", 8, I16), Field("revents", 10, I16)))

# select's socket set: a u_int count, then FD_SETSIZE (64) SOCKETs; a caller may declare a larger
# array and set fd_count past 64 (Wine dlls/ws2_32/tests/sock.c test_select passes 200).
FD_SET = Layout("fd_set", 520, (Field("fd_count", 0, U32), Field("fd_array", 8, PTR, "fd_array[0]")))
FD_ARRAY_OFFSET = 8

# select's timeout: two LONGs (32-bit on Win64).
TIMEVAL = Layout("TIMEVAL", 8, (Field("tv_sec", 0, I32), Field("tv_usec", 4, I32)))

# WSAEnumNetworkEvents' result: the events, then one error per FD_*_BIT (FD_MAX_EVENTS = 10).
WSANETWORKEVENTS = Layout("WSANETWORKEVENTS", 44, (
    Field("lNetworkEvents", 0, I32), Field("iErrorCode", 4, I32, "iErrorCode[0]")))

# SIO_ADDRESS_LIST_QUERY's answer (ws2def.h): a count, then iAddressCount SOCKET_ADDRESSes (each a
# pointer and a length); the sockaddrs the pointers name follow in the same buffer (the IOCTL's page).
SOCKET_ADDRESS = Layout("SOCKET_ADDRESS", 16, (Field("lpSockaddr", 0, PTR), Field("iSockaddrLength", 8, I32)),
                        header="ws2def.h")
SOCKET_ADDRESS_LIST = Layout("SOCKET_ADDRESS_LIST", 24, (
    Field("iAddressCount", 0, I32), Field("Address", 8, "16s", "Address[0]")), header="ws2def.h")

# SIO_GET_INTERFACE_LIST's array element (ws2ipdef.h): flags, then three sockaddr_gen unions of 24 bytes
# (sockaddr, sockaddr_in, sockaddr_in6_old); an IPv4 interface fills their sockaddr_in.
INTERFACE_INFO = Layout("INTERFACE_INFO", 76, (
    Field("iiFlags", 0, U32), Field("iiAddress", 4, "24s"), Field("iiBroadcastAddress", 28, "24s"),
    Field("iiNetmask", 52, "24s")), header="ws2ipdef.h")

ALL_LAYOUTS = (GUID, WSAOVERLAPPED, OVERLAPPED_ENTRY, WSABUF, WSAMSG, WSACMSGHDR, SOCKADDR, SOCKADDR_IN,
               SOCKADDR_IN6, SOCKADDR_STORAGE, IN_PKTINFO, IN6_PKTINFO, WSADATA,
               WSATHREADID, TCP_KEEPALIVE, LINGER, WSAPOLLFD, FD_SET, TIMEVAL, WSANETWORKEVENTS,
               SOCKET_ADDRESS, SOCKET_ADDRESS_LIST, INTERFACE_INFO)

POINTER_SIZE = 8

# --- WSA_CMSG_* arithmetic (ws2def.h) ---------------------------------------
# WSA_CMSGHDR_ALIGN rounds to the alignment of WSACMSGHDR (8 on x64),
# WSA_CMSGDATA_ALIGN to MAX_NATURAL_ALIGNMENT (8 on x64).
CMSGHDR_ALIGNMENT = 8
CMSGDATA_ALIGNMENT = 8


def WSA_CMSGHDR_ALIGN(length: int) -> int:
    return (length + CMSGHDR_ALIGNMENT - 1) & ~(CMSGHDR_ALIGNMENT - 1)


def WSA_CMSGDATA_ALIGN(length: int) -> int:
    return (length + CMSGDATA_ALIGNMENT - 1) & ~(CMSGDATA_ALIGNMENT - 1)


def WSA_CMSG_LEN(length: int) -> int:
    return WSA_CMSGDATA_ALIGN(WSACMSGHDR.size) + length


def WSA_CMSG_SPACE(length: int) -> int:
    return WSA_CMSGDATA_ALIGN(WSACMSGHDR.size + WSA_CMSGHDR_ALIGN(length))


def WSA_CMSG_DATA_OFFSET() -> int:
    """Offset of the data after a cmsg header: WSA_CMSG_DATA(c) - c."""
    return WSA_CMSGDATA_ALIGN(WSACMSGHDR.size)


def guid_bytes(u) -> bytes:
    """A uuid.UUID as the 16 bytes of a Windows GUID (mixed endian)."""
    return u.bytes_le


def pack_cmsgs(items) -> bytes:
    """Serialise [(level, type, data), ...] as a WSAMSG control buffer."""
    out = bytearray()
    for level, ctype, data in items:
        start = len(out)
        out += WSACMSGHDR.pack(cmsg_len=WSA_CMSG_LEN(len(data)), cmsg_level=level, cmsg_type=ctype)
        out += bytes(WSA_CMSG_DATA_OFFSET() - WSACMSGHDR.size)
        out += data
        out += bytes(start + WSA_CMSG_SPACE(len(data)) - len(out))
    return bytes(out)


def iter_cmsgs(control: bytes):
    """Walk a control buffer like WSA_CMSG_FIRSTHDR/NXTHDR; yields (level, type, data)."""
    pos = 0
    while pos + WSACMSGHDR.size <= len(control):
        hdr = WSACMSGHDR.unpack(control[pos:pos + WSACMSGHDR.size])
        length = hdr["cmsg_len"]
        if length < WSACMSGHDR.size or pos + length > len(control):
            return
        data = control[pos + WSA_CMSG_DATA_OFFSET(): pos + length]
        yield hdr["cmsg_level"], hdr["cmsg_type"], data
        pos += WSA_CMSGHDR_ALIGN(length)
