"""harness.capture on captures crafted with scapy and written by scapy's own writers.

These are the shapes a real (pktmon etl2pcap) capture has and the simulator
never produces: records out of time order, retransmissions, overlapping and
reordered segments, sequence-number wraparound, a capture that starts in the
middle of a connection, lost segments, microsecond pcapng with no comments;
and files that are not captures at all.
"""
from __future__ import annotations

import gzip
import random
import shutil
import subprocess

import pytest

from harness.capture import CaptureError, HostPort, analyze_file, read_capture
from harness.cli import main

CLIENT = "192.0.2.1"
SERVER = "198.51.100.7"
PROXY = HostPort("127.0.0.1", 5000)
REQUEST = b"POST /upload HTTP/1.1\r\n\r\n" + bytes(range(256)) * 3            # 793 bytes
RESPONSE = b"HTTP/1.1 201 Created\r\n\r\n" + bytes(255 - (i % 256) for i in range(1500))
T0 = 1_700_000_000.0


class Tcp:
    """Builds the frames of one TCP connection; times in microseconds after T0."""

    def __init__(self, client, server, isn_c=1000, isn_s=900_000):
        self.client, self.server = client, server
        self.isn_c, self.isn_s = isn_c, isn_s
        self.frames = []

    def _frame(self, t_us, c2s, flags, seq, ack, payload=b""):
        from scapy.layers.inet import IP, TCP
        from scapy.layers.inet6 import IPv6
        from scapy.layers.l2 import Ether
        from scapy.packet import Raw
        (sip, sport), (dip, dport) = (self.client, self.server) if c2s else (self.server, self.client)
        ip = IPv6(src=sip, dst=dip) if ":" in sip else IP(src=sip, dst=dip)
        pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip / TCP(
            sport=sport, dport=dport, flags=flags, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF)
        if payload:
            pkt = pkt / Raw(payload)
        pkt.time = T0 + t_us / 1e6
        self.frames.append(pkt)
        return pkt

    def handshake(self, t_us):
        self._frame(t_us, True, "S", self.isn_c, 0)
        self._frame(t_us + 10, False, "SA", self.isn_s, self.isn_c + 1)
        self._frame(t_us + 20, True, "A", self.isn_c + 1, self.isn_s + 1)
        return self

    def data(self, t_us, c2s, payload, offset):
        seq = (self.isn_c if c2s else self.isn_s) + 1 + offset
        ack = (self.isn_s if c2s else self.isn_c) + 1
        return self._frame(t_us, c2s, "PA", seq, ack, payload)

    def stream(self, t_us, c2s, payload, size):
        for n, i in enumerate(range(0, len(payload), size)):
            self.data(t_us + n, c2s, payload[i:i + size], i)
        return self

    def fin(self, t_us, c2s, offset_c, offset_s):
        seq = (self.isn_c + 1 + offset_c) if c2s else (self.isn_s + 1 + offset_s)
        ack = (self.isn_s + 1 + offset_s) if c2s else (self.isn_c + 1 + offset_c)
        return self._frame(t_us, c2s, "FA", seq, ack)


def write(path, frames, comments=None):
    from scapy.utils import PcapNgWriter, wrpcap
    frames = list(frames)
    if str(path).endswith(".pcapng"):
        for f in frames:
            if comments and id(f) in comments:
                f.comments = [comments[id(f)].encode()]
        with PcapNgWriter(str(path)) as w:
            for f in frames:
                w.write(f)
    else:
        wrpcap(str(path), frames)
    return path


def proxied(request_a=None, request_b=None, response=RESPONSE, seg_a=None, seg_b=100):
    """Client -> 127.0.0.1:5000 (leg A) and the proxy's 192.0.2.1 -> server:443 (leg B)."""
    a = Tcp(("127.0.0.1", 50001), ("127.0.0.1", 5000)).handshake(0)
    b = Tcp((CLIENT, 50002), (SERVER, 443), isn_c=0x7000_0000).handshake(100)
    req_a = REQUEST if request_a is None else request_a
    req_b = REQUEST if request_b is None else request_b
    a.stream(1_000, True, req_a, seg_a or len(req_a))
    b.stream(2_000, True, req_b, seg_b)
    b.stream(3_000, False, response, 1460)
    a.stream(4_000, False, response, 65000)
    return a, b


def the_flow(result):
    flow, = result.flows
    return flow


# -- reconstruction --------------------------------------------------------------------

