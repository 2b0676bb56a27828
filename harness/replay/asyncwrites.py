"""What pending operations write, compared whenever each side has written it.

An operation pending on either side (its OVERLAPPED's Internal reads STATUS_PENDING after the call
that started it) writes its OVERLAPPED, its buffers and its counts when it completes: on the
simulator during the call that completes it in virtual time (the wait, GetQueuedCompletionStatus,
SleepEx), on Wine whenever its async machinery runs, often during the peer's send or connect,
before the wait. harness.replay.settle makes the target catch up where it is late; this covers it
being early: while such an operation is outstanding on either side, the words each side writes into
its memory are taken out of the per-call comparison and carried, per side (a later write of a word
replaces an earlier one: STATUS_PENDING, then the final status), and compare once the operation is
complete on both sides, at the call where the second side completed it (a word only one side wrote
is then a divergence), or at the end of the session for an operation that never completed. Ports in
addresses compare by order of appearance (harness.replay.ports); an address the operation returns
with its length (a pending WSARecvMsg's WSAMSG.name) compares up to that length, as the recording
returned it (harness.replay.names), once the operation is complete on both sides.
"""
from __future__ import annotations

from harness.winsock import constants as C

from . import names
from .settle import internal


class AsyncWrites:
    def __init__(self):
        self.ops: list = []             # [(overlapped symbol, {alloc index: port space or None})]
        self.carried = ({}, {})         # (recorded, replayed): token key -> value not yet matched
        self.names: list = []           # (names.name_output, recorded bytes, target bytes) before the call

    def allocs(self) -> dict:
        out: dict = {}
        for _ovl, allocs in self.ops:
            for index, space in allocs.items():
                if out.get(index) is None:
                    out[index] = space
        return out

    def start(self, ovl, allocs: dict, name=None) -> None:
        """An operation pending on a side; `name`: (output, recorded bytes, target bytes) of the address
        buffer it returns a length for (harness.replay.names), the bytes as they were before the call."""
        self.ops.append((ovl, allocs))
        if name is not None:
            self.names.append(name)

    def settle_ops(self, recorded_pending, replayed_pending) -> None:
        """Drop the operations complete on both sides (each callable: overlapped symbol -> bool)."""
        self.ops = [(ovl, allocs) for ovl, allocs in self.ops if recorded_pending(ovl) or replayed_pending(ovl)]

    def carry(self, rec_tokens: dict, out_tokens: dict, final: bool = False, image: dict | None = None) -> list:
        """Add one call's async words per side; [(key, recorded, replayed)] of the carried words whose
        operations are over on both sides (all of them if `final`: the session ends) that differ.
        `image`: alloc index -> the recording's bytes now (the lengths its operations returned)."""
        rec, out = self.carried
        rec.update(rec_tokens)
        out.update(out_tokens)
        live = set() if final else {f"alloc{index}" for index in self.allocs()}
        for name in [n for n in self.names if f"alloc{n[0][0][1]}" not in live]:
            self.names.remove(name)
            output, rec_before, out_before = name
            region = names.undefined_region(output, image or {})
            for carried, before in ((rec, rec_before), (out, out_before)):
                masked = names.mask_tokens(carried, region, before)
                carried.clear()
                carried.update(masked)
        differing = []
        for key in sorted(set(rec) | set(out)):
            if key.split("+")[0] in live:
                continue            # an operation on this memory is still pending on a side
            a, b = rec.pop(key, "unchanged"), out.pop(key, "unchanged")
            if a != b:
                differing.append((key, a, b))
        return differing


def overlapped_pending(memory_image: dict, ovl) -> bool:
    """Whether the recording's OVERLAPPED (symbol ["alloc", i, off]) reads STATUS_PENDING."""
    return names.recorded_int(memory_image, ovl, 0, 8) == C.STATUS_PENDING


def target_pending(memory, symbols, ovl) -> bool:
    """Whether the target's OVERLAPPED of that symbol reads STATUS_PENDING (a freed one: no)."""
    start, _size, live = symbols.allocs[ovl[1]]
    if not live:
        return False
    try:
        return internal(memory, start + ovl[2]) == C.STATUS_PENDING
    except Exception:       # noqa: BLE001 - memory the target no longer maps
        return False
