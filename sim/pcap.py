"""Write the simulator's packet log (`world.network.packets`) as a capture file.

    from sim import pcap
    pcap.write(world.network.packets, "run.pcapng", fmt="pcapng", annotate=True)

Every `sim.net.Packet` becomes a real frame built with scapy, so Wireshark,
tshark and `harness.capture` read it like a capture taken on the machine:

* Ethernet / IPv4 or IPv6 / TCP (seq, ack, flags, window 65535, MSS option
  on SYN and SYN-ACK) or UDP, with IP, TCP and UDP checksums computed.
  MAC addresses are deterministic per IP address (`mac_for`), so a run
  always produces the same bytes.
* A TCP payload longer than the path's MSS (1460 on Ethernet for IPv4,
  1440 for IPv6; 65495 / 65475 on loopback) is cut into MSS-sized segments
  with consecutive sequence numbers and the same timestamp: what the wire
  shows when the sender does not offload segmentation.
* 'icmp' packets (the simulator logs one for a UDP datagram nobody
  receives) become ICMPv4 destination unreachable / port unreachable
  (type 3 code 3) or ICMPv6 destination unreachable / port unreachable
  (type 1 code 4), quoting the offending datagram's IP header and UDP
  header exactly as they were written (same IP id, lengths, checksum).
* Loopback traffic (127.0.0.0/8, ::1, or a host talking to its own address)
  appears as on a Windows loopback capture (Npcap loopback adapter): BSD
  loopback encapsulation (LINKTYPE_NULL, 4-byte family 2 for IPv4, 24 for
  IPv6). pcapng files carry two interfaces, "sim-ethernet" (Ethernet) and
  "sim-loopback" (NULL), and each frame sits on the right one. A classic
  pcap file has a single link type: NULL when every packet is loopback,
  otherwise Ethernet with loopback frames between all-zero MAC addresses
  (how Linux shows its `lo` interface).
* Timestamps are `EPOCH_NS + time_ns` with nanosecond resolution (pcap:
  nanosecond magic 0xa1b23c4d; pcapng: if_tsresol = 9), so the virtual clock
  survives exactly and the dates read 2024-01-01.
* pcapng only: with annotate=True each packet's `note` (e.g. "redirected by
  vendor-x to 127.0.0.1:5000; original 198.51.100.7:443") is written as the
  packet's comment (opt_comment, shown by Wireshark as "Packet comments" and
  by tshark as `frame.comment`). Classic pcap has no place for comments:
  the notes are dropped there.

The container (pcap header, pcapng blocks) is written by this module rather
than by scapy's writers so the nanosecond timestamps and the per-interface
link types are exact whichever scapy version is installed; the frames are
scapy's. scapy is imported on first use only (it takes ~1 s to import).
"""
from __future__ import annotations

import hashlib
import ipaddress
import struct

EPOCH_NS = 1_704_067_200 * 1_000_000_000        # 2024-01-01T00:00:00Z
SNAPLEN = 262_144
LINKTYPE_NULL, LINKTYPE_ETHERNET = 0, 1
NULL_AF_INET, NULL_AF_INET6 = 2, 24             # BSD loopback header values (24: IPv6)
TTL = 128                                       # Windows' default TTL / hop limit
WINDOW = 65535
MSS = {(4, False): 1460, (6, False): 1440, (4, True): 65495, (6, True): 65475}
ZERO_MAC = "00:00:00:00:00:00"

_FORMATS = ("pcap", "pcapng")


def mac_for(ip) -> str:
    """The deterministic, locally administered unicast MAC of an IP address (bytes or text)."""
    raw = ipaddress.ip_address(ip).packed if isinstance(ip, str) else bytes(ip)
    digest = hashlib.sha256(b"sim-mac:" + raw).digest()
    return ":".join(f"{b:02x}" for b in (0x02,) + tuple(digest[:5]))


def _unmap(raw: bytes) -> bytes:
    raw = bytes(raw)
    if len(raw) == 16 and raw[:12] == b"\0" * 10 + b"\xff\xff":
        return raw[12:]
    return raw


def _is_loopback(raw: bytes) -> bool:
    return raw[0] == 127 if len(raw) == 4 else raw == b"\0" * 15 + b"\x01"


