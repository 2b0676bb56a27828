"""SSH to test guests (Windows OpenSSH, or POSIX stand-ins in tests).

Security and robustness rules this module enforces:

* **Pinned host keys.**  The guest's host key comes from the config (read
  out-of-band, e.g. through VMware Tools or ``guestinfo``), is loaded into the
  client's host keys, and the missing-key policy is ``RejectPolicy``.  A
  different key raises :class:`HostKeyMismatch` with both SHA256
  fingerprints; it is raised before authentication, so no credential is
  offered and nothing runs.  System ``known_hosts``, agents and ``~/.ssh``
  keys are never consulted.
* **Truthful exit codes.**  Commands run without a PTY and the remote side
  prints an exit marker carrying a per-command nonce; the exit code comes from
  the marker, not from the SSH exit-status (wrong on Windows OpenSSH in
  several configurations: paramiko #1743, Win32-OpenSSH #1737/#1769/#1933).
* **Large outputs.**  stdout/stderr stream into files (redacted on the fly),
  never into memory.
* **Failure classification.**  Lab faults are :class:`harness.vm.errors.SshError`
  subclasses (``InfrastructureError`` with a ``phase``): connection refused,
  host key mismatch, authentication refused, connection dropped mid-command,
  missing exit marker, transfer size mismatch.  A command that outlives its
  timeout raises :class:`CommandHang` instead, which is *not* an
  infrastructure fault: a hang on a guest running a driver under test may be
  the product's fault, and must never be retried away.
* **Reboots.**  :meth:`GuestSsh.boot_id` reads a boot identifier so the
  orchestrator can tell a reboot or bugcheck from a network blip after a drop.
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import logging
import os
import posixpath
import re
import secrets
import selectors
import shlex
import socket
import stat as stat_mod
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import paramiko

from harness.vm import powershell
from harness.vm.errors import (  # noqa: F401  (the SSH faults are part of this module's interface)
    AuthenticationFailed, BootIdError, CommandFailed, CommandHang, ConnectFailed, ConnectionDropped,
    ExitStatusUnknown, HostileGuest, HostKeyMismatch, KeyLoadError, SshError, TransferError)
from harness.vm.redact import SecretRegistry, StreamRedactor, default_registry

__all__ = [
    "SshEndpoint",
    "GuestSsh",
    "ExecResult",
    "ShellDialect",
    "PosixDialect",
    "PowerShellDialect",
    "parse_public_key",
    "fingerprint",
    "HostKeyMismatch",
    "AuthenticationFailed",
    "ConnectFailed",
    "ConnectionDropped",
    "ExitStatusUnknown",
    "TransferError",
    "KeyLoadError",
    "BootIdError",
    "CommandHang",
    "CommandFailed",
]

log = logging.getLogger(__name__)

DEFAULT_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)


# --------------------------------------------------------------------------
# Host keys
# --------------------------------------------------------------------------
def parse_public_key(line: str) -> paramiko.PKey:
    """Parse an OpenSSH public-key line (``ssh-ed25519 AAAA... comment``).

    A ``known_hosts`` line (hosts first) is accepted too; ``@cert-authority``
    and ``@revoked`` lines are refused (a pin is one key, not a policy).
    """
    if not isinstance(line, str) or not line.strip():
        raise ValueError("pinned host key is empty")
    tokens = line.strip().split()
    if tokens[0].startswith("@"):
        raise ValueError(f"pinned host key must be a plain key, not a {tokens[0]} line")
    for i, tok in enumerate(tokens[:-1]):
        if tok in _KEY_TYPES:
            try:
                blob = base64.b64decode(tokens[i + 1], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("pinned host key: base64 part is invalid") from exc
            embedded = paramiko.Message(blob).get_text() if len(blob) > 4 else ""
            if embedded != tok:
                raise ValueError(f"pinned host key: type {tok} does not match its data ({embedded!r})")
            try:
                return paramiko.PKey.from_type_string(tok, blob)
            except Exception as exc:  # malformed key material
                raise ValueError(f"pinned host key: cannot load {tok} key: {exc}") from exc
    raise ValueError("pinned host key: no supported key type found "
                     f"(expected one of {', '.join(_KEY_TYPES)})")


def wait_readable(chan, timeout: float) -> None:
    """Wait up to `timeout` seconds for a paramiko channel to have data or close. A selector, not
    select.select: a controller with more than FD_SETSIZE (1024) files open hands out descriptor
    numbers select() refuses ("filedescriptor out of range")."""
    with selectors.DefaultSelector() as sel:
        sel.register(chan, selectors.EVENT_READ)
        sel.select(timeout)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint."""
    return key.fingerprint


