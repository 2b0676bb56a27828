"""Socket address outputs compared only as far as the call defines them.

getpeername, getsockname, accept and recvfrom write an address into a caller's buffer of *namelen
bytes and set *namelen to the address's length. What the buffer holds beyond the returned length is
not defined: the getpeername, getsockname, accept and recvfrom pages on learn.microsoft.com say only
that the name (of the returned length) is written, and no test run on Windows looks beyond it (Wine
dlls/ws2_32/tests/sock.c test_getpeername compares sizeof(struct sockaddr_in) bytes of a
SOCKADDR_STORAGE and the returned length). Wine zeroes the whole buffer (its ntdll's
sockaddr_from_unix clears the caller's length first), the simulator writes only the address: a
replay that compared those bytes would report a difference no program can rely on. So the bytes
from the returned length to the buffer's end are masked on both sides: set back to what they held
before the call, and a word left unchanged by that is no write at all.

WSARecvMsg writes the sender's address the same way, into WSAMSG.name with its length in
WSAMSG.namelen (the LPFN_WSARECVMSG page; harness.replay.msgname finds both), also when it fails
with WSAEMSGSIZE for a truncated datagram or control buffer, which still returns the datagram. The
region masked is the recording's: from the length the call returned, as the recording shows it,
to the length the buffer had; a call that returned no length (failed before writing, or pending)
leaves the length as it was and masks nothing. For a pending WSARecvMsg the length arrives when
the operation completes: harness.replay.asyncwrites masks what it carries with `mask_tokens`, once
the operation is complete on both sides.
"""
from __future__ import annotations

from . import msgname

# fn -> (index of the name buffer argument, index of the length pointer argument)
NAME_OUTPUTS = {"getpeername": (1, 2), "getsockname": (1, 2), "accept": (1, 2), "recvfrom": (4, 5)}
MSG_NAME_OUTPUTS = frozenset({"WSARecvMsg"})        # the name of the WSAMSG they are handed


def recorded_int(image: dict, sym, offset: int = 0, size: int = 4) -> int | None:
    """The little-endian integer the recording's bytes hold at a pointer symbol ["alloc", i, off] plus
    `offset`, or None where the symbol names no recorded allocation or the bytes lie outside it."""
    if not (isinstance(sym, list) and len(sym) == 3 and sym[0] == "alloc"):
        return None
    mem = image.get(sym[1])
    at = sym[2] + offset
    if mem is None or at < 0 or at + size > len(mem):
        return None
    return int.from_bytes(mem[at:at + size], "little")


def name_output(step: dict, image: dict, syms: dict | None = None):
    """Before the call: (name symbol, length symbol, the buffer's length) where `step` writes an
    address into a recorded allocation, else None. `image`: alloc index -> the recording's bytes;
    `syms`: alloc index -> {offset: symbol} in them (to reach a WSAMSG's name)."""
    where = NAME_OUTPUTS.get(step["fn"])
    if step.get("ext"):
        located = msgname.msg_name(step, syms or {}) if step["fn"] in MSG_NAME_OUTPUTS else None
        if located is None:
            return None
        name, length = located[1], located[2]
    elif where is None:
        return None
    else:
        name, length = step["args"][where[0]], step["args"][where[1]]
    if not all(isinstance(s, list) and s[0] == "alloc" for s in (name, length)):
        return None
    size = recorded_int(image, length)
    if size is None or not 0 < size < (1 << 31):
        return None
    return name, length, size


def undefined_region(output, image: dict):
    """After the call (the recording's bytes updated): (alloc index, start, end) of the name buffer's
    bytes beyond the returned length, or None when there are none."""
    name, length, size = output
    returned = recorded_int(image, length)
    if returned is None or returned >= size:
        return None
    return name[1], name[2] + returned, name[2] + size


def mask(runs: list, region, before: bytes) -> list:
    """Write runs with the bytes of `region` set back to `before` (the allocation before the call);
    a word that is then unchanged is dropped. Runs are 8-byte aligned in their allocation."""
    if region is None or before is None:
        return runs
    alloc, lo, hi = region
    out = []
    for run in runs:
        if run["alloc"] != alloc or run["offset"] >= hi or run["offset"] + len(run["hex"]) // 2 <= lo:
            out.append(run)
            continue
        data = bytes.fromhex(run["hex"])
        syms = dict((off, sym) for off, sym in run.get("syms", []))
        for off in range(0, len(data), 8):
            at = run["offset"] + off
            word = bytearray(data[off:off + 8])
            for i in range(len(word)):
                if lo <= at + i < hi and at + i < len(before):
                    word[i] = before[at + i]
            if bytes(word) == before[at:at + len(word)]:
                continue
            kept = [[0, syms[off]]] if off in syms and bytes(word) == data[off:off + 8] else []
            out.append({"alloc": alloc, "offset": at, "hex": bytes(word).hex(), "syms": kept})
    return out


def mask_tokens(tokens: dict, region, before: bytes) -> dict:
    """The same masking for words already compared as tokens ({"alloc{i}+{offset}": hex or symbol},
    harness.replay.replayer._tokens): in-region bytes set back to `before`, a word then unchanged
    dropped. A symbol (a pointer the call wrote) is left as it is. A new dict."""
    if region is None or before is None:
        return dict(tokens)
    alloc, lo, hi = region
    out = {}
    for key, value in tokens.items():
        index, at = key[5:].split("+")
        at = int(at)
        try:
            data = bytearray.fromhex(value)
        except ValueError:
            data = None
        if int(index) != alloc or data is None or at >= hi or at + len(data) <= lo:
            out[key] = value
            continue
        for i in range(len(data)):
            if lo <= at + i < hi and at + i < len(before):
                data[i] = before[at + i]
        if bytes(data) != before[at:at + len(data)]:
            out[key] = data.hex()
    return out
