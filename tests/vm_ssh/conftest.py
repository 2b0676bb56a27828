"""A real OpenSSH sshd on 127.0.0.1 for the guest-SSH tests.

Each test gets its own daemon: random free port, freshly generated host key,
key-only login for the current user, everything under the test's tmp dir.
Destructive tests (killing sshd) therefore cannot disturb other tests, and
the suite runs under ``pytest -n auto``.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import signal
import struct
import subprocess
import termios
import threading
import uuid
from pathlib import Path

import pytest

from harness.vm.redact import SecretRegistry
from harness.vm import standin
from harness.vm.ssh import GuestSsh, SshEndpoint
from harness.vm.standin import SSH_KEYGEN, SSHD, descendants, keygen  # noqa: F401 (descendants: for the lab tests)


def ssh_fingerprint(pub: Path) -> str:
    """SHA256 fingerprint as OpenSSH prints it (independent of our code)."""
    out = subprocess.run([SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(pub)],
                         check=True, capture_output=True, text=True).stdout
    return out.split()[1]


class Sshd(standin.Sshd):
    """The lab's sshd stand-in (harness.vm.standin), plus what the SSH tests ask of it."""

    @property
    def host_fingerprint(self) -> str:
        return ssh_fingerprint(Path(str(self.host_key) + ".pub"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def endpoint(self, **overrides) -> SshEndpoint:
        kw = dict(host="127.0.0.1", port=self.port, username=self.user,
                  key_file=self.user_key, host_key=self.host_key_line,
                  connect_timeout=10.0, keepalive=2.0, shell="posix",
                  boot_id_path=str(self.boot_id_path))
        kw.update(overrides)
        return SshEndpoint(**kw)

    def client(self, registry: SecretRegistry | None = None, **overrides) -> GuestSsh:
        return GuestSsh(self.endpoint(**overrides), registry=registry or SecretRegistry(),
                        workdir=self.root / "out")


@pytest.fixture
def sshd(tmp_path: Path):
    if not os.path.exists(SSHD):
        pytest.skip("OpenSSH server not installed (Debian: openssh-server)")
    root = tmp_path / "sshd"
    root.mkdir()
    host_key = keygen(root / "host_ed25519")
    user_key = keygen(root / "user_ed25519")
    (root / "authorized_keys").write_text(Path(str(user_key) + ".pub").read_text())
    boot = root / "boot_id"
    boot.write_text(str(uuid.uuid4()) + "\n")
    server = Sshd(root=root, host_key=host_key, user_key=user_key,
                  user=pwd.getpwuid(os.getuid()).pw_name, boot_id_path=boot)
    server.start()
    yield server
    server.stop()


def _stdin_pending(pid: int) -> int:
    """Bytes unread on the process's stdin (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/fd/0", "rb", buffering=0) as f:
            return struct.unpack("i", fcntl.ioctl(f.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0


def _agents(sshd_pid: int) -> list[int]:
    out = []
    for p in descendants(sshd_pid):
        try:
            if b"winsock-agent" in Path(f"/proc/{p}/cmdline").read_bytes():
                out.append(p)
        except OSError:
            pass                      # it ended while we looked
    return out


def freeze_agents(sshd_pid: int) -> list[int]:
    """SIGSTOP every agent behind the guest's sshd (the guest hangs on its way down)."""
    agents = _agents(sshd_pid)
    for p in agents:
        try:
            os.kill(p, signal.SIGSTOP)
        except ProcessLookupError:
            pass
    return agents


def a_call_reaches(agents: list[int], polls: int = 2000) -> bool:
    """Whether (within `polls` looks) a frozen agent gets a request it cannot read: a call the
    guest will never answer."""
    for _ in range(polls):
        if any(_stdin_pending(p) for p in agents):
            return True
        threading.Event().wait(0.01)
    return False


def freeze_with_a_call_in_flight(sshd_pid: int, rounds: int = 200) -> None:
    """Freeze the agents of a guest whose suite is running at a moment a call is in flight.  A
    freeze that caught an agent between reading a request and answering it shows nothing unread
    (and no next request comes): thaw it and freeze again.  Bounded by counts, not time."""
    for _ in range(rounds):
        agents = freeze_agents(sshd_pid)      # none for a moment while the suite replaces an agent
        if agents and a_call_reaches(agents, polls=50):
            return
        for p in agents:
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
        threading.Event().wait(0.01)
    raise AssertionError("no request reached a frozen agent")


class Freezer:
    """Stop a guest's agents and wait for a call they will never answer."""
    freeze = staticmethod(freeze_agents)
    a_call_reaches = staticmethod(a_call_reaches)
    freeze_with_a_call_in_flight = staticmethod(freeze_with_a_call_in_flight)


@pytest.fixture
def freezer() -> type[Freezer]:
    return Freezer


class KeyTool:
    """OpenSSH's ssh-keygen, for tests that need extra keys or fingerprints."""
    keygen = staticmethod(keygen)
    fingerprint = staticmethod(ssh_fingerprint)


@pytest.fixture
def keytool() -> type[KeyTool]:
    return KeyTool


@pytest.fixture
def guest(sshd: Sshd):
    g = sshd.client()
    g.connect()
    yield g
    g.close()