# --------------------------------------------------------------------------
# Endpoint
# --------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SshEndpoint:
    """Where and how to reach one guest.  Holds names of secrets, never secrets."""

    host: str
    username: str
    host_key: str                      # pinned OpenSSH public-key line
    port: int = 22
    key_file: str | os.PathLike[str] | None = None   # private key file
    key_env: str | None = None         # or: env var holding private key material
    passphrase_env: str | None = None  # env var holding the key's passphrase
    connect_timeout: float = 20.0
    keepalive: float = 15.0            # seconds between keepalives (0: off)
    keepalive_count_max: int = 3       # unanswered intervals before "dead"
    shell: str = "powershell"          # "powershell" (Windows) or "posix"
    powershell_exe: str = "powershell"
    boot_id_path: str = DEFAULT_BOOT_ID_PATH   # posix dialect only

    def __post_init__(self) -> None:
        if (self.key_file is None) == (self.key_env is None):
            raise ValueError("give exactly one of key_file and key_env")
        if not (0 < int(self.port) < 65536):
            raise ValueError(f"bad port {self.port}")
        if self.shell not in ("powershell", "posix"):
            raise ValueError(f"unknown shell dialect {self.shell!r} (powershell or posix)")
        if self.connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
        parse_public_key(self.host_key)  # fail at config time, not at connect

    @property
    def pinned_key(self) -> paramiko.PKey:
        return parse_public_key(self.host_key)

    def dialect(self) -> "ShellDialect":
        if self.shell == "posix":
            return PosixDialect(self.boot_id_path)
        return PowerShellDialect(self.powershell_exe)


# --------------------------------------------------------------------------
# Shell dialects
# --------------------------------------------------------------------------
_MARKER_PREFIX = "<<<wfph-exit"


class ShellDialect:
    """How to build command lines, exit markers and the boot-id query."""

    name = "abstract"

    def argv_to_script(self, argv: Sequence[object]) -> str:
        raise NotImplementedError

    def wrap(self, script: str, nonce: str) -> str:
        """The command line sent over SSH; prints the exit marker last."""
        raise NotImplementedError

    def boot_id_script(self) -> str:
        raise NotImplementedError


class PosixDialect(ShellDialect):
    name = "posix"

    def __init__(self, boot_id_path: str = DEFAULT_BOOT_ID_PATH) -> None:
        self.boot_id_path = boot_id_path

    def argv_to_script(self, argv: Sequence[object]) -> str:
        parts = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in argv]
        if any("\x00" in p for p in parts):
            raise ValueError("NUL cannot be passed in a command line")
        return shlex.join(parts)

    def wrap(self, script: str, nonce: str) -> str:
        # A subshell, so `exit N` in the script still reaches the marker.
        # POSIX exit statuses are 8 bits; a program standing in for a Windows
        # one (harness/vm/winemu.py) also writes its full 32-bit code to
        # $WFPH_WIDE_EXIT, used when its low byte matches the status.
        body = (
            f"WFPH_WIDE_EXIT=\"${{TMPDIR:-/tmp}}/wfph-exit-{nonce}\"; export WFPH_WIDE_EXIT\n"
            "rm -f \"$WFPH_WIDE_EXIT\"\n"
            "(\n" + script + "\n)\n"
            "__wfph_c=$?\n"
            "if [ -f \"$WFPH_WIDE_EXIT\" ]; then __wfph_w=$(cat \"$WFPH_WIDE_EXIT\"); rm -f \"$WFPH_WIDE_EXIT\"\n"
            "  case \"$__wfph_w\" in ''|*[!0-9-]*) ;; *) [ $(( __wfph_w & 255 )) -eq \"$__wfph_c\" ] && "
            "__wfph_c=$__wfph_w ;; esac\nfi\n"
            f"printf '\\n{_MARKER_PREFIX} %s %d>>>\\n' '{nonce}' \"$__wfph_c\"\n"
            "exit $(( __wfph_c & 255 ))\n"
        )
        return "sh -c " + shlex.quote(body)

    def boot_id_script(self) -> str:
        return "cat " + shlex.quote(self.boot_id_path)


