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
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO_ROOT = TESTS.parent
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
keygen = _ssh.keygen

from harness.vm.standin import SSHD, StandIn, reset_on_clone  # noqa: E402
from harness.vm.standin import make_standin as _make_standin  # noqa: E402


_LIVE: dict[str, StandIn] = {}


def make_standin(base: Path, name: str, **kw) -> StandIn:
    """A stand-in guest (harness.vm.standin) answering the lab's Windows commands."""
    if not os.path.exists(SSHD):
        pytest.skip("OpenSSH server not installed (Debian: openssh-server)")
    s = _make_standin(base, name, **kw)
    _LIVE[name] = s
    return s


FAST_TIMEOUTS = "ssh = 15\nreboot = 30\ncommand = 60\ntest_run = 300\n"
# The lab tests' selection of the suite: a slice that runs in seconds under Wine (whole runs: the demo).
SUITE_SELECT = "test_sockets or test_select"
FAST_RUN = ("retries = 1\nretry_backoff = 0.2\nretry_backoff_max = 1\nparallelism = 8\n"
            f'suite_select = "{SUITE_SELECT}"\n')


def write_lab(path: Path, vc: Vcsim, guests_toml: str, *, run_extra: str = FAST_RUN,
              timeouts: str = FAST_TIMEOUTS, vcenter: str | None = None) -> Path:
    path.write_text(lab_toml(vc, guests_toml=guests_toml, run_extra=run_extra, timeouts=timeouts,
                             vcenter=vcenter))
    return path


INF = REPO_ROOT / "driver-fixtures" / "wfp-redirect-callout" / "wfp_redirect_callout.inf"


def make_test_certificate() -> bytes:
    """A self-signed certificate like the WDK's test certificate (DER, .cer)."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "WDKTestCert wfp-harness")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def make_driver(base: Path, *, cert: bool = True, pdb: bool = True, name: str = "driver") -> Path:
    """A driver package as the WDK build lays it out: the sample's real INF,
    SYS, CAT, the test certificate (.cer) and the symbols (.pdb)."""
    d = base / name
    d.mkdir(parents=True)
    (d / "wfp_redirect_callout.inf").write_text(INF.read_text())
    (d / "wfp_redirect_callout.sys").write_bytes(b"MZ" + b"\0" * 62 + b"fake driver image")
    (d / "wfp_redirect_callout.cat").write_bytes(b"0\x82catalog")
    if cert:
        (d / "wfp_redirect_callout.cer").write_bytes(make_test_certificate())
    if pdb:
        (d / "wfp_redirect_callout.pdb").write_bytes(b"Microsoft C/C++ MSF 7.00\r\n\x1aDS\0\0\0")
    return d


def run_options(tmp: Path, wheelhouse: Path, vc: Vcsim, **kw):
    """Options for a run against vcsim and the stand-ins; each stand-in is reset
    to its baseline whenever the orchestrator clones its guest."""
    from harness.vm.orchestrator import RunOptions
    stream = io.StringIO()
    opts = dict(wheelhouse=wheelhouse, env=vc.env(), poll_interval=0.02, max_poll_interval=0.2,
                progress_streams=[stream], progress_interval=0, abort_grace=20,
                reconnect_interval=0.2, ssh_connect_timeout=5, progress_listeners=[reset_on_clone(_LIVE)])
    opts.update(kw)
    return RunOptions(**opts), stream


def all_text(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]


def clones_of(lab, vc: Vcsim, run_id: str) -> list[str]:
    from harness.vm.vsphere import TAG_RUN_ID, VSphere
    with VSphere(lab, env=vc.env(), poll_interval=0.02, max_poll_interval=0.2) as vs:
        return [name for _, name, tags in vs.list_clones() if tags.get(TAG_RUN_ID) == run_id]
