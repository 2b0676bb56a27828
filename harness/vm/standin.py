"""Stand-in guests: a real OpenSSH sshd on 127.0.0.1 that answers the lab's
Windows commands through ``harness/vm/winemu.py`` (tests and ``lab demo``).

What it is, plainly: a Linux account reached over SSH with the POSIX shell
dialect, whose PATH starts with one shim per Windows command the lab sends
(``pnputil.exe``, ``verifier.exe``, ``sc.exe``, ``reg.exe``,
``certutil.exe``, ``pktmon.exe``, ``cdb.exe``, ``shutdown.exe``).  The lab
builds those argv lists with ``harness.vm.wincmd`` exactly as for Windows
and reads the answers with the same parsers.

Its Winsock is Wine's: the winsock-agent the lab uploads runs under wine64
through ``wine-exe`` (on the same PATH), the stand-in's stand-in for Windows
loading a ``.exe``.  sshd's sessions get WINEPREFIX (the guest's own prefix,
under its temporary home, cloned from the harness's prepared prefix so only
the first stand-in of a machine waits for ``wineboot``) and WINEDEBUG=-all.
``wine-exe`` starts the prefix's wineserver detached from the session's
pipes first: a wineserver started by the agent would inherit the SSH
channel and keep it open after the agent died.

Each clone of a template starts from the template's baseline snapshot:
:meth:`StandIn.reset_to_baseline` restores the state directory, and
:func:`reset_on_clone` calls it whenever the orchestrator reports the
``clone`` phase for the guest.  Knobs (``set_knob``) and the locale are
part of the "template" and survive resets.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from harness.vm import wincmd
from harness.vm.guest_os import EXE_LOADER          # runs a .exe on the stand-in (as Windows does natively)

__all__ = ["SSHD", "StandIn", "make_standin", "reset_on_clone", "TOOLS"]

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
TOOLS = ("pnputil", "verifier", "sc", "reg", "certutil", "pktmon", "cdb", "shutdown")
EMULATOR = Path(__file__).with_name("winemu.py")
TEMPLATE_FILES = ("knobs.json", "locale.json")


def keygen(path: Path, key_type: str = "ed25519", passphrase: str = "") -> Path:
    """A key pair made by OpenSSH's own tool."""
    subprocess.run([SSH_KEYGEN, "-q", "-t", key_type, "-N", passphrase, "-C", "", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (sshd's per-connection children outlive the listener)."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
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
    path_prefix: str = ""
    env: dict = field(default_factory=dict)      # more variables for every session (SetEnv)
    port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "sshd.log"

    @property
    def host_key_line(self) -> str:
        return Path(f"{self.host_key}.pub").read_text().strip()

    def _config(self) -> Path:
        cfg = self.root / "sshd_config"
        # PATH (set only with path_prefix) puts the Windows command emulators first, as System32 is on Windows.
        path = f" PATH={self.path_prefix}:/usr/local/bin:/usr/bin:/bin" if self.path_prefix else ""
        path += "".join(f" {k}={v}" for k, v in sorted(self.env.items()))
        cfg.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"PidFile {self.root / 'sshd.pid'}\nAuthorizedKeysFile {self.root / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"PermitRootLogin prohibit-password\nAllowUsers {self.user}\nStrictModes no\nUsePAM no\n"
            "UseDNS no\nPrintMotd no\nLogLevel VERBOSE\nSubsystem sftp internal-sftp\n"
            # bash sources ~/.bashrc for a command run by sshd only as a top-level shell (SHLVL < 2):
            # SHLVL=1 keeps the machine user's dotfiles (a stale pyenv lock, say) out of commands.
            f"SetEnv SHLVL=1{path}\n")
        return cfg

    def start(self, port: int | None = None) -> "Sshd":
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        for _ in range(5):
            self.port = port or _free_port()
            cfg = self._config()
            with open(self.log_path, "ab") as logf:
                self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                                             stdout=logf, stderr=logf)
            if self._ready(15.0):
                return self
            self.stop()
            if port is not None:
                break
        raise RuntimeError(f"sshd did not start; see {self.log_path}")

    def _ready(self, limit: float) -> bool:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                return False
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
        """SIGKILL sshd and every process it started (what a crash looks like)."""
        if self.proc is None:
            return
        for pid in descendants(self.proc.pid) + [self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        _end_wineserver(self.env)
        if self.proc is None:
            return
        kids = descendants(self.proc.pid)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None


def _baseline_registry(build: str) -> dict:
    return {
        wincmd.CURRENT_VERSION_KEY.upper(): {
            "ProductName": ["REG_SZ", "Windows Server 2022 Datacenter (stand-in)"],
            "CurrentBuild": ["REG_SZ", build], "UBR": ["REG_DWORD", 2340], "DisplayVersion": ["REG_SZ", "21H2"]},
        wincmd.CONTROL_KEY.upper(): {"SystemStartOptions": ["REG_SZ", " NOEXECUTE=OPTIN  TESTSIGNING"]},
        wincmd.CRASH_KEY.upper(): {"CrashDumpEnabled": ["REG_DWORD", 2]},
    }


@dataclass
class StandIn:
    """One stand-in guest: sshd + workdir + emulator state."""

    name: str
    root: Path
    sshd: Sshd
    workdir: Path
    state: Path
    python: str
    template: str = "wfp-ws2022"

    @property
    def baseline(self) -> Path:
        return self.root / "baseline"

    @property
    def windir(self) -> Path:
        return self.state / "Windows"

    @property
    def boot_id(self) -> str:
        return self.sshd.boot_id_path.read_text().strip()

    def json(self, name: str, default=None):
        try:
            return json.loads((self.state / name).read_text())
        except (OSError, ValueError):
            return default

    def _write(self, name: str, data) -> None:
        for d in (self.state, self.baseline):
            (d / name).write_text(json.dumps(data, indent=1, sort_keys=True))

    def set_knob(self, name: str, value) -> None:
        """A property of the template (kept across clones)."""
        knobs = self.json("knobs.json", {}) or {}
        knobs[name] = value
        self._write("knobs.json", knobs)

    def set_file(self, name: str, content: str) -> None:
        """A file of the template's state (e.g. ``environment``: machine variables)."""
        for d in (self.state, self.baseline):
            (d / name).write_text(content)

    def set_locale(self, locale: str) -> None:
        self._write("locale.json", {"locale": locale})

    def set_registry(self, key: str, name: str, typ: str, data) -> None:
        """Change the template's registry (e.g. test signing off)."""
        for d in (self.state, self.baseline):
            p = d / "registry.json"
            reg = json.loads(p.read_text())
            reg.setdefault(key.upper(), {})[name] = [typ, data]
            p.write_text(json.dumps(reg, indent=1, sort_keys=True))

    def commands(self) -> list[dict]:
        p = self.state / "commands.log"
        return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []

    def reset_to_baseline(self) -> None:
        """What a new linked clone of the baseline snapshot sees."""
        for p in self.state.iterdir():
            if p.name == "bin":
                continue
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        for p in self.baseline.iterdir():
            (shutil.copytree if p.is_dir() else shutil.copy2)(p, self.state / p.name)

    def crash(self, *, reboot: bool = True) -> None:
        """A bugcheck seen from outside: SSH dies, dumps appear, the guest
        comes back with a new boot id."""
        self.sshd.kill_hard()
        (self.windir / "Minidump").mkdir(parents=True, exist_ok=True)
        (self.windir / "MEMORY.DMP").write_bytes(b"PAGEDU64" + os.urandom(4096))
        (self.windir / "Minidump" / "112626-01.dmp").write_bytes(b"PAGEDU64" + os.urandom(512))
        if reboot:
            self.sshd.boot_id_path.write_text(str(uuid.uuid4()) + "\n")
        self.sshd.start(port=self.sshd.port)

    def guest_toml(self, **over) -> str:
        kw = dict(name=self.name, template=self.template, host_key_file=f"{self.sshd.host_key}.pub",
                  ssh_key_file=str(self.sshd.user_key), ssh_port=self.sshd.port, workdir=str(self.workdir),
                  state_dir=str(self.state), boot_id_path=str(self.sshd.boot_id_path), python=self.python)
        kw.update(over)
        lines = ["[[guests]]", 'snapshot = "baseline"', 'os_build = "stand-in"', 'os = "posix"',
                 f'account = "{self.sshd.user}"', "secure_boot = false"]
        for k, v in kw.items():
            if v is None:
                continue
            lines.append(f"{k} = {v}" if isinstance(v, int) else f'{k} = "{v}"')
        return "\n".join(lines) + "\n"


def _end_wineserver(env: dict) -> None:
    """The stand-in's wineserver lingers after its last process; a stopped guest leaves none behind."""
    prefix = env.get("WINEPREFIX")
    if not prefix or not Path(prefix).is_dir():
        return
    from harness.agent import AgentUnavailable, launch
    try:
        server = launch.find_wine().parent / "wineserver"
    except AgentUnavailable:
        return
    if os.access(server, os.X_OK):
        subprocess.run([str(server), "-k"], env=dict(os.environ, WINEPREFIX=prefix), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False)


def wine_prefix_for(home: Path) -> dict:
    """A Wine prefix of the guest's own under ``home``, and the session variables that select it.

    Cloned from the harness's prepared prefix (``harness.agent.launch``: wineboot once per
    machine): Wine's DLL copies (system32, winsxs: hundreds of MB never written at run time)
    are hard links, everything Wine writes (registry files, the user profile) is copied."""
    from harness.agent import launch
    wine = launch.find_wine()
    template = launch.wine_prefix()
    launch.ensure_prefix(wine, launch.wine_env(template))
    prefix = home / "wineprefix"
    shared = {template / "drive_c" / "windows" / "system32", template / "drive_c" / "windows" / "winsxs"}

    def copy(src: Path, dst: Path) -> None:
        for entry in sorted(src.iterdir()):
            if entry.name == "wineserver" or entry.name.endswith(".lock"):
                continue                         # the template's server socket link, lock files
            target = dst / entry.name
            if entry.is_symlink():
                os.symlink(os.readlink(entry), target)
            elif entry.is_dir():
                if entry in shared:
                    shutil.copytree(entry, target, symlinks=True, copy_function=os.link)
                else:
                    target.mkdir()
                    copy(entry, target)
            else:
                shutil.copy2(entry, target)

    prefix.mkdir(parents=True)
    copy(template, prefix)
    return {"WINEPREFIX": str(prefix), "WINEDEBUG": "-all", "WINEDLLOVERRIDES": "mscoree,mshtml="}


def _install_loader(bin_dir: Path) -> None:
    from harness.agent import launch
    wine = launch.find_wine()
    server = wine.parent / "wineserver"
    loader = bin_dir / EXE_LOADER
    # `wineserver -p N` returns at once, leaving a server for the prefix that lingers N s after
    # its last client; started here with /dev/null for its streams, not by the agent's wine.
    loader.write_text("#!/bin/sh\n"
                      f"'{server}' -p60 </dev/null >/dev/null 2>&1\n"
                      f"exec '{wine}' \"$@\"\n")
    loader.chmod(0o755)


def _install_emulators(bin_dir: Path, state: Path, boot_id: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    emu = bin_dir / "winemu.py"
    shutil.copy2(EMULATOR, emu)
    for tool in TOOLS:
        shim = bin_dir / f"{tool}.exe"
        shim.write_text("#!/bin/sh\n"
                        f"WFP_STANDIN_STATE='{state}' WFP_STANDIN_BOOT_ID='{boot_id}' "
                        f"exec '{sys.executable}' '{emu}' {tool} \"$@\"\n")
        shim.chmod(0o755)


def make_standin(base: Path, name: str, *, python: str | None = None, host_key: Path | None = None,
                 locale: str = "en-US") -> StandIn:
    """Start a stand-in.  ``python``: the guest's interpreter (default: this
    one's base interpreter; runs start from a fresh venv without pytest).
    ``host_key``: an existing private host key (e.g. the one a template's
    extraConfig pins).  A missing wine64 raises AgentUnavailable naming its
    Debian package."""
    if not os.path.exists(SSHD):
        raise FileNotFoundError("OpenSSH server not installed (Debian: openssh-server)")
    root = base / name
    (root / "sshd").mkdir(parents=True)
    if host_key is None:
        host_key = keygen(root / "sshd" / "host_ed25519")
    else:
        dst = root / "sshd" / "host_ed25519"
        shutil.copy2(host_key, dst)
        shutil.copy2(f"{host_key}.pub", f"{dst}.pub")
        os.chmod(dst, 0o600)
        host_key = dst
    user_key = keygen(root / "sshd" / "user_ed25519")
    (root / "sshd" / "authorized_keys").write_text(Path(f"{user_key}.pub").read_text())
    boot = root / "sshd" / "boot_id"
    boot.write_text(str(uuid.uuid4()) + "\n")
    workdir, state = root / "guest", root / "guest" / "state"
    (state / "Windows" / "Minidump").mkdir(parents=True)
    _install_emulators(state / "bin", state, boot)
    _install_loader(state / "bin")
    env = wine_prefix_for(root / "home")
    sshd = Sshd(root=root / "sshd", host_key=host_key, user_key=user_key, user=pwd.getpwuid(os.getuid()).pw_name,
                boot_id_path=boot, path_prefix=str(state / "bin"), env=env)
    s = StandIn(name=name, root=root, sshd=sshd, workdir=workdir, state=state,
                python=python or os.path.join(sys.base_prefix, "bin", "python3"))
    s.baseline.mkdir()
    (s.baseline / "Windows" / "Minidump").mkdir(parents=True)
    (s.baseline / "registry.json").write_text(json.dumps(_baseline_registry("20348"), indent=1))
    s.set_locale(locale)
    s._write("knobs.json", {})
    s.reset_to_baseline()
    sshd.start()
    return s


def reset_on_clone(standins: dict[str, StandIn]):
    """A ``Progress`` listener: a guest entering ``clone`` gets a fresh copy of its baseline."""
    def listener(guest: str, status) -> None:
        s = standins.get(guest)
        if s is not None and status.phase == "clone":
            s.reset_to_baseline()
    return listener