class PowerShellDialect(ShellDialect):
    name = "powershell"

    def __init__(self, executable: str = "powershell") -> None:
        self.executable = executable

    def argv_to_script(self, argv: Sequence[object]) -> str:
        if not argv:
            raise ValueError("empty command")
        return powershell.quote_command(*argv)  # type: ignore[arg-type]

    def wrap(self, script: str, nonce: str) -> str:
        # $ErrorActionPreference=Stop: a failing cmdlet must not report 0.
        # (Native stderr passes straight through unless the script itself
        # redirects it; PS 5.1 turns *redirected* stderr into errors, #3996.)
        # UTF-8 output: the default OEM code page mangles non-ASCII text.
        # No progress records: they arrive as CLIXML noise on stderr.
        # `exit N` in the script skips the normal path; the finally block
        # then says "exit" and the SSH exit-status is used instead.
        wrapper = (
            "$ErrorActionPreference = 'Stop'\n"
            "$ProgressPreference = 'SilentlyContinue'\n"
            "[Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false\n"
            "$OutputEncoding = [Console]::OutputEncoding\n"
            "$__wfph_code = 'exit'\n"
            "try {\n"
            "  $global:LASTEXITCODE = 0\n"
            + script + "\n"
            "  $__wfph_code = if ($null -eq $global:LASTEXITCODE) { 0 } else { [int]$global:LASTEXITCODE }\n"
            "} catch {\n"
            "  [Console]::Error.WriteLine(($_ | Out-String))\n"
            "  $__wfph_code = 1\n"
            "} finally {\n"
            "  [Console]::Out.Flush()\n"
            f"  [Console]::Out.Write(\"`n{_MARKER_PREFIX} {nonce} $__wfph_code>>>`n\")\n"
            "  [Console]::Out.Flush()\n"
            "}\n"
            "exit $__wfph_code\n"
        )
        return powershell.encode_command(wrapper, executable=self.executable)

    def boot_id_script(self) -> str:
        # Round-trip format in UTC: stable across time-zone changes.
        return ("(Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime"
                ".ToUniversalTime().ToString('o')")


class _MarkerTail:
    """Holds back the end of stdout so the exit marker can be cut off."""

    HOLD = 256

    def __init__(self, nonce: str) -> None:
        self._buf = b""
        self._re = re.compile(
            rb"\r?\n" + re.escape(f"{_MARKER_PREFIX} {nonce} ".encode())
            + rb"(-?\d+|exit)>>>\r?\n?\Z")

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        if len(self._buf) <= self.HOLD:
            return b""
        out, self._buf = self._buf[:-self.HOLD], self._buf[-self.HOLD:]
        return out

    def finish(self) -> tuple[bytes, str | None]:
        m = self._re.search(self._buf)
        if not m:
            return self._buf, None
        return self._buf[:m.start()], m.group(1).decode()


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------
@dataclass
class ExecResult:
    command: str                 # redacted, human-readable
    exit_code: int
    stdout_path: Path
    stderr_path: Path
    exit_code_source: str = "marker"   # "marker", or "channel" after `exit N`
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def check(self) -> "ExecResult":
        if self.exit_code != 0:
            raise CommandFailed(self)
        return self


@dataclass(frozen=True)
class Transfer:
    local: Path
    remote: str
    size: int


