"""The simulated filter engine and Fwps* kernel API, including callouts that misbehave."""
import uuid

import pytest

from harness.winsock import constants as C
from harness.winsock import sockaddr
from harness.sample_driver import RedirectPolicy
from sim import World
from sim.wfp.records import RedirectEntry, decode, encode
from sim.worlds.sample_callout import install_sample_driver
from sim.wfp.flows import redirect_state

PROVIDER = uuid.UUID("11111111-2222-3333-4444-555555555555")


def E(handle):
    return RedirectEntry(handle, PROVIDER, 1, 100)


@pytest.mark.parametrize("entries,expected", [
    ([], C.FWPS_CONNECTION_NOT_REDIRECTED),
    ([E(2)], C.FWPS_CONNECTION_REDIRECTED_BY_OTHER),
    ([E(1)], C.FWPS_CONNECTION_REDIRECTED_BY_SELF),
    ([E(2), E(1)], C.FWPS_CONNECTION_REDIRECTED_BY_SELF),
    ([E(1), E(2)], C.FWPS_CONNECTION_PREVIOUSLY_REDIRECTED_BY_SELF),
])
def test_redirect_state_per_handle(entries, expected):
    """docs/decisions.md §5: state computed from the ordered redirections, per redirect handle."""
    assert redirect_state(entries, 1) == expected


def test_records_blob_integrity():
    key, other = b"k" * 32, b"o" * 32
    blob = encode(7, [E(1), E(2)], key)
    assert decode(blob, key) == (7, [E(1), E(2)])
    assert decode(blob, other) is None                      # a foreign host's blob
    tampered = bytearray(blob)
    tampered[12] ^= 1
    assert decode(bytes(tampered), key) is None
    assert decode(blob[:-1], key) is None and decode(b"", key) is None


class Harness:
    """A client host with a callout under test and an application that connects through it."""

    def __init__(self, callout_factory):
        self.world = World()
        self.host = self.world.add_host("client", ["192.0.2.10"])
        self.world.add_host("server", ["192.0.2.20"])
        self.engine = self.world.wfp(self.host)
        prov = self.engine.add_provider(PROVIDER, "Test")
        sub = self.engine.add_sublayer(uuid.uuid4(), "test", 100, prov)
        self.callout = callout_factory(self.engine)
        self.filter = self.engine.add_filter("test", C.FWPS_LAYER_ALE_CONNECT_REDIRECT_V4, sub, 1, self.callout)
        self.app = self.world.start_process(self.host, "app")

    def connect(self, ip="192.0.2.20", port=80, nonblocking=False):
        api = self.app
        s = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
        if nonblocking:
            one = api.memory.alloc(4)
            api.memory.write_u32(one, 1)
            api.ioctlsocket(s, C.FIONBIO, one)
        name = sockaddr.from_text(ip, port)
        ptr = api.memory.alloc(len(name))
        api.memory.write(ptr, name)
        rc = api.connect(s, ptr, len(name))
        return s, rc, api.WSAGetLastError()

    def kinds(self):
        return [d.kind for d in self.world.kernel.diagnostics]


class ApplyWithoutAcquire:
    name = "sloppy"

    def __init__(self, engine):
        self.fwps = engine.fwps

    def classify(self, fixed, meta, data, ctx, flt, flow, out):
        status, handle = self.fwps.FwpsAcquireClassifyHandle0(ctx, 0)
        self.fwps.FwpsApplyModifiedLayerData0(handle, data, 0)
        self.fwps.FwpsReleaseClassifyHandle0(handle)
        out.actionType = C.FWP_ACTION_PERMIT


def test_apply_without_acquire_is_diagnosed_and_ignored():
    h = Harness(ApplyWithoutAcquire)
    s, rc, err = h.connect()
    assert h.kinds() == ["callout:apply-without-acquire"]
    assert "sloppy" in h.world.kernel.diagnostics[0].message
    assert err == C.WSAECONNREFUSED          # no listener on the server: the connect went there unchanged


class AcquireNoApply:
    name = "forgetful"

    def __init__(self, engine):
        self.fwps = engine.fwps

    def classify(self, fixed, meta, data, ctx, flt, flow, out):
        status, handle = self.fwps.FwpsAcquireClassifyHandle0(ctx, 0)
        status, writable = self.fwps.FwpsAcquireWritableLayerDataPointer0(handle, flt.filterId, 0, out)
        assert status == 0 and out.actionType == C.FWP_ACTION_BLOCK and not out.rights & C.FWPS_RIGHT_ACTION_WRITE
        out.actionType = C.FWP_ACTION_PERMIT


def test_acquire_without_apply_blocks_and_reports_the_leak():
    """DDI: every acquire needs an apply, else the classify cannot complete; the handle leaked too."""
    h = Harness(AcquireNoApply)
    s, rc, err = h.connect()
    assert (rc, err) == (C.SOCKET_ERROR, C.WSAEACCES)
    assert h.kinds() == ["callout:writable-not-applied", "callout:classify-handle-leaked"]
    s, rc, err = h.connect()                 # the world keeps running
    assert err == C.WSAEACCES and len(h.kinds()) == 4