@pytest.mark.parametrize("ext", ["pcap", "pcapng"])
def test_out_of_order_records_are_sorted_by_timestamp(tmp_path, ext):
    a, b = proxied()
    frames = a.frames + b.frames
    in_order = the_flow(analyze_file(write(tmp_path / f"ordered.{ext}", frames)))
    shuffled = frames[:]
    random.Random(7).shuffle(shuffled)
    assert shuffled != frames
    flow = the_flow(analyze_file(write(tmp_path / f"shuffled.{ext}", shuffled)))
    assert flow.proxies == [PROXY] and flow.final_destination == HostPort(SERVER, 443)
    assert flow.intact and flow.verdict == "ok"
    assert flow.to_dict() == in_order.to_dict()


def test_retransmitted_and_overlapping_segments_count_once(tmp_path):
    a, b = proxied(seg_a=500)                         # A: [0,500) [500,793)
    a.data(1_500, True, REQUEST[:500], 0)             # a retransmission
    a.data(1_600, True, REQUEST[300:700], 300)        # an overlapping repacketization
    result = analyze_file(write(tmp_path / "retrans.pcapng", a.frames + b.frames))
    conn_a = next(c for c in result.connections if c.server == PROXY)
    assert conn_a.data_c2s == REQUEST and conn_a.bytes_c2s == len(REQUEST)
    assert conn_a.retransmitted_bytes == 500 + 400
    flow = the_flow(result)
    assert flow.intact and flow.hops[1].intact_c2s


def test_relayed_stream_matches_across_reordered_segmentation(tmp_path):
    a = Tcp(("127.0.0.1", 50001), ("127.0.0.1", 5000)).handshake(0)
    b = Tcp((CLIENT, 50002), (SERVER, 443)).handshake(100)
    for t, (lo, hi) in zip((1_000, 1_001, 1_002), ((400, 793), (0, 200), (200, 400))):
        a.data(t, True, REQUEST[lo:hi], lo)           # arrives 3rd piece first
    b.stream(2_000, True, REQUEST, 37)                # and leaves in 37-byte pieces
    b.stream(3_000, False, RESPONSE, 1000)
    a.stream(4_000, False, RESPONSE, 700)
    flow = the_flow(analyze_file(write(tmp_path / "seg.pcap", a.frames + b.frames)))
    assert flow.proxies == [PROXY] and flow.intact and flow.hops[1].evidence == "bytes"


def test_sequence_numbers_wrapping_around(tmp_path):
    a = Tcp(("127.0.0.1", 50001), ("127.0.0.1", 5000), isn_c=0xFFFF_FF00, isn_s=0xFFFF_FFF0).handshake(0)
    b = Tcp((CLIENT, 50002), (SERVER, 443), isn_c=0xFFFF_FFFF).handshake(100)
    a.stream(1_000, True, REQUEST, 200)
    b.stream(2_000, True, REQUEST, 300)
    b.stream(3_000, False, RESPONSE, 1460)
    a.stream(4_000, False, RESPONSE, 100)
    result = analyze_file(write(tmp_path / "wrap.pcapng", a.frames + b.frames))
    assert all(c.data_c2s == REQUEST and c.data_s2c == RESPONSE for c in result.connections)
    assert the_flow(result).intact


def test_capture_starting_mid_connection(tmp_path):
    t = Tcp((CLIENT, 50123), (SERVER, 443))
    t.data(0, False, RESPONSE[:100], 0)               # first thing seen: the server talking
    t.data(10, True, REQUEST, 0)
    t.data(20, False, RESPONSE[100:], 100)
    conn, = analyze_file(write(tmp_path / "mid.pcap", t.frames)).connections
    assert conn.client == HostPort(CLIENT, 50123) and conn.server == HostPort(SERVER, 443)
    assert not conn.syn and conn.established
    assert conn.data_s2c == RESPONSE and conn.data_c2s == REQUEST


def test_altered_relay_is_chained_but_not_intact(tmp_path):
    changed = REQUEST[:200] + b"X" * 50 + REQUEST[250:]
    a, b = proxied(request_b=changed)
    flow = the_flow(analyze_file(write(tmp_path / "alt.pcapng", a.frames + b.frames)))
    assert flow.proxies == [PROXY]
    assert not flow.intact_c2s and flow.intact_s2c and flow.verdict == "altered"
    assert any("client->server bytes differ" in r for r in flow.reasons)


def test_lost_segment_makes_a_gap_and_no_intact_claim(tmp_path):
    a, b = proxied(seg_a=200)
    lost = next(f for f in a.frames if len(f.payload.payload.payload) == 200 and f.seq == a.isn_c + 1 + 200)
    frames = [f for f in a.frames + b.frames if f is not lost]
    result = analyze_file(write(tmp_path / "lost.pcapng", frames))
    conn_a = next(c for c in result.connections if c.server == PROXY)
    assert conn_a.gap_c2s and conn_a.data_c2s == REQUEST[:200] and conn_a.bytes_c2s == len(REQUEST) - 200
    flow = the_flow(result)
    assert flow.proxies == [PROXY] and not flow.intact_c2s


