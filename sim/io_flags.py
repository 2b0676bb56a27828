"""The flags a send or receive takes, and what happens to the others (decision point unknown_io_flags).

Each call names the flags it takes (send and sendto: MSG_OOB, MSG_DONTROUTE; recv and
recvfrom: MSG_PEEK, MSG_OOB, MSG_WAITALL; WSARecv adds MSG_PARTIAL and MSG_PUSH_IMMEDIATE;
WSASend takes MSG_PARTIAL; WSASendMsg MSG_DONTROUTE and MSG_PARTIAL). The pages are silent
on any other bit: the profile says whether it is refused or ignored.
"""
from __future__ import annotations

from harness.winsock import constants as C
from sim.decision_points import DECISIONS
from sim.errors import WsaError

_IGNORED = DECISIONS["unknown_io_flags"].choice("ignored")


def io_flags(process, flags: int, takes: int) -> int:
    """The flags the call goes on with: `flags` if the call takes them all; else WSAEOPNOTSUPP,
    or the ones it takes, as the profile answers unknown_io_flags."""
    if flags & ~takes:
        if process.profile.unknown_io_flags == _IGNORED:
            return flags & takes
        raise WsaError(C.WSAEOPNOTSUPP)
    return flags
