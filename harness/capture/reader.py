"""Read pcap / pcapng files into protocol records, with clear errors for bad files.

The file structure is checked first by a small scanner of our own (record
and block boundaries, lengths, magic numbers), because scapy's readers stop
silently at a truncated record or a damaged block; then scapy's readers
(`RawPcapReader`, `RawPcapNgReader`) read the records and scapy dissects the
frames by link type (Ethernet, BSD loopback/NULL, raw IP, Linux cooked).
Every problem becomes a `CaptureError` naming the file.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import ipaddress
import logging
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from harness.capture.model import HostPort
from harness.input_error import InputError

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": ("<", 1_000), b"\xa1\xb2\xc3\xd4": (">", 1_000),
               b"\x4d\x3c\xb2\xa1": ("<", 1), b"\xa1\xb2\x3c\x4d": (">", 1)}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"
MAX_RECORD = 16 * 1024 * 1024
# A gzip capture can expand ~1000-fold: refuse one that decompresses to more
# than this (a 200 KB file could otherwise take 200 MB and minutes to walk).
MAX_DECOMPRESSED = 64 * 1024 * 1024
_GUNZIP_CHUNK = 1024 * 1024
PACKET_BLOCKS = (2, 3, 6)           # obsolete packet block, simple packet block, enhanced packet block


class CaptureError(InputError):
    """A capture file that cannot be read: names the file and what is wrong (harness.input_error).

    packets_read: for a truncated or damaged file, how many complete packets
    came before the problem (None when the file is not a capture at all).
    records: those packets (list of Record), so a caller may still look at them.
    """

    def __init__(self, path, problem: str, packets_read: int | None = None, records=None):
        super().__init__(path, 0, "", problem)
        self.problem = problem
        self.packets_read = packets_read
        self.records = records or []


@dataclass
class Record:
    """One IP packet from a capture (or from the simulator's packet log)."""
    index: int                      # position in the file (0-based)
    time_ns: int                    # absolute (capture) or virtual (simulator) time
    proto: str                      # 'tcp' | 'udp' | 'icmp' | 'other'
    src: HostPort
    dst: HostPort
    flags: int = 0
    seq: int = 0
    ack: int = 0
    payload: bytes = b""
    comments: list = field(default_factory=list)
    loopback: bool = False          # seen on a loopback interface (NULL link or zero MACs)
    icmp_unreachable: tuple | None = None   # (proto, quoted src HostPort, quoted dst HostPort)
    truncated: bool = False         # frame captured shorter than the packet (snaplen)


class DecompressedTooLarge(CaptureError):
    """A gzip-compressed capture that decompresses to more than the limit (bytes)."""

    def __init__(self, path, limit: int):
        self.limit = limit
        super().__init__(path, f"gzip-compressed capture decompresses to more than {format_size(limit)}")


def format_size(n: int) -> str:
    """64 MiB, 1 GiB, 1000 bytes: the largest binary unit that divides n exactly."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} byte{'' if n == 1 else 's'}"


# -- structure scanner -------------------------------------------------------------

def _gunzip(path: Path, raw: bytes, limit: int) -> bytes:
    """Decompress in chunks, stopping one chunk past `limit` (never the whole bomb)."""
    out = bytearray()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
            while chunk := gz.read(min(_GUNZIP_CHUNK, limit + 1 - len(out))):
                out += chunk
                if len(out) > limit:
                    raise DecompressedTooLarge(path, limit)
    except (OSError, EOFError, zlib.error) as exc:
        raise CaptureError(path, f"gzip-compressed capture is damaged: {exc}") from None
    return bytes(out)


def _open_bytes(path: Path, max_decompressed: int = MAX_DECOMPRESSED) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CaptureError(path, "no such file") from None
    except IsADirectoryError:
        raise CaptureError(path, "is a directory, not a capture file") from None
    except OSError as exc:
        raise CaptureError(path, f"cannot be read: {exc.strerror or exc}") from None
    if data[:2] == GZIP_MAGIC:
        data = _gunzip(path, data, max_decompressed)
    return data


def _not_a_capture(path: Path, data: bytes) -> CaptureError:
    if not data:
        return CaptureError(path, "empty file (0 bytes), not a pcap or pcapng capture")
    head = data[:4].hex(" ")
    hint = ""
    if path.suffix.lower() == ".etl":
        hint = "; an ETL trace must be converted first: pktmon etl2pcap FILE.etl -o FILE.pcapng"
    elif data[:1] in (b"{", b"[", b"<") or data[:4].isascii():
        hint = " (it looks like text)"
    return CaptureError(path, f"not a pcap or pcapng file: unknown magic number {head}{hint}")


def scan(path, data: bytes) -> tuple[str, int, str | None]:
    """Check the structure; return (format, complete packet count, problem or None)."""
    path = Path(path)
    if data[:4] in PCAP_MAGICS:
        return ("pcap",) + _scan_pcap(path, data)
    if data[:4] == PCAPNG_MAGIC:
        return ("pcapng",) + _scan_pcapng(path, data)
    raise _not_a_capture(path, data)


def _scan_pcap(path, data):
    endian, _ = PCAP_MAGICS[data[:4]]
    if len(data) < 24:
        raise CaptureError(path, f"pcap global header cut short ({len(data)} of 24 bytes)", 0)
    major, _minor = struct.unpack_from(endian + "HH", data, 4)
    if major != 2:
        raise CaptureError(path, f"pcap global header is damaged (version {major}, expected 2)", 0)
    pos, count = 24, 0
    while pos < len(data):
        if len(data) - pos < 16:
            return count, (f"truncated: cut in the middle of a record header at byte {pos} "
                           f"after {count} complete packets")
        (caplen,) = struct.unpack_from(endian + "I", data, pos + 8)
        if caplen > MAX_RECORD:
            return count, (f"corrupt record {count + 1} at byte {pos}: captured length {caplen} "
                           f"is impossible (after {count} complete packets)")
        if pos + 16 + caplen > len(data):
            return count, (f"truncated: record {count + 1} at byte {pos} needs {caplen} bytes, "
                           f"only {len(data) - pos - 16} remain (cut after {count} complete packets)")
        pos += 16 + caplen
        count += 1
    return count, None


def _scan_pcapng(path, data):
    pos, count, endian, interfaces = 0, 0, "<", 0
    while pos < len(data):
        if len(data) - pos < 12:
            return count, (f"truncated: cut in the middle of a block header at byte {pos} "
                           f"after {count} complete packets")
        raw_type = data[pos:pos + 4]
        if raw_type == PCAPNG_MAGIC:
            bom = data[pos + 8:pos + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                return count, f"section header at byte {pos} has a bad byte-order magic {bom.hex(' ')}"
            interfaces = 0
        elif pos == 0:
            raise _not_a_capture(Path(path), data)
        btype, blen = struct.unpack_from(endian + "II", data, pos)
        if blen < 12 or blen % 4:
            return count, (f"corrupt block at byte {pos}: total length {blen} is invalid "
                           f"(after {count} complete packets)")
        if pos + blen > len(data):
            return count, (f"truncated: block at byte {pos} needs {blen} bytes, only {len(data) - pos} "
                           f"remain (cut after {count} complete packets)")
        (trailer,) = struct.unpack_from(endian + "I", data, pos + blen - 4)
        if trailer != blen:
            return count, (f"corrupt block at byte {pos}: leading length {blen} and trailing length "
                           f"{trailer} differ (after {count} complete packets)")
        if btype == 1:
            interfaces += 1
        elif btype in PACKET_BLOCKS:
            if btype in (2, 6):
                (ifid,) = struct.unpack_from(endian + ("H" if btype == 2 else "I"), data, pos + 8)
                if ifid >= interfaces:
                    return count, (f"corrupt packet block at byte {pos}: interface {ifid} was never "
                                   f"described (after {count} complete packets)")
            elif interfaces == 0:
                return count, f"corrupt packet block at byte {pos}: no interface described"
            count += 1
        pos += blen
    return count, None


# -- decoding ----------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_scapy():
    logger = logging.getLogger("scapy")
    runtime = logging.getLogger("scapy.runtime")
    levels = logger.level, runtime.level
    logger.setLevel(logging.ERROR)
    runtime.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(levels[0])
        runtime.setLevel(levels[1])


def _ep(ip: str, port: int) -> HostPort:
    return HostPort(str(ipaddress.ip_address(ip)), int(port))


class _Decoder:
    def __init__(self):
        from scapy.config import conf
        from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
        from scapy.layers.inet6 import ICMPv6DestUnreach, IPerror6, IPv6
        from scapy.layers.l2 import Ether, Loopback
        from scapy.packet import Padding, Raw
        self.conf = conf
        self.IP, self.IPv6, self.TCP, self.UDP, self.ICMP = IP, IPv6, TCP, UDP, ICMP
        self.IPerror, self.TCPerror, self.UDPerror, self.IPerror6 = IPerror, TCPerror, UDPerror, IPerror6
        self.ICMPv6DestUnreach, self.Ether, self.Loopback = ICMPv6DestUnreach, Ether, Loopback
        self.Padding, self.Raw = Padding, Raw

    def dissect(self, linktype: int, frame: bytes):
        if linktype in (0, 108):
            # BSD loopback (NULL / LOOP): a 4-byte family in either byte order,
            # whose IPv6 value differs by platform (24, 28, 30; 23 or 10 seen
            # too), so go by the IP version nibble instead (scapy binds only
            # its own platform's value).
            frame = frame[4:]
            linktype = 101
        cls = self.conf.l2types.num2layer.get(linktype)
        if linktype in (101, 12, 14, 228, 229) or cls is None:     # raw IP variants
            version = frame[0] >> 4 if frame else 0
            cls = self.IP if version == 4 else self.IPv6 if version == 6 else self.conf.raw_layer
        return cls(frame)

    def record(self, index, time_ns, linktype, frame, comments) -> Record | None:
        pkt = self.dissect(linktype, frame)
        ip = pkt.getlayer(self.IP) if pkt.haslayer(self.IP) else None
        ip6 = pkt.getlayer(self.IPv6) if pkt.haslayer(self.IPv6) else None
        if ip is not None and isinstance(ip, self.IPerror):
            ip = None
        if ip6 is not None and isinstance(ip6, self.IPerror6):
            ip6 = None
        if ip is None and ip6 is None:
            return None
        l3 = ip if ip is not None else ip6
        loopback = linktype == 0 or (pkt.haslayer(self.Ether) and pkt[self.Ether].src == pkt[self.Ether].dst
                                     == "00:00:00:00:00:00")
        truncated = False
        if ip is not None:
            truncated = ip.len is not None and len(bytes(ip)) < ip.len
        rec = Record(index, time_ns, "other", _ep(l3.src, 0), _ep(l3.dst, 0),
                     comments=comments, loopback=loopback, truncated=truncated)
        l4 = l3.payload
        if isinstance(l4, self.TCP):
            rec.proto = "tcp"
            rec.src, rec.dst = _ep(l3.src, l4.sport), _ep(l3.dst, l4.dport)
            rec.flags, rec.seq, rec.ack = int(l4.flags), int(l4.seq), int(l4.ack)
            rec.payload = self._payload(l4)
        elif isinstance(l4, self.UDP):
            rec.proto = "udp"
            rec.src, rec.dst = _ep(l3.src, l4.sport), _ep(l3.dst, l4.dport)
            rec.payload = self._payload(l4)
        elif isinstance(l4, (self.ICMP, self.ICMPv6DestUnreach)):
            rec.proto = "icmp"
            unreachable = (isinstance(l4, self.ICMP) and l4.type == 3) or isinstance(l4, self.ICMPv6DestUnreach)
            quoted = l4.getlayer(self.IPerror) or l4.getlayer(self.IPerror6)
            if unreachable and quoted is not None:
                inner = quoted.payload
                if isinstance(inner, self.UDPerror):
                    rec.icmp_unreachable = ("udp", _ep(quoted.src, inner.sport), _ep(quoted.dst, inner.dport))
                elif isinstance(inner, self.TCPerror):
                    rec.icmp_unreachable = ("tcp", _ep(quoted.src, inner.sport), _ep(quoted.dst, inner.dport))
        return rec

    def _payload(self, l4) -> bytes:
        data = bytes(l4.payload)
        pad = l4.getlayer(self.Padding)
        if pad is not None:
            tail = bytes(pad)
            if tail and data.endswith(tail):
                data = data[:-len(tail)]
        return data


def _metadata_time_ns(reader, meta, fmt) -> int:
    if fmt == "pcap":
        scale = 1 if getattr(reader, "nano", False) else 1_000
        return meta.sec * 1_000_000_000 + meta.usec * scale
    ticks = (meta.tshigh << 32) | meta.tslow
    resol = int(meta.tsresol)
    if 1_000_000_000 % resol == 0:
        return ticks * (1_000_000_000 // resol)
    return ticks * 1_000_000_000 // resol


def _comments(meta) -> list:
    raw = getattr(meta, "comments", None)
    if raw is None:
        raw = getattr(meta, "comment", None)
    if raw is None:
        return []
    if isinstance(raw, (bytes, str)):
        raw = [raw]
    return [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in raw]


def read_capture(path, allow_truncated: bool = False,
                 max_decompressed: int = MAX_DECOMPRESSED) -> tuple[list[Record], list[str]]:
    """Read a pcap or pcapng file (optionally gzip-compressed): (records, warnings).

    A damaged or truncated file raises CaptureError (with the packets read
    before the damage) unless allow_truncated, which keeps those packets and
    reports the problem as a warning. A gzip file that decompresses to more
    than max_decompressed bytes raises DecompressedTooLarge.
    """
    path = Path(path)
    data = _open_bytes(path, max_decompressed)
    fmt, count, problem = scan(path, data)
    try:
        with _quiet_scapy():
            from scapy.utils import RawPcapNgReader, RawPcapReader
            decoder = _Decoder()
            fdesc = io.BytesIO(data)
            fdesc.name = str(path)
            reader = (RawPcapReader if fmt == "pcap" else RawPcapNgReader)(fdesc)
            records, warnings = [], []
            linktype = getattr(reader, "linktype", None)
            for index in range(count):
                try:
                    frame, meta = reader._read_packet()
                except EOFError:
                    break
                lt = linktype if fmt == "pcap" else meta.linktype
                ts = _metadata_time_ns(reader, meta, fmt)
                try:
                    rec = decoder.record(index, ts, lt, bytes(frame), _comments(meta) if fmt == "pcapng" else [])
                except Exception as exc:  # noqa: BLE001 -- a frame scapy cannot dissect: keep going
                    warnings.append(f"packet {index + 1}: frame could not be decoded ({exc.__class__.__name__})")
                    continue
                if rec is not None:
                    records.append(rec)
    except CaptureError:
        raise
    except Exception as exc:  # noqa: BLE001 -- never let scapy's internals escape as a traceback
        raise CaptureError(path, f"scapy could not read the {fmt} file: {exc}", 0) from None
    if problem:
        if not allow_truncated:
            raise CaptureError(path, problem, count, records)
        warnings.append(problem)
    return records, warnings


def records_from_sim(packets) -> list[Record]:
    """Records from a list of sim.net.Packet (the simulator's packet log), without a file.

    Duck-typed: anything with time_ns, proto, src, dst, flags, seq, ack,
    payload and note attributes works.
    """
    out = []
    for index, p in enumerate(packets):
        src_ip, dst_ip = _unmap(p.src[0]), _unmap(p.dst[0])
        src = HostPort(str(ipaddress.ip_address(src_ip)), int(p.src[1]))
        dst = HostPort(str(ipaddress.ip_address(dst_ip)), int(p.dst[1]))
        loop = ipaddress.ip_address(src_ip).is_loopback or ipaddress.ip_address(dst_ip).is_loopback \
            or src_ip == dst_ip
        rec = Record(index, int(p.time_ns), p.proto, src, dst, int(p.flags), int(p.seq) & 0xFFFFFFFF,
                     int(p.ack) & 0xFFFFFFFF, bytes(p.payload), [p.note] if p.note else [], loop)
        if p.proto == "icmp":
            rec.icmp_unreachable = ("udp", dst, src)
        out.append(rec)
    return out


def _unmap(raw) -> bytes:
    raw = bytes(raw)
    if len(raw) == 16 and raw[:12] == b"\0" * 10 + b"\xff\xff":
        return raw[12:]
    return raw
