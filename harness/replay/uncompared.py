"""Bytes of an argument a replay does not compare: what the call leaves undefined, and what it
reports of the host's configuration.

Where Windows' documentation defines an output only in part, what a target writes in the rest is
no property of the Winsock under test, and two correct implementations differ there (Wine writes,
the simulator leaves the bytes as they were). Where a call reports the host's own configuration,
two hosts differ. A differing word (named by its argument, harness.replay.params) is compared only
on the other bytes:

- ConnectEx's *lpdwBytesSent unless the call returned TRUE: the LPFN_CONNECTEX page defines it "on
  successful return" only (a pending ConnectEx reports its count through the completion);
- AcceptEx's lpOutputBuffer: in the receive area, the bytes beyond those received (the count the
  completion reports in the OVERLAPPED's InternalHigh); in each address slot, the bytes beyond the
  address: the GetAcceptExSockaddrs page says AcceptEx writes the addresses "in an internal format"
  that only GetAcceptExSockaddrs reads. The simulator writes the layout Wine's
  GetAcceptExSockaddrs reads (sim/mswsock.py _address_slot: a 4-byte length, then the sockaddr),
  so the length and the sockaddr are compared, the slot's remaining bytes are not;
- the host's configuration: what SIO_ROUTING_INTERFACE_QUERY, SIO_ADDRESS_LIST_QUERY and
  SIO_GET_INTERFACE_LIST write (lpvOutBuffer up to cbOutBuffer, *lpcbBytesReturned) is the host's
  interfaces, their addresses and its routes (the simulated host's 192.0.2.10 and loopback, the
  machine's adapters under Wine), and so is the size they report, success or not; their return
  values and errors are compared, and each target's conformance run checks the rules that hold
  whatever the host (harness/conformance/test_interface_ioctls.py).
"""
from __future__ import annotations

from harness.winsock import constants as C

from .names import recorded_int

_SLOT_LENGTH = 4        # the int before the sockaddr in an address slot (sim/mswsock.py _address_slot)
_HOST_DESCRIBED = frozenset({C.SIO_ROUTING_INTERFACE_QUERY, C.SIO_ADDRESS_LIST_QUERY, C.SIO_GET_INTERFACE_LIST})


def _acceptex_buffer(args: dict, image: dict) -> list:
    lengths = [args.get(n) for n in ("dwReceiveDataLength", "dwLocalAddressLength", "dwRemoteAddressLength")]
    if not all(type(n) is int and n >= 0 for n in lengths):
        return []
    receive, local, remote = lengths
    out = []
    received = recorded_int(image, args.get("lpOverlapped"), 8, 8)      # InternalHigh, as the recording completed it
    if received is not None and received <= receive:
        out.append((received, receive))
    buffer = args.get("lpOutputBuffer")
    for start, size in ((receive, local), (receive + local, remote)):
        held = recorded_int(image, buffer, start, _SLOT_LENGTH) if size >= _SLOT_LENGTH else None
        if held is not None and held <= size - _SLOT_LENGTH:
            out.append((start + _SLOT_LENGTH + held, start + size))
    return out


def _host_described(param: str, args: dict) -> list:
    code = args.get("dwIoControlCode")
    if type(code) is not int or (code & 0xFFFFFFFF) not in _HOST_DESCRIBED:
        return []
    if param == "lpcbBytesReturned":
        return [(0, 4)]
    if param == "lpvOutBuffer" and type(args.get("cbOutBuffer")) is int:
        return [(0, args["cbOutBuffer"] & 0xFFFFFFFF)]
    return []


def uncompared_ranges(owner: dict, image: dict) -> list:
    """[(start, end)] offsets, relative to the argument's pointer, of the bytes a replay does not
    compare in what `owner` (harness.replay.params.Region.label) points at. `image`: alloc index ->
    the recording's bytes now."""
    fn, param, args = owner["fn"], owner["param"], owner["args"]
    if fn == "ConnectEx" and param == "lpdwBytesSent" and owner.get("ret") != 1:
        return [(0, 4)]
    if fn == "AcceptEx" and param == "lpOutputBuffer":
        return _acceptex_buffer(args, image)
    if fn == "WSAIoctl":
        return _host_described(param, args)
    return []