def is_local_frame(src_ip: bytes, dst_ip: bytes) -> bool:
    """Would this packet travel on the loopback path (loopback address or a host talking to itself)?"""
    return _is_loopback(src_ip) or _is_loopback(dst_ip) or src_ip == dst_ip


def _text(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


class _Builder:
    """Turns sim Packets into (link, timestamp_ns, frame bytes, note) in order."""

    def __init__(self):
        from scapy.layers.inet import ICMP, IP, TCP, UDP
        from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6
        from scapy.layers.l2 import Ether
        from scapy.packet import Raw
        self.IP, self.IPv6, self.TCP, self.UDP, self.ICMP = IP, IPv6, TCP, UDP, ICMP
        self.ICMPv6DestUnreach, self.Ether, self.Raw = ICMPv6DestUnreach, Ether, Raw
        self.ip_id = 0
        self.udp_sent = {}          # (src, dst) -> bytes of the last UDP IP packet written

    def _next_id(self) -> int:
        self.ip_id = (self.ip_id + 1) & 0xFFFF
        return self.ip_id

    def _ip(self, src: bytes, dst: bytes, nh: int):
        if len(src) == 4:
            return self.IP(src=_text(src), dst=_text(dst), ttl=TTL, id=self._next_id(), flags="DF")
        return self.IPv6(src=_text(src), dst=_text(dst), hlim=TTL, nh=nh)

    def l3_packets(self, p) -> list[bytes]:
        """The IP packets (bytes, checksums computed) one sim Packet becomes."""
        src_ip, dst_ip = _unmap(p.src[0]), _unmap(p.dst[0])
        if len(src_ip) != len(dst_ip):
            raise ValueError(f"packet at {p.time_ns} ns mixes IPv4 and IPv6 addresses: {p!r}")
        version = 4 if len(src_ip) == 4 else 6
        if p.proto == "tcp":
            local = is_local_frame(src_ip, dst_ip)
            mss = MSS[(version, local)]
            payload = bytes(p.payload)
            chunks = [payload[i:i + mss] for i in range(0, len(payload), mss)] or [b""]
            out = []
            seq = p.seq
            for n, chunk in enumerate(chunks):
                flags = p.flags
                if n < len(chunks) - 1:
                    flags &= ~0x01                       # a FIN goes on the last piece only
                options = [("MSS", mss)] if p.flags & 0x02 else []
                tcp = self.TCP(sport=p.src[1], dport=p.dst[1], seq=seq & 0xFFFFFFFF,
                               ack=p.ack & 0xFFFFFFFF, flags=flags,
                               window=0 if p.flags & 0x04 else WINDOW, options=options)
                pkt = self._ip(src_ip, dst_ip, 6) / tcp
                if chunk:
                    pkt = pkt / self.Raw(chunk)
                out.append(bytes(pkt))
                seq += len(chunk)
            return out
        if p.proto == "udp":
            pkt = self._ip(src_ip, dst_ip, 17) / self.UDP(sport=p.src[1], dport=p.dst[1])
            if p.payload:
                pkt = pkt / self.Raw(bytes(p.payload))
            raw = bytes(pkt)
            self.udp_sent[((src_ip, p.src[1]), (dst_ip, p.dst[1]))] = raw
            return [raw]
        if p.proto == "icmp":
            # The simulator logs ICMP port unreachable as src = the unreachable
            # (address, port), dst = the sender of the datagram.
            offending = self.udp_sent.get(((dst_ip, p.dst[1]), (src_ip, p.src[1])))
            if offending is None:      # not in the log: rebuild a plausible header
                pkt = self._ip(dst_ip, src_ip, 17) / self.UDP(sport=p.dst[1], dport=p.src[1])
                offending = bytes(pkt)
            if version == 4:
                ihl = (offending[0] & 0x0F) * 4
                quoted = offending[:ihl + 8]
                pkt = self._ip(src_ip, dst_ip, 1) / self.ICMP(type=3, code=3) / self.Raw(quoted)
            else:
                quoted = offending[:40 + 8]
                pkt = self._ip(src_ip, dst_ip, 58) / self.ICMPv6DestUnreach(code=4) / self.Raw(quoted)
            return [bytes(pkt)]
        raise ValueError(f"unknown protocol {p.proto!r} in packet at {p.time_ns} ns")

    def frames(self, packets, single_link=None):
        """Yield (link, ts_ns, frame, note): link 'eth' or 'lo'."""
        for p in packets:
            src_ip, dst_ip = _unmap(p.src[0]), _unmap(p.dst[0])
            local = is_local_frame(src_ip, dst_ip)
            note = p.note or ""
            for n, l3 in enumerate(self.l3_packets(p)):
                v6 = len(src_ip) == 16
                if local and single_link != LINKTYPE_ETHERNET:
                    frame = struct.pack("<I", NULL_AF_INET6 if v6 else NULL_AF_INET) + l3
                    link = "lo"
                else:
                    if local:
                        src_mac = dst_mac = ZERO_MAC
                    else:
                        src_mac, dst_mac = mac_for(src_ip), mac_for(dst_ip)
                    ether = self.Ether(src=src_mac, dst=dst_mac, type=0x86DD if v6 else 0x0800)
                    frame = bytes(ether) + l3
                    link = "lo" if local else "eth"
                yield link, EPOCH_NS + int(p.time_ns), frame, (note if n == 0 else "")


# -- containers -----------------------------------------------------------------

def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


def _block(block_type: int, body: bytes) -> bytes:
    body = _pad4(body)
    length = 12 + len(body)
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def _write_pcap(f, frames, linktype) -> None:
    f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, SNAPLEN, linktype))
    for _link, ts, frame, _note in frames:
        sec, nsec = divmod(ts, 1_000_000_000)
        f.write(struct.pack("<IIII", sec, nsec, len(frame), len(frame)) + frame)


