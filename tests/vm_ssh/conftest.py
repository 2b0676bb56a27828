"""A real OpenSSH sshd on 127.0.0.1 for the guest-SSH tests.

Each test gets its own daemon: random free port, freshly generated host key,
key-only login for the current user, everything under the test's tmp dir.
Destructive tests (killing sshd) therefore cannot disturb other tests, and
the suite runs under ``pytest -n auto``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.vm.redact import SecretRegistry
from harness.vm.ssh import GuestSsh, SshEndpoint

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def keygen(path: Path, key_type: str = "ed25519", passphrase: str = "") -> Path:
    """Generate a key pair with OpenSSH's own tool (not paramiko)."""
    subprocess.run([SSH_KEYGEN, "-q", "-t", key_type, "-N", passphrase, "-C", "", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path


def ssh_fingerprint(pub: Path) -> str:
    """SHA256 fingerprint as OpenSSH prints it (independent of our code)."""
    out = subprocess.run([SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(pub)],
                         check=True, capture_output=True, text=True).stdout
    return out.split()[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 is the ppid; the command name (field 2) may contain spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


@dataclass
class Sshd:
    root: Path
    host_key: Path
    user_key: Path
    user: str
    boot_id_path: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "sshd.log"

    @property
    def host_key_line(self) -> str:
        return Path(str(self.host_key) + ".pub").read_text().strip()

    @property
    def host_fingerprint(self) -> str:
        return ssh_fingerprint(Path(str(self.host_key) + ".pub"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _write_config(self) -> Path:
        cfg = self.root / "sshd_config"
        cfg.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {self.root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            f"AllowUsers {self.user}\n"
            "StrictModes no\n"
            "UsePAM no\n"
            "UseDNS no\n"
            "PrintMotd no\n"
            "LogLevel VERBOSE\n"
            "Subsystem sftp internal-sftp\n"
            # bash sources ~/.bashrc for a command run by sshd only as a top-level shell (SHLVL < 2):
            # keep the machine user's dotfiles out of the stand-in (here: a pyenv rehash whose lock,
            # left by a session a fault test killed, hangs every later command).
            "SetEnv SHLVL=1\n"
        )
        return cfg

    def start(self, port: int | None = None) -> "Sshd":
        if os.geteuid() == 0:
            # sshd's privilege-separation directory (systemd makes it at boot).
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        for _attempt in range(5):
            self.port = port or _free_port()
            cfg = self._write_config()
            with open(self.log_path, "ab") as logf:
                self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)],
                                             stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
            if self._wait_ready(15.0):
                return self
            self.stop()
            if port is not None:
                break
        raise RuntimeError(f"sshd did not start; log:\n{self.log()}")

    def _wait_ready(self, limit: float) -> bool:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                return False  # e.g. the port was taken meanwhile
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.settimeout(5)
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def kill_hard(self) -> None:
        """SIGKILL sshd and every process it started (sessions, commands).

        sshd's per-connection children survive the listener's death, so a
        "crash" of the SSH server has to take them down too.
        """
        if self.proc is None:
            return
        victims = descendants(self.proc.pid) + [self.proc.pid]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        kids = descendants(self.proc.pid)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for pid in kids:  # only processes this daemon started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None

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