# --------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------
class GuestSsh:
    """One SSH connection to one guest.

    ``registry`` collects the secrets this client reads (passphrase, key
    material) and scrubs them from captured output and error messages.
    """

    def __init__(self, endpoint: SshEndpoint, *, registry: SecretRegistry | None = None,
                 workdir: str | os.PathLike[str] | None = None, vm: str | None = None) -> None:
        self.endpoint = endpoint
        self.registry = registry if registry is not None else default_registry
        self.dialect = endpoint.dialect()
        self.vm = vm
        self._workdir = Path(workdir) if workdir is not None else None
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------
    def __enter__(self) -> "GuestSsh":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="wfph-ssh-"))
        self._workdir.mkdir(parents=True, exist_ok=True)
        return self._workdir

    def _where(self) -> str:
        return f"{self.endpoint.username}@{self.endpoint.host}:{self.endpoint.port}"

    def _err(self, cls, message: str, **kw):
        return cls(self.registry.redact(message), vm=self.vm, **kw)

    def _load_key(self) -> paramiko.PKey:
        ep = self.endpoint
        passphrase = None
        if ep.passphrase_env:
            passphrase = os.environ.get(ep.passphrase_env)
            if not passphrase:
                raise self._err(KeyLoadError, f"environment variable {ep.passphrase_env} "
                                              "(key passphrase) is unset or empty")
            self.registry.add(passphrase)
        if ep.key_file is not None:
            source = f"file {os.fspath(ep.key_file)}"
            try:
                material = Path(ep.key_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise self._err(KeyLoadError, f"cannot read private key {source}: "
                                              f"{type(exc).__name__}") from None
        else:
            source = f"environment variable {ep.key_env}"
            material = os.environ.get(ep.key_env or "", "")
            if not material.strip():
                raise self._err(KeyLoadError, f"{source} (private key) is unset or empty")
            self.registry.add(material.strip())
        errors = []
        for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            try:
                return cls.from_private_key(io.StringIO(material), password=passphrase)
            except paramiko.PasswordRequiredException:
                raise self._err(KeyLoadError, f"private key from {source} is encrypted and no "
                                              "passphrase_env is configured") from None
            except Exception as exc:
                errors.append(f"{cls.__name__}: {type(exc).__name__}")
        # `from None`: chained exceptions could quote key material.
        raise self._err(KeyLoadError, f"cannot load private key from {source} (wrong passphrase "
                                      f"or unsupported key; tried {', '.join(errors)})") from None

    def _open_socket(self) -> socket.socket:
        ep = self.endpoint
        try:
            sock = socket.create_connection((ep.host, ep.port), timeout=ep.connect_timeout)
        except OSError as exc:
            raise self._err(ConnectFailed, f"cannot reach {self._where()}: {exc}") from exc
        # Detect a silently dead peer (guest frozen, bugcheck, cable pulled):
        # keepalives generate traffic, TCP_USER_TIMEOUT fails unacked sends.
        if ep.keepalive > 0:
            dead_after = ep.keepalive * max(1, ep.keepalive_count_max)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for opt, val in (("TCP_KEEPIDLE", ep.keepalive), ("TCP_KEEPINTVL", ep.keepalive),
                             ("TCP_KEEPCNT", ep.keepalive_count_max)):
                if hasattr(socket, opt):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), max(1, int(val)))
            if hasattr(socket, "TCP_USER_TIMEOUT"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(dead_after * 1000))
        return sock

    def connect(self) -> "GuestSsh":
        """Open the connection; raises an ``SshError`` subclass on any lab fault."""
        with self._lock:
            if self._client is not None and self.is_connected():
                return self
            self._close_locked()
            ep = self.endpoint
            pinned = ep.pinned_key
            pkey = self._load_key()
            client = paramiko.SSHClient()
            # Only the pinned key is trusted; no system known_hosts.
            for name in {ep.host, f"[{ep.host}]:{ep.port}"}:
                client.get_host_keys().add(name, pinned.get_name(), pinned)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            sock = self._open_socket()
            try:
                client.connect(
                    ep.host, port=ep.port, username=ep.username, pkey=pkey, sock=sock,
                    timeout=ep.connect_timeout, banner_timeout=ep.connect_timeout,
                    auth_timeout=ep.connect_timeout, channel_timeout=ep.connect_timeout,
                    allow_agent=False, look_for_keys=False,
                )
            except paramiko.BadHostKeyException as exc:
                client.close()
                raise self._host_key_error(pinned, exc.key) from None
            except paramiko.AuthenticationException as exc:
                client.close()
                raise self._err(AuthenticationFailed,
                                f"{self._where()} refused our key "
                                f"({pkey.get_name()} {pkey.fingerprint}): {exc}") from None
            except paramiko.SSHException as exc:
                offered = None
                t = client.get_transport()
                if t is not None:
                    try:
                        offered = t.get_remote_server_key()
                    except paramiko.SSHException:
                        offered = None      # the handshake died before a key was offered
                client.close()
                if offered is not None and "known_hosts" in str(exc):
                    raise self._host_key_error(pinned, offered) from None
                raise self._err(ConnectFailed, f"SSH handshake with {self._where()} failed: "
                                               f"{type(exc).__name__}: {exc}") from exc
            except (OSError, EOFError) as exc:
                client.close()
                raise self._err(ConnectFailed, f"SSH handshake with {self._where()} failed: "
                                               f"{type(exc).__name__}: {exc}") from exc
            transport = client.get_transport()
            assert transport is not None
            if ep.keepalive > 0:
                transport.set_keepalive(max(1, int(ep.keepalive)))
            self._client = client
            log.info("ssh connected to %s (host key %s)", self._where(), pinned.fingerprint)
            return self

    def _host_key_error(self, pinned: paramiko.PKey, offered: paramiko.PKey | None) -> HostKeyMismatch:
        offered_fp = offered.fingerprint if offered is not None else None
        offered_txt = f"{offered.get_name()} {offered_fp}" if offered is not None else "unknown"
        msg = (f"host key of {self._where()} does not match the pinned key: "
               f"pinned {pinned.get_name()} {pinned.fingerprint}, offered {offered_txt}. "
               "Refused before authentication; nothing was sent or run. "
               "Re-read the guest's host key out-of-band if it was legitimately regenerated.")
        log.error("%s", msg)
        return HostKeyMismatch(self.registry.redact(msg), pinned_fingerprint=pinned.fingerprint,
                               offered_fingerprint=offered_fp, vm=self.vm)

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception as exc:    # closing a half-dead session must not hide the original fault
                log.debug("closing SFTP after a fault: %s", exc)
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def reconnect(self) -> "GuestSsh":
        self.close()
        return self.connect()

    def is_connected(self) -> bool:
        t = self._client.get_transport() if self._client is not None else None
        return bool(t is not None and t.is_active())

    def _transport(self, phase: str) -> paramiko.Transport:
        t = self._client.get_transport() if self._client is not None else None
        if t is None:
            raise self._err(ConnectionDropped, f"not connected to {self._where()}", phase=phase)
        if not t.is_active():
            raise self._dropped(t, phase, "connection already closed")
        return t

    def _dropped(self, t: paramiko.Transport | None, phase: str, what: str) -> ConnectionDropped:
        cause = getattr(t, "saved_exception", None) if t is not None else None
        extra = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return self._err(ConnectionDropped,
                         f"SSH connection to {self._where()} dropped during {phase}: {what}{extra}",
                         phase=phase)

    def _transport_dead(self, t: paramiko.Transport, grace: float = 2.0) -> bool:
        # paramiko closes the channels before marking the transport inactive,
        # so give its thread a moment to finish before judging.
        if not t.is_active():
            return True
        t.join(grace)
        return not t.is_active()

    def probe(self, timeout: float | None = None) -> bool:
        """True if the guest's sshd still answers (opens and closes a channel)."""
        t = self._client.get_transport() if self._client is not None else None
        if t is None or not t.is_active():
            return False
        try:
            chan = t.open_session(timeout=timeout or self.endpoint.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            log.debug("probe: cannot open a session: %s", exc)
            return False
        chan.close()
        return True

    # -- remote execution ----------------------------------------------
    def open_exec(self, command: str, *, phase: str = "agent") -> paramiko.Channel:
        """Start ``command`` in a raw exec channel (no PTY, no exit marker): a program
        that speaks binary on its standard streams, such as the winsock-agent."""
        t = self._transport(phase)
        try:
            chan = t.open_session(timeout=self.endpoint.connect_timeout)
            chan.exec_command(command)
        except Exception as exc:
            if self._transport_dead(t):
                raise self._dropped(t, phase, "could not start the command") from exc
            raise self._err(ConnectFailed, f"{self._where()} refused an exec channel: {exc}",
                            phase=phase) from exc
        log.info("ssh %s exec (raw): %s", self._where(), self.registry.redact(command))
        return chan

    def run(self, argv: Sequence[object], *, timeout: float = 600.0, check: bool = False,
            stdout_path: str | os.PathLike[str] | None = None,
            stderr_path: str | os.PathLike[str] | None = None) -> ExecResult:
        """Run one program with arguments, quoted for the guest's shell."""
        script = self.dialect.argv_to_script(argv)
        # Redact each argument before quoting: quoting can split a secret.
        display = self.dialect.argv_to_script(
            [a if isinstance(a, powershell.Param) or not isinstance(a, (str, os.PathLike))
             else self.registry.redact(os.fspath(a)) for a in argv])
        return self.run_script(script, timeout=timeout, check=check, stdout_path=stdout_path,
                               stderr_path=stderr_path, _display=display)

    def run_script(self, script: str, *, timeout: float = 600.0, check: bool = False,
                   stdout_path: str | os.PathLike[str] | None = None,
                   stderr_path: str | os.PathLike[str] | None = None,
                   phase: str = "exec", _display: str | None = None) -> ExecResult:
        """Run a script in the dialect's language (sh or PowerShell)."""
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        n = next(self._counter)
        out_p = Path(stdout_path) if stdout_path else self.workdir / f"cmd-{n:04d}.stdout"
        err_p = Path(stderr_path) if stderr_path else self.workdir / f"cmd-{n:04d}.stderr"
        out_p.parent.mkdir(parents=True, exist_ok=True)
        err_p.parent.mkdir(parents=True, exist_ok=True)
        nonce = secrets.token_hex(12)
        display = self.registry.redact(_display if _display is not None else script)
        line = self.dialect.wrap(script, nonce)
        log.info("ssh %s exec[%d]: %s", self._where(), n, display)
        t = self._transport(phase)
        started = time.monotonic()
        try:
            chan = t.open_session(timeout=self.endpoint.connect_timeout)
        except Exception as exc:
            if self._transport_dead(t):
                raise self._dropped(t, phase, "could not open a channel") from exc
            raise self._err(ConnectFailed, f"{self._where()} refused a session channel: {exc}",
                            phase=phase) from exc
        marker = _MarkerTail(nonce)
        red_out, red_err = StreamRedactor(self.registry), StreamRedactor(self.registry)
        hung = False
        try:
            with open(out_p, "wb") as out, open(err_p, "wb") as err:
                try:
                    chan.exec_command(line)
                    chan.shutdown_write()  # stdin EOF: nothing may wait for input
                    deadline = started + timeout
                    while True:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            hung = True
                            break
                        wait_readable(chan, min(0.5, remaining))
                        self._drain(chan, marker, red_out, red_err, out, err)
                        if chan.closed or (chan.eof_received and chan.exit_status_ready()):
                            self._drain(chan, marker, red_out, red_err, out, err)
                            if not (chan.recv_ready() or chan.recv_stderr_ready()):
                                break
                except (OSError, EOFError, paramiko.SSHException) as exc:
                    if self._transport_dead(t):
                        raise self._dropped(t, phase, f"while running: {display}") from exc
                    raise
                finally:
                    rest, code = marker.finish()
                    out.write(red_out.feed(rest) + red_out.flush())
                    err.write(red_err.flush())
        finally:
            chan.close()
        duration = time.monotonic() - started
        if hung:
            if self._transport_dead(t, grace=0) or not self.probe():
                raise self._dropped(t, phase, f"no answer within {timeout:g} s while running: {display}")
            log.error("ssh %s exec[%d] hung: no exit within %g s", self._where(), n, timeout)
            raise CommandHang(
                self.registry.redact(
                    f"HANG: remote command on {self._where()} did not finish within {timeout:g} s "
                    f"(the guest still answers; channel closed): {display}. "
                    f"Partial output: {out_p}, {err_p}"),
                command=display, timeout=timeout, stdout_path=out_p, stderr_path=err_p)
        if code is None:
            if self._transport_dead(t):
                raise self._dropped(t, phase, f"while running: {display}")
            status = chan.exit_status if chan.exit_status_ready() else None
            raise self._err(ExitStatusUnknown,
                            f"remote command on {self._where()} ended without its exit marker "
                            f"(SSH exit-status {status}); the remote shell was killed or "
                            f"replaced: {display}", phase=phase)
        if code == "exit":
            exit_code, source = chan.exit_status, "channel"
        else:
            exit_code, source = int(code), "marker"
        result = ExecResult(command=display, exit_code=exit_code, stdout_path=out_p,
                            stderr_path=err_p, exit_code_source=source, duration=duration)
        log.info("ssh %s exec[%d] exit %d", self._where(), n, exit_code)
        if check:
            result.check()
        return result

    @staticmethod
    def _drain(chan, marker, red_out, red_err, out, err) -> None:
        while chan.recv_ready():
            out.write(red_out.feed(marker.feed(chan.recv(65536))))
        while chan.recv_stderr_ready():
            err.write(red_err.feed(chan.recv_stderr(65536)))
        out.flush()
        err.flush()

    # -- boot identity --------------------------------------------------
    def boot_id(self, timeout: float = 60.0) -> str:
        """An identifier that changes on every boot of the guest."""
        res = self.run_script(self.dialect.boot_id_script(), timeout=timeout, phase="boot_id")
        value = res.stdout.strip()
        if res.exit_code != 0 or not value:
            raise self._err(BootIdError, f"cannot read the boot id on {self._where()} "
                                         f"(exit {res.exit_code}): {res.stderr.strip()[:500]}")
        return value

    def rebooted_since(self, previous_boot_id: str, timeout: float = 60.0) -> bool:
        """True if the guest booted since ``previous_boot_id`` was read."""
        return self.boot_id(timeout=timeout) != previous_boot_id

    # -- file transfer --------------------------------------------------
    def _sftp_client(self, phase: str) -> paramiko.SFTPClient:
        t = self._transport(phase)
        if self._sftp is None or self._sftp.get_channel() is None or self._sftp.get_channel().closed:
            try:
                self._sftp = paramiko.SFTPClient.from_transport(t)
            except Exception as exc:
                if self._transport_dead(t):
                    raise self._dropped(t, phase, "opening SFTP") from exc
                raise self._err(TransferError, f"{self._where()} refused SFTP: {exc}", phase=phase) from exc
            assert self._sftp is not None
            # A dead peer must not block a transfer forever.
            self._sftp.get_channel().settimeout(max(self.endpoint.connect_timeout, 30.0))
        return self._sftp

    def _wire_error(self, exc: BaseException, phase: str, what: str) -> SshError:
        t = self._client.get_transport() if self._client is not None else None
        if t is None or self._transport_dead(t):
            return self._dropped(t, phase, what)
        return self._err(TransferError, f"{what} failed: {type(exc).__name__}: {exc}", phase=phase)

    def upload(self, local: str | os.PathLike[str], remote: str) -> Transfer:
        """Copy one local file to ``remote``; verify the remote size."""
        lp = Path(local)
        size = lp.stat().st_size
        sftp = self._sftp_client("upload")
        try:
            sftp.put(str(lp), remote, confirm=False)
            rsize = sftp.stat(remote).st_size
        except (socket.timeout, EOFError, paramiko.SSHException) as exc:
            raise self._wire_error(exc, "upload", f"upload {lp} -> {remote}") from exc
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            raise  # a wrong path is the caller's error, not the lab's
        except OSError as exc:
            raise self._wire_error(exc, "upload", f"upload {lp} -> {remote}") from exc
        if rsize != size:
            raise self._err(TransferError, f"upload {lp} -> {remote}: remote size {rsize} "
                                           f"!= local size {size}", phase="upload")
        log.debug("uploaded %s -> %s (%d bytes)", lp, remote, size)
        return Transfer(lp, remote, size)

    def stat(self, remote: str) -> paramiko.SFTPAttributes | None:
        """The remote file's attributes, or None if it does not exist."""
        sftp = self._sftp_client("stat")
        try:
            return sftp.stat(remote)
        except FileNotFoundError:
            return None
        except (socket.timeout, EOFError, paramiko.SSHException, OSError) as exc:
            raise self._wire_error(exc, "stat", f"stat {remote}") from exc

    def listdir(self, remote_dir: str) -> list[paramiko.SFTPAttributes]:
        """Entries of a remote directory ([] if it does not exist)."""
        sftp = self._sftp_client("listdir")
        try:
            return sorted(sftp.listdir_attr(remote_dir), key=lambda e: e.filename)
        except FileNotFoundError:
            return []
        except (socket.timeout, EOFError, paramiko.SSHException, OSError) as exc:
            raise self._wire_error(exc, "listdir", f"list {remote_dir}") from exc

    def download(self, remote: str, local: str | os.PathLike[str], *, max_bytes: int | None = None,
                 progress=None) -> Transfer:
        """Copy one remote file to ``local`` (atomically), streaming.

        Never more than the guest reported nor ``max_bytes``: a guest that
        reports a size over the limit, or sends more than it reported, is
        :class:`HostileGuest`.  ``progress(done, total)`` is called as
        chunks arrive."""
        lp = Path(local)
        lp.parent.mkdir(parents=True, exist_ok=True)
        sftp = self._sftp_client("download")
        part = lp.with_name(lp.name + ".part")
        size = 0
        try:
            rsize = sftp.stat(remote).st_size
            if rsize is None:
                raise self._err(HostileGuest, f"{remote}: the guest reports no size", phase="download")
            if max_bytes is not None and rsize > max_bytes:
                raise self._err(HostileGuest, f"{remote} is {rsize} bytes, over the limit of {max_bytes}",
                                phase="download")
            with sftp.open(remote, "rb") as src, open(part, "wb") as dst:
                src.prefetch(rsize)
                last = 0
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > rsize:
                        raise self._err(HostileGuest, f"{remote}: the guest sent more than the {rsize} bytes "
                                                      "it reported", phase="download")
                    dst.write(chunk)
                    if progress is not None and (size - last >= (64 << 20) or size == rsize):
                        last = size
                        progress(size, rsize)
        except HostileGuest:
            part.unlink(missing_ok=True)
            raise
        except (socket.timeout, EOFError, paramiko.SSHException) as exc:
            part.unlink(missing_ok=True)
            raise self._wire_error(exc, "download", f"download {remote} -> {lp}") from exc
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            part.unlink(missing_ok=True)
            raise
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise self._wire_error(exc, "download", f"download {remote} -> {lp}") from exc
        if size != rsize:
            part.unlink(missing_ok=True)
            raise self._err(TransferError, f"download {remote} -> {lp}: got {size} bytes, "
                                           f"remote size {rsize}", phase="download")
        os.replace(part, lp)
        log.debug("downloaded %s -> %s (%d bytes)", remote, lp, size)
        return Transfer(lp, remote, size)

    def _remote_mkdirs(self, sftp: paramiko.SFTPClient, remote_dir: str) -> None:
        parts: list[str] = []
        d = remote_dir.rstrip("/") or "/"
        while True:
            try:
                st = sftp.stat(d)
            except FileNotFoundError:
                parts.append(d)
                parent = posixpath.dirname(d)
                if parent == d or not parent:
                    break
                d = parent
                continue
            if not stat_mod.S_ISDIR(st.st_mode or 0):
                raise self._err(TransferError, f"remote path {d} exists and is not a directory",
                                phase="upload")
            break
        for p in reversed(parts):
            sftp.mkdir(p)

    def upload_dir(self, local_dir: str | os.PathLike[str], remote_dir: str) -> list[Transfer]:
        """Copy a local directory tree (files and subdirectories) to ``remote_dir``."""
        root = Path(local_dir)
        if not root.is_dir():
            raise NotADirectoryError(str(root))
        sftp = self._sftp_client("upload")
        done: list[Transfer] = []
        try:
            self._remote_mkdirs(sftp, remote_dir)
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                rel = Path(dirpath).relative_to(root)
                rdir = posixpath.join(remote_dir, *rel.parts) if rel.parts else remote_dir
                for d in dirnames:
                    if (Path(dirpath) / d).is_symlink():
                        continue  # never follow links out of the tree
                    self._remote_mkdirs(sftp, posixpath.join(rdir, d))
                for f in sorted(filenames):
                    lp = Path(dirpath) / f
                    if lp.is_symlink() or not lp.is_file():
                        continue
                    done.append(self.upload(lp, posixpath.join(rdir, f)))
        except (socket.timeout, EOFError, paramiko.SSHException) as exc:
            raise self._wire_error(exc, "upload", f"upload {root} -> {remote_dir}") from exc
        return done

    def download_dir(self, remote_dir: str, local_dir: str | os.PathLike[str], *, max_bytes: int | None = None,
                     max_depth: int = 8, max_name_length: int = 128) -> list[Transfer]:
        """Copy a remote directory tree into ``local_dir`` (links are skipped).

        Bounded: each file by ``max_bytes`` (and by the size the guest
        reports), the tree by ``max_depth``, names by ``max_name_length``
        and to plain names that stay inside ``local_dir``; anything else is
        :class:`HostileGuest`."""
        root = Path(local_dir)
        root.mkdir(parents=True, exist_ok=True)
        sftp = self._sftp_client("download")
        done: list[Transfer] = []

        def walk(rdir: str, ldir: Path, depth: int) -> None:
            if depth > max_depth:
                raise self._err(HostileGuest, f"{rdir}: deeper than {max_depth} levels", phase="download")
            for entry in sorted(sftp.listdir_attr(rdir), key=lambda e: e.filename):
                name = entry.filename
                if (name in (".", "..") or "/" in name or "\\" in name or any(ord(c) < 32 for c in name)
                        or name.endswith((" ", ".")) or ":" in name):
                    raise self._err(HostileGuest, f"refusing remote file name {name!r} in {rdir}",
                                    phase="download")
                if len(name) > max_name_length:
                    raise self._err(HostileGuest, f"refusing a {len(name)}-character file name in {rdir} "
                                                  f"(limit {max_name_length})", phase="download")
                mode = entry.st_mode or 0
                if stat_mod.S_ISLNK(mode):
                    continue
                rpath = posixpath.join(rdir, name)
                if stat_mod.S_ISDIR(mode):
                    (ldir / name).mkdir(exist_ok=True)
                    walk(rpath, ldir / name, depth + 1)
                elif stat_mod.S_ISREG(mode):
                    done.append(self.download(rpath, ldir / name, max_bytes=max_bytes))

        try:
            walk(remote_dir, root, 1)
        except (socket.timeout, EOFError, paramiko.SSHException) as exc:
            raise self._wire_error(exc, "download", f"download {remote_dir} -> {root}") from exc
        return done