def test_syn_without_answer_and_syn_refused(tmp_path):
    silent = Tcp((CLIENT, 50001), ("203.0.113.9", 443))
    for t in (0, 3_000_000, 9_000_000):
        silent._frame(t, True, "S", silent.isn_c, 0)
    refused = Tcp((CLIENT, 50002), (SERVER, 81))
    refused._frame(0, True, "S", refused.isn_c, 0)
    refused._frame(10, False, "RA", 0, refused.isn_c + 1)
    result = analyze_file(write(tmp_path / "dead.pcap", silent.frames + refused.frames))
    by_dst = {f.last_destination.port: f for f in result.flows}
    assert by_dst[443].verdict == "unreached" and by_dst[443].hops[0].state == "no-answer"
    assert "SYN sent 3 times" in by_dst[443].reasons[0]
    assert by_dst[81].verdict == "unreached" and by_dst[81].hops[0].state == "refused"
    assert len(result.unreached) == 2


def test_pktmon_style_capture_two_proxies_no_comments(tmp_path):
    # pcapng, Ethernet, microsecond timestamps, no comments (scapy's own writer)
    a = Tcp(("127.0.0.1", 50001), ("127.0.0.1", 5000)).handshake(0)
    b = Tcp(("127.0.0.1", 50002), ("127.0.0.1", 6000)).handshake(100)
    c = Tcp((CLIENT, 50003), (SERVER, 443)).handshake(200)
    a.stream(1_000, True, REQUEST, 1000)
    b.stream(1_100, True, REQUEST, 500)
    c.stream(1_200, True, REQUEST, 100)
    c.stream(2_000, False, RESPONSE, 1460)
    b.stream(2_100, False, RESPONSE, 2000)
    a.stream(2_200, False, RESPONSE, 2000)
    path = write(tmp_path / "pktmon.pcapng", a.frames + b.frames + c.frames)
    records, _ = read_capture(path)
    assert not any(r.comments for r in records)
    flow = the_flow(analyze_file(path))
    assert flow.proxies == [HostPort("127.0.0.1", 5000), HostPort("127.0.0.1", 6000)]
    assert flow.final_destination == HostPort(SERVER, 443) and flow.intact and flow.reached


def test_two_clients_through_one_proxy_are_not_crossed(tmp_path):
    req2 = b"GET /other HTTP/1.1\r\n\r\n" * 10
    a1 = Tcp(("127.0.0.1", 50001), ("127.0.0.1", 5000)).handshake(0)
    a2 = Tcp(("127.0.0.1", 50002), ("127.0.0.1", 5000)).handshake(50)
    b2 = Tcp((CLIENT, 50004), (SERVER, 443)).handshake(150)     # the proxy serves client 2 first
    b1 = Tcp((CLIENT, 50003), (SERVER, 443)).handshake(200)
    a1.stream(1_000, True, REQUEST, 1000)
    a2.stream(1_010, True, req2, 1000)
    b2.stream(1_020, True, req2, 1000)
    b1.stream(1_030, True, REQUEST, 1000)
    result = analyze_file(write(tmp_path / "two.pcapng", a1.frames + a2.frames + b1.frames + b2.frames))
    assert len(result.flows) == 2
    for flow, a, b in zip(result.flows, (a1, a2), (b1, b2)):
        assert flow.client == HostPort(*a.client) and flow.hops[1].src == HostPort(*b.client)
        assert flow.intact_c2s


def test_comment_evidence_links_legs_without_bytes(tmp_path):
    a = Tcp(("127.0.0.1", 50001), ("127.0.0.1", 5000)).handshake(0)
    b = Tcp((CLIENT, 50002), ("203.0.113.5", 8080))
    b._frame(100, True, "S", b.isn_c, 0)
    comments = {id(a.frames[0]): "redirected by Contoso Filter to 127.0.0.1:5000; original 203.0.113.5:8080"}
    result = analyze_file(write(tmp_path / "c.pcapng", a.frames + b.frames, comments))
    flow = the_flow(result)
    assert flow.hops[0].redirected_by == "Contoso Filter" and flow.hops[1].evidence == "note"
    assert flow.original_destination == HostPort("203.0.113.5", 8080)
    assert flow.verdict == "unreached"


# -- bad files -------------------------------------------------------------------------

