"""The public callout API (sim.wfp.api), used as a driver team would: only through it.

A third vendor (Northwind) with its own callout and the reference proxy is
modelled beside the sample driver (Contoso), in both sublayer orders, over
TCP and UDP, IPv4 and IPv6, and the world's story is checked. Then what a
callout reads (fixed values and metadata with the kernel's encodings), what
`states_seen` records, and the diagnostic each silent failure leaves.
"""
from __future__ import annotations

import ipaddress
import struct

import pytest

from harness.proxy.reference import RedirectProxy
from harness.sample_driver import RedirectPolicy, pack_context_raw
from harness.winsock import constants as C
from harness.winsock import sockaddr
from sim import World
from sim.wfp import api
from sim.worlds.sample_callout import SampleCallout
from sim.worlds.services import EchoServer

CLIENT, SERVER = ("192.0.2.10", "2001:db8::10"), ("192.0.2.20", "2001:db8::20")
PAYLOAD = b"one request, one answer"


class NorthwindCallout:
    """Redirects TCP 80 and UDP 53 to its proxy with the sample driver's context format (so the
    reference proxy serves it), records what it read, and follows the rules of the guide."""
    name = "northwind"

    def __init__(self, driver, proxy_pid):
        self.fwps, self.handle, self.proxy_pid = driver.fwps, driver.redirect_handle, proxy_pid
        self.seen = []                       # (FixedValues, MetaValues) of each classify

    def classify(self, fixed, meta, layer_data, ctx, flt, flow, out):
        self.seen.append((fixed, meta))
        if not out.rights & api.FWPS_RIGHT_ACTION_WRITE:
            return
        port = {api.IPPROTO_TCP: 9300, api.IPPROTO_UDP: 9353}.get(fixed.ip_protocol)
        if port is None or fixed.ip_remote_port not in (80, 53):
            out.actionType = api.FWP_ACTION_PERMIT
            return
        if meta.redirectRecords is not None:
            state, _ = self.fwps.FwpsQueryConnectionRedirectState0(meta.redirectRecords, self.handle)
            if state not in (api.FWPS_CONNECTION_NOT_REDIRECTED, api.FWPS_CONNECTION_REDIRECTED_BY_OTHER):
                out.actionType = api.FWP_ACTION_PERMIT
                return
        status, handle = self.fwps.FwpsAcquireClassifyHandle0(ctx, 0)
        status, w = self.fwps.FwpsAcquireWritableLayerDataPointer0(handle, flt.filterId, 0, out)
        version = w.previousVersion
        while version is not None and version.localRedirectHandle in (None, self.handle):
            version = version.previousVersion
        if version is not None:                          # another vendor's proxy owns this connect
            self.fwps.FwpsApplyModifiedLayerData0(handle, w, 0)
            self.fwps.FwpsReleaseClassifyHandle0(handle)
            out.actionType = api.FWP_ACTION_PERMIT
            out.rights |= api.FWPS_RIGHT_ACTION_WRITE
            return
        (rip, rport), (lip, lport) = w.remoteAddressAndPort, w.localAddressAndPort
        context = pack_context_raw(rip, rport, lip, lport, protocol=fixed.ip_protocol, process_id=api.process_id(meta))
        w.remoteAddressAndPort = api.loopback_like(w.remoteAddressAndPort, port)
        w.localRedirectTargetPID, w.localRedirectHandle = self.proxy_pid, self.handle
        w.localRedirectContext, w.localRedirectContextSize = context, len(context)
        self.fwps.FwpsApplyModifiedLayerData0(handle, w, 0)
        self.fwps.FwpsReleaseClassifyHandle0(handle)
        out.actionType = api.FWP_ACTION_PERMIT


def _world(northwind_first: bool, profile="documented", overrides=None):
    world = World(profile, overrides)
    client, server = world.add_host("client", CLIENT), world.add_host("server", SERVER)
    echo = EchoServer(world.start_process(server, "echo"), tcp_port=80, udp_port=53)
    world.add_service(echo.poll, echo.api)
    drivers = {}
    for vendor, ports, weight in (("Contoso", (9000, 9053), 0x7000 if northwind_first else 0x8000),
                                  ("Northwind", (9300, 9353), 0x8000 if northwind_first else 0x7000)):
        proxy_api = world.start_process(client, f"{vendor.lower()}-proxy")
        proxy = RedirectProxy(proxy_api, vendor, tcp_port=ports[0], udp_port=ports[1]).start()
        world.add_service(proxy.poll, proxy.api)
        pid = proxy_api.GetCurrentProcessId()
        if vendor == "Contoso":
            policy = RedirectPolicy(tcp_ports=(80,), udp_ports=(53,), tcp_proxy_port=ports[0],
                                    udp_proxy_port=ports[1], proxy_process_id=pid)
            make = (lambda policy: lambda d: SampleCallout(d, policy))(policy)
        else:
            make = (lambda pid: lambda d: NorthwindCallout(d, pid))(pid)
        drivers[vendor] = api.install_callout(world, client, make, vendor=vendor, sublayer_weight=weight)
    return world, client, drivers


