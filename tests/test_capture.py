"""Packet evidence from the real simulator: sim.pcap writes captures, harness.capture reads them back.

Worlds are built with the simulator's C-shaped API (tests/capture/simworlds.py):
direct connections, hand-written relaying proxies (one, two, looping back to
themselves), UDP relays, IPv6 and dual-stack. Each capture is checked twice:
frame by frame with scapy (what Wireshark would see) and by the analyzer
(what the hop chain was).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

from harness.capture import CaptureError, HostPort, analyze_file, analyze_packets, read_capture
from sim import pcap

_spec = importlib.util.spec_from_file_location("capture_simworlds", Path(__file__).parent / "capture" / "simworlds.py")
W = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(W)

FORMATS = ("pcap", "pcapng")


def _read_scapy(path):
    from scapy.utils import rdpcap
    return rdpcap(str(path))


def _roundtrip(world, tmp_path, fmt, **kw):
    path = tmp_path / f"capture.{fmt}"
    pcap.write(world.network.packets, path, fmt=fmt, **kw)
    return path, analyze_file(path)


def _same_flows(a, b):
    strip = [{k: v for k, v in f.to_dict().items()} for f in a.flows]
    other = [{k: v for k, v in f.to_dict().items()} for f in b.flows]
    for flows in (strip, other):
        for f in flows:
            for h in f["hops"]:
                h.pop("first_ns"), h.pop("last_ns")
    return strip == other


# -- the writer: frames as Wireshark sees them --------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_direct_tcp_frames_are_real_ethernet_ip_tcp(tmp_path, fmt):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    world = W.direct_tcp()
    sim_packets = world.network.packets
    path = tmp_path / f"direct.{fmt}"
    written = pcap.write(sim_packets, path, fmt=fmt)
    frames = _read_scapy(path)
    assert len(frames) == written
    # The 5019-byte response crosses Ethernet: cut into 1460-byte segments with consecutive seqs.
    resp_sim = next(p for p in sim_packets if len(p.payload) == len(W.RESPONSE))
    pieces = [f for f in frames if f.haslayer(TCP) and f[TCP].sport == 443 and len(f[TCP].payload)]
    assert [len(f[TCP].payload) for f in pieces] == [1460, 1460, 1460, 639]
    assert [f[TCP].seq for f in pieces] == [(resp_sim.seq + 1460 * i) & 0xFFFFFFFF for i in range(4)]
    assert b"".join(bytes(f[TCP].payload) for f in pieces) == W.RESPONSE
    syn = frames[0]
    assert syn[TCP].flags == "S" and dict(syn[TCP].options)["MSS"] == 1460 and syn[TCP].window == 65535
    assert frames[1][TCP].flags == "SA" and frames[2][TCP].flags == "A"
    for f in frames:
        assert f.haslayer(Ether) and f.haslayer(IP)
        assert f[Ether].src == pcap.mac_for(f[IP].src) and f[Ether].dst == pcap.mac_for(f[IP].dst)
        # checksums as written equal what scapy recomputes from scratch
        rebuilt = f[IP].copy()
        del rebuilt.chksum, rebuilt[TCP].chksum
        rebuilt = IP(bytes(rebuilt))
        assert (rebuilt.chksum, rebuilt[TCP].chksum) == (f[IP].chksum, f[TCP].chksum)
    # timestamps: the fixed epoch plus virtual time, exact to the nanosecond
    expanded = [p for p in sim_packets for _ in range(4 if p is resp_sim else 1)]
    for f, sent in zip(frames, expanded, strict=True):
        assert int(f.time * 1_000_000_000) == pcap.EPOCH_NS + sent.time_ns


def test_mac_addresses_are_deterministic_and_locally_administered():
    assert pcap.mac_for("192.0.2.1") == pcap.mac_for(bytes([192, 0, 2, 1]))
    assert pcap.mac_for("192.0.2.1") != pcap.mac_for("192.0.2.2")
    assert int(pcap.mac_for("2001:db8::1").split(":")[0], 16) & 0x03 == 0x02   # local, unicast


def test_same_world_gives_byte_identical_files(tmp_path):
    a, b = tmp_path / "a.pcapng", tmp_path / "b.pcapng"
    pcap.write(W.proxied_tcp().network.packets, a, fmt="pcapng")
    pcap.write(W.proxied_tcp().network.packets, b, fmt="pcapng")
    assert a.read_bytes() == b.read_bytes()


def test_loopback_frames_use_null_encapsulation_in_pcapng(tmp_path):
    from scapy.layers.inet import IP
    from scapy.utils import RawPcapNgReader
    world = W.proxied_tcp(("127.0.0.1", "::1"), dest=("2001:db8:1::7", 443))
    path = tmp_path / "mixed.pcapng"
    pcap.write(world.network.packets, path, fmt="pcapng")
    families = set()
    with RawPcapNgReader(str(path)) as reader:
        for data, meta in reader:
            if meta.linktype == pcap.LINKTYPE_NULL:
                families.add(int.from_bytes(data[:4], "little"))
                version = data[4] >> 4
                assert (version == 4) == (int.from_bytes(data[:4], "little") == 2)
            else:
                assert meta.linktype == pcap.LINKTYPE_ETHERNET
        names = [i[2].get("name") for i in reader.interfaces]
    assert families == {2, 24}
    assert names == [b"sim-ethernet", b"sim-loopback"]
    # classic pcap, mixed: one link type, loopback frames between zero MACs
    frames = _read_scapy(_roundtrip(world, tmp_path, "pcap")[0])
    lo = [f for f in frames if f.haslayer(IP) and f[IP].src == "127.0.0.1"]
    assert lo and all(f.src == f.dst == "00:00:00:00:00:00" for f in lo)


def test_all_loopback_pcap_uses_linktype_null(tmp_path):
    from scapy.utils import RawPcapReader
    world = W.looping_proxy()
    path = tmp_path / "lo.pcap"
    pcap.write(world.network.packets, path, fmt="pcap")
    with RawPcapReader(str(path)) as reader:
        assert reader.linktype == pcap.LINKTYPE_NULL
    assert analyze_file(path).loops


def test_notes_become_pcapng_packet_comments_only_when_annotating(tmp_path):
    packets = list(W.proxied_tcp().network.packets)
    note = "redirected by vendor-x to 127.0.0.1:5000; original 198.51.100.7:443"
    packets[0] = dataclasses.replace(packets[0], note=note)
    for annotate, expected in ((True, [note]), (False, [])):
        path = tmp_path / f"n{annotate}.pcapng"
        pcap.write(packets, path, fmt="pcapng", annotate=annotate)
        frames = _read_scapy(path)
        got = [c.decode() for c in (getattr(frames[0], "comments", None) or [])]
        assert got == expected
        assert not any(getattr(f, "comments", None) for f in frames[1:])
    records, _ = read_capture(tmp_path / "nTrue.pcapng")
    assert records[0].comments == [note]


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown capture format"):
        pcap.write([], tmp_path / "x", fmt="etl")
    with pytest.raises(ValueError, match="unknown protocol"):
        pcap.write([_fake("sctp")], tmp_path / "y.pcap")
    # an empty packet list is a valid, empty capture
    pcap.write([], tmp_path / "empty.pcapng", fmt="pcapng")
    assert analyze_file(tmp_path / "empty.pcapng").flows == []


def _fake(proto):
    from sim.net import Packet
    return Packet(0, proto, (bytes([192, 0, 2, 1]), 1), (bytes([192, 0, 2, 2]), 2))


# -- UDP and ICMP frames ------------------------------------------------------------

@pytest.mark.parametrize("dest", ["198.51.100.7", "2001:db8:1::7"])
def test_icmp_port_unreachable_quotes_the_offending_datagram(tmp_path, dest):
    from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror
    from scapy.layers.inet6 import ICMPv6DestUnreach, IPerror6, IPv6
    world = W.udp_to_closed_port(dest)
    assert [p.proto for p in world.network.packets] == ["udp", "icmp"]
    path = tmp_path / "icmp.pcapng"
    pcap.write(world.network.packets, path, fmt="pcapng")
    datagram, icmp = _read_scapy(path)
    if ":" in dest:
        assert icmp[ICMPv6DestUnreach].type == 1 and icmp[ICMPv6DestUnreach].code == 4
        quoted = icmp[IPerror6]
        assert bytes(quoted)[:48] == bytes(datagram[IPv6])[:48]
        assert icmp[IPv6].src == dest
    else:
        assert icmp[ICMP].type == 3 and icmp[ICMP].code == 3
        quoted = icmp[IPerror]
        assert quoted.id == datagram[IP].id and len(bytes(quoted)) == 28
        assert bytes(quoted) == bytes(datagram[IP])[:28]
        assert icmp[IP].src == dest
    assert quoted[UDPerror].sport == datagram[UDP].sport and quoted[UDPerror].dport == 9999
    flow, = analyze_file(path).flows
    assert flow.proto == "udp" and not flow.reached and flow.verdict == "unreached"
    assert flow.final_destination is None and flow.last_destination == HostPort(dest, 9999)
    assert "ICMP port unreachable" in flow.reasons[0]


# -- the analyzer on simulated worlds -----------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_direct_connection_has_no_hops(tmp_path, fmt):
    world = W.direct_tcp()
    _path, result = _roundtrip(world, tmp_path, fmt)
    conn, = result.connections
    assert conn.handshake and conn.state == "closed"
    assert (conn.bytes_c2s, conn.bytes_s2c) == (len(W.REQUEST), len(W.RESPONSE))
    assert conn.data_c2s == W.REQUEST and conn.data_s2c == W.RESPONSE
    flow, = result.flows
    assert flow.client.ip == "192.0.2.1" and flow.proxies == []
    assert flow.final_destination == HostPort("198.51.100.7", 443)
    assert flow.reached and flow.verdict == "ok" and not result.problems
    assert _same_flows(result, analyze_packets(world.network.packets))


@pytest.mark.parametrize("fmt", FORMATS)
def test_single_proxy_chain_is_followed_through_resegmentation(tmp_path, fmt):
    world = W.proxied_tcp()
    _path, result = _roundtrip(world, tmp_path, fmt)
    flow, = result.flows
    assert flow.proxies == [HostPort("127.0.0.1", 5000)]
    assert flow.final_destination == HostPort("198.51.100.7", 443)
    assert flow.reached and flow.intact and flow.verdict == "ok"
    a, b = flow.hops
    assert a.src.ip == "127.0.0.1" and a.dst == HostPort("127.0.0.1", 5000) and a.to_proxy
    assert b.src.ip == "192.0.2.1" and not b.to_proxy and b.evidence == "bytes"
    assert (a.bytes_c2s, a.bytes_s2c) == (b.bytes_c2s, b.bytes_s2c) == (len(W.REQUEST), len(W.RESPONSE))
    assert b.intact_c2s and b.intact_s2c
    # the proxy re-sent the request in 100-byte pieces: B has 11 data segments, A one
    segs_b = [p for p in world.network.packets if p.dst == (bytes([198, 51, 100, 7]), 443) and p.payload]
    assert len(segs_b) == 11
    assert "192.0.2.1" in result.local_addresses          # learned: the proxy's outbound address
    assert _same_flows(result, analyze_packets(world.network.packets))


def test_two_proxy_chain(tmp_path):
    world = W.proxied_tcp(("127.0.0.1", "127.0.0.1"))
    _path, result = _roundtrip(world, tmp_path, "pcapng")
    flow, = result.flows
    assert flow.proxies == [HostPort("127.0.0.1", 5000), HostPort("127.0.0.1", 6000)]
    assert [h.dst for h in flow.hops] == flow.proxies + [HostPort("198.51.100.7", 443)]
    assert flow.chain[0] == flow.client and flow.chain[-1] == flow.final_destination
    assert flow.reached and flow.intact and not flow.loop
    assert all(h.intact_c2s and h.intact_s2c for h in flow.hops[1:])


def test_ipv6_proxy_chain(tmp_path):
    world = W.proxied_tcp(("::1",), dest=("2001:db8:1::7", 8443))
    _path, result = _roundtrip(world, tmp_path, "pcapng")
    flow, = result.flows
    assert flow.proxies == [HostPort("::1", 5000)]
    assert flow.final_destination == HostPort("2001:db8:1::7", 8443)
    assert str(flow.final_destination) == "[2001:db8:1::7]:8443"
    assert flow.reached and flow.intact


def test_dual_stack_proxy_chain_crosses_address_families(tmp_path):
    # The proxy listens on [::]:5000 with IPV6_V6ONLY off; the client comes in
    # over IPv4 loopback, the proxy goes out over IPv6.
    world = W.proxied_tcp(("127.0.0.1",), dest=("2001:db8:1::7", 443), dual_stack=True)
    _path, result = _roundtrip(world, tmp_path, "pcap")
    flow, = result.flows
    assert flow.client.ip == "127.0.0.1" and flow.proxies == [HostPort("127.0.0.1", 5000)]
    assert flow.final_destination == HostPort("2001:db8:1::7", 443)
    assert flow.hops[1].src.ip == "2001:db8::1"
    assert flow.reached and flow.intact


@pytest.mark.parametrize("with_data", [True, False], ids=["relaying", "no-bytes"])
def test_redirect_loop_is_found_with_its_chain(tmp_path, with_data):
    world = W.looping_proxy(times=3, with_data=with_data)
    path, result = _roundtrip(world, tmp_path, "pcapng")
    flow, = result.flows
    proxy = HostPort("127.0.0.1", 5000)
    assert flow.loop and flow.verdict == "loop" and not flow.reached
    assert flow.loop_chain == [proxy] * 4
    assert flow.proxies == [proxy] * 4 and flow.distinct_proxies == [proxy]
    assert flow.final_destination is None and flow.last_destination == proxy
    assert not flow.intact and result.unreached == [flow]
    assert [h.evidence for h in flow.hops] == ["first"] + ["bytes" if with_data else "timing"] * 3
    assert "visits 127.0.0.1:5000 4 times" in flow.reasons[0]
    assert result.loops == [flow] and result.problems == [flow]
    from harness.cli import main
    assert main(["capture", "analyze", str(path)]) == 1


def test_udp_relay_chain(tmp_path):
    world = W.udp_relay()
    _path, result = _roundtrip(world, tmp_path, "pcapng")
    assert len(result.udp_flows) == 2 and not result.connections
    flow, = result.flows
    assert flow.proto == "udp"
    assert flow.proxies == [HostPort("127.0.0.1", 5353)]
    assert flow.final_destination == HostPort("198.51.100.7", 53)
    assert flow.reached and flow.intact
    assert (flow.bytes_c2s, flow.bytes_s2c) == (len(W.QUERY), len(W.ANSWER))
    assert flow.hops[1].evidence == "bytes"


def test_udp_relay_chain_ipv6(tmp_path):
    world = W.udp_relay(dest_ip="2001:db8:1::7", relay_ip="::1")
    _path, result = _roundtrip(world, tmp_path, "pcap")
    flow, = result.flows
    assert flow.proxies == [HostPort("::1", 5353)]
    assert flow.final_destination == HostPort("2001:db8:1::7", 53) and flow.intact


def test_udp_flows_split_on_idle_timeout(tmp_path):
    world, ch, sh = W.new_world()
    client = world.start_process(ch, "client")
    server = world.start_process(sh, "server")
    srv = W.udp_bind(server, "0.0.0.0", 53)
    cs = W.udp_bind(client, "0.0.0.0", 40000)
    W.sendto(client, cs, b"one", "198.51.100.7", 53)
    world.run(ms=5_000)
    W.sendto(client, cs, b"two", "198.51.100.7", 53)
    world.run_until_idle()
    assert W.recvfrom(server, srv) == b"one"
    path = tmp_path / "idle.pcapng"
    pcap.write(world.network.packets, path, fmt="pcapng")
    assert len(analyze_file(path).udp_flows) == 1
    flows = analyze_file(path, udp_idle_timeout_ns=1_000_000_000).udp_flows
    assert [f.datagrams_c2s for f in flows] == [[b"one"], [b"two"]]


# -- unreached destinations, with and without the simulator's notes -----------------

def _proxy_to_dead_end(dest_ip, dest_port):
    """Client -> proxy 127.0.0.1:5000 -> dest; no bytes flow before the onward connect fails."""
    world, ch, _sh = W.new_world()
    client = world.start_process(ch, "client")
    proxy = world.start_process(ch, "proxy")
    plst = W.tcp_listen(proxy, "127.0.0.1", 5000)
    c = W.tcp_connect(client, "127.0.0.1", 5000)
    a = W.accept(proxy, plst)
    b, err = W.try_connect(proxy, dest_ip, dest_port)
    assert b is None and err
    W.linger_reset(proxy, [a])
    client.closesocket(c)
    world.run_until_idle()
    return world, err


def _annotated(packets, original):
    out = list(packets)
    first_syn = next(i for i, p in enumerate(out) if p.proto == "tcp" and p.flags == 0x02)
    out[first_syn] = dataclasses.replace(
        out[first_syn], note=f"redirected by vendor-x to 127.0.0.1:5000; original {original}")
    return out


def test_no_answer_at_destination_needs_notes_or_local_addresses_to_chain(tmp_path):
    world, err = _proxy_to_dead_end("203.0.113.9", 443)      # nobody has that address
    assert err == 10060                                      # WSAETIMEDOUT after SYN retries
    packets = world.network.packets
    # Without notes the proxy's outbound connection cannot be tied to the client's.
    plain = tmp_path / "plain.pcapng"
    pcap.write(packets, plain, fmt="pcapng")
    assert all(len(f.hops) == 1 for f in analyze_file(plain).flows)
    # With the simulator's redirect note it can, and the flow is unreached.
    noted = tmp_path / "noted.pcapng"
    pcap.write(_annotated(packets, "203.0.113.9:443"), noted, fmt="pcapng")
    result = analyze_file(noted)
    flow = result.flows_from(HostPort("127.0.0.1", 49152))[0]
    assert flow.proxies == [HostPort("127.0.0.1", 5000)]
    assert flow.final_destination is None and flow.last_destination == HostPort("203.0.113.9", 443)
    assert flow.original_destination == HostPort("203.0.113.9", 443)
    assert flow.hops[0].redirected_by == "vendor-x" and flow.hops[1].evidence == "note"
    assert flow.verdict == "unreached" and "no answer" in flow.reasons[0]
    assert result.flows_to("203.0.113.9:443") == [flow]
    # Or, with no notes (a pktmon capture), naming the machine's address is enough.
    result = analyze_file(plain, local_addresses=["192.0.2.1"])
    flow, = result.flows
    assert flow.hops[1].evidence == "timing" and flow.verdict == "unreached"


def test_refused_destination_is_unreached(tmp_path):
    world, err = _proxy_to_dead_end("198.51.100.7", 81)     # server host up, no listener
    assert err == 10061
    path = tmp_path / "refused.pcapng"
    pcap.write(_annotated(world.network.packets, "198.51.100.7:81"), path, fmt="pcapng")
    flow, = analyze_file(path).flows
    assert flow.hops[-1].state == "refused" and not flow.reached
    assert "refused" in flow.reasons[0]


def test_chain_ending_at_a_proxy_is_unreached(tmp_path):
    world, ch, _sh = W.new_world()
    client = world.start_process(ch, "client")
    proxy = world.start_process(ch, "proxy")
    plst = W.tcp_listen(proxy, "127.0.0.1", 5000)
    c = W.tcp_connect(client, "127.0.0.1", 5000)
    W.send(client, c, W.REQUEST)
    a = W.accept(proxy, plst)
    W.recv_exactly(proxy, a, len(W.REQUEST))     # ... and never connects onwards
    W.close(proxy, a)
    W.close(client, c)
    world.run_until_idle()
    plain = tmp_path / "plain.pcap"
    pcap.write(world.network.packets, plain)
    assert analyze_file(plain).flows[0].reached          # nothing says 5000 is a proxy
    for result in (analyze_file(plain, proxies=["127.0.0.1:5000"]),
                   analyze_packets(_annotated(world.network.packets, "198.51.100.7:443"))):
        flow, = result.flows
        assert not flow.reached and flow.verdict == "unreached"
        assert "ends at proxy 127.0.0.1:5000" in flow.reasons[0]


# -- CLI ----------------------------------------------------------------------------

def test_cli_prints_hops_and_json(tmp_path, capsys):
    from harness.cli import main
    path = tmp_path / "two.pcapng"
    pcap.write(W.proxied_tcp(("127.0.0.1", "127.0.0.1")).network.packets, path, fmt="pcapng")
    assert main(["capture", "analyze", str(path)]) == 0
    out = capsys.readouterr().out
    assert "via 2 proxies: ok" in out and "hop 3: 192.0.2.1:" in out and "bytes intact" in out
    assert main(["capture", "analyze", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    flow, = data["flows"]
    assert flow["proxies"] == ["127.0.0.1:5000", "127.0.0.1:6000"]
    assert flow["final_destination"] == "198.51.100.7:443" and flow["verdict"] == "ok" and flow["intact"]
    assert [h["bytes_c2s"] for h in flow["hops"]] == [len(W.REQUEST)] * 3


def test_truncated_simulator_capture_reports_packets_before_the_cut(tmp_path):
    path = tmp_path / "cut.pcapng"
    pcap.write(W.proxied_tcp().network.packets, path, fmt="pcapng")
    whole = len(read_capture(path)[0])
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 10])
    with pytest.raises(CaptureError) as info:
        analyze_file(path)
    assert info.value.packets_read == whole - 1
    assert str(path) in str(info.value) and "truncated" in str(info.value)
    partial = analyze_file(path, allow_truncated=True)
    assert partial.packets == whole - 1 and any("truncated" in w for w in partial.warnings)
