"""Lab configuration: where vCenter is, how to trust it, where clones go, and
which guests to test.  One TOML file (``tomllib``), optionally with the guest
matrix in a second file (``matrix = "path"``).

Everything is validated on load.  A mistake raises ``ConfigError`` naming the
file and the key path, e.g. ``lab.toml: guests[1].snapshot: required``.

Security rules enforced here:

* TLS to vCenter is always verified: by ``ca_bundle`` (PEM file), by
  ``thumbprint_sha256`` (pinned server certificate), or both.  It is switched
  off only by ``insecure_skip_tls_verify = true``, spelled exactly so; unknown
  keys are errors, so a misspelt opt-out cannot silently disable anything.
* The file never holds secrets.  vCenter credentials come from environment
  variables whose NAMES are configured (``user_env``, ``password_env``); a
  literal ``password`` (or ``user``) key is refused.  The guest SSH key is a
  file path or the name of an environment variable holding the key.

Example::

    matrix = "vm-templates/guest-matrix.toml"   # or inline [[guests]]

    [vcenter]
    url = "https://vcenter.lab.example/sdk"
    ca_bundle = "certs/vcenter-root.pem"         # and/or thumbprint_sha256 = "AB:CD:..."
    user_env = "WFP_VCENTER_USER"
    password_env = "WFP_VCENTER_PASSWORD"

    [placement]
    datacenter = "DC0"
    cluster = "DC0_C0"                           # or resource_pool = "DC0_C0/Resources/wfp"
    folder = "wfp-ci"
    datastore = "LocalDS_0"

    [run]
    artifact_dir = "artifacts"
    parallelism = 3

    [timeouts]                                   # seconds
    tools = 900
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from harness.input_error import InputError

__all__ = [
    "ConfigError", "LabConfig", "VCenterConfig", "Placement", "Guest", "HostKeySource",
    "RunConfig", "Timeouts", "load_config", "load_matrix", "parse_config",
]


class ConfigError(InputError):
    """The lab config is wrong.  A job/config error, not an infrastructure fault."""

    def __init__(self, file: str | Path | None, key: str, message: str, line: int = 0) -> None:
        self.file = str(file) if file is not None else "<config>"
        self.key = key
        super().__init__(self.file, line, key, message)


# ---------------------------------------------------------------------------
# Dataclasses (frozen: a loaded config is a value)


@dataclass(frozen=True)
class VCenterConfig:
    url: str
    host: str
    port: int
    path: str
    user_env: str
    password_env: str
    ca_bundle: Path | None = None
    thumbprint_sha256: str | None = None  # normalised "AB:CD:..." upper case
    insecure_skip_tls_verify: bool = False


@dataclass(frozen=True)
class Placement:
    datacenter: str
    datastore: str
    cluster: str | None = None
    resource_pool: str | None = None
    folder: str | None = None  # None: the datacenter's root VM folder


@dataclass(frozen=True)
class HostKeySource:
    """Where the guest's pinned SSH host key comes from (exactly one is set)."""

    literal: str | None = None      # an OpenSSH public key line
    file: Path | None = None        # a file holding such a line
    guestinfo: str | None = None    # a VM extraConfig key (published at provisioning)

    @property
    def kind(self) -> str:
        return "literal" if self.literal else "file" if self.file else "guestinfo"


@dataclass(frozen=True)
class Guest:
    name: str
    template: str
    snapshot: str
    os_build: str
    account: str
    host_key: HostKeySource
    ssh_port: int = 22
    ssh_key_file: Path | None = None
    ssh_key_env: str | None = None   # name of an env var holding the private key text
    secure_boot: bool | None = None  # expected state; None: only report it
    # How the guest is driven (harness.vm.guest_os): "windows" (PowerShell,
    # pnputil, verifier, pktmon) or "posix" (the stand-in used in tests and
    # demos: a POSIX sshd that plays the guest's part from a state directory).
    os: str = "windows"
    workdir: str | None = None       # remote directory for runs; None: the guest OS adapter's default
    python: str | None = None        # remote Python; None: the guest OS adapter's default
    boot_id_path: str | None = None  # posix only: file whose content changes on every boot
    state_dir: str | None = None     # posix only: the stand-in's simulated Windows state
    cdb: str | None = None           # the guest's cdb.exe; None: the Debugging Tools' default path
    # Where the conformance suite runs: "guest" (pytest on the guest, from the uploaded wheelhouse)
    # or "controller" (pytest here, against the guest's winsock-agent over its SSH connection:
    # the guest needs only the agent binary).
    suite: str = "guest"