def _write_pcapng(f, frames, links, annotate) -> None:
    shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    shb += _option(4, b"wfp-redirect-harness sim.pcap") + _option(0, b"")
    f.write(_block(0x0A0D0D0A, shb))
    ifid = {}
    names = {"eth": (LINKTYPE_ETHERNET, b"sim-ethernet", b"simulated network (all hosts)"),
             "lo": (LINKTYPE_NULL, b"sim-loopback", b"simulated loopback (Npcap-style NULL encapsulation)")}
    for link in links:
        linktype, name, description = names[link]
        body = struct.pack("<HHI", linktype, 0, SNAPLEN)
        body += _option(2, name) + _option(3, description) + _option(9, bytes([9])) + _option(0, b"")
        f.write(_block(1, body))
        ifid[link] = len(ifid)
    for link, ts, frame, note in frames:
        body = struct.pack("<IIIII", ifid[link], ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame))
        body += _pad4(frame)
        if annotate and note:
            body += _option(1, note.encode("utf-8")) + _option(0, b"")
        f.write(_block(6, body))


def write(packets, path, fmt: str = "pcap", annotate: bool = True) -> int:
    """Write sim Packets to `path` as a pcap or pcapng file; return the number of frames written.

    fmt: "pcap" (classic, nanosecond timestamps) or "pcapng".
    annotate: pcapng only, write each packet's note as its comment.
    Raises ValueError for an unknown format or a malformed Packet (nothing is
    left half-written: the file is built in memory first).
    """
    if fmt not in _FORMATS:
        raise ValueError(f"unknown capture format {fmt!r}; choose one of {', '.join(_FORMATS)}")
    packets = list(packets)
    builder = _Builder()
    locality = [is_local_frame(_unmap(p.src[0]), _unmap(p.dst[0])) for p in packets]
    if fmt == "pcap":
        linktype = LINKTYPE_NULL if packets and all(locality) else LINKTYPE_ETHERNET
        frames = list(builder.frames(packets, single_link=linktype))
    else:
        frames = list(builder.frames(packets))
    import io
    buf = io.BytesIO()
    if fmt == "pcap":
        _write_pcap(buf, frames, linktype)
    else:
        links = [link for link in ("eth", "lo") if any(f[0] == link for f in frames)] or ["eth"]
        _write_pcapng(buf, frames, links, annotate)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return len(frames)