def _talk(world, client, family, kind, host, port, dual=False):
    app = world.start_process(client, "app", elevated=False)
    s = app.socket(family, kind, 0)
    buf = app.memory.alloc(256)
    if dual:
        app.memory.write_u32(buf, 0)
        assert app.setsockopt(s, C.IPPROTO_IPV6, C.IPV6_V6ONLY, buf, 4) == 0
    name = sockaddr.from_text(host, port)
    app.memory.write(buf, name)
    app.memory.write(buf + 128, PAYLOAD)
    if kind == C.SOCK_STREAM:
        assert app.connect(s, buf, len(name)) == 0, C.error_name(app.WSAGetLastError())
        assert app.send(s, buf + 128, len(PAYLOAD), 0) == len(PAYLOAD)
        assert app.shutdown(s, C.SD_SEND) == 0
        got = b""
        while (n := app.recv(s, buf + 128, 128, 0)) > 0:
            got += app.memory.read(buf + 128, n)
    else:
        assert app.sendto(s, buf + 128, len(PAYLOAD), 0, buf, len(name)) == len(PAYLOAD)
        got = app.memory.read(buf + 128, app.recvfrom(s, buf + 128, 128, 0, 0, 0))
    app.closesocket(s)
    world.run(10)
    return got


FLOWS = [(C.AF_INET, C.SOCK_STREAM, SERVER[0], 80), (C.AF_INET6, C.SOCK_STREAM, SERVER[1], 80),
         (C.AF_INET, C.SOCK_DGRAM, SERVER[0], 53), (C.AF_INET6, C.SOCK_DGRAM, SERVER[1], 53)]


