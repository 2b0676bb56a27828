"""Helpers and fixtures for testing harness.vm against the real vCenter simulator (govmomi
vcsim, built from tools/vcsim with Debian's golang-go and
golang-github-vmware-govmomi-dev).  No pyvmomi mocks: every test talks SOAP
over verified TLS to a vcsim process on 127.0.0.1.

* the vcsim binary is built once per source hash and cached under
  ``$XDG_CACHE_HOME/wfp-harness/vcsim/<hash>/`` (default ``~/.cache``), with a
  file lock so pytest-xdist workers do not race;
* a test CA, a server certificate for 127.0.0.1 and an unrelated "wrong" CA
  are generated with ``cryptography``;
* each xdist worker starts its own vcsim (random port) for the session.

This module has a unique name (not ``conftest``) so test files can import its
helpers without clashing with other test directories' conftest modules.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
VCSIM_SRC = REPO / "tools" / "vcsim"
GOVMOMI = Path("/usr/share/gocode/src/github.com/vmware/govmomi")
GOPATH_SYSTEM = "/usr/share/gocode"

# The vCenter password the simulator accepts.  Tests assert it never shows up
# in any log record or exception text.
CANARY_PASSWORD = "canary-Pw-7c1e9b52d04a-DO-NOT-LOG"
VC_USER = "wfp-ci@vsphere.local"
USER_ENV = "WFP_TEST_VCENTER_USER"
PASSWORD_ENV = "WFP_TEST_VCENTER_PASSWORD"

FOLDER = "wfp-ci"
MATRIX_TEMPLATES = ("wfp-ws2022", "wfp-ws2025", "wfp-win11")


# ---------------------------------------------------------------------------
# Build (cached, locked)


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wfp-harness" / "vcsim"


def _source_key(go: str) -> str:
    h = hashlib.sha256()
    for f in sorted(VCSIM_SRC.glob("*.go")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    h.update(subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout.encode())
    # A changed govmomi package (Debian upgrade) invalidates the cache too.
    for f in ("go.mod", "simulator/simulator.go", "simulator/virtual_machine.go"):
        p = GOVMOMI / f
        if p.exists():
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:20]


def vcsim_path() -> Path | None:
    """Where the built binary of this source lives (it may not exist yet); None without Go and govmomi."""
    go = shutil.which("go")
    if go is None or not (GOVMOMI / "simulator").is_dir():
        return None
    return _cache_root() / _source_key(go) / "wfp-vcsim"


def build_vcsim() -> Path:
    binary = vcsim_path()
    if binary is None:
        pytest.skip("vcsim needs the Debian packages golang-go and golang-github-vmware-govmomi-dev")
    go = shutil.which("go")
    out_dir = binary.parent
    if binary.exists():
        return binary
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other xdist workers wait here, then find the binary
        if binary.exists():
            return binary
        tmp = out_dir / f"wfp-vcsim.tmp.{os.getpid()}"
        env = dict(os.environ,
                   GO111MODULE="off",             # GOPATH mode: Debian ships sources, not modules
                   GOPATH=GOPATH_SYSTEM,
                   GOCACHE=str(_cache_root() / "gocache"),
                   GOPROXY="off", GOFLAGS="", CGO_ENABLED="0")
        r = subprocess.run([go, "build", "-o", str(tmp), "."], cwd=VCSIM_SRC, env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"building tools/vcsim failed:\n{r.stdout}\n{r.stderr}")
        os.replace(tmp, binary)  # atomic: nobody sees a half-written binary
    return binary


# ---------------------------------------------------------------------------
# PKI


@dataclass(frozen=True)
class Pki:
    ca_pem: Path
    server_cert: Path
    server_key: Path
    wrong_ca_pem: Path
    server_sha256: str  # "AB:CD:..." of the server certificate


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_pki(d: Path) -> Pki:
    import ipaddress
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("WFP harness test CA")
    _, wrong_cert = _ca("Some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("vcsim.test")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (d / "wrong-ca.pem").write_bytes(wrong_cert.public_bytes(pem))
    (d / "server.pem").write_bytes(cert.public_bytes(pem))
    (d / "server.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    os.chmod(d / "server.key", 0o600)
    fp = cert.fingerprint(hashes.SHA256()).hex().upper()
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "wrong-ca.pem",
               ":".join(fp[i:i + 2] for i in range(0, 64, 2)))


def openssh_host_key(private_path: Path | None = None) -> str:
    """A template's host key line, as the template build records it; with
    ``private_path`` the private half is kept there too (OpenSSH format), so a
    stand-in guest can serve the very key the template pins."""
    priv = ed25519.Ed25519PrivateKey.generate()
    line = priv.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                          serialization.PublicFormat.OpenSSH).decode() + " host-key@wfp-ws2022"
    if private_path is not None:
        private_path.write_bytes(priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                    serialization.NoEncryption()))
        os.chmod(private_path, 0o600)
        Path(f"{private_path}.pub").write_text(line + "\n")
    return line


# ---------------------------------------------------------------------------
# The simulator process


@dataclass(frozen=True)
class Vcsim:
    url: str
    port: int
    thumbprint_sha256: str
    pki: Pki
    host_key: str  # published as guestinfo.wfp.ssh_host_key on the matrix templates
    stderr_log: Path
    host_key_private: Path | None = None  # its private half (for a stand-in that serves it)

    def env(self, password: str = CANARY_PASSWORD) -> dict[str, str]:
        return {USER_ENV: VC_USER, PASSWORD_ENV: password}


def _inventory(host_key: str) -> dict:
    normal = {"ips": ["127.0.0.1"], "tools_delay_ms": 50, "ip_delay_ms": 50}
    hk = {"guestinfo.wfp.ssh_host_key": host_key}
    t = [{"name": n, "guest": normal, "extra_config": hk} for n in MATRIX_TEMPLATES]
    t += [
        # DHCP-like: each boot or revert hands out the next address.
        {"name": "wfp-dhcp", "guest": {"ips": ["127.0.0.1", "127.0.0.2"], "tools_delay_ms": 50, "ip_delay_ms": 50}},
        {"name": "wfp-notools", "guest": {"ips": ["127.0.0.1"], "tools_delay_ms": -1}},
        {"name": "wfp-noip", "guest": {"ips": [], "tools_delay_ms": 20}},
        {"name": "wfp-broken", "guest": normal, "fail_clone": "NoDiskSpace"},
        {"name": "wfp-secureboot", "secure_boot": True, "guest": normal},
        {"name": "wfp-bios", "firmware": "bios", "guest": normal},
        {"name": "wfp-nosnap", "snapshot": "before-sysprep", "guest": normal},
    ]
    return {"folder": FOLDER, "templates": t}


def _read_ready(proc: subprocess.Popen, timeout: float) -> dict:
    box: dict = {}

    def reader() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("VCSIM_READY "):
                box["info"] = json.loads(line.split(" ", 1)[1])
                return

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    th.join(timeout)  # a start-up budget, not a timing assertion
    return box.get("info", {})


@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    return build_vcsim()


@contextlib.contextmanager
def start_vcsim(binary: Path, d: Path):
    """Run the simulator with the test inventory in ``d`` (also used by bench/)."""
    d.mkdir(parents=True, exist_ok=True)
    pki = make_pki(d / "pki")
    host_key = openssh_host_key(d / "template_host_ed25519")
    inv = d / "inventory.json"
    inv.write_text(json.dumps(_inventory(host_key), indent=1))
    err_log = d / "vcsim.stderr.log"
    env = dict(os.environ, VCSIM_PASSWORD=CANARY_PASSWORD)
    with open(err_log, "w") as err:
        proc = subprocess.Popen(
            [str(binary), "-l", "127.0.0.1:0", "-tlscert", str(pki.server_cert),
             "-tlskey", str(pki.server_key), "-config", str(inv), "-username", VC_USER,
             "-password-env", "VCSIM_PASSWORD", "-watch-stdin"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        info = _read_ready(proc, 120)
        if not info:
            proc.kill()
            raise RuntimeError(f"vcsim did not start:\n{err_log.read_text()}")
        assert info["thumbprint_sha256"] == pki.server_sha256
        yield Vcsim(url=info["url"], port=int(info["url"].split(":")[2].split("/")[0]),
                    thumbprint_sha256=info["thumbprint_sha256"], pki=pki, host_key=host_key,
                    stderr_log=err_log, host_key_private=d / "template_host_ed25519")
    finally:
        proc.terminate()  # SIGTERM: vcsim closes the server and removes its datastore dirs
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdin:
            proc.stdin.close()


@pytest.fixture(scope="session")
def vcsim(vcsim_binary: Path, tmp_path_factory: pytest.TempPathFactory):
    try:
        with start_vcsim(vcsim_binary, tmp_path_factory.mktemp("vcsim")) as vc:
            yield vc
    except RuntimeError as e:
        pytest.fail(str(e))


# ---------------------------------------------------------------------------
# Lab config files


def lab_toml(vc: Vcsim, *, vcenter: str | None = None, guests: list[str] | None = None,
             min_free_gb: float = 0, timeouts: str = "", run_extra: str = "",
             guests_toml: str | None = None) -> str:
    """A lab config for the simulator.  ``guests``: template names (guest name = template minus 'wfp-');
    ``guests_toml`` replaces the generated [[guests]] tables (e.g. stand-in guests of the orchestrator
    tests); ``run_extra`` adds keys to [run]."""
    if vcenter is None:
        vcenter = f'ca_bundle = "{vc.pki.ca_pem}"'
    names = guests if guests is not None else list(MATRIX_TEMPLATES)
    g = "".join(
        f"""
