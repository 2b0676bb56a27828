"""A peer that is not a well-behaved agent gets a clear error, quickly, and costs bounded memory."""
import sys
import time
from pathlib import Path

import pytest

from harness.agent import AgentDied, AgentProtocolError, AgentSession, AgentTimeout, AgentVersionError
from harness.agent import protocol as P

FAKE = Path(__file__).with_name("fake_agent.py")


def _session(mode, **kw):
    return AgentSession([sys.executable, str(FAKE), mode], label=f"fake {mode}", **kw)


@pytest.mark.parametrize("mode, error, text", [
    ("garbage", AgentProtocolError, "sent a frame of 1347703880 bytes; the limit is 16777216"),
    ("bad-magic", AgentProtocolError, "is not a winsock-agent HELLO"),
    ("old-version", AgentVersionError, f"speaks protocol version {P.PROTOCOL_VERSION - 1}, older than this "
                                       f"harness's {P.PROTOCOL_VERSION}: rebuild it"),
])
def test_bad_handshake(mode, error, text):
    # The refusal itself is the answer: waiting for the 10 s startup timeout would raise AgentTimeout.
    with pytest.raises(error, match=text):
        _session(mode, startup_timeout=10)


def test_silent_peer_times_out_at_startup():
    # The message names the 1 s limit the session kept: a silent peer is never waited for longer.
    with pytest.raises(AgentTimeout, match=r"waiting for the agent's HELLO: no answer .* within 1 s; it was killed"):
        _session("silent", startup_timeout=1)


@pytest.mark.parametrize("mode, error, text", [
    ("oversized", AgentProtocolError, f"a frame of {P.MAX_FRAME + 1} bytes; the limit is {P.MAX_FRAME}"),
    ("huge", AgentProtocolError, f"a frame of 4294967295 bytes; the limit is {P.MAX_FRAME}"),
    ("wrong-id", AgentProtocolError, r"answered request \d+ \(op PING\), which is not outstanding"),
    ("truncated", AgentProtocolError, r"ended inside a frame \(12 of 64 bytes\)"),
    ("short-body", AgentProtocolError, "RESOLVE answered 2 bytes for 1 names"),
    ("stall", AgentTimeout, "no answer from the agent 'fake stall' .* within 1 s; it was killed"),
    ("crash", AgentDied, r"(?s)exit code 7.*fake agent: crashing now"),
])
def test_misbehaving_peer_after_handshake(mode, error, text):
    session = _session(mode, startup_timeout=10, call_timeout=1)
    with pytest.raises(error, match=text) as info:
        if mode == "short-body":
            session.resolve({"socket": "ws2_32"})
        else:
            session.ping()
    assert not session.alive                     # the peer was killed, not left hanging
    assert session._proc.poll() is not None
    with pytest.raises(error):                   # later requests fail at once with the first cause
        session.ping()
    if mode == "crash":
        assert str(info.value).startswith("PING: ")


def test_endless_stderr_line_costs_bounded_memory():
    session = _session("stderr-flood", startup_timeout=30, call_timeout=1)
    try:
        for _ in range(200):                     # up to about 10 s for the flood to end
            if "last line" in session.stderr_tail():
                break
            time.sleep(0.05)
        tail = session.stderr_tail()
        assert tail.endswith("last line")
        assert len(tail) < 10_000                    # 64 MiB in, a couple of kilobytes kept
    finally:
        session.kill()
