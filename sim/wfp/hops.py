"""Where proxied connections went: hop chains, and redirect loops stopped by the world.

The simulator sees everything, so it can follow a connection across
proxies: a proxy's outbound connection continues the flow it accepted when
it carries that flow's records (SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS),
or, without records, when it goes to the original destination of a
redirected connection the same process accepted and has not forwarded yet.
A redirection to a proxy the flow already passed is a loop (the one the
SDK Remarks warn about): the world records it with its hop chain, lets it
go round `loop_limit` more times (so a capture shows the loop on the wire)
and then refuses the next connect, so a scenario never hangs.

The report keeps the newest `keep` chains (older ones are dropped and
counted), so a soak run of millions of connections stays the same size; a
connect that continues a dropped chain starts a new one.
Nothing here holds a flow's redirect records or contexts: those die with
the flow's sockets and connections, as the kernel frees a redirect context
with its flow (docs/decisions.md §5).
"""
from __future__ import annotations

import functools
import itertools
from collections import deque
from dataclasses import dataclass, field

from harness.winsock import constants as C
from harness.winsock.sockaddr import host_port
from sim.net import ip_text, unmap

STATE_NAMES = {
    C.FWPS_CONNECTION_NOT_REDIRECTED: "NOT_REDIRECTED",
    C.FWPS_CONNECTION_REDIRECTED_BY_SELF: "REDIRECTED_BY_SELF",
    C.FWPS_CONNECTION_REDIRECTED_BY_OTHER: "REDIRECTED_BY_OTHER",
    C.FWPS_CONNECTION_PREVIOUSLY_REDIRECTED_BY_SELF: "PREVIOUSLY_REDIRECTED_BY_SELF",
}


@functools.lru_cache(maxsize=4096)     # pure; the destinations and proxies of a run are few
def endpoint_text(ep) -> str:
    return host_port(ip_text(unmap(ep[0])), ep[1])


@dataclass
class Hop:
    """One connect of the flow: who connected, where WFP sent it, and what each callout saw."""
    from_pid: int
    from_process: str
    destination: str                 # where the connect asked to go
    redirected_to: str = ""          # where WFP sent it ('' when not redirected)
    vendor: str = ""                 # provider name of the redirect handle
    proxy_pid: int = 0
    states: list = field(default_factory=list)    # [(callout, state name)]
    records_forwarded: bool = False  # the connect carried the accepted flow's records

    def as_dict(self) -> dict:
        return {"from_pid": self.from_pid, "from_process": self.from_process, "destination": self.destination,
                "redirected_to": self.redirected_to, "vendor": self.vendor, "proxy_pid": self.proxy_pid,
                "states_seen": [{"callout": c, "state": s} for c, s in self.states],
                "records_forwarded": self.records_forwarded}


@dataclass
class Lineage:
    """The chain of connects that carry one original connection."""
    id: int
    original_destination: str
    hops: list = field(default_factory=list)
    loop: bool = False
    flow_ids: list = field(default_factory=list)   # the redirected flows of the chain (HopTracker.by_flow)

    def targets(self):
        return [(h.proxy_pid, h.redirected_to) for h in self.hops if h.redirected_to]


class HopTracker:
    KEEP = 1000          # chains in the report; the scenarios' few, a long run's latest

    def __init__(self, loop_limit: int = 2, keep: int = KEEP):
        self.loop_limit = loop_limit
        self.keep = keep
        self.lineages: deque[Lineage] = deque()
        self.dropped = 0                 # older chains no longer in the report
        self.by_flow: dict = {}          # flow id (in its records blob) -> the chain it belongs to
        self._ids = itertools.count(1)

    def _hop(self, request, states) -> Hop:
        return Hop(request.process.pid, request.process.name, endpoint_text(request.original_remote),
                   states=[(s.callout, STATE_NAMES.get(s.state, str(s.state))) for s in states],
                   records_forwarded=bool(request.meta.get("records") or request.socket.redirect_records))

    def _parent(self, request):
        """The chain this connect continues, if any.

        With records, the chain of the flow they came from. Without, an accepted
        redirected flow of the same process to the same original destination whose
        chain has not grown since (no connect has continued it yet).
        """
        records = request.meta.get("records") or request.socket.redirect_records
        if records:
            lineage = self.by_flow.get(records[0])
            if lineage is not None:
                return lineage
        want = endpoint_text(request.original_remote)
        for sock in list(request.process.sockets.values()):
            flow = sock.redirect
            if flow is not None and flow.lineage is not None and len(flow.lineage.hops) == flow.hops_before \
                    and flow.lineage.original_destination == want:
                return flow.lineage
        return None

    def _new_lineage(self, destination: str) -> Lineage:
        if len(self.lineages) >= self.keep:
            old = self.lineages.popleft()
            for flow_id in old.flow_ids:
                self.by_flow.pop(flow_id, None)
            self.dropped += 1
        lineage = Lineage(next(self._ids), destination)
        self.lineages.append(lineage)
        return lineage

    def redirected(self, request, new_entries, remote, states, engine):
        """A connect was redirected. Returns its lineage, or None when it is a loop."""
        parent = self._parent(request)
        hop = self._hop(request, states)
        hop.redirected_to = endpoint_text(remote)
        last = new_entries[-1]
        hop.proxy_pid = last.target_pid
        provider = engine.providers.get(last.provider)
        hop.vendor = provider.name if provider else str(last.provider)
        lineage = parent if parent is not None else self._new_lineage(hop.destination)
        revisits = lineage.targets().count((hop.proxy_pid, hop.redirected_to))
        lineage.hops.append(hop)
        if revisits:
            chain = " -> ".join([lineage.original_destination] + [h.redirected_to for h in lineage.hops
                                                                  if h.redirected_to])
            if not lineage.loop:
                engine.world.kernel.note("redirect-loop", f"flow {lineage.id} to {lineage.original_destination} "
                                         f"redirected back to {hop.redirected_to} (pid {hop.proxy_pid}); "
                                         f"chain: {chain}")
            lineage.loop = True
            if revisits > self.loop_limit:
                engine.world.kernel.note("redirect-loop-stopped", f"flow {lineage.id}: refused after "
                                         f"{revisits} returns to {hop.redirected_to}; chain: {chain}")
                return None
        return lineage

    def register(self, flow_redirect) -> None:
        lineage = flow_redirect.lineage
        self.by_flow[flow_redirect.flow_id] = lineage
        lineage.flow_ids.append(flow_redirect.flow_id)

    def passed(self, request, states) -> None:
        """A connect that no callout redirected: the last hop of a chain, if it continues one."""
        parent = self._parent(request)
        if parent is not None:
            parent.hops.append(self._hop(request, states))

    def report(self) -> list[dict]:
        return [{"id": x.id, "original_destination": x.original_destination, "loop": x.loop,
                 "hops": [h.as_dict() for h in x.hops]} for x in self.lineages]
