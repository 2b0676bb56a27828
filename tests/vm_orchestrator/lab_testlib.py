"""A lab on one machine for the orchestrator tests: the real vCenter simulator
(tests/vm_vsphere) plus one real OpenSSH sshd per guest on 127.0.0.1
(tests/vm_ssh's ``Sshd``), each with its own port, host key and client key,
standing in for a Windows guest with the POSIX guest-OS profile.

vcsim reports 127.0.0.1 as every clone's guest IP; the config ties each
guest (and so its clone) to its stand-in through ``ssh_port`` and the
pinned ``host_key_file``.  The stand-in's boot id, test-signing and
verifier state and crash dumps are files the tests control.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pwd
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path.insert(0, str(TESTS / "vm_vsphere"))

from vsphere_testlib import CANARY_PASSWORD, Vcsim, lab_toml  # noqa: E402,F401


def _load_ssh_fixtures():
    # tests/vm_ssh keeps its sshd helpers in its conftest; load that file under
    # its own module name so both directories can be collected together.
    name = "vm_ssh_fixtures"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TESTS / "vm_ssh" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


_ssh = _load_ssh_fixtures()
Sshd, keygen, SSHD = _ssh.Sshd, _ssh.keygen, _ssh.SSHD


@dataclass
class StandIn:
    """One stand-in guest: an sshd plus the directories the POSIX profile uses."""

    name: str
    root: Path
    sshd: Sshd
    workdir: Path
    state: Path
    template: str = "wfp-ws2022"

    @property
    def boot_id(self) -> str:
        return self.sshd.boot_id_path.read_text().strip()

    def set(self, name: str, value: str) -> None:
        p = self.state / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(value)

    def reboot(self, *, crash: bool = False) -> None:
        """What a bugcheck looks like from outside: SSH dies, the guest comes
        back with a new boot id (and, with ``crash``, a kernel dump and a minidump)."""
        self.sshd.kill_hard()
        if crash:
            d = self.state / "dumps"
            (d / "Minidump").mkdir(parents=True, exist_ok=True)
            (d / "MEMORY.DMP").write_bytes(b"PAGEDU64" + os.urandom(4096))
            (d / "Minidump" / "112626-01.dmp").write_bytes(b"PAGEDU64" + os.urandom(512))
        self.sshd.boot_id_path.write_text(str(uuid.uuid4()) + "\n")
        self.sshd.start(port=self.sshd.port)

    def guest_toml(self, **over) -> str:
        kw = dict(name=self.name, template=self.template, host_key_file=f"{self.sshd.host_key}.pub",
                  ssh_key_file=str(self.sshd.user_key), ssh_port=self.sshd.port, workdir=str(self.workdir),
                  state_dir=str(self.state), boot_id_path=str(self.sshd.boot_id_path), python=sys.executable)
        kw.update(over)
        lines = ["[[guests]]", 'snapshot = "baseline"', 'os_build = "stand-in"', 'os = "posix"',
                 f'account = "{self.sshd.user}"', "secure_boot = false"]
        for k, v in kw.items():
            lines.append(f"{k} = {v}" if isinstance(v, int) else f'{k} = "{v}"')
        return "\n".join(lines) + "\n"


def make_standin(base: Path, name: str) -> StandIn:
    if not os.path.exists(SSHD):
        pytest.skip("OpenSSH server not installed (Debian: openssh-server)")
    root = base / name
    (root / "sshd").mkdir(parents=True)
    host_key = keygen(root / "sshd" / "host_ed25519")
    user_key = keygen(root / "sshd" / "user_ed25519")
    (root / "sshd" / "authorized_keys").write_text(Path(f"{user_key}.pub").read_text())
    boot = root / "sshd" / "boot_id"
    boot.write_text(str(uuid.uuid4()) + "\n")
    sshd = Sshd(root=root / "sshd", host_key=host_key, user_key=user_key,
                user=pwd.getpwuid(os.getuid()).pw_name, boot_id_path=boot)
    workdir, state = root / "guest", root / "guest" / "state"
    state.mkdir(parents=True)
    (state / "testsigning").write_text("on\n")
    sshd.start()
    return StandIn(name=name, root=root, sshd=sshd, workdir=workdir, state=state)


FAST_TIMEOUTS = "ssh = 15\nreboot = 30\ncommand = 60\ntest_run = 300\n"
FAST_RUN = "retries = 1\nretry_backoff = 0.2\nretry_backoff_max = 1\nparallelism = 8\n"


def write_lab(path: Path, vc: Vcsim, guests_toml: str, *, run_extra: str = FAST_RUN,
              timeouts: str = FAST_TIMEOUTS, vcenter: str | None = None) -> Path:
    path.write_text(lab_toml(vc, guests_toml=guests_toml, run_extra=run_extra, timeouts=timeouts,
                             vcenter=vcenter))
    return path


def make_driver(base: Path, *, install_sh: str | None = None) -> Path:
    """A driver package like the sample's: INF, SYS, CAT (+ the stand-in's install.sh)."""
    d = base / "driver"
    d.mkdir(parents=True)
    (d / "wfp_redirect_callout.inf").write_text(
        "[Version]\nSignature = \"$WINDOWS NT$\"\nDriverVer = 01/01/2025,1.0.0.0\n"
        "[Strings]\nServiceName = \"WfpRedirectCallout\"\n")
    (d / "wfp_redirect_callout.sys").write_bytes(b"MZ" + b"\0" * 62 + b"fake driver image")
    (d / "wfp_redirect_callout.cat").write_bytes(b"0\x82catalog")
    if install_sh is not None:
        (d / "install.sh").write_text(install_sh)
    return d


def run_options(tmp: Path, wheel: Path, vc: Vcsim, **kw):
    from harness.vm.orchestrator import RunOptions
    stream = io.StringIO()
    opts = dict(wheel=wheel, env=vc.env(), poll_interval=0.02, max_poll_interval=0.2,
                progress_streams=[stream], progress_interval=0, abort_grace=20,
                reconnect_interval=0.2, ssh_connect_timeout=5)
    opts.update(kw)
    return RunOptions(**opts), stream


def all_text(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]


def clones_of(lab, vc: Vcsim, run_id: str) -> list[str]:
    from harness.vm.vsphere import TAG_RUN_ID, VSphere
    with VSphere(lab, env=vc.env(), poll_interval=0.02, max_poll_interval=0.2) as vs:
        return [name for _, name, tags in vs.list_clones() if tags.get(TAG_RUN_ID) == run_id]