def _valid_pcap(tmp_path):
    a, b = proxied()
    return write(tmp_path / "valid.pcap", a.frames + b.frames)


def _valid_pcapng(tmp_path):
    a, b = proxied()
    return write(tmp_path / "valid.pcapng", a.frames + b.frames)


def _case(tmp_path, name):
    """(path, expected message fragment, expected packets_read)."""
    p = tmp_path / f"bad-{name}"
    if name == "empty":
        p.write_bytes(b"")
        return p, "empty file", None
    if name == "text":
        p.write_text("this is not a capture\n")
        return p, "it looks like text", None
    if name == "garbage":
        p.write_bytes(bytes(random.Random(1).randrange(128, 256) for _ in range(4096)))
        return p, "unknown magic number", None
    if name == "png":
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
        return p, "unknown magic number 89 50 4e 47", None
    if name == "etl":
        p = tmp_path / "trace.etl"
        p.write_bytes(b"\x00\x00\x00\x00" + b"\x01" * 100)
        return p, "pktmon etl2pcap", None
    valid = _valid_pcap(tmp_path).read_bytes()
    if name == "pcap-header-cut":
        p.write_bytes(valid[:13])
        return p, "global header cut short (13 of 24 bytes)", 0
    if name == "pcap-mid-record":
        # header (24) + the 3 handshake records, then half of the 4th
        pos, n = 24, 0
        while n < 3:
            pos += 16 + int.from_bytes(valid[pos + 8:pos + 12], "little")
            n += 1
        p.write_bytes(valid[:pos + 16 + 10])
        return p, "after 3 complete packets", 3
    if name == "pcap-record-header-cut":
        p.write_bytes(valid[:24 + 16 + int.from_bytes(valid[32:36], "little") + 7])
        return p, "middle of a record header", 1
    if name == "pcap-bad-caplen":
        data = bytearray(valid)
        data[24 + 8:24 + 12] = (0x7FFF_FFFF).to_bytes(4, "little")
        p.write_bytes(bytes(data))
        return p, "captured length 2147483647 is impossible", 0
    ng = _valid_pcapng(tmp_path).read_bytes()
    if name == "pcapng-mid-block":
        p.write_bytes(ng[:len(ng) - 30])
        return p, "truncated: block at byte", len(read_capture(_valid_pcapng(tmp_path))[0]) - 1
    if name == "pcapng-bad-trailer":
        data = bytearray(ng)
        data[-4:] = (12345678).to_bytes(4, "little")
        p.write_bytes(bytes(data))
        return p, "leading length", len(read_capture(_valid_pcapng(tmp_path))[0]) - 1
    if name == "pcapng-unknown-interface":
        data = bytearray(ng)
        shb_len = int.from_bytes(data[4:8], "little")
        idb_len = int.from_bytes(data[shb_len + 4:shb_len + 8], "little")
        epb = shb_len + idb_len
        data[epb + 8:epb + 12] = (7).to_bytes(4, "little")
        p.write_bytes(bytes(data))
        return p, "interface 7 was never described", 0
    if name == "gzip-damaged":
        p = tmp_path / "bad.pcap.gz"
        p.write_bytes(gzip.compress(valid)[:60])
        return p, "gzip-compressed capture is damaged", None
    if name == "directory":
        return tmp_path, "is a directory", None
    if name == "missing":
        return tmp_path / "nope.pcapng", "no such file", None
    raise AssertionError(name)


BAD = ["empty", "text", "garbage", "png", "etl", "pcap-header-cut", "pcap-mid-record", "pcap-record-header-cut",
       "pcap-bad-caplen", "pcapng-mid-block", "pcapng-bad-trailer", "pcapng-unknown-interface", "gzip-damaged",
       "directory", "missing"]


@pytest.mark.parametrize("name", BAD)
def test_bad_files_give_a_capture_error_naming_the_file(tmp_path, name, capsys):
    path, fragment, packets_read = _case(tmp_path, name)
    with pytest.raises(CaptureError) as info:
        analyze_file(path)
    message = str(info.value)
    assert message.startswith(str(path) + ": ") and fragment in message, message
    assert info.value.packets_read == packets_read
    assert main(["capture", "analyze", str(path)]) == 2
    captured = capsys.readouterr()
    assert str(path) in captured.err and fragment in captured.err and "Traceback" not in captured.err


