"""What the kernel knows about a redirected flow: its redirect records and contexts.

docs/decisions.md §5: the records are the ordered list of redirections of the
flow (redirect handle, provider, filter, target PID). Their state for a
given redirect handle (FwpsQueryConnectionRedirectState0):

    empty list            -> FWPS_CONNECTION_NOT_REDIRECTED
    handle absent         -> FWPS_CONNECTION_REDIRECTED_BY_OTHER
    handle is the last    -> FWPS_CONNECTION_REDIRECTED_BY_SELF
    handle present before -> FWPS_CONNECTION_PREVIOUSLY_REDIRECTED_BY_SELF

A context belongs to one redirection and is given only to the process
named by that redirection's target PID.
"""
from __future__ import annotations

import itertools

from harness.winsock import constants as C
from sim.wfp import records as blob

_flow_ids = itertools.count(1)


def redirect_state(entries, handle_id: int) -> int:
    if not entries:
        return C.FWPS_CONNECTION_NOT_REDIRECTED
    if entries[-1].redirect_handle == handle_id:
        return C.FWPS_CONNECTION_REDIRECTED_BY_SELF
    for entry in entries:
        if entry.redirect_handle == handle_id:
            return C.FWPS_CONNECTION_PREVIOUSLY_REDIRECTED_BY_SELF
    return C.FWPS_CONNECTION_REDIRECTED_BY_OTHER


class FlowRedirect:
    """The records and contexts of one flow, as the accepting side sees them."""

    __slots__ = ("flow_id", "entries", "contexts", "key", "_blob", "lineage")

    def __init__(self, entries, contexts, key: bytes, lineage=None):
        self.flow_id = next(_flow_ids)
        self.entries = tuple(entries)
        self.contexts = dict(contexts)       # index into entries -> context bytes
        self.key = key
        self._blob = None
        self.lineage = lineage          # sim.wfp.hops.Lineage: the chain this flow belongs to

    def records_blob(self) -> bytes:
        if self._blob is None:
            self._blob = blob.encode(self.flow_id, self.entries, self.key)
        return self._blob

    def context_for(self, pid: int):
        """The context of the latest redirection whose target is `pid`, or None."""
        for index in range(len(self.entries) - 1, -1, -1):
            if self.entries[index].target_pid == pid:
                return self.contexts.get(index)
        return None

    def __repr__(self) -> str:
        return f"<FlowRedirect {self.flow_id} {[e.target_pid for e in self.entries]}>"
