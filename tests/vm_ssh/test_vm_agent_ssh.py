"""The winsock-agent on a stand-in guest, through its SSH connection (harness.vm.agent_ssh):
Wine's real ws2_32 behind a real sshd with a pinned host key; a hostile guest's frames; a
guest that goes away while a call is in flight."""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
from pathlib import Path

import pytest

from harness.agent import AgentDied, AgentProtocolError, AgentTimeout
from harness.agent import launch
from harness.agent.build import agent_exe
from harness.agent.protocol import MAX_FRAME
from harness.agent.provider import AgentWinsock
from harness.agent.session import AgentSession
from harness.vm.agent_ssh import read_drop, write_endpoint
from harness.vm.guest_os import EXE_LOADER
from harness.vm.ssh import SshEndpoint
from harness.vm.standin import SSHD, descendants, make_standin
from harness.winsock import constants as C


@pytest.fixture
def standin(tmp_path, wine_available):
    if not os.path.exists(SSHD):
        pytest.skip("OpenSSH server not installed (Debian: openssh-server)")
    s = make_standin(tmp_path / "guests", "g1")
    yield s
    s.sshd.stop()


def _endpoint(s, tmp_path: Path, command: str, *, host_key: str | None = None) -> Path:
    ep = SshEndpoint(host="127.0.0.1", port=s.sshd.port, username=s.sshd.user,
                     host_key=host_key or s.sshd.host_key_line, key_file=str(s.sshd.user_key), shell="posix",
                     connect_timeout=10.0, keepalive=2.0)
    return write_endpoint(tmp_path / "endpoint.json", ep, command=command, guest=s.name,
                          drop_record=tmp_path / "guest-dropped.json")


def _relay(endpoint: Path) -> list[str]:
    return [sys.executable, "-m", "harness.vm.agent_ssh", str(endpoint)]


def _agent_on(s, tmp_path: Path) -> Path:
    """The agent uploaded to the guest's run folder, started there through wine-exe."""
    remote = s.workdir / "in" / "winsock-agent.exe"
    remote.parent.mkdir(parents=True, exist_ok=True)
    remote.write_bytes(agent_exe().read_bytes())
    return _endpoint(s, tmp_path, shlex.join([EXE_LOADER, str(remote)]))


