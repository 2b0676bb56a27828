"""A replay's divergences named by argument (harness/replay/params.py), compared on their defined
bytes only (harness/replay/uncompared.py), and classified by a deviation's `replay` signatures
(harness/conformance/deviations.py, harness/replay/classify.py). Runs without Wine."""
import pytest

from harness.conformance import deviations as D
from harness.replay import classify, params
from harness.replay.replayer import Divergence, ReplayResult
from harness.replay.uncompared import uncompared_ranges

CONNECTEX = {"op": "call", "fn": "ConnectEx", "ext": True, "ret": 0,
             "args": [["handle", 1], ["alloc", 6, 0], 16, 0, 0, ["alloc", 7, 32], ["alloc", 8, 0]]}
SIZES = {6: 16, 7: 68, 8: 32}


def _regions(step):
    from harness.replay.recorder import EXT_SIGNATURES, SIGNATURES
    table = EXT_SIGNATURES if step.get("ext") else SIGNATURES
    return params.regions(step, table[step["fn"]][1], SIZES)


def test_a_word_is_named_by_the_argument_that_points_at_it():
    regions = _regions(CONNECTEX)
    owner = params.attribute("alloc8+8", [regions])
    assert (owner["fn"], owner["param"], owner["field"], owner["ret"]) == ("ConnectEx", "lpOverlapped", "InternalHigh", 0)
    assert params.attribute("alloc8+0", [regions])["field"] == "Internal"
    assert params.attribute("alloc7+32", [regions])["param"] == "lpdwBytesSent"      # a DWORD and its canary
    assert params.attribute("alloc7+0", [regions]) is None                            # the canary before it
    assert params.attribute("alloc9+0", [regions]) is None                            # no argument there


def test_the_most_relevant_call_names_a_word_and_two_arguments_sharing_it_name_none():
    step = {"op": "call", "fn": "WSAGetOverlappedResult", "ret": 0,
            "args": [["handle", 1], ["alloc", 8, 0], ["alloc", 7, 32], 0, ["alloc", 7, 36]]}
    shared = _regions(step)
    assert params.attribute("alloc7+32", [shared, _regions(CONNECTEX)]) is None
    assert params.attribute("alloc7+32", [_regions(CONNECTEX), shared])["fn"] == "ConnectEx"


def _load(tmp_path, replay: str):
    path = tmp_path / "dev.toml"
    path.write_text('[[deviation]]\ntests = ["test_a.py::test_b"]\ndiffers = "d"\nwindows = "w"\n'
                    'kind = "observed"\nwine = "Wine 8.0 ws2_32.dll f: observed"\n'
                    f"replay = {replay}\n", encoding="utf-8")
    return D.load(path)


@pytest.mark.parametrize("replay,message", [
    ('["ConnectEx"]', "a replay signature is"),
    ('["NoSuchFn lpOverlapped"]', "not a function of the contract"),
    ('["ConnectEx lpNothing"]', "has no parameter 'lpNothing'"),
    ('["ConnectEx lpOverlapped.Nope"]', "not an OVERLAPPED field"),
    ('["getsockopt(optname=SO_NOPE) optval"]', "neither an integer nor a constant"),
    ('["getsockopt(nope=1) optval"]', "has no parameter 'nope'"),
    ('"ConnectEx lpOverlapped"', "a list of replay signatures"),
])
def test_a_malformed_signature_is_named_by_file_line_and_field(tmp_path, replay, message):
    with pytest.raises(D.DeviationError, match=message) as info:
        _load(tmp_path, replay)
    assert info.value.line == 1 and info.value.field.startswith("deviation[0].replay")


def _divergence(field, recorded, replayed, fn="ConnectEx", session="harness/conformance/test_x.py::test_y",
                args=None, words=None):
    return Divergence(1, "", fn, field, recorded, replayed, session, args or {}, words or {})