@pytest.mark.parametrize("northwind_first", [False, True])
@pytest.mark.parametrize("family,kind,host,port", FLOWS)
def test_a_third_vendor_beside_the_sample_driver(northwind_first, family, kind, host, port):
    world, client, drivers = _world(northwind_first)
    assert _talk(world, client, family, kind, host, port) == PAYLOAD
    told = api.story(world)
    assert told.verdict == "ok", told.json(indent=1)
    (conn,) = told.connections
    assert conn.protocol == ("tcp" if kind == C.SOCK_STREAM else "udp") and conn.app == "app"
    assert conn.intact and conn.final_destination == conn.original_destination == (
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    assert conn.app_sent == conn.destination_received == PAYLOAD
    order = ["Northwind", "Contoso"] if northwind_first else ["Contoso", "Northwind"]
    assert [h["vendor"] for h in conn.hops] == order + [""]
    assert [h["callout"] for h in conn.hops] == [{"Northwind": "northwind"}.get(v, v) for v in order] + [""]
    first_proxy = drivers[order[0]].callout
    assert conn.hops[1]["from_pid"] == conn.hops[0]["proxy_pid"]
    # Nobody asked anything on the app's connect (no records handle); on the proxies' connects each
    # callout's own query, named by its callout and its vendor.
    assert conn.hops[0]["states_seen"] == []
    last = {(s["callout"], s["vendor"]): s["state"] for s in conn.hops[-1]["states_seen"]}
    assert last == {(first_proxy.name, order[0]): "PREVIOUSLY_REDIRECTED_BY_SELF",
                    ({"Northwind": "northwind"}.get(order[1], order[1]), order[1]): "REDIRECTED_BY_SELF"}
    assert world.kernel.diagnostics == []
    data = told.as_dict()
    assert data["verdict"] == "ok" and data["connections"][0]["bytes_delivered"] == len(PAYLOAD)


@pytest.mark.parametrize("choice", ["plain", "mapped"])
def test_the_dual_stack_decision_point(choice):
    """docs/facts.md §5.9: a dual-mode socket to an IPv4 address is classified at the V4 layer; what the
    request holds there is a decision point. Under 'mapped' a callout that keeps the family, as
    classify.c does, writes ::1 at the V4 layer: the redirect is ignored, with a diagnostic."""
    world, client, drivers = _world(True, overrides={"wfp_v4_layer_dual_stack": choice})
    got = _talk(world, client, C.AF_INET6, C.SOCK_STREAM, "::ffff:" + SERVER[0], 80, dual=True)
    assert got == PAYLOAD
    fixed, _meta = drivers["Northwind"].callout.seen[0]
    assert fixed.layerId == api.FWPS_LAYER_ALE_CONNECT_REDIRECT_V4 and fixed.ip_remote_address == bytes([192, 0, 2, 20])
    told = api.story(world)
    if choice == "plain":
        assert told.verdict == "ok" and told.connections[0].hops[0]["redirected_to"] == "127.0.0.1:9300"
        assert world.kernel.diagnostics == []
    else:
        kinds = {d.kind for d in world.kernel.diagnostics}
        assert kinds == {"callout:bad-redirect"}
        assert all("wrong family" in d.message for d in world.kernel.diagnostics)


def test_fixed_values_and_metadata_carry_the_kernel_encodings():
    world, client, drivers = _world(True)
    _talk(world, client, C.AF_INET, C.SOCK_STREAM, SERVER[0], 80)
    callout = drivers["Northwind"].callout
    fixed, meta = callout.seen[0]
    app_pid = meta.processId
    # Metadata: PROCESS_ID is set (classify.c reads the PID only then), and the records handle is NULL.
    assert api.is_metadata_field_present(meta, api.FWPS_METADATA_FIELD_PROCESS_ID)
    assert api.is_metadata_field_present(meta, api.FWPS_METADATA_FIELD_REDIRECT_RECORD_HANDLE)
    assert not api.is_metadata_field_present(meta, api.FWPS_METADATA_FIELD_TOKEN)
    assert api.process_id(meta) == app_pid and meta.redirectRecords is None
    assert meta.processPath == fixed.ale_app_id == "\\device\\harddiskvolume1\\program files\\app.exe\0".encode(
        "utf-16-le")
    # Fixed values: named and kernel-encoded views of the same thing.
    values = fixed.incomingValue
    assert fixed.valueCount == len(values) == api.FWPS_FIELD_ALE_CONNECT_REDIRECT_MAX
    remote = values[api.FWPS_FIELD_ALE_CONNECT_REDIRECT_IP_REMOTE_ADDRESS]
    assert remote == (api.FWP_UINT32, int(ipaddress.IPv4Address(SERVER[0])))          # host byte order
    assert struct.pack(">I", remote.value) == fixed.ip_remote_address
    assert values[api.FWPS_FIELD_ALE_CONNECT_REDIRECT_IP_REMOTE_PORT] == (api.FWP_UINT16, 80)
    assert values[api.FWPS_FIELD_ALE_CONNECT_REDIRECT_IP_PROTOCOL] == (api.FWP_UINT8, C.IPPROTO_TCP)
    assert values[api.FWPS_FIELD_ALE_CONNECT_REDIRECT_FLAGS] == (api.FWP_UINT32, fixed.flags)
    assert values[api.FWPS_FIELD_ALE_CONNECT_REDIRECT_ALE_APP_ID] == (api.FWP_BYTE_BLOB_TYPE, fixed.ale_app_id)
    assert values[api.FWPS_FIELD_ALE_CONNECT_REDIRECT_ALE_USER_ID].type == api.FWP_EMPTY
    # The proxy's connect: the records handle is there, the flags say the flow was redirected.
    fixed2, meta2 = callout.seen[1]
    assert meta2.redirectRecords is not None and fixed2.flags & api.FWP_CONDITION_FLAG_IS_CONNECTION_REDIRECTED
    assert meta2.processId == drivers["Northwind"].callout.proxy_pid


def test_ipv6_addresses_are_byte_arrays():
    world, client, drivers = _world(True)
    _talk(world, client, C.AF_INET6, C.SOCK_DGRAM, SERVER[1], 53)
    fixed, _ = drivers["Northwind"].callout.seen[0]
    assert fixed.layerId == api.FWPS_LAYER_ALE_CONNECT_REDIRECT_V6
    assert fixed.incomingValue[api.FWPS_FIELD_ALE_CONNECT_REDIRECT_IP_REMOTE_ADDRESS] == \
        (api.FWP_BYTE_ARRAY16_TYPE, ipaddress.IPv6Address(SERVER[1]).packed)


@pytest.mark.parametrize("bit_set", [True, False])
def test_the_sample_callout_reads_the_pid_only_when_its_bit_is_set(monkeypatch, bit_set):
    """classify.c reads processId only under FWPS_METADATA_FIELD_PROCESS_ID: the model sets the bit, so the
    context carries the app's PID; without the bit the sample callout, like the C, reads 0."""
    from harness.proxy import redirect as rd
    from harness.sample_driver import unpack_context
    from sim.wfp import engine
    from sim.worlds.ready import redirected_tcp
    if not bit_set:
        monkeypatch.setattr(engine.F, "CONNECT_REDIRECT_METADATA",
                            engine.F.CONNECT_REDIRECT_METADATA & ~api.FWPS_METADATA_FIELD_PROCESS_ID)
    r = redirected_tcp()
    context = unpack_context(rd.query_context(r.api, r.sock))
    assert context.process_id == (r.app.GetCurrentProcessId() if bit_set else 0)


# -- silent failures get a diagnostic ------------------------------------------------------------

class Misbehaving:
    """Redirects every TCP connect to 80 locally, with one mistake chosen by the test."""
    name = "misbehaving"

    def __init__(self, driver, mistake, proxy_pid):
        self.fwps, self.handle, self.mistake, self.proxy_pid = driver.fwps, driver.redirect_handle, mistake, proxy_pid

    def classify(self, fixed, meta, data, ctx, flt, flow, out):
        if fixed.ip_remote_port != 80 or meta.redirectRecords is not None:
            out.actionType = api.FWP_ACTION_PERMIT
            return
        if self.mistake == "block":
            out.actionType = api.FWP_ACTION_BLOCK
            return
        status, handle = self.fwps.FwpsAcquireClassifyHandle0(ctx, 0)
        status, w = self.fwps.FwpsAcquireWritableLayerDataPointer0(handle, flt.filterId, 0, out)
        if self.mistake == "wrong-family":
            w.remoteAddressAndPort = (api.address("::1"), 9000)
        else:
            w.remoteAddressAndPort = api.loopback_like(w.remoteAddressAndPort, 9000)
        w.localRedirectHandle = self.handle
        w.localRedirectTargetPID = 0 if self.mistake == "pid-zero" else self.proxy_pid + (
            4 if self.mistake == "wrong-pid" else 0)
        w.localRedirectContext = b"ctx"
        w.localRedirectContextSize = 2 if self.mistake == "context-size" else 3
        self.fwps.FwpsApplyModifiedLayerData0(handle, w, 0)
        self.fwps.FwpsReleaseClassifyHandle0(handle)
        if self.mistake != "left-block":
            out.actionType = api.FWP_ACTION_PERMIT


@pytest.mark.parametrize("mistake,error,kinds", [
    ("pid-zero", 0, ["callout:target-pid-zero"]),
    ("wrong-family", 0, ["callout:bad-redirect"]),
    ("wrong-pid", C.WSAECONNREFUSED, ["redirect-target-refused"]),
    ("left-block", C.WSAEACCES, ["callout:left-block"]),
    ("block", C.WSAEACCES, ["callout:blocked"]),
    ("context-size", 0, ["callout:context-size"]),
])
def test_every_silent_failure_is_named(mistake, error, kinds):
    world = World()
    client, server = world.add_host("client", CLIENT), world.add_host("server", SERVER)
    echo = EchoServer(world.start_process(server, "echo"), tcp_port=80)
    world.add_service(echo.poll, echo.api)
    proxy = world.start_process(client, "proxy")
    lst = proxy.socket(C.AF_INET, C.SOCK_STREAM, 0)
    name = sockaddr.from_text("127.0.0.1", 9000)
    buf = proxy.memory.alloc(64)
    proxy.memory.write(buf, name)
    assert proxy.bind(lst, buf, len(name)) == 0 and proxy.listen(lst, 4) == 0
    api.install_callout(world, client, lambda d: Misbehaving(d, mistake, proxy.GetCurrentProcessId()),
                        vendor="Misbehaving Ltd")
    app = world.start_process(client, "app")
    s = app.socket(C.AF_INET, C.SOCK_STREAM, 0)
    name = sockaddr.from_text(SERVER[0], 80)
    ptr = app.memory.alloc(64)
    app.memory.write(ptr, name)
    rc = app.connect(s, ptr, len(name))
    assert (rc, app.WSAGetLastError() if rc else 0) == ((C.SOCKET_ERROR, error) if error else (0, 0))
    assert [d.kind for d in world.kernel.diagnostics] == kinds
    assert all(d.message for d in world.kernel.diagnostics)
    if kinds[0].startswith("callout:"):
        assert world.kernel.diagnostics[0].message.startswith("misbehaving on client:")
    if mistake == "context-size":
        accepted = proxy.accept(lst, 0, 0)
        out, n = proxy.memory.alloc(16), proxy.memory.alloc(4)
        assert proxy.WSAIoctl(accepted, C.SIO_QUERY_WFP_CONNECTION_REDIRECT_CONTEXT, 0, 0, out, 16, n, 0, 0) == 0
        assert proxy.memory.read(out, proxy.memory.read_u32(n)) == b"ct"
    told = api.story(world)
    if error:
        assert told.verdict == "error" and told.connections[-1].final_destination == ""
    if mistake == "block":
        assert told.connections[0].refused == "blocked by a callout"


def test_unload_removes_the_filters_and_destroys_the_handle():
    world, client, drivers = _world(False)
    northwind = drivers["Northwind"]
    northwind.unload()
    assert northwind.redirect_handle.destroyed and northwind.filters == ()
    assert _talk(world, client, C.AF_INET, C.SOCK_STREAM, SERVER[0], 80) == PAYLOAD
    (conn,) = api.story(world).connections
    assert [h["vendor"] for h in conn.hops] == ["Contoso", ""]