class RedirectNoHandle:
    name = "handleless"

    def __init__(self, engine):
        self.fwps = engine.fwps

    def classify(self, fixed, meta, data, ctx, flt, flow, out):
        status, handle = self.fwps.FwpsAcquireClassifyHandle0(ctx, 0)
        status, w = self.fwps.FwpsAcquireWritableLayerDataPointer0(handle, flt.filterId, 0, out)
        w.remoteAddressAndPort = (bytes([127, 0, 0, 1]), 9000)
        self.fwps.FwpsApplyModifiedLayerData0(handle, w, 0)
        self.fwps.FwpsReleaseClassifyHandle0(handle)
        out.actionType = C.FWP_ACTION_PERMIT


def test_local_redirect_without_redirect_handle_is_ignored_and_named():
    h = Harness(RedirectNoHandle)
    s, rc, err = h.connect()
    assert h.kinds() == ["callout:bad-redirect"] and "handleless" in h.world.kernel.diagnostics[0].message
    assert err == C.WSAECONNREFUSED


class Crashing:
    name = "crashy"

    def __init__(self, engine):
        pass

    def classify(self, *args):
        raise ZeroDivisionError("oops")


def test_callout_exception_blocks_the_connection_and_world_continues():
    h = Harness(Crashing)
    s, rc, err = h.connect()
    assert (rc, err) == (C.SOCKET_ERROR, C.WSAEACCES)
    assert h.kinds() == ["callout:crashed"] and "ZeroDivisionError" in h.world.kernel.diagnostics[0].message


class Pender:
    """Pends every classify and completes it 5 ms later with a redirect (the async HOWTO variant)."""
    name = "pender"

    def __init__(self, engine):
        self.engine = engine
        self.fwps = engine.fwps
        status, self.handle = self.fwps.FwpsRedirectHandleCreate0(PROVIDER, 0)
        self.pid = 0

    def classify(self, fixed, meta, data, ctx, flt, flow, out):
        fwps = self.fwps
        status, handle = fwps.FwpsAcquireClassifyHandle0(ctx, 0)
        assert fwps.FwpsPendClassify0(handle, flt.filterId, 0, out) == 0

        def later():
            status, w = fwps.FwpsAcquireWritableLayerDataPointer0(handle, flt.filterId, 0, None)
            w.remoteAddressAndPort = (bytes([127, 0, 0, 1]), 9000)
            w.localRedirectHandle = self.handle
            w.localRedirectTargetPID = self.pid
            fwps.FwpsApplyModifiedLayerData0(handle, w, C.FWPS_CLASSIFY_FLAG_REAUTHORIZE_IF_MODIFIED_BY_OTHERS)
            from sim.wfp.engine import ClassifyOut
            fwps.FwpsCompleteClassify0(handle, 0, ClassifyOut(actionType=C.FWP_ACTION_PERMIT))
            fwps.FwpsReleaseClassifyHandle0(handle)
        self.engine.world.kernel.scheduler.call_later(5_000_000, later)


def test_pended_classify_completes_later_and_redirects():
    h = Harness(Pender)
    proxy = h.world.start_process(h.host, "proxy")
    h.callout.pid = proxy.GetCurrentProcessId()
    lst = proxy.socket(C.AF_INET, C.SOCK_STREAM, 0)
    name = sockaddr.from_text("127.0.0.1", 9000)
    ptr = proxy.memory.alloc(len(name))
    proxy.memory.write(ptr, name)
    assert proxy.bind(lst, ptr, len(name)) == 0 and proxy.listen(lst, 4) == 0
    before = h.world.now_ns
    s, rc, err = h.connect()
    assert rc == 0, C.error_name(err)
    assert h.world.now_ns - before >= 5_000_000          # the connect waited for the completion
    assert proxy.accept(lst, 0, 0) != C.INVALID_SOCKET
    assert h.kinds() == []


def test_redirect_to_wrong_pid_is_not_accepted():
    """docs/decisions.md §5: a redirected connection to a local address is accepted only by the target PID."""
    world = World()
    host = world.add_host("client", ["192.0.2.10"])
    world.add_host("server", ["192.0.2.20"])
    intruder = world.start_process(host, "intruder")
    lst = intruder.socket(C.AF_INET, C.SOCK_STREAM, 0)
    name = sockaddr.from_text("127.0.0.1", 9000)
    ptr = intruder.memory.alloc(len(name))
    intruder.memory.write(ptr, name)
    intruder.bind(lst, ptr, len(name))
    intruder.listen(lst, 4)
    install_sample_driver(world, host, RedirectPolicy(tcp_ports=(80,), tcp_proxy_port=9000,
                                                      proxy_process_id=intruder.GetCurrentProcessId() + 4))
    app = world.start_process(host, "app")
    s = app.socket(C.AF_INET, C.SOCK_STREAM, 0)
    name = sockaddr.from_text("192.0.2.20", 80)
    ptr = app.memory.alloc(len(name))
    app.memory.write(ptr, name)
    assert app.connect(s, ptr, len(name)) == C.SOCKET_ERROR
    assert app.WSAGetLastError() == C.WSAECONNREFUSED


