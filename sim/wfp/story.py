"""What became of every redirected connection in a world: the story any world can tell.

`story(world)` reads what the world recorded (the hop chains of sim.wfp.hops,
the packet log, the kernel's diagnostics) and reports, per chain: the
application and its original destination, every hop (who connected, which
vendor's callout redirected it where, what each callout asked
FwpsQueryConnectionRedirectState0), the final destination, the bytes each
way at both ends and whether they arrived intact, and a verdict: `ok`,
`loop` (with its chain) or `error`. The rules are those of
`harness.capture` (README "Packet evidence"): a flow that reached no
destination, a loop included, has no final destination and is not intact;
intact means the bytes the application sent are the bytes the destination
received, and the other way round.

The bytes come from the packet log (`world.network.packets`): a world with
`world.network.record = False` reports them as unknown (None).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from sim.net import ACK, SYN
from sim.wfp.hops import endpoint_text

VERDICTS = ("ok", "loop", "error")


@dataclass
class Connection:
    """One chain: an application's connection (or UDP flow) and where it went."""
    id: int
    protocol: str
    app: str
    app_pid: int
    original_destination: str
    hops: list = field(default_factory=list)        # Hop.as_dict() of each hop
    final_destination: str = ""
    loop: bool = False
    loop_chain: list = field(default_factory=list)
    refused: str = ""                # why the last hop was refused ('' when it was not)
    app_sent: bytes = None           # what the application sent (None: the packet log is off)
    app_received: bytes = None
    destination_received: bytes = None
    destination_sent: bytes = None

    @property
    def intact(self) -> bool:
        if not self.final_destination or self.app_sent is None:
            return False
        return self.app_sent == self.destination_received and self.destination_sent == self.app_received

    @property
    def verdict(self) -> str:
        if self.loop:
            return "loop"
        return "ok" if self.intact else "error"

    def as_dict(self) -> dict:
        def size(data):
            return None if data is None else len(data)
        return {"id": self.id, "protocol": self.protocol, "app": self.app, "app_pid": self.app_pid,
                "original_destination": self.original_destination, "hops": self.hops,
                "final_destination": self.final_destination, "bytes_sent": size(self.app_sent),
                "bytes_back": size(self.app_received), "bytes_delivered": size(self.destination_received),
                "bytes_answered": size(self.destination_sent), "intact": self.intact, "refused": self.refused,
                "verdict": self.verdict, "loop_chain": self.loop_chain}


@dataclass
class Story:
    """A world's story: every chain it keeps (world.hops), a verdict, and the diagnostics."""
    world: object
    connections: list
    diagnostics: list

    @property
    def verdict(self) -> str:
        verdicts = {c.verdict for c in self.connections}
        return "loop" if "loop" in verdicts else "error" if "error" in verdicts or not verdicts else "ok"

    def as_dict(self) -> dict:
        return {"profile": self.world.profile.name, "verdict": self.verdict,
                "connections": [c.as_dict() for c in self.connections],
                "diagnostics": [{"kind": d.kind, "message": d.message} for d in self.diagnostics],
                "dropped_chains": self.world.hops.dropped,
                "virtual_time_ns": self.world.now_ns, "packets": len(self.world.network.packets)}

    def json(self, **kwargs) -> str:
        return json.dumps(self.as_dict(), **kwargs)

    def write_pcap(self, path: str) -> None:
        """The world's packets as a capture (.pcapng carries a comment on each redirected SYN)."""
        from sim import pcap
        pcap.write(self.world.network.packets, path, fmt="pcapng" if path.endswith(".pcapng") else "pcap")


class _Wire:
    """The packet log indexed by (protocol, source, destination) endpoint texts."""

    def __init__(self, packets):
        self.flows: dict = {}
        for p in packets:
            self.flows.setdefault((p.proto, endpoint_text(p.src), endpoint_text(p.dst)), []).append(p)

    def stream(self, proto: str, src: str, dst: str, since_ns: int) -> bytes:
        """The payload src sent dst from `since_ns` on, up to the next connection on the same ports."""
        data, started = [], False
        for p in self.flows.get((proto, src, dst), ()):
            if p.time_ns < since_ns:
                continue
            if proto == "tcp" and p.flags & SYN and not p.flags & ACK:
                if started:
                    break                     # the same ports, a later connection
                started = True
            data.append(p.payload)
        return b"".join(data)

    def answered(self, proto: str, src: str, dst: str, since_ns: int) -> bool:
        """Did dst take the connection (TCP: a SYN-ACK back; UDP: no port unreachable back)?"""
        if proto == "tcp":
            return any(p.time_ns >= since_ns and p.flags & SYN and p.flags & ACK
                       for p in self.flows.get(("tcp", dst, src), ()))
        return not any(p.time_ns >= since_ns for p in self.flows.get(("icmp", dst, src), ()))


def story(world) -> Story:
    """The story of every chain the world keeps (the newest world.hops.keep)."""
    record = world.network.record
    wire = _Wire(world.network.packets) if record else None
    connections = []
    for lineage in world.hops.lineages:
        if not lineage.hops:
            continue
        first, last = lineage.hops[0], lineage.hops[-1]
        conn = Connection(lineage.id, lineage.protocol, first.from_process, first.from_pid,
                          lineage.original_destination, [h.as_dict() for h in lineage.hops], loop=lineage.loop,
                          refused=last.refused)
        if lineage.loop:
            conn.loop_chain = lineage.chain()
        reached = not last.redirected_to and not last.refused
        if wire is not None:
            proto = first.protocol
            entry = first.redirected_to or first.destination
            conn.app_sent = wire.stream(proto, first.source, entry, first.time_ns)
            conn.app_received = wire.stream(proto, entry, first.source, first.time_ns)
            if reached and wire.answered(proto, last.source, last.destination, last.time_ns):
                conn.final_destination = last.destination
                conn.destination_received = wire.stream(proto, last.source, last.destination, last.time_ns)
                conn.destination_sent = wire.stream(proto, last.destination, last.source, last.time_ns)
        elif reached:
            conn.final_destination = last.destination
        connections.append(conn)
    return Story(world, connections, list(world.kernel.diagnostics))