@dataclass(frozen=True)
class RunConfig:
    artifact_dir: Path
    parallelism: int = 1
    clone_prefix: str = "wfp-ci"
    clone_ttl_hours: float = 12.0
    min_datastore_free_gb: float = 20.0
    # Infrastructure faults only: extra attempts per guest (each on a fresh
    # clone) and the exponential backoff between them, in seconds.
    retries: int = 2
    retry_backoff: float = 30.0
    retry_backoff_max: float = 600.0
    # What a guest may send back (a hostile or broken guest is stopped here):
    # bytes per result file, bytes per crash dump, directory depth, name length.
    max_file_mb: float = 1024.0
    max_dump_mb: float = 65536.0
    max_depth: int = 8
    max_name_length: int = 128
    # Extra symbol path for cdb after the driver's own folder (e.g. a symbol server share).
    symbol_path: str = ""
    # The lab's selection of the conformance suite: a pytest -k expression ("" = the whole suite).
    suite_select: str = ""


@dataclass(frozen=True)
class Timeouts:
    """Seconds.  Defaults fit Windows guests on a busy lab (first boot after a
    clone can take minutes; Windows sometimes needs >5 min to power off)."""

    clone: float = 1800.0
    power_on: float = 600.0
    power_off: float = 600.0
    revert: float = 600.0
    destroy: float = 600.0
    tools: float = 900.0
    ip: float = 900.0
    ssh: float = 600.0
    test_run: float = 14400.0
    reboot: float = 1200.0   # reboot (or bugcheck + dump writing) until SSH answers again
    command: float = 900.0   # any other remote command (install, pnputil, verifier)
    analyze: float = 1800.0  # cdb !analyze -v on one dump (symbols load slowly)


@dataclass(frozen=True)
class LabConfig:
    source: Path
    vcenter: VCenterConfig
    placement: Placement
    guests: tuple[Guest, ...]
    run: RunConfig
    timeouts: Timeouts
    matrix_file: Path | None = None

    def guest(self, name: str) -> Guest:
        for g in self.guests:
            if g.name == name:
                return g
        raise KeyError(name)


# ---------------------------------------------------------------------------
# Validation helpers

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GUEST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SSH_KEY_TYPES = {
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
}
# Keys that would hold a secret literally.  Refused wherever they appear.
_SECRET_KEYS = {"password", "passwd", "pwd", "secret", "token", "private_key", "ssh_key"}
_LITERAL_USER_KEYS = {"user", "username"}


