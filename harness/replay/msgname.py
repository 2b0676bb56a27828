"""The socket address a WSAMSG names, found through the recording's memory.

WSARecvMsg writes the sender's address into the buffer WSAMSG.name points at and its length into
WSAMSG.namelen; WSASendMsg sends to the address WSAMSG.name points at (the LPFN_WSARECVMSG and
WSASendMsg pages). Neither address is an argument of the call: the replay reaches it through the
WSAMSG the call names, as the recording wrote it (the name pointer a symbol of a recorded
allocation), at the offsets of harness.winsock.layouts.WSAMSG. harness.replay.ports then treats that
buffer like the address arguments of recvfrom or sendto, harness.replay.names like their lengths.
"""
from __future__ import annotations

from harness.winsock.layouts import WSAMSG

# function -> (index of the socket argument, index of the lpMsg argument); both are extension functions
MSG_ARGS = {"WSARecvMsg": (0, 1), "WSASendMsg": (0, 1)}


def msg_name(step: dict, syms: dict):
    """(socket symbol, name symbol ["alloc", i, off], namelen symbol ["alloc", j, off]) of the WSAMSG a
    WSARecvMsg/WSASendMsg step names, where the WSAMSG and its name lie in recorded allocations, else
    None. `syms`: alloc index -> {offset: symbol} of the recording's memory before the call."""
    where = MSG_ARGS.get(step.get("fn")) if step.get("ext") else None
    args = step.get("args", [])
    if where is None or max(where) >= len(args):
        return None
    msg = args[where[1]]
    if not (isinstance(msg, list) and msg[:1] == ["alloc"]):
        return None
    name = syms.get(msg[1], {}).get(msg[2] + WSAMSG.offset("name"))
    if not (isinstance(name, list) and name[:1] == ["alloc"]):
        return None
    return args[where[0]], name, ["alloc", msg[1], msg[2] + WSAMSG.offset("namelen")]
