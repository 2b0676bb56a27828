"""``wfp-harness lab demo``: the whole lab on one Linux machine, in one command.

Starts the vCenter simulator (``tools/vcsim``, built with Debian's
golang-go and golang-github-vmware-govmomi-dev), two stand-in guests
(``harness.vm.standin``: OpenSSH on 127.0.0.1 answering the lab's Windows
commands, their Winsock Wine's), builds a sample driver package (the
sample's real INF, a placeholder SYS, a test certificate and a PDB), runs
``nightly`` and then ``gate`` against that nightly, and prints where the
reports are.  The English guest runs the suite on the controller against
its uploaded winsock-agent over its SSH connection (``suite =
"controller"``); the German one runs it on the guest.  The templates pin
the stand-ins' host key in their extraConfig, as the real template build does.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from harness.vm.package import project_root

__all__ = ["run_demo", "DemoError"]

GOVMOMI = Path("/usr/share/gocode/src/github.com/vmware/govmomi")
USER_ENV, PASSWORD_ENV = "WFP_DEMO_VCENTER_USER", "WFP_DEMO_VCENTER_PASSWORD"


class DemoError(Exception):
    """Something the demo needs is missing (one line for the user)."""


def _say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def build_vcsim(cache: Path) -> Path:
    root = project_root()
    go = shutil.which("go")
    if root is None or not (root / "tools" / "vcsim").is_dir():
        raise DemoError("the demo runs from a source checkout (tools/vcsim is missing)")
    if go is None or not (GOVMOMI / "simulator").is_dir():
        raise DemoError("needs the Debian packages golang-go and golang-github-vmware-govmomi-dev")
    src = root / "tools" / "vcsim"
    key = hashlib.sha256(b"".join(f.read_bytes() for f in sorted(src.glob("*.go")))).hexdigest()[:16]
    binary = cache / key / "wfp-vcsim"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOCACHE=str(cache / "gocache"),
               GOPROXY="off", GOFLAGS="", CGO_ENABLED="0")
    tmp = binary.with_suffix(f".tmp{os.getpid()}")
    r = subprocess.run([go, "build", "-o", str(tmp), "."], cwd=src, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise DemoError(f"building tools/vcsim failed: {(r.stderr or r.stdout).strip()[-300:]}")
    os.replace(tmp, binary)
    return binary


def build_vcsim_saying(cache: Path) -> Path:
    """build_vcsim with a progress line every 10 s and the time it took: the user waits for it."""
    from harness.long_step import long_step
    with long_step(_say, "building the vCenter simulator (tools/vcsim; about 40 s the first time, then cached)"):
        return build_vcsim(cache)


def _pki(d: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    now = _dt.datetime.now(_dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wfp demo CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(minutes=5))
          .not_valid_after(now + _dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    d.mkdir(parents=True, exist_ok=True)
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "server.pem").write_bytes(cert.public_bytes(pem))
    (d / "server.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    os.chmod(d / "server.key", 0o600)
    return d / "ca.pem", d / "server.pem", d / "server.key"


def _test_certificate() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    now = _dt.datetime.now(_dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "WDKTestCert demo")])
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + _dt.timedelta(days=2)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def _driver(d: Path) -> Path:
    root = project_root()
    assert root is not None
    d.mkdir(parents=True)
    shutil.copy2(root / "driver-fixtures" / "wfp-redirect-callout" / "wfp_redirect_callout.inf", d)
    (d / "wfp_redirect_callout.sys").write_bytes(b"MZ" + b"\0" * 62 + b"demo placeholder, not a driver")
    (d / "wfp_redirect_callout.cat").write_bytes(b"0\x82demo catalog")
    (d / "wfp_redirect_callout.cer").write_bytes(_test_certificate())
    (d / "wfp_redirect_callout.pdb").write_bytes(b"Microsoft C/C++ MSF 7.00\r\n\x1aDS\0\0\0")
    return d


def _start_vcsim(binary: Path, d: Path, host_key: str, password: str):
    ca, cert, key = _pki(d / "pki")
    templates = [{"name": n, "guest": {"ips": ["127.0.0.1"], "tools_delay_ms": 50, "ip_delay_ms": 50},
                  "extra_config": {"guestinfo.wfp.ssh_host_key": host_key}} for n in ("wfp-ws2022", "wfp-ws2025")]
    (d / "inventory.json").write_text(json.dumps({"folder": "wfp-ci", "templates": templates}))
    proc = subprocess.Popen([str(binary), "-l", "127.0.0.1:0", "-tlscert", str(cert), "-tlskey", str(key),
                             "-config", str(d / "inventory.json"), "-username", "demo@vsphere.local",
                             "-password-env", "VCSIM_PASSWORD", "-watch-stdin"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(d / "vcsim.log", "w"),
                            text=True, env=dict(os.environ, VCSIM_PASSWORD=password))
    box: dict = {}

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("VCSIM_READY "):
                box.update(json.loads(line.split(" ", 1)[1]))
                return
    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(120)
    if not box:
        proc.kill()
        raise DemoError(f"vcsim did not start; see {d / 'vcsim.log'}")
    return proc, box["url"], ca


def run_demo(out: Path, *, keep: bool = False) -> int:
    from harness.vm.config import load_config
    from harness.vm.orchestrator import Orchestrator, RunOptions
    from harness.agent import AgentUnavailable, pool
    from harness.vm.standin import keygen, make_standin, reset_on_clone
    if not os.path.exists("/usr/sbin/sshd"):
        raise DemoError("needs the Debian package openssh-server")
    try:
        pool.check_target("wine")          # the stand-ins' Winsock, and the agent's compiler
    except AgentUnavailable as e:
        raise DemoError(str(e)) from None       # names the Debian package
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="wfp-demo-"))
    password = os.urandom(12).hex()
    env = {USER_ENV: "demo@vsphere.local", PASSWORD_ENV: password}
    binary = build_vcsim_saying(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wfp-harness"
                                / "vcsim")
    # The template build's host key: generated here, recorded in the templates' extraConfig.
    host_key = keygen(work / "template_host_ed25519")
    line = Path(f"{host_key}.pub").read_text().strip()
    proc, url, ca = _start_vcsim(binary, work / "vcsim", line, password)
    standins = {}
    try:
        _say(f"vCenter simulator at {url}; starting two stand-in guests (en-US: the suite runs here against "
             f"its agent over SSH; de-DE: the suite runs on the guest)")
        suites = {}
        for name, template, locale, suite in (("ws2022-en", "wfp-ws2022", "en-US", "controller"),
                                              ("ws2025-de", "wfp-ws2025", "de-DE", "guest")):
            s = make_standin(work / "guests", name, host_key=host_key, locale=locale)
            s.template = template
            standins[name], suites[name] = s, suite
        guests = "".join(s.guest_toml(host_key_file=None, host_key_guestinfo="guestinfo.wfp.ssh_host_key",
                                      suite=suites[n]) for n, s in standins.items())
        cfg = out / "lab.toml"
        cfg.write_text(f"""# written by `wfp-harness lab demo`
