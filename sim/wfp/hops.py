"""Where proxied connections went: hop chains, and redirect loops stopped by the world.

The simulator sees everything, so it can follow a connection across
proxies: a proxy's outbound connection continues the flow it accepted when
it carries that flow's records (SIO_SET_WFP_CONNECTION_REDIRECT_RECORDS),
or, without records, when it goes to the original destination of a chain
whose last hop was redirected to the same process and that nothing has
continued yet. This rule is the same for TCP and UDP: a proxy's first
datagram out continues the flow whose first datagram it received. A
redirection to a proxy the flow already passed is a loop (the one the SDK
Remarks warn about): the world records it with its hop chain, lets it go
round `loop_limit` more times (so a capture shows the loop on the wire)
and then refuses the next connect or first datagram, so a story never
hangs or runs out of ports. A connect a callout blocked ends its chain
with a refused hop.

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
    """One connect (or a UDP flow's first datagram): who sent it, where WFP sent it, and what each
    callout asked (FwpsQueryConnectionRedirectState0: callout name, vendor of the redirect handle,
    the state)."""
    from_pid: int
    from_process: str
    destination: str                 # where the connect asked to go
    redirected_to: str = ""          # where WFP sent it ('' when not redirected)
    vendor: str = ""                 # provider name of the redirect handle
    callout: str = ""                # name of the callout whose filter made the redirection
    proxy_pid: int = 0
    states: list = field(default_factory=list)    # [(callout, vendor, state name)]
    records_forwarded: bool = False  # the connect carried the accepted flow's records
    protocol: str = "tcp"
    source: str = ""                 # the connecting socket's local endpoint
    time_ns: int = 0
    refused: str = ""                # why the world or a callout refused this connect ('' when it went out)

    def as_dict(self) -> dict:
        return {"from_pid": self.from_pid, "from_process": self.from_process, "destination": self.destination,
                "redirected_to": self.redirected_to, "vendor": self.vendor, "callout": self.callout,
                "proxy_pid": self.proxy_pid,
                "states_seen": [{"callout": c, "vendor": v, "state": s} for c, v, s in self.states],
                "records_forwarded": self.records_forwarded, "source": self.source, "refused": self.refused}


@dataclass
class Lineage:
    """The chain of connects that carry one original connection."""
    id: int
    original_destination: str
    hops: list = field(default_factory=list)
    loop: bool = False
    flow_ids: list = field(default_factory=list)   # the redirected flows of the chain (HopTracker.by_flow)
    awaiting: tuple = None           # (proxy pid, destination) while its last hop waits to be continued

    @property
    def protocol(self) -> str:
        return self.hops[0].protocol if self.hops else "tcp"

    def targets(self):
        return [(h.proxy_pid, h.redirected_to) for h in self.hops if h.redirected_to]

    def chain(self) -> list:
        """The original destination, then every place WFP sent the flow."""
        return [self.original_destination] + [h.redirected_to for h in self.hops if h.redirected_to]


class HopTracker:
    KEEP = 1000          # chains in the report; the scenarios' few, a long run's latest

    def __init__(self, loop_limit: int = 2, keep: int = KEEP):
        self.loop_limit = loop_limit
        self.keep = keep
        self.lineages: deque[Lineage] = deque()
        self.dropped = 0                 # older chains no longer in the report
        self.by_flow: dict = {}          # flow id (in its records blob) -> the chain it belongs to
        # (pid, original destination) -> {lineage id: chain} whose last hop went to that process
        # and that nothing has continued yet: what a connect without records continues.
        self.awaiting: dict = {}
        self._ids = itertools.count(1)

    def _hop(self, request, states, tcp: bool) -> Hop:
        return Hop(request.process.pid, request.process.name, endpoint_text(request.original_remote),
                   states=[(s.callout, s.vendor, STATE_NAMES.get(s.state, str(s.state))) for s in states],
                   records_forwarded=bool(request.meta.get("records") or request.socket.redirect_records),
                   protocol="tcp" if tcp else "udp", source=endpoint_text(request.local),
                   time_ns=request.process.kernel.now_ns)

    def _parent(self, request):
        """The chain this connect continues, if any: with records, the chain of the flow they came
        from; without, the oldest chain waiting for this process to forward it to this destination."""
        records = request.meta.get("records") or request.socket.redirect_records
        if records:
            lineage = self.by_flow.get(records[0])
            if lineage is not None:
                return lineage
        waiting = self.awaiting.get((request.process.pid, endpoint_text(request.original_remote)))
        return next(iter(waiting.values())) if waiting else None

    def _wait(self, lineage: Lineage, key) -> None:
        """Record what the chain's last hop waits for (None: nothing, it reached its end)."""
        old = lineage.awaiting
        if old is not None:
            waiting = self.awaiting.get(old)
            if waiting is not None:
                waiting.pop(lineage.id, None)
                if not waiting:
                    del self.awaiting[old]
        lineage.awaiting = key
        if key is not None:
            self.awaiting.setdefault(key, {})[lineage.id] = lineage

    def _new_lineage(self, destination: str) -> Lineage:
        if len(self.lineages) >= self.keep:
            old = self.lineages.popleft()
            for flow_id in old.flow_ids:
                self.by_flow.pop(flow_id, None)
            self._wait(old, None)
            self.dropped += 1
        lineage = Lineage(next(self._ids), destination)
        self.lineages.append(lineage)
        return lineage

    def redirected(self, request, new_entries, remote, states, engine, callout: str = "", tcp: bool = True):
        """A connect was redirected. Returns its lineage, or None when it is a loop stopped here."""
        parent = self._parent(request)
        hop = self._hop(request, states, tcp)
        hop.redirected_to = endpoint_text(remote)
        hop.callout = callout
        last = new_entries[-1]
        hop.proxy_pid = last.target_pid
        provider = engine.providers.get(last.provider)
        hop.vendor = provider.name if provider else str(last.provider)
        lineage = parent if parent is not None else self._new_lineage(hop.destination)
        revisits = lineage.targets().count((hop.proxy_pid, hop.redirected_to))
        lineage.hops.append(hop)
        if revisits:
            chain = " -> ".join(lineage.chain())
            if not lineage.loop:
                engine.world.kernel.note("redirect-loop", f"flow {lineage.id} to {lineage.original_destination} "
                                         f"({hop.protocol}) redirected back to {hop.redirected_to} "
                                         f"(pid {hop.proxy_pid}); chain: {chain}")
            lineage.loop = True
            if revisits > self.loop_limit:
                engine.world.kernel.note("redirect-loop-stopped", f"flow {lineage.id}: refused after "
                                         f"{revisits} returns to {hop.redirected_to}; chain: {chain}")
                hop.refused = "redirect loop stopped by the world"
                self._wait(lineage, None)
                return None
        self._wait(lineage, (hop.proxy_pid, lineage.original_destination))
        return lineage

    def register(self, flow_redirect) -> None:
        lineage = flow_redirect.lineage
        self.by_flow[flow_redirect.flow_id] = lineage
        lineage.flow_ids.append(flow_redirect.flow_id)

    def passed(self, request, states, tcp: bool = True) -> None:
        """A connect that no callout redirected: the last hop of a chain, if it continues one."""
        parent = self._parent(request)
        if parent is not None:
            parent.hops.append(self._hop(request, states, tcp))
            self._wait(parent, None)

    def refused(self, request, states, why: str, tcp: bool = True) -> None:
        """A connect a callout blocked: the end of its chain (a chain of its own if it starts one)."""
        hop = self._hop(request, states, tcp)
        hop.refused = why
        lineage = self._parent(request) or self._new_lineage(hop.destination)
        lineage.hops.append(hop)
        self._wait(lineage, None)

    def report(self) -> list[dict]:
        return [{"id": x.id, "original_destination": x.original_destination, "loop": x.loop,
                 "protocol": x.protocol, "hops": [h.as_dict() for h in x.hops]} for x in self.lineages]