[[guests]]
name = "{n.removeprefix('wfp-')}"
template = "{n}"
snapshot = "baseline"
os_build = "test"
account = "wfpadmin"
ssh_key_env = "WFP_GUEST_SSH_KEY"
host_key_guestinfo = "guestinfo.wfp.ssh_host_key"
secure_boot = false
""" for n in names) if guests_toml is None else guests_toml
    return f"""
[vcenter]
url = "{vc.url}"
{vcenter}
user_env = "{USER_ENV}"
password_env = "{PASSWORD_ENV}"

[placement]
datacenter = "DC0"
cluster = "DC0_C0"
folder = "{FOLDER}"
datastore = "LocalDS_0"

[run]
artifact_dir = "artifacts"
clone_prefix = "t"
min_datastore_free_gb = {min_free_gb}
{run_extra}

[timeouts]
clone = 60
power_on = 60
tools = 30
ip = 30
{timeouts}
{g}
"""


@pytest.fixture
def make_lab(vcsim: Vcsim, tmp_path: Path):
    from harness.vm.config import load_config

    def make(**kw):
        p = tmp_path / f"lab-{len(list(tmp_path.glob('lab-*.toml')))}.toml"
        p.write_text(lab_toml(vcsim, **kw))
        return load_config(p)

    return make


@pytest.fixture
def lab(make_lab):
    return make_lab()


@pytest.fixture
def vs(lab, vcsim: Vcsim):
    from harness.vm.vsphere import VSphere
    with VSphere(lab, env=vcsim.env(), poll_interval=0.02, max_poll_interval=0.2) as v:
        yield v


@pytest.fixture
def run_id(request) -> str:
    # Unique per test and per xdist worker, so janitor runs never collide.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    h = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]
    return f"{worker}-{h}"


# ---------------------------------------------------------------------------
# A TCP proxy that can cut connections: real transient network faults between
# pyvmomi and vcsim (TLS passes through untouched, so verification still applies).


class FlakyProxy:
    def __init__(self, target_port: int) -> None:
        import socket
        self._target = ("127.0.0.1", target_port)
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: list = []
        self._refuse = 0
        self.cut = 0  # connections cut so far
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def break_next(self, n: int) -> None:
        """Cut every open connection now and the next ``n`` new ones on arrival."""
        with self._lock:
            self._refuse = n
            conns, self._conns = self._conns, []
        for c in conns:
            self._close(c)
            self.cut += 1

    @staticmethod
    def _close(s) -> None:
        import socket
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def _accept(self) -> None:
        import socket
        while not self._closed:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            with self._lock:
                refuse = self._refuse > 0
                self._refuse -= refuse
            if refuse:
                self._close(client)
                self.cut += 1
                continue
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                self._close(client)
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a, b) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            self._close(b)

    def close(self) -> None:
        self._closed = True
        self._srv.close()
        self.break_next(0)