[vcenter]
url = "{url}"
ca_bundle = "{ca}"
user_env = "{USER_ENV}"
password_env = "{PASSWORD_ENV}"

[placement]
datacenter = "DC0"
cluster = "DC0_C0"
folder = "wfp-ci"
datastore = "LocalDS_0"

[run]
artifact_dir = "{out / 'artifacts'}"
parallelism = 2
retries = 1
retry_backoff = 1
min_datastore_free_gb = 0

[timeouts]
ssh = 30
reboot = 60
command = 300
test_run = 900

{guests}""")
        lab = load_config(cfg)
        driver = _driver(work / "driver")
        reports = {}
        for mode in ("nightly", "gate"):
            _say(f"running {mode} (live progress below)")
            opts = RunOptions(mode=mode, driver=driver, env=env, progress_streams=[sys.stdout], progress_interval=0,
                              baseline=reports.get("nightly"), run_id=f"demo-{mode}-{os.urandom(2).hex()}",
                              progress_listeners=[reset_on_clone(standins)], poll_interval=0.05,
                              reconnect_interval=0.5)
            outcome = Orchestrator(lab, opts).run()
            reports[mode] = outcome.run_dir / "results.json"
            _say(f"{mode}: exit {outcome.exit_code}; report {outcome.run_dir / 'report.html'}")
            if outcome.verdict:
                _say(f"gate verdict: {outcome.verdict['verdict'].upper()} ({outcome.run_dir / 'verdict.json'})")
        _say(f"done. Open {reports['gate'].parent / 'report.html'} (and the nightly's "
             f"{reports['nightly'].parent / 'report.html'}); the lab config used is {cfg}")
        return 0
    finally:
        for s in standins.values():
            s.sshd.stop()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
