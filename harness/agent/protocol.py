"""The winsock-agent wire protocol, mirrored from driver-fixtures/winsock-agent/src/protocol.h.

Frame: u32 payload length (little endian), then the payload; at most
MAX_FRAME bytes either way. Request payload: u32 id, u32 thread tag, u16 op,
u16 reserved, body. Response payload: u32 id, u32 thread tag, u16 op,
u16 status, body. The agent speaks first: a HELLO (id 0) with its protocol
version and build id. tests/agent/test_protocol_mirror.py checks that these
constants agree with protocol.h.
"""
from __future__ import annotations

import struct

PROTOCOL_VERSION = 1
HELLO_MAGIC = b"WFPA"
MAX_FRAME = 16 << 20
MAX_ARGS = 12
REQUEST_HEADER = 12
RESPONSE_HEADER = 12
ALIGN = 16

OP_HELLO = 0
OP_PING = 1
OP_RESOLVE = 2
OP_CALL = 3
OP_NEW_THREAD = 4
OP_END_THREAD = 5
OP_ROUTINE = 6
OP_ALLOC = 7
OP_FREE = 8
OP_PROTECT = 9
OP_READ = 10
OP_WRITE = 11
OP_INVALID = 12
OP_RETIRE = 13
OP_EXIT = 14

OP_NAMES = {v: k[3:] for k, v in dict(globals()).items() if k.startswith("OP_") and isinstance(v, int)}

ST_OK = 0
ST_ERROR = 1

PROT = {"rw": 0, "r": 1, "none": 2}

HEADER = struct.Struct("<IIIHH")            # length, id, tag, op, status/reserved
U64 = struct.Struct("<Q")
# CALL response: rax, last error, exception code, exception address, info[0], info[1], n completions, lost.
CALL_RESULT = struct.Struct("<QIIQQQII")
COMPLETION = struct.Struct("<QIIQII")        # routine, dwError, cbTransferred, lpOverlapped, dwFlags, pad
NEW_THREAD_RESULT = struct.Struct("<IIQ")    # tag, tid, handle
HELLO_FIXED = struct.Struct("<4sIIIIIII")    # magic, version, pid, page, granularity, max frame, max args, elevated


class AgentError(RuntimeError):
    """The agent could not serve a request (it died, hung, or broke the protocol)."""


class AgentProtocolError(AgentError):
    """The peer sent something that is not this protocol (or too much of it)."""


class AgentVersionError(AgentError):
    """The agent speaks another protocol version."""


class AgentDied(AgentError):
    """The agent process ended while requests were outstanding."""


class AgentTimeout(AgentError):
    """The agent did not answer in time; it has been killed."""


class AgentRequestError(AgentError):
    """The agent refused a request (an unknown function pointer, a bad address, ...)."""


class AgentUnavailable(AgentError):
    """A tool the target needs is missing; `package` names the Debian package that provides it."""

    def __init__(self, message: str, package: str = ""):
        super().__init__(message)
        self.package = package


class AgentAccessViolation(OSError):
    """An exception (usually an access violation) was raised inside a call the
    agent made and reached the agent's guard frame: on Windows the process
    would have died. ctypes reports the same as OSError ('exception: access
    violation ...'), so this is an OSError too."""

    def __init__(self, message: str, code: int, address: int, info: tuple[int, int]):
        super().__init__(message)
        self.code = code
        self.address = address
        self.info = info


EXCEPTION_NAMES = {
    0xC0000005: "access violation", 0xC0000006: "in-page error", 0xC000001D: "illegal instruction",
    0xC0000096: "privileged instruction", 0xC0000094: "integer divide by zero",
    0x80000002: "datatype misalignment", 0xC00000FD: "stack overflow", 0xC0000374: "heap corruption",
    0xC0000409: "stack buffer overrun",
}


def describe_exception(code: int, address: int, info0: int, info1: int) -> str:
    """ctypes' wording for Windows SEH exceptions ('access violation writing 0x...')."""
    name = EXCEPTION_NAMES.get(code)
    if code in (0xC0000005, 0xC0000006):
        verb = {0: "reading", 1: "writing", 8: "executing"}.get(info0, f"accessing({info0})")
        return f"exception: {name} {verb} 0x{info1:016X} (at 0x{address:X})"
    if name:
        return f"exception: {name} (code 0x{code:08X} at 0x{address:X})"
    return f"exception: code 0x{code:08X} at 0x{address:X}"


def str8(data: bytes, pos: int) -> tuple[str, int]:
    n = data[pos]
    end = pos + 1 + n
    if end > len(data):
        raise struct.error("string runs past the end of the frame")
    return data[pos + 1:end].decode("utf-8", "replace"), end


def pack_str8(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"{text!r}: longer than 255 bytes")
    return bytes([len(raw)]) + raw
