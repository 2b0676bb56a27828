"""Polling loops: a non-blocking call retried while it says "not yet", compared where the loop ends.

A program polls a non-blocking socket: it makes the same call again, after a wait, while it fails
with an error that says "not yet" (WSAEWOULDBLOCK: nothing to receive yet, a connect under way;
WSAEALREADY: a non-blocking connect still in progress; WSAEINPROGRESS). How many tries that takes
is timing, not behaviour, and the two sides of a replay keep different time: the simulator's network
moves in virtual time (a loopback segment or datagram arrives 20 µs of virtual time after it was
sent, sim/net.py LOOPBACK_LATENCY_NS, so the call made right after the send finds nothing yet),
Wine's in real time (Linux's loopback has queued it before the send returns). The trace holds the
recording's tries one by one; replayed one by one, a quicker target gives the loop's last answer at
an earlier try and the recording's later tries then ask another question (the data is already
taken), a slower one still says "not yet" where the recording's loop ended.

So the replayer recognises such a loop in the recording, `find_loops`: a run of the same call (the
same function and arguments) whose every try but the last failed with a "not yet" error and wrote
nothing, with nothing between two tries but reading the last error and at least one non-alertable
SleepEx (WSAGetLastError, GetLastError, SleepEx(ms, FALSE)): without a wait between them, two calls
are not a poll but two questions. It then compares where the loop ends:
- the target answers anything but "not yet" at an earlier try: that answer is compared with the
  recording's last try, and the recording's tries in between are left out;
- the target still says "not yet" at the recording's last try, which said something else: the call
  is made again, after the wait the recording's loop made, for up to settle.SETTLE_TIMEOUT_S, and
  its first other answer (or its last) is compared with the recording's last try.
Each loop that ended at another try is listed (ReplayResult.polls), not hidden. What is still a
divergence: another final answer (a different error, count or bytes); another "not yet" error at a
try both sides make; a loop the recording gave up on (its last try "not yet") that the target ends.
What the replay cannot tell is whether a target that answers at the first try may: the conformance
case, run on that target, asserts the answers the program expects of each try.
"""
from __future__ import annotations

import time

from harness.winsock import constants as C

from .settle import SETTLE_TIMEOUT_S

NOT_YET = frozenset({C.WSAEWOULDBLOCK, C.WSAEALREADY, C.WSAEINPROGRESS})
_FAILED = (C.SOCKET_ERROR, C.INVALID_SOCKET)
_BETWEEN = frozenset({"WSAGetLastError", "GetLastError", "SleepEx"})
_SAME = ("fn", "args", "ext", "fnptr")


def says_not_yet(call: dict) -> bool:
    """Whether a call step (recorded or replayed) failed with a "not yet" error."""
    return "raised" not in call and call.get("ret") in _FAILED and call.get("error") in NOT_YET


def _quiet(step: dict) -> bool:
    return step.get("op") == "call" and not step.get("writes") and not step.get("completions")


def _between(step: dict) -> bool:
    """A step a polling loop may make between two tries: read the last error, or wait unalertably."""
    return (_quiet(step) and step["fn"] in _BETWEEN
            and (step["fn"] != "SleepEx" or step["args"][1:2] == [0]))


def find_loops(steps: list) -> dict:
    """{index of a try: (indices of its loop's tries)} for every loop of two tries or more in `steps`
    (the trace's top-level steps; a session step ends any loop)."""
    loops: dict = {}
    for first, step in enumerate(steps):
        if first in loops or not (_quiet(step) and says_not_yet(step)):
            continue
        tries = [first]
        while _quiet(steps[tries[-1]]) and says_not_yet(steps[tries[-1]]):
            last, j, waited = tries[-1], tries[-1] + 1, False
            while j < len(steps) and _between(steps[j]):
                waited = waited or steps[j]["fn"] == "SleepEx"
                j += 1
            if not (waited and j < len(steps) and steps[j].get("op") == "call"
                    and all(steps[j].get(k) == steps[last].get(k) for k in _SAME)):
                break
            tries.append(j)
        if len(tries) > 1:
            loops.update((t, tuple(tries)) for t in tries)
    return loops


def wait_of(steps: list, loop: tuple) -> int:
    """The milliseconds the recording's loop slept between its last two tries."""
    return sum(s["args"][0] for s in steps[loop[-2] + 1:loop[-1]] if s["fn"] == "SleepEx")


def retry(again, wait_ms: int, timeout: float = SETTLE_TIMEOUT_S) -> int:
    """Call `again()` (sleep `wait_ms` on the target, make the call, True when it still says "not yet")
    until it answers otherwise, for at most `timeout` seconds and as many tries as fit in it at
    `wait_ms` apart (bounded on a target in virtual time too); the number of tries made."""
    deadline = time.monotonic() + timeout
    limit = max(1, int(timeout * 1000 / max(wait_ms, 1)))
    tries = 0
    while tries < limit and time.monotonic() < deadline:
        tries += 1
        if not again():
            break
    return tries
