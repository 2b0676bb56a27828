"""Packet evidence: read pcap/pcapng captures and follow connections through redirect proxies.

    from harness.capture import analyze_file, analyze_packets, CaptureError

    result = analyze_file("run.pcapng")          # a pktmon/etl2pcap capture or sim.pcap output
    result = analyze_packets(world.network.packets)   # straight from the simulator, no file
    for flow in result.flows:                    # ProxiedFlow
        flow.client, flow.proxies, flow.final_destination, flow.reached, flow.intact, flow.verdict
        for hop in flow.hops: hop.src, hop.dst, hop.bytes_c2s, hop.bytes_s2c, hop.redirected_by
    result.loops, result.unreached, result.problems

A file that cannot be read raises CaptureError naming the file and the
problem (for a truncated file: how many packets came before the cut).
See harness/capture/flows.py for how hops are recognised.
"""
from __future__ import annotations

from harness.capture.flows import MATCH_PREFIX, MAX_LOCAL_HOPS, UDP_IDLE_TIMEOUT_NS, analyze_records
from harness.capture.model import (
    Analysis,
    HostPort,
    Hop,
    ProxiedFlow,
    RedirectNote,
    TcpConnection,
    UdpFlow,
    endpoint,
    parse_note,
)
from harness.capture.reader import (
    MAX_DECOMPRESSED,
    CaptureError,
    DecompressedTooLarge,
    Record,
    read_capture,
    records_from_sim,
)

__all__ = [
    "MATCH_PREFIX",
    "MAX_DECOMPRESSED",
    "MAX_LOCAL_HOPS",
    "UDP_IDLE_TIMEOUT_NS",
    "Analysis",
    "CaptureError",
    "DecompressedTooLarge",
    "HostPort",
    "Hop",
    "ProxiedFlow",
    "Record",
    "RedirectNote",
    "TcpConnection",
    "UdpFlow",
    "analyze_file",
    "analyze_packets",
    "analyze_records",
    "endpoint",
    "parse_note",
    "read_capture",
    "records_from_sim",
]


def analyze_file(path, *, local_addresses=(), proxies=(), udp_idle_timeout_ns: int = UDP_IDLE_TIMEOUT_NS,
                 allow_truncated: bool = False, dedupe_ns: int = 0,
                 max_decompressed: int = MAX_DECOMPRESSED) -> Analysis:
    """Analyze a pcap or pcapng file (CaptureError if it cannot be read).

    local_addresses: addresses of the capturing machine (helps link a
    loopback proxy to its outbound connections when no bytes can be compared).
    proxies: endpoints known to be proxies ('127.0.0.1:5000' or HostPort).
    allow_truncated: analyze the packets before a cut instead of raising.
    dedupe_ns: drop identical packets repeated within this time (pktmon
    captures can list one packet once per stack component).
    max_decompressed: refuse a gzip-compressed file that expands past this
    many bytes (DecompressedTooLarge).
    """
    records, warnings = read_capture(path, allow_truncated=allow_truncated, max_decompressed=max_decompressed)
    return analyze_records(records, source=str(path), local_addresses=local_addresses, proxies=proxies,
                           udp_idle_timeout_ns=udp_idle_timeout_ns, dedupe_ns=dedupe_ns, warnings=warnings)


def analyze_packets(packets, *, local_addresses=(), proxies=(),
                    udp_idle_timeout_ns: int = UDP_IDLE_TIMEOUT_NS) -> Analysis:
    """Analyze the simulator's packet log (a list of sim.net.Packet) directly."""
    return analyze_records(records_from_sim(packets), source="simulator packet log",
                           local_addresses=local_addresses, proxies=proxies,
                           udp_idle_timeout_ns=udp_idle_timeout_ns)
