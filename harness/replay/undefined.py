"""Bytes of an argument a call leaves undefined: not compared by a replay.

Where Windows' documentation defines an output only in part, what a target writes in the rest is
no property of the Winsock under test, and two correct implementations differ there (Wine writes,
the simulator leaves the bytes as they were). A differing word (named by its argument,
harness.replay.params) is compared only on its defined bytes:

- ConnectEx's *lpdwBytesSent unless the call returned TRUE: the LPFN_CONNECTEX page defines it "on
  successful return" only (a pending ConnectEx reports its count through the completion);
- AcceptEx's lpOutputBuffer: in the receive area, the bytes beyond those received (the count the
  completion reports in the OVERLAPPED's InternalHigh); in each address slot, the bytes beyond the
  address: the GetAcceptExSockaddrs page says AcceptEx writes the addresses "in an internal format"
  that only GetAcceptExSockaddrs reads. The simulator writes the layout Wine's
  GetAcceptExSockaddrs reads (sim/mswsock.py _address_slot: a 4-byte length, then the sockaddr),
  so the length and the sockaddr are compared, the slot's remaining bytes are not.
"""
from __future__ import annotations

_SLOT_LENGTH = 4        # the int before the sockaddr in an address slot (sim/mswsock.py _address_slot)


def _u(image: dict, sym, offset: int, size: int) -> int | None:
    if not (isinstance(sym, list) and len(sym) == 3 and sym[0] == "alloc"):
        return None
    mem = image.get(sym[1])
    at = sym[2] + offset
    if mem is None or at < 0 or at + size > len(mem):
        return None
    return int.from_bytes(mem[at:at + size], "little")


def undefined_ranges(owner: dict, image: dict) -> list:
    """[(start, end)] offsets, relative to the argument's pointer, of the bytes the call leaves
    undefined in what `owner` (harness.replay.params.Region.label) points at. `image`: alloc index ->
    the recording's bytes now."""
    fn, param, args = owner["fn"], owner["param"], owner["args"]
    if fn == "ConnectEx" and param == "lpdwBytesSent" and owner.get("ret") != 1:
        return [(0, 4)]
    if fn == "AcceptEx" and param == "lpOutputBuffer":
        lengths = [args.get(n) for n in ("dwReceiveDataLength", "dwLocalAddressLength", "dwRemoteAddressLength")]
        if not all(type(n) is int and n >= 0 for n in lengths):
            return []
        receive, local, remote = lengths
        out = []
        received = _u(image, args.get("lpOverlapped"), 8, 8)      # InternalHigh, as the recording completed it
        if received is not None and received <= receive:
            out.append((received, receive))
        buffer = args.get("lpOutputBuffer")
        for start, size in ((receive, local), (receive + local, remote)):
            held = _u(image, buffer, start, _SLOT_LENGTH) if size >= _SLOT_LENGTH else None
            if held is not None and held <= size - _SLOT_LENGTH:
                out.append((start + _SLOT_LENGTH + held, start + size))
        return out
    return []
