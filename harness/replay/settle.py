"""Waiting, bounded, for a real target's asynchronous work to catch up with a reference run.

What a pending operation writes (its OVERLAPPED, its buffers) lands on the simulator during the call
that completes it (virtual time), but on Wine whenever its async machinery gets to it, possibly
after the next call has started. Before comparing what such an operation wrote, the caller names
the target's OVERLAPPEDs whose operation the reference run has completed; this waits until none of
them still reads STATUS_PENDING in its Internal field (the IOSB status, written after the bytes),
then a grace for the packet, event or APC that follows. Shared by the replayer
(harness.replay.replayer) and the differential tests' lockstep (tests/differential/lockstep.py).
"""
from __future__ import annotations

import struct
import time

from harness.winsock import constants as C

SETTLE_TIMEOUT_S = 3.0      # the target gets this long to complete what the reference completed
SETTLE_GRACE_S = 0.01       # after an IOSB is written, Wine posts the packet / sets the event / queues the APC


def internal(memory, ovl: int) -> int:
    """An OVERLAPPED's Internal field (the NTSTATUS of its operation)."""
    return struct.unpack("<Q", memory.read(ovl, 8))[0]


def wait_for_completions(memory, overlappeds, timeout: float = SETTLE_TIMEOUT_S,
                         grace: float = SETTLE_GRACE_S) -> bool:
    """Wait until no OVERLAPPED in `overlappeds` (pointers in `memory`) reads STATUS_PENDING, at most
    `timeout` seconds; True if any had to be waited for (the grace was then spent too)."""
    waited = False
    deadline = time.monotonic() + timeout
    for ovl in overlappeds:
        while internal(memory, ovl) == C.STATUS_PENDING and time.monotonic() < deadline:
            waited = True
            time.sleep(0.001)
    if waited:
        time.sleep(grace)
    return waited