def test_context_goes_only_to_its_target_process():
    """docs/decisions.md §5: in a two-vendor chain each proxy gets its own callout's context."""
    from sim.worlds.scenarios import Story
    from harness.sample_driver import unpack_context
    story = Story("documented", ("VendorX", "VendorY"))
    contexts = {}
    for vendor, proxy in story.proxies.items():
        original = proxy._accepted

        def spy(client, proxy=proxy, original=original, vendor=vendor):
            original(client)
            for conn in proxy.connections:
                contexts.setdefault(vendor, unpack_context(conn.context))
        proxy._accepted = spy
    story.tcp("x", C.AF_INET, "192.0.2.20")
    x_pid = story.proxies["VendorX"].pid
    assert contexts["VendorX"].process_id == story.app.GetCurrentProcessId()
    assert contexts["VendorY"].process_id == x_pid          # Y redirected proxy X's outbound connect
    assert contexts["VendorY"].original_remote.host == "192.0.2.20"


def test_sample_callout_matches_the_shared_decision_table():
    """The Python model and sample_driver.decide() agree (the C driver follows the same order)."""
    from harness.sample_driver import Decision, decide
    policy = RedirectPolicy(tcp_ports=(80,), tcp_proxy_port=9000, proxy_process_id=42)
    assert decide(policy, protocol=C.IPPROTO_TCP, remote_port=80, process_id=7,
                  redirect_state=C.FWPS_CONNECTION_NOT_REDIRECTED) == Decision.REDIRECT
    assert decide(policy, protocol=C.IPPROTO_TCP, remote_port=80, process_id=7,
                  redirect_state=C.FWPS_CONNECTION_PREVIOUSLY_REDIRECTED_BY_SELF) == Decision.PERMIT
    from sim.worlds.scenarios import run
    report, _ = run("single-proxy")
    assert report["connections"][0]["hops"][0]["vendor"] == "VendorX"


class BindPinner:
    """Moves every bind to local port 40000, at most once per socket (WDS caps bind redirection by
    counting its own filter in the previousVersion chain)."""
    name = "pinner"

    def __init__(self, engine):
        self.fwps = engine.fwps

    def classify(self, fixed, meta, data, ctx, flt, flow, out):
        version, mine = data, 0
        while version is not None:
            mine += version.modifierFilterId == flt.filterId
            version = version.previousVersion
        if mine:
            out.actionType = C.FWP_ACTION_PERMIT
            return
        status, handle = self.fwps.FwpsAcquireClassifyHandle0(ctx, 0)
        status, w = self.fwps.FwpsAcquireWritableLayerDataPointer0(handle, flt.filterId, 0, out)
        w.localAddressAndPort = (w.localAddressAndPort[0], 40000)
        self.fwps.FwpsApplyModifiedLayerData0(handle, w, 0)
        self.fwps.FwpsReleaseClassifyHandle0(handle)
        out.actionType = C.FWP_ACTION_PERMIT


def test_bind_redirect_changes_the_local_port():
    """HOWTO: the local address and port change only at the bind-redirect layers."""
    world = World()
    host = world.add_host("client", ["192.0.2.10"])
    engine = world.wfp(host)
    prov = engine.add_provider(PROVIDER, "Test")
    sub = engine.add_sublayer(uuid.uuid4(), "bind", 100, prov)
    engine.add_filter("pin", C.FWPS_LAYER_ALE_BIND_REDIRECT_V4, sub, 1, BindPinner(engine))
    api = world.start_process(host, "app")
    s = api.socket(C.AF_INET, C.SOCK_DGRAM, 0)
    name = sockaddr.from_text("0.0.0.0", 0)
    ptr = api.memory.alloc(128)
    api.memory.write(ptr, name)
    assert api.bind(s, ptr, len(name)) == 0
    length = api.memory.alloc(4)
    api.memory.write_u32(length, 128)
    assert api.getsockname(s, ptr, length) == 0
    assert sockaddr.to_text(api.memory.read(ptr, api.memory.read_u32(length)))[1] == 40000
    s2 = api.socket(C.AF_INET, C.SOCK_DGRAM, 0)
    api.memory.write(ptr, name)
    assert api.bind(s2, ptr, len(name)) == C.SOCKET_ERROR            # the pinned port is taken now
    assert api.WSAGetLastError() == C.WSAEADDRINUSE
