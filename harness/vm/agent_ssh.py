"""The winsock-agent on a guest, reached through the guest's SSH connection: an ``--agent-command``.

    python -m harness.vm.agent_ssh ENDPOINT.json

The lab writes ENDPOINT.json for one attempt (:func:`write_endpoint`): where the
guest's sshd is, its pinned host key, the NAME of the private key's file or
environment variable (never key material), the agent's command line in the
guest's shell, and the drop record's path.  This process connects with
:class:`harness.vm.ssh.GuestSsh` (pinned host key, ``RejectPolicy``), starts
the agent in a raw exec channel (no PTY: binary stdio) and copies bytes: its
stdin to the channel, the channel's stdout and stderr to its own, in chunks of
at most 64 KiB with blocking writes, so it holds no more than that.  Framing,
the 16 MiB frame cap (``harness.agent.protocol.MAX_FRAME``) and every protocol
check stay in ``harness.agent.session``, which reads this process's stdout
exactly as it reads a local agent's: a hostile guest's oversized or malformed
frame is an ``AgentProtocolError`` there, a frame that never ends an
``AgentTimeout`` after the call timeout.

Exit status: the agent's, when the guest reports one; 255 (as OpenSSH's
``ssh``) when the connection failed or dropped.  A drop (the connection died
with no exit status: the guest's sshd and the agent went away together, as in
a bugcheck) prints one line on stderr, which the session quotes in the error
naming the call in flight, and writes the drop record: every later start in
the run then fails at once instead of waiting out connect timeouts, and the
lab classifies the run as a guest fault (``harness.vm.lifecycle``).
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import paramiko

from harness.vm.errors import AuthenticationFailed, HostKeyMismatch, KeyLoadError, SshError
from harness.vm.ssh import GuestSsh, SshEndpoint, wait_readable

__all__ = ["write_endpoint", "read_drop", "main"]

CHUNK = 64 << 10
DROPPED = 255
_ENDPOINT_KEYS = ("host", "port", "username", "host_key", "key_file", "key_env", "passphrase_env",
                  "connect_timeout", "keepalive", "keepalive_count_max", "shell")


def write_endpoint(path: Path, endpoint: SshEndpoint, *, command: str, guest: str, drop_record: Path) -> Path:
    """ENDPOINT.json for one guest's agent (names of secrets only: the key is read from its file or
    environment variable by the process that connects)."""
    data = {k: getattr(endpoint, k) for k in _ENDPOINT_KEYS}
    data["key_file"] = os.fspath(data["key_file"]) if data["key_file"] is not None else None
    data.update(command=command, guest=guest, drop_record=str(drop_record))
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def read_drop(path: Path) -> dict | None:
    """The drop record a relay wrote, or None."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _say(text: str) -> None:
    os.write(2, f"wfp-harness agent-ssh: {text}\n".encode("utf-8", "replace"))


def _record_drop(path: Path, guest: str, why: str) -> None:
    if path.exists():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"guest": guest, "when": time.time(), "why": why}), encoding="utf-8")
    os.replace(tmp, path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _pump_stdin(chan) -> None:
    """Our stdin to the channel; EOF on ours is EOF on the agent's."""
    try:
        while True:
            data = os.read(0, CHUNK)
            if not data:
                break
            chan.sendall(data)
    except (OSError, EOFError, paramiko.SSHException):   # the connection's end: the main loop reports it
        pass
    try:
        chan.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass


def relay(chan, transport) -> int | None:
    """Copy the channel to our stdout/stderr until the agent exits (its status) or the connection
    dies (None)."""
    threading.Thread(target=_pump_stdin, args=(chan,), daemon=True).start()
    while True:
        try:
            wait_readable(chan, 0.5)
        except (OSError, ValueError):
            time.sleep(0.05)        # the channel's wake-up pipe went with the channel: judged below
        while chan.recv_ready():
            data = chan.recv(CHUNK)
            if not data:
                break
            _write_all(1, data)
        while chan.recv_stderr_ready():
            _write_all(2, chan.recv_stderr(CHUNK))
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            # paramiko reports a closed channel as "ready" with -1: no exit-status message came.
            return _status(chan)
        if chan.eof_received or not transport.is_active():
            if chan.status_event.wait(2.0) or not transport.is_active():
                if not chan.recv_ready() and not chan.recv_stderr_ready():
                    return _status(chan)


def _status(chan) -> int | None:
    """The agent's exit status, or None when the guest never sent one (the connection died)."""
    return chan.exit_status if chan.exit_status != -1 else None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        _say("usage: python -m harness.vm.agent_ssh ENDPOINT.json")
        return 2
    try:
        cfg = json.loads(Path(args[0]).read_text(encoding="utf-8"))
        endpoint = SshEndpoint(**{k: cfg[k] for k in _ENDPOINT_KEYS if k in cfg})
        command, guest, drop_path = cfg["command"], cfg["guest"], Path(cfg["drop_record"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _say(f"{args[0]}: not an agent endpoint file: {exc}")
        return 2
    earlier = read_drop(drop_path)
    if earlier is not None:
        _say(f"guest {guest} dropped earlier in this run ({earlier.get('why')}); not reconnecting")
        return DROPPED
    ssh = GuestSsh(endpoint, vm=guest)
    try:
        ssh.connect()
        chan = ssh.open_exec(command)
    except (HostKeyMismatch, AuthenticationFailed, KeyLoadError) as exc:
        _say(str(exc))                          # the guest is there but refuses us: not a drop
        return DROPPED
    except SshError as exc:
        _say(f"guest {guest}: {exc}")
        _record_drop(drop_path, guest, f"could not reach the guest: {exc.message}")
        return DROPPED
    transport = chan.get_transport()
    try:
        status = relay(chan, transport)
    except BrokenPipeError:
        return DROPPED                          # our reader (the session) went away first
    finally:
        ssh.close()
    if status is None:
        why = f"the SSH connection to {endpoint.host}:{endpoint.port} dropped while the agent ran"
        _say(f"guest {guest}: {why} (no exit status: the guest's sshd and agent went away)")
        _record_drop(drop_path, guest, why)
        return DROPPED
    return status


if __name__ == "__main__":
    sys.exit(main())