class _Ctx:
    """Carries the file being read, for error messages and relative paths."""

    def __init__(self, file: Path | None) -> None:
        self.file = file
        self.base = file.parent if file is not None else Path.cwd()

    def err(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.file, key, message)

    def path(self, key: str, value: Any, *, must_exist: bool = True) -> Path:
        s = self.string(key, value)
        p = Path(s).expanduser()
        if not p.is_absolute():
            p = self.base / p
        if must_exist and not p.is_file():
            raise self.err(key, f"file not found: {p}")
        return p

    def string(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.err(key, f"must be a string, got {_type(value)}")
        if not value.strip():
            raise self.err(key, "must not be empty")
        return value

    def env_name(self, key: str, value: Any) -> str:
        s = self.string(key, value)
        if not _ENV_NAME.match(s):
            raise self.err(key, f"must be the NAME of an environment variable "
                                f"(letters, digits, _), not {_describe(s)}")
        return s

    def integer(self, key: str, value: Any, lo: int, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.err(key, f"must be an integer, got {_type(value)}")
        if value < lo or (hi is not None and value > hi):
            raise self.err(key, f"must be between {lo} and {hi}" if hi is not None
                           else f"must be >= {lo}")
        return value

    def positive(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.err(key, f"must be a number, got {_type(value)}")
        if not math.isfinite(value) or value <= 0:
            raise self.err(key, "must be a positive number")
        return float(value)

    def boolean(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.err(key, f"must be true or false, got {_type(value)}")
        return value

    def table(self, key: str, value: Any) -> dict:
        if not isinstance(value, dict):
            raise self.err(key, f"must be a table, got {_type(value)}")
        return value

    def check_keys(self, prefix: str, table: Mapping[str, Any], allowed: set[str]) -> None:
        for k in table:
            path = f"{prefix}.{k}" if prefix else k
            low = k.lower()
            if low in _SECRET_KEYS:
                hint = ('use password_env = "NAME" and export NAME' if "pass" in low or low == "pwd"
                        else 'use ssh_key_file = "path" or ssh_key_env = "NAME"' if "key" in low
                        else "reference an environment variable or a file instead")
                raise self.err(path, f"literal secrets are not allowed in the config file; {hint}")
            if low in _LITERAL_USER_KEYS and "user_env" in allowed:
                raise self.err(path, 'give the NAME of an environment variable instead: user_env = "NAME"')
            if k not in allowed:
                raise self.err(path, "unknown key" + _suggest(k, allowed))


def _type(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(v), type(v).__name__)


def _describe(s: str) -> str:
    # Never echo something that might be a secret pasted in the wrong place.
    return f"a {len(s)}-character value"


def _suggest(k: str, allowed: set[str]) -> str:
    import difflib
    close = difflib.get_close_matches(k, sorted(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _required(ctx: _Ctx, table: Mapping[str, Any], prefix: str, key: str) -> Any:
    if key not in table:
        raise ctx.err(f"{prefix}.{key}" if prefix else key, "required")
    return table[key]


def normalise_thumbprint(value: str) -> str | None:
    """``"ab:cd..."`` / ``"ABCD..."`` -> ``"AB:CD:..."``; None if not SHA-256 hex."""
    hexes = value.replace(":", "").strip().upper()
    if len(hexes) != 64 or not re.fullmatch(r"[0-9A-F]{64}", hexes):
        return None
    return ":".join(hexes[i:i + 2] for i in range(0, 64, 2))


def parse_openssh_public_key(line: str) -> tuple[str, bytes]:
    """Validate an OpenSSH public key line; return (type, key blob).  ValueError if not one."""
    parts = line.strip().split()
    if len(parts) < 2:
        raise ValueError("expected '<type> <base64> [comment]'")
    ktype, b64 = parts[0], parts[1]
    if ktype not in _SSH_KEY_TYPES:
        raise ValueError(f"unsupported key type {ktype!r}")
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("key data is not valid base64") from None
    # The blob starts with its own type string (RFC 4253 section 6.6).
    if len(blob) < 4:
        raise ValueError("key data too short")
    n = int.from_bytes(blob[:4], "big")
    if blob[4:4 + n] != ktype.encode():
        raise ValueError("key data does not match the key type")
    return ktype, blob


# ---------------------------------------------------------------------------
# Sections

_VCENTER_KEYS = {"url", "ca_bundle", "thumbprint_sha256", "insecure_skip_tls_verify",
                 "user_env", "password_env"}


def _vcenter(ctx: _Ctx, raw: Any) -> VCenterConfig:
    t = ctx.table("vcenter", raw)
    ctx.check_keys("vcenter", t, _VCENTER_KEYS)
    from urllib.parse import urlsplit

    url = ctx.string("vcenter.url", _required(ctx, t, "vcenter", "url"))
    try:
        u = urlsplit(url)
        port = u.port or 443
    except ValueError as e:
        raise ctx.err("vcenter.url", f"not a valid URL: {e}") from None
    if u.scheme != "https":
        raise ctx.err("vcenter.url", "must start with https:// (the vSphere API is only spoken over TLS)")
    if not u.hostname:
        raise ctx.err("vcenter.url", "has no host name")
    if u.username or u.password:
        raise ctx.err("vcenter.url", "must not contain credentials; use user_env and password_env")
    path = u.path if u.path not in ("", "/") else "/sdk"

    insecure = False
    if "insecure_skip_tls_verify" in t:
        insecure = ctx.boolean("vcenter.insecure_skip_tls_verify", t["insecure_skip_tls_verify"])
    ca = ctx.path("vcenter.ca_bundle", t["ca_bundle"]) if "ca_bundle" in t else None
    thumb = None
    if "thumbprint_sha256" in t:
        raw_t = ctx.string("vcenter.thumbprint_sha256", t["thumbprint_sha256"])
        thumb = normalise_thumbprint(raw_t)
        if thumb is None:
            n = len(raw_t.replace(":", "").strip())
            why = " (that is a SHA-1 thumbprint; give the SHA-256 one)" if n == 40 else ""
            raise ctx.err("vcenter.thumbprint_sha256", "must be 64 hex digits (optionally colon-separated)" + why)
    if insecure and (ca or thumb):
        raise ctx.err("vcenter.insecure_skip_tls_verify",
                      "contradicts ca_bundle/thumbprint_sha256; remove one or the other")
    if not insecure and not (ca or thumb):
        raise ctx.err("vcenter.ca_bundle", "required: give ca_bundle (PEM) and/or thumbprint_sha256 "
                                           "(or opt out explicitly with insecure_skip_tls_verify = true)")
    return VCenterConfig(
        url=url, host=u.hostname, port=port, path=path,
        user_env=ctx.env_name("vcenter.user_env", _required(ctx, t, "vcenter", "user_env")),
        password_env=ctx.env_name("vcenter.password_env", _required(ctx, t, "vcenter", "password_env")),
        ca_bundle=ca, thumbprint_sha256=thumb, insecure_skip_tls_verify=insecure,
    )


_PLACEMENT_KEYS = {"datacenter", "cluster", "resource_pool", "folder", "datastore"}


def _placement(ctx: _Ctx, raw: Any) -> Placement:
    t = ctx.table("placement", raw)
    ctx.check_keys("placement", t, _PLACEMENT_KEYS)
    opt = {k: ctx.string(f"placement.{k}", t[k]) for k in ("cluster", "resource_pool", "folder") if k in t}
    if "cluster" not in opt and "resource_pool" not in opt:
        raise ctx.err("placement.cluster", "required: give cluster or resource_pool")
    return Placement(
        datacenter=ctx.string("placement.datacenter", _required(ctx, t, "placement", "datacenter")),
        datastore=ctx.string("placement.datastore", _required(ctx, t, "placement", "datastore")),
        **opt,
    )


_RUN_KEYS = {"artifact_dir", "parallelism", "clone_prefix", "clone_ttl_hours", "min_datastore_free_gb",
             "retries", "retry_backoff", "retry_backoff_max", "max_file_mb", "max_dump_mb", "max_depth",
             "max_name_length", "symbol_path", "suite_select"}


def _run(ctx: _Ctx, raw: Any) -> RunConfig:
    t = ctx.table("run", raw)
    ctx.check_keys("run", t, _RUN_KEYS)
    kw: dict[str, Any] = {}
    art = t.get("artifact_dir", "artifacts")
    kw["artifact_dir"] = ctx.path("run.artifact_dir", art, must_exist=False)
    if "parallelism" in t:
        kw["parallelism"] = ctx.integer("run.parallelism", t["parallelism"], 1, 256)
    if "clone_prefix" in t:
        p = ctx.string("run.clone_prefix", t["clone_prefix"])
        if not _GUEST_NAME.match(p) or len(p) > 40:
            raise ctx.err("run.clone_prefix", "letters, digits, '.', '_' and '-' only, at most 40 characters")
        kw["clone_prefix"] = p
    if "clone_ttl_hours" in t:
        kw["clone_ttl_hours"] = ctx.positive("run.clone_ttl_hours", t["clone_ttl_hours"])
    if "min_datastore_free_gb" in t:
        v = t["min_datastore_free_gb"]
        # 0 switches the free-space check off; anything else must be positive.
        zero = not isinstance(v, bool) and isinstance(v, (int, float)) and v == 0
        kw["min_datastore_free_gb"] = 0.0 if zero else ctx.positive("run.min_datastore_free_gb", v)
    if "retries" in t:
        kw["retries"] = ctx.integer("run.retries", t["retries"], 0, 20)
    for k in ("retry_backoff", "retry_backoff_max"):
        if k in t:
            kw[k] = ctx.positive(f"run.{k}", t[k])
    for k in ("max_file_mb", "max_dump_mb"):
        if k in t:
            kw[k] = ctx.positive(f"run.{k}", t[k])
    if "max_depth" in t:
        kw["max_depth"] = ctx.integer("run.max_depth", t["max_depth"], 1, 64)
    if "max_name_length" in t:
        kw["max_name_length"] = ctx.integer("run.max_name_length", t["max_name_length"], 8, 255)
    if "symbol_path" in t:
        kw["symbol_path"] = ctx.string("run.symbol_path", t["symbol_path"])
    if "suite_select" in t:
        kw["suite_select"] = ctx.string("run.suite_select", t["suite_select"])
        if any(c in kw["suite_select"] for c in "\x00\r\n"):
            raise ctx.err("run.suite_select", "must not contain control characters")
    if kw.get("retry_backoff_max", RunConfig.retry_backoff_max) < kw.get("retry_backoff", RunConfig.retry_backoff):
        raise ctx.err("run.retry_backoff_max", "must be >= run.retry_backoff")
    return RunConfig(**kw)


def _timeouts(ctx: _Ctx, raw: Any) -> Timeouts:
    t = ctx.table("timeouts", raw)
    names = {f.name for f in dataclasses.fields(Timeouts)}
    ctx.check_keys("timeouts", t, names)
    return Timeouts(**{k: ctx.positive(f"timeouts.{k}", v) for k, v in t.items()})


_GUEST_KEYS = {"name", "template", "snapshot", "os_build", "account", "ssh_port",
               "ssh_key_file", "ssh_key_env", "host_key", "host_key_file", "host_key_guestinfo",
               "secure_boot", "os", "workdir", "python", "boot_id_path", "state_dir", "cdb", "suite"}
_GUEST_OS = ("windows", "posix")
_SUITE_WHERE = ("guest", "controller")


def _guest(ctx: _Ctx, i: int, raw: Any) -> Guest:
    p = f"guests[{i}]"
    t = ctx.table(p, raw)
    ctx.check_keys(p, t, _GUEST_KEYS)

    def req(k: str) -> str:
        return ctx.string(f"{p}.{k}", _required(ctx, t, p, k))

    name = req("name")
    if not _GUEST_NAME.match(name):
        raise ctx.err(f"{p}.name", "letters, digits, '.', '_' and '-' only")
    template, snapshot, os_build, account = req("template"), req("snapshot"), req("os_build"), req("account")
    port = ctx.integer(f"{p}.ssh_port", t["ssh_port"], 1, 65535) if "ssh_port" in t else 22

    keys = [k for k in ("ssh_key_file", "ssh_key_env") if k in t]
    if len(keys) != 1:
        raise ctx.err(f"{p}.ssh_key_file", "give exactly one of ssh_key_file or ssh_key_env"
                      + (" (both given)" if len(keys) == 2 else " (required)"))
    key_file = ctx.path(f"{p}.ssh_key_file", t["ssh_key_file"]) if "ssh_key_file" in t else None
    key_env = ctx.env_name(f"{p}.ssh_key_env", t["ssh_key_env"]) if "ssh_key_env" in t else None

    hk = [k for k in ("host_key", "host_key_file", "host_key_guestinfo") if k in t]
    if len(hk) != 1:
        raise ctx.err(f"{p}.host_key", "give exactly one of host_key, host_key_file or host_key_guestinfo"
                      + (" (several given)" if hk else " (required: host keys are always verified)"))
    if "host_key" in t:
        line = ctx.string(f"{p}.host_key", t["host_key"])
        try:
            parse_openssh_public_key(line)
        except ValueError as e:
            raise ctx.err(f"{p}.host_key", f"not an OpenSSH public key line: {e}") from None
        host_key = HostKeySource(literal=line.strip())
    elif "host_key_file" in t:
        f = ctx.path(f"{p}.host_key_file", t["host_key_file"])
        try:
            parse_openssh_public_key(f.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ctx.err(f"{p}.host_key_file", f"{f} does not hold an OpenSSH public key line: {e}") from None
        host_key = HostKeySource(file=f)
    else:
        gi = ctx.string(f"{p}.host_key_guestinfo", t["host_key_guestinfo"])
        if not re.fullmatch(r"guestinfo\.[A-Za-z0-9_.-]+", gi):
            raise ctx.err(f"{p}.host_key_guestinfo", "must be a key starting with 'guestinfo.'")
        host_key = HostKeySource(guestinfo=gi)

    sb = ctx.boolean(f"{p}.secure_boot", t["secure_boot"]) if "secure_boot" in t else None
    os_kind = ctx.string(f"{p}.os", t["os"]) if "os" in t else "windows"
    if os_kind not in _GUEST_OS:
        raise ctx.err(f"{p}.os", f"must be one of {', '.join(_GUEST_OS)}")
    extra = {k: ctx.string(f"{p}.{k}", t[k]) for k in ("workdir", "python", "boot_id_path", "state_dir", "cdb")
             if k in t}
    for k in ("boot_id_path", "state_dir"):
        if k in extra and os_kind != "posix":
            raise ctx.err(f"{p}.{k}", 'only meaningful with os = "posix" (the stand-in)')
    for k, v in extra.items():
        if any(c in v for c in "\x00\r\n"):
            raise ctx.err(f"{p}.{k}", "must not contain control characters")
    if os_kind == "posix" and "workdir" not in extra:
        raise ctx.err(f"{p}.workdir", 'required with os = "posix"')
    suite = ctx.string(f"{p}.suite", t["suite"]) if "suite" in t else "guest"
    if suite not in _SUITE_WHERE:
        raise ctx.err(f"{p}.suite", f"must be one of {', '.join(_SUITE_WHERE)}")
    return Guest(name=name, template=template, snapshot=snapshot, os_build=os_build, account=account,
                 host_key=host_key, ssh_port=port, ssh_key_file=key_file, ssh_key_env=key_env,
                 secure_boot=sb, os=os_kind, suite=suite, **extra)


def _guests(ctx: _Ctx, raw: Any) -> tuple[Guest, ...]:
    if not isinstance(raw, list):
        raise ctx.err("guests", f"must be an array of tables ([[guests]]), got {_type(raw)}")
    if not raw:
        raise ctx.err("guests", "must list at least one guest")
    out = tuple(_guest(ctx, i, g) for i, g in enumerate(raw))
    seen: dict[str, int] = {}
    for i, g in enumerate(out):
        if g.name in seen:
            raise ctx.err(f"guests[{i}].name", f"duplicate name {g.name!r} (also guests[{seen[g.name]}])")
        seen[g.name] = i
    return out


# ---------------------------------------------------------------------------
# Entry points


def _read_toml(path: Path, key: str = "", referrer: _Ctx | None = None) -> dict:
    try:
        data = path.read_bytes()
    except OSError as e:
        if referrer is not None:
            raise referrer.err(key, f"cannot read {path}: {e.strerror}") from None
        raise ConfigError(path, "", f"cannot read: {e.strerror}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(path, "", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"invalid TOML: {e}") from None


def load_matrix(path: str | Path) -> tuple[Guest, ...]:
    """Load a guest-matrix file: a TOML file with ``[[guests]]`` only."""
    p = Path(path).resolve()
    return _matrix(_Ctx(p), _read_toml(p))


def _matrix(ctx: _Ctx, doc: dict) -> tuple[Guest, ...]:
    ctx.check_keys("", doc, {"guests"})
    if "guests" not in doc:
        raise ctx.err("guests", "required")
    return _guests(ctx, doc["guests"])


_TOP_KEYS = {"vcenter", "placement", "run", "timeouts", "guests", "matrix"}


def parse_config(doc: dict, file: str | Path | None = None) -> LabConfig:
    """Validate an already-parsed TOML document (``file`` gives the base for relative paths)."""
    path = Path(file).resolve() if file is not None else None
    ctx = _Ctx(path)
    ctx.check_keys("", doc, _TOP_KEYS)
    vcenter = _vcenter(ctx, _required(ctx, doc, "", "vcenter"))
    placement = _placement(ctx, _required(ctx, doc, "", "placement"))
    run = _run(ctx, doc.get("run", {}))
    timeouts = _timeouts(ctx, doc.get("timeouts", {}))
    matrix_file = None
    if "matrix" in doc:
        if "guests" in doc:
            raise ctx.err("matrix", "give either matrix = \"file\" or inline [[guests]], not both")
        matrix_file = ctx.path("matrix", doc["matrix"])
        mctx = _Ctx(matrix_file)
        guests = _matrix(mctx, _read_toml(matrix_file, "matrix", ctx))
    elif "guests" in doc:
        guests = _guests(ctx, doc["guests"])
    else:
        raise ctx.err("guests", "required: inline [[guests]] or matrix = \"file\"")
    return LabConfig(source=path or Path("<config>"), vcenter=vcenter, placement=placement,
                     guests=guests, run=run, timeouts=timeouts, matrix_file=matrix_file)


def load_config(path: str | Path) -> LabConfig:
    """Read and validate a lab config file.  Raises ``ConfigError``."""
    p = Path(path).resolve()
    return parse_config(_read_toml(p), p)