def test_the_suites_calls_reach_wines_ws2_32_through_the_guests_ssh(standin, tmp_path):
    session = launch.start_command(shlex.join(_relay(_agent_on(standin, tmp_path))))
    assert "(Wine " in session.hello.os
    # the agent runs behind the guest's sshd, in the guest's own Wine prefix
    agents = [p for p in descendants(standin.sshd.proc.pid)
              if b"winsock-agent" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert agents
    env = Path(f"/proc/{agents[0]}/environ").read_bytes().split(b"\0")
    assert f"WINEPREFIX={standin.root / 'home' / 'wineprefix'}".encode() in env and b"WINEDEBUG=-all" in env
    api = AgentWinsock(session, name="agent")
    s = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    assert s != C.INVALID_SOCKET
    assert api.closesocket(s) == 0
    assert api.closesocket(s) == C.SOCKET_ERROR and api.WSAGetLastError() == C.WSAENOTSOCK
    api.close()
    session.close()
    assert session._proc.returncode == 0                 # the agent's own exit status, relayed
    assert read_drop(tmp_path / "guest-dropped.json") is None


def test_a_wrong_host_key_is_refused_before_anything_runs(standin, tmp_path, keytool):
    other = keytool.keygen(tmp_path / "other_host")
    ep = _endpoint(standin, tmp_path, "touch " + shlex.quote(str(tmp_path / "ran")),
                   host_key=Path(f"{other}.pub").read_text())
    with pytest.raises(AgentDied) as e:
        AgentSession(_relay(ep), startup_timeout=30)
    assert "does not match the pinned key" in str(e.value) and "exit code 255" in str(e.value)
    assert not (tmp_path / "ran").exists()
    assert read_drop(tmp_path / "guest-dropped.json") is None      # refused, not dropped


def _hostile(tmp_path: Path, script: str) -> str:
    p = tmp_path / "hostile.py"
    p.write_text(script)
    return shlex.join([sys.executable, str(p)])


def test_an_oversized_frame_from_the_guest_is_a_protocol_error(standin, tmp_path):
    cmd = _hostile(tmp_path, "import struct, sys, time\n"
                             f"sys.stdout.buffer.write(struct.pack('<I', {MAX_FRAME + 1}) + b'x' * 65536)\n"
                             "sys.stdout.flush()\ntime.sleep(600)\n")
    with pytest.raises(AgentProtocolError) as e:
        AgentSession(_relay(_endpoint(standin, tmp_path, cmd)), startup_timeout=60)
    assert f"the agent sent a frame of {MAX_FRAME + 1} bytes; the limit is {MAX_FRAME}" in str(e.value)


def test_a_frame_that_never_ends_is_a_timeout_not_a_hang(standin, tmp_path):
    cmd = _hostile(tmp_path, "import struct, sys, time\n"
                             "sys.stdout.buffer.write(struct.pack('<I', 100) + b'WFPA')\n"
                             "sys.stdout.flush()\ntime.sleep(600)\n")
    with pytest.raises(AgentTimeout) as e:
        AgentSession(_relay(_endpoint(standin, tmp_path, cmd)), startup_timeout=3)
    assert "waiting for the agent's HELLO" in str(e.value) and "within 3 s" in str(e.value)


def test_a_guest_that_goes_away_mid_call_names_the_call_and_is_recorded(standin, tmp_path, freezer, monkeypatch):
    monkeypatch.setenv("WFP_AGENT_FLIGHT_RECORD", str(tmp_path / "in-flight.jsonl"))
    session = launch.start_command(shlex.join(_relay(_agent_on(standin, tmp_path))))
    api = AgentWinsock(session, name="agent")
    s = api.socket(C.AF_INET, C.SOCK_STREAM, C.IPPROTO_TCP)
    agents = freezer.freeze(standin.sshd.proc.pid)      # no call is in flight yet: the next one will be
    assert agents

    def guest_goes_down():
        assert freezer.a_call_reaches(agents)
        standin.sshd.kill_hard()                         # sshd and the agent die together, as in a bugcheck
    t = threading.Thread(target=guest_goes_down)
    t.start()
    with pytest.raises(AgentDied) as died:
        api.listen(s, 5)
    t.join(60)
    err = died.value
    assert str(err).startswith(f"listen(s={s:#x}, backlog=5): the agent '")
    assert "dropped while the agent ran" in str(err)       # the relay's line, from its stderr
    # the session's flight record names the call and the test running it, whoever catches the error
    (flight,) = [json.loads(x) for x in (tmp_path / "in-flight.jsonl").read_text().splitlines()]
    assert flight["call"] == f"listen(s={s:#x}, backlog=5)"
    assert flight["test"].endswith("::test_a_guest_that_goes_away_mid_call_names_the_call_and_is_recorded (call)")
    drop = read_drop(tmp_path / "guest-dropped.json")
    assert drop["guest"] == standin.name and "dropped while the agent ran" in drop["why"]
    # later starts in the run fail at once instead of waiting for a guest that is gone
    standin.sshd.start(port=standin.sshd.port)
    with pytest.raises(AgentDied) as e:
        launch.start_command(shlex.join(_relay(tmp_path / "endpoint.json")))
    assert "dropped earlier in this run" in str(e.value)


def test_a_bad_endpoint_file_is_one_line_and_exit_2(tmp_path):
    import subprocess
    bad = tmp_path / "endpoint.json"
    bad.write_text('{"host": "127.0.0.1"}')
    for args in ([str(bad)], [str(tmp_path / "missing.json")], []):
        r = subprocess.run([sys.executable, "-m", "harness.vm.agent_ssh", *args], capture_output=True, text=True)
        assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith("wfp-harness agent-ssh: ")
