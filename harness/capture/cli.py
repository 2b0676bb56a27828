"""`wfp-harness capture analyze FILE [--json]`: flows, hops and loops of a capture.

Exit status: 0 when every flow reached its destination, 1 when a redirect
loop or an unreached destination is found, 2 when the file cannot be read.
"""
from __future__ import annotations

import argparse
import io
import ipaddress
import json
import math
import os
import re
import sys

from harness.capture.flows import UDP_IDLE_TIMEOUT_NS
from harness.capture.model import HostPort
from harness.capture.reader import MAX_DECOMPRESSED, format_size
from harness.capture.text import plural

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _size(text: str) -> int:
    """'64M', '1G', '512K' or a byte count -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m or int(m.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"not a size: {text} (try 64M or 1G)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def _number(text: str, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise argparse.ArgumentTypeError(f"not a {'non-negative' if allow_zero else 'positive'} number: {text}")
    return value


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text}") from None


def _endpoint(text: str) -> HostPort:
    try:
        return HostPort.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers) -> None:
    p = subparsers.add_parser("capture", help="analyze packet captures (pcap/pcapng): proxied flows, hops, loops")
    sub = p.add_subparsers(dest="action", required=True)
    a = sub.add_parser("analyze", help="print the flows of a capture, every proxy hop, loops and unreached flows")
    a.add_argument("file", help="a .pcap or .pcapng file (pktmon etl2pcap output, sim --pcap output)")
    a.add_argument("--json", action="store_true", help="print the analysis as JSON")
    a.add_argument("--local-address", type=_ip, action="append", default=[], metavar="IP",
                   help="an address of the capturing machine (repeatable)")
    a.add_argument("--proxy", type=_endpoint, action="append", default=[], metavar="ADDR:PORT",
                   help="an endpoint known to be a proxy, e.g. 127.0.0.1:5000 or [::1]:5000 (repeatable)")
    a.add_argument("--udp-timeout", type=lambda t: _number(t, allow_zero=False),
                   default=UDP_IDLE_TIMEOUT_NS / 1e9, metavar="SECONDS",
                   help=f"idle time that ends a UDP flow (default {UDP_IDLE_TIMEOUT_NS / 1e9:g})")
    a.add_argument("--dedupe-us", type=lambda t: _number(t, allow_zero=True), default=0.0, metavar="MICROSECONDS",
                   help="drop identical packets repeated within this time (pktmon lists a packet once per "
                        "stack component; try 1000)")
    a.add_argument("--allow-truncated", action="store_true",
                   help="analyze the packets before a cut instead of failing (still exits 2)")
    a.add_argument("--all", action="store_true", help="also list the TCP connections and UDP flows")
    a.add_argument("--max-decompressed", type=_size, default=MAX_DECOMPRESSED, metavar="SIZE",
                   help=f"refuse a gzip-compressed capture that expands past SIZE "
                        f"(default {format_size(MAX_DECOMPRESSED)}; K, M, G suffixes)")
    a.set_defaults(fn=cmd_analyze)


LABELS = {"ok": "ok", "loop": "LOOP", "unreached": "UNREACHED", "reset": "reset", "altered": "ALTERED"}


def _fmt_bytes(n: int) -> str:
    return f"{n} B"


def _target(f):
    """Where the flow went, or, when it got nowhere, where it meant to go (or last tried)."""
    return f.final_destination or f.original_destination or f.last_destination


def _flow_head(f) -> str:
    orig = f" (original {f.original_destination})" if f.reached and f.original_destination \
        and f.original_destination != f.final_destination else ""
    via = ""
    if f.proxies:
        distinct = len(f.distinct_proxies)
        via = f" via {plural(distinct, 'proxy', 'proxies')}"
        if len(f.proxies) != distinct:                     # a loop goes through one proxy many times
            via += f" ({len(f.proxies)} visits)"
    label = LABELS.get(f.verdict, f.verdict)
    if f.loop and not f.reached:
        label += ", never reached"
    return f"flow {f.id} [{f.proto}] {f.client} -> {_target(f)}{orig}{via}: {label}"


def _render_text(result, show_all: bool) -> str:
    lines = []
    w = lines.append
    s = result.summary()
    w(f"capture {result.source}: {plural(result.packets, 'packet')}, "
      f"{plural(s['tcp_connections'], 'TCP connection')}, {plural(s['udp_flows'], 'UDP flow')}")
    for warning in result.warnings:
        w(f"  warning: {warning}")
    for f in result.flows:
        w(_flow_head(f))
        for h in f.hops:
            role = "proxy" if h.to_proxy else "destination"
            extra = f", redirected by {h.redirected_by}" if h.redirected_by else ""
            intact = "" if h.intact_c2s is None else \
                f", relayed {'intact' if h.intact_c2s and h.intact_s2c else 'ALTERED'}"
            w(f"    hop {h.index + 1}: {h.src} -> {h.dst} ({role}) {h.state}, "
              f"c2s {_fmt_bytes(h.bytes_c2s)}, s2c {_fmt_bytes(h.bytes_s2c)}{intact}{extra} [{h.evidence}]")
        if f.loop:
            w("    loop chain: " + " -> ".join(str(e) for e in [f.client] + f.loop_chain))
        if len(f.hops) > 1:
            if f.reached:
                w(f"    end to end: {'bytes intact' if f.intact else 'bytes NOT intact'}")
            else:
                w(f"    end to end: {_target(f)} never reached")
        for r in f.reasons:
            w(f"    - {r}")
    if show_all:
        for c in result.connections:
            w(f"tcp #{c.id} {c.client} -> {c.server}: {c.state}, "
              f"{'handshake seen' if c.handshake else 'no handshake'}, "
              f"c2s {_fmt_bytes(c.bytes_c2s)}, s2c {_fmt_bytes(c.bytes_s2c)}")
        for u in result.udp_flows:
            w(f"udp #{u.id} {u.client} -> {u.server}: {u.state}, "
              f"c2s {_fmt_bytes(u.bytes_c2s)}, s2c {_fmt_bytes(u.bytes_s2c)}")
    w(f"summary: {plural(s['flows'], 'flow')}, {s['proxied']} proxied, {plural(s['loops'], 'loop')}, "
      f"{s['unreached']} unreached")
    return "\n".join(lines) + "\n"


def _emit(text: str) -> None:
    """Write to stdout; a reader that left early (`| head`) ends the output quietly, as for Unix tools."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's last flush does not complain either.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass                       # not a real file descriptor (captured in a test)


def cmd_analyze(args) -> int:
    from harness.capture import CaptureError, DecompressedTooLarge, analyze_file
    try:
        result = analyze_file(args.file, local_addresses=args.local_address, proxies=args.proxy,
                              udp_idle_timeout_ns=int(args.udp_timeout * 1e9),
                              allow_truncated=args.allow_truncated, dedupe_ns=int(args.dedupe_us * 1000),
                              max_decompressed=args.max_decompressed)
    except DecompressedTooLarge as exc:
        print(f"wfp-harness capture: {exc}, the limit (raise it with --max-decompressed)", file=sys.stderr)
        return 2
    except CaptureError as exc:
        print(f"wfp-harness capture: {exc}", file=sys.stderr)
        return 2
    _emit(json.dumps(result.to_dict(), indent=2) + "\n" if args.json else _render_text(result, args.all))
    if result.warnings and args.allow_truncated and any("truncated" in w or "corrupt" in w
                                                         for w in result.warnings):
        return 2
    return 1 if result.problems else 0