def test_signatures_classify_word_by_word_and_split_a_divergence(tmp_path, monkeypatch):
    path = tmp_path / "dev.toml"
    path.write_text('[[deviation]]\ntests = ["test_a.py::test_b"]\ndiffers = "internalhigh"\nwindows = "w"\n'
                    'kind = "observed"\nwine = "Wine 8.0 ws2_32.dll f: observed"\n'
                    'replay = ["ConnectEx lpOverlapped.InternalHigh"]\n'
                    '[[deviation]]\ntests = ["test_x.py::test_y"]\ndiffers = "the case"\nwindows = "w"\n'
                    'kind = "observed"\nwine = "Wine 8.0 ws2_32.dll f: observed"\n'
                    '[[deviation]]\ntests = ["test_c.py::test_d"]\ndiffers = "options"\nwindows = "w"\n'
                    'kind = "observed"\nwine = "Wine 8.0 ws2_32.dll f: observed"\n'
                    'replay = ["getsockopt(level=SOL_SOCKET, optname=SO_RCVBUF) optval", "connect error in test_p.py::*"]\n',
                    encoding="utf-8")
    monkeypatch.setenv("WFP_DEVIATIONS", str(path))
    regions = _regions(CONNECTEX)
    words = {k: params.attribute(k, [regions]) for k in ("alloc8+8", "alloc8+0")}
    d = _divergence("writes", {"alloc8+8": "unchanged", "alloc8+0": "unchanged"},
                    {"alloc8+8": "00" * 8, "alloc8+0": "0301000000000000"}, words=words)
    result = ReplayResult(trace=None, divergences=[d])
    pairs = classify.classify(result)
    assert sorted((tuple(p.recorded), dev.differs) for p, dev in pairs) == [
        (("alloc8+0",), "the case"), (("alloc8+8",), "internalhigh")]       # the rest falls to the case's entry
    outside = _divergence("writes", d.recorded, d.replayed, words=words, session="harness/conformance/test_q.py::t")
    assert sorted((tuple(p.recorded), str(dev and dev.differs)) for p, dev in classify.classify(
        ReplayResult(None, [outside]))) == [(("alloc8+0",), "None"), (("alloc8+8",), "internalhigh")]
    option = {"fn": "getsockopt", "param": "optval", "field": "", "ret": 0,
              "args": {"level": 0xFFFF, "optname": 0x1002}}
    rcvbuf = _divergence("writes", {"alloc0+32": "a"}, {"alloc0+32": "b"}, fn="getsockopt",
                         session="harness/conformance/test_q.py::t", words={"alloc0+32": option})
    sndbuf = _divergence("writes", {"alloc0+32": "a"}, {"alloc0+32": "b"}, fn="getsockopt",
                         session="harness/conformance/test_q.py::t",
                         words={"alloc0+32": {**option, "args": {"level": 0xFFFF, "optname": 0x1001}}})
    refused = _divergence("error", 10061, 10060, fn="connect", session="harness/conformance/test_p.py::t")
    elsewhere = _divergence("error", 10061, 10060, fn="connect", session="harness/conformance/test_q.py::t")
    got = [dev and dev.differs for _p, dev in classify.classify(ReplayResult(None, [rcvbuf, sndbuf, refused, elsewhere]))]
    assert got == ["options", None, "options", None]


def test_connectex_bytes_sent_is_undefined_unless_it_succeeded():
    owner = params.attribute("alloc7+32", [_regions(CONNECTEX)])
    assert uncompared_ranges(owner, {}) == [(0, 4)]
    assert uncompared_ranges({**owner, "ret": 1}, {}) == []


def test_acceptex_buffer_is_undefined_beyond_the_data_and_the_addresses():
    step = {"op": "call", "fn": "AcceptEx", "ext": True, "ret": 0,
            "args": [["handle", 1], ["handle", 2], ["alloc", 3, 32], 64, 32, 32, ["alloc", 4, 32], ["alloc", 5, 0]]}
    from harness.replay.recorder import EXT_SIGNATURES
    regions = params.regions(step, EXT_SIGNATURES["AcceptEx"][1], {3: 32 + 128 + 32, 4: 68, 5: 32})
    owner = params.attribute("alloc3+32", [regions])
    assert owner["param"] == "lpOutputBuffer" and owner["pointer"] == 32
    image = {3: bytearray(192), 5: bytearray(32)}
    image[5][8:16] = (5).to_bytes(8, "little")                   # InternalHigh: 5 bytes received
    image[3][32 + 64:32 + 68] = (16).to_bytes(4, "little")       # the local slot holds a 16-byte sockaddr
    image[3][32 + 96:32 + 100] = (28).to_bytes(4, "little")      # the remote one a 28-byte one
    assert uncompared_ranges(owner, image) == [(5, 64), (64 + 4 + 16, 96), (96 + 4 + 28, 128)]
    assert uncompared_ranges({**owner, "args": {**owner["args"], "dwLocalAddressLength": -1}}, image) == []


def test_what_the_interface_ioctls_report_is_the_hosts():
    from harness.winsock import constants as C
    owner = {"fn": "WSAIoctl", "param": "lpvOutBuffer", "field": "", "ret": 0, "pointer": 32,
             "args": {"dwIoControlCode": C.SIO_ADDRESS_LIST_QUERY, "cbOutBuffer": 40}}
    assert uncompared_ranges(owner, {}) == [(0, 40)]
    assert uncompared_ranges({**owner, "param": "lpcbBytesReturned"}, {}) == [(0, 4)]
    assert uncompared_ranges({**owner, "args": {**owner["args"], "dwIoControlCode": C.FIONREAD}}, {}) == []