def test_truncated_file_keeps_the_packets_before_the_cut_on_request(tmp_path):
    path, _fragment, read = _case(tmp_path, "pcap-mid-record")
    with pytest.raises(CaptureError) as info:
        read_capture(path)
    assert len(info.value.records) == read == 3
    records, warnings = read_capture(path, allow_truncated=True)
    assert [r.flags for r in records] == [0x02, 0x12, 0x10] and "truncated" in warnings[0]
    assert main(["capture", "analyze", str(path), "--allow-truncated"]) == 2


def test_header_only_and_gzip_captures_are_valid(tmp_path, capsys):
    from scapy.utils import wrpcap
    empty = tmp_path / "header-only.pcap"
    wrpcap(str(empty), [])
    result = analyze_file(empty)
    assert result.packets == 0 and result.flows == [] and not result.problems
    assert main(["capture", "analyze", str(empty)]) == 0
    gz = tmp_path / "valid.pcap.gz"
    gz.write_bytes(gzip.compress(_valid_pcap(tmp_path).read_bytes()))
    assert the_flow(analyze_file(gz)).proxies == [PROXY]
    capsys.readouterr()


# -- tshark ----------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (apt-get install tshark)")
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_tshark_reads_simulator_captures(tmp_path, fmt):
    import importlib.util
    from pathlib import Path

    from sim import pcap
    spec = importlib.util.spec_from_file_location("capture_simworlds_t", Path(__file__).parent / "simworlds.py")
    W = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(W)
    import dataclasses
    packets = list(W.proxied_tcp(("127.0.0.1", "::1"), dest=("2001:db8:1::7", 443)).network.packets)
    packets[0] = dataclasses.replace(packets[0], note="redirected by vendor-x to 127.0.0.1:5000; original "
                                                      "[2001:db8:1::7]:443")
    path = tmp_path / f"sim.{fmt}"
    pcap.write(packets, path, fmt=fmt)

    def tshark(*args):
        run = subprocess.run(["tshark", "-n", "-r", str(path), *args], capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 0, run.stderr
        return [line for line in run.stdout.splitlines() if line]

    synacks = tshark("-Y", "tcp.flags.syn==1 && tcp.flags.ack==1", "-T", "fields",
                     "-e", "ipv6.src", "-e", "ip.src", "-e", "tcp.srcport")
    assert sorted(line.split("\t")[-1] for line in synacks) == ["443", "5000", "6000"]
    bad = tshark("-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
                 "-Y", "tcp.checksum.status==0 || ip.checksum.status==0 || tcp.analysis.flags")
    assert bad == []
    assert len(tshark()) == len(packets) + 3          # the 5019-byte response is 4 frames on Ethernet
    times = tshark("-T", "fields", "-e", "frame.time_epoch")
    assert times[0].startswith("1704067200.")
    if fmt == "pcapng":
        comments = tshark("-T", "fields", "-e", "frame.comment")
        assert comments[0].startswith("redirected by vendor-x") and len([c for c in comments if c]) == 1


def test_parallel_clients_with_the_same_original_destination_are_not_a_loop(tmp_path):
    # Two apps' connections, both redirected to the same proxy with the same
    # original destination, no bytes yet: the second SYN comes before the
    # first one's SYN-ACK, so the proxy cannot have opened it.
    a1 = Tcp(("127.0.0.1", 50001), ("127.0.0.1", 5000)).handshake(0)
    a2 = Tcp(("127.0.0.1", 50002), ("127.0.0.1", 5000)).handshake(5)
    note = "redirected by vendor-x to 127.0.0.1:5000; original 198.51.100.7:443"
    comments = {id(a1.frames[0]): note, id(a2.frames[0]): note}
    result = analyze_file(write(tmp_path / "par.pcapng", a1.frames + a2.frames, comments))
    assert len(result.flows) == 2 and not result.loops


def test_dedupe_drops_pktmon_style_repeats(tmp_path):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    frames = []
    for n, (src, dst, payload) in enumerate([((CLIENT, 40000), (SERVER, 53), b"query"),
                                             ((SERVER, 53), (CLIENT, 40000), b"answer")]):
        for copy in range(3):                       # the same packet at three stack components
            f = Ether() / IP(src=src[0], dst=dst[0]) / UDP(sport=src[1], dport=dst[1]) / payload
            f.time = T0 + n * 0.01 + copy * 2e-6
            frames.append(f)
    path = write(tmp_path / "dup.pcapng", frames)
    plain, = analyze_file(path).udp_flows
    assert plain.datagrams_c2s == [b"query"] * 3
    flow, = analyze_file(path, dedupe_ns=1_000_000).udp_flows
    assert flow.datagrams_c2s == [b"query"] and flow.datagrams_s2c == [b"answer"]
    assert main(["capture", "analyze", str(path), "--dedupe-us", "1000", "--json"]) == 0
