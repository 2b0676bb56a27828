"""Which argument a word a call wrote belongs to: "ConnectEx lpOverlapped.InternalHigh".

A replay compares what calls write as 8-byte words of the test's allocations ("alloc7+32"). To say
which known deviation a differing word is (harness/replay/classify.py), the word is named by the
call argument that points at it: the call that wrote it, or, for what a pending operation writes
when it completes, the call that started the operation. An argument's region runs from its pointer
for the size of what it points at: 4 bytes for a DWORD/int out-count, an OVERLAPPED's 32 bytes (by
field), otherwise up to the next pointer argument in the same allocation or the allocation's end.
A word belongs to an argument when that argument's region is the only one it overlaps; the
conformance cases put canaries around every buffer and check them, so a word shared by a DWORD and
its canary is the DWORD's.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.winsock.layouts import WSAOVERLAPPED

# Out-pointers to a 4-byte count, length or flags word (the contract's parameter names).
DWORD_OUTPUTS = frozenset({
    "lpdwBytesSent", "lpdwBytesReceived", "lpcbTransfer", "lpdwFlags", "lpcbBytesReturned",
    "lpNumberOfBytesRecvd", "lpNumberOfBytesSent", "lpFlags", "ulNumEntriesRemoved", "lpNumberOfBytes",
    "lpNumberOfBytesTransferred", "optlen", "namelen", "lpFromlen", "fromlen", "addrlen", "lpdwNumberOfBytesSent",
})
# Parameters that point at an OVERLAPPED the call starts an operation on or names.
OVERLAPPED_PARAMS = frozenset({"lpOverlapped"})
_FIELDS = tuple((f.name, f.offset, f.offset + (8 if f.name in ("Internal", "InternalHigh", "hEvent") else 4))
                for f in WSAOVERLAPPED.fields)


@dataclass(frozen=True)
class Region:
    alloc: int
    start: int
    end: int
    fn: str
    param: str
    args: tuple          # ((parameter name, recorded value), ...) of the call, for filters
    ret: object = None   # the call's recorded return value

    def field_at(self, offset: int) -> str:
        """The OVERLAPPED field at `offset` ("" for any other argument)."""
        if self.param not in OVERLAPPED_PARAMS:
            return ""
        rel = offset - self.start
        return next((name for name, lo, hi in _FIELDS if lo <= rel < hi), "")

    def label(self, offset: int) -> dict:
        return {"fn": self.fn, "param": self.param, "field": self.field_at(offset), "args": dict(self.args),
                "ret": self.ret, "pointer": self.start}


def regions(step: dict, params, sizes: dict) -> list:
    """The regions of a call step's pointer arguments into recorded allocations. `params`: the
    function's ((ctype, name), ...); `sizes`: alloc index -> size."""
    args = tuple((pname, sym) for (_c, pname), sym in zip(params, step.get("args", [])))
    pointers = sorted((sym[1], sym[2], pname) for pname, sym in args
                      if isinstance(sym, list) and len(sym) == 3 and sym[0] == "alloc")
    out = []
    for i, (alloc, offset, pname) in enumerate(pointers):
        following = next((o for a, o, _p in pointers[i + 1:] if a == alloc and o > offset), None)
        end = following if following is not None else sizes.get(alloc, offset)
        if pname in DWORD_OUTPUTS:
            end = min(end, offset + 4)
        elif pname in OVERLAPPED_PARAMS and step["fn"] != "GetQueuedCompletionStatus":
            end = min(end, offset + WSAOVERLAPPED.size)
        if end > offset:
            out.append(Region(alloc, offset, end, step["fn"], pname, args, step.get("ret")))
    return out


def attribute(key: str, calls) -> dict | None:
    """The argument a written word ("alloc7+32") belongs to, as {fn, param, field, args}, or None
    when no single argument covers it. `calls`: the regions of each call that may have written it,
    the most relevant call first (the call itself, then the calls that started pending operations)."""
    alloc, offset = (int(part) for part in key[5:].split("+"))
    for regions_of_call in calls:
        covering = [r for r in regions_of_call if r.alloc == alloc and r.start < offset + 8 and offset < r.end]
        if len(covering) == 1:
            return covering[0].label(max(offset, covering[0].start))
        if covering:
            return None         # two arguments of one call share the word: it is neither's alone
    return None
