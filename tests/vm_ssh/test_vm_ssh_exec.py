"""Remote execution, transfers, host-key pinning and fault classification,
all against a real OpenSSH sshd (see conftest.py)."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.vm.errors import InfrastructureError
from harness.vm.ssh import (
    AuthenticationFailed,
    CommandFailed,
    CommandHang,
    ConnectFailed,
    ConnectionDropped,
    ExitStatusUnknown,
    HostKeyMismatch,
    SshEndpoint,
)


# -- execution -----------------------------------------------------------
def test_exec_output_and_exit_code_via_marker(guest):
    res = guest.run_script("echo hello; echo oops >&2; printf 'no newline'")
    assert res.exit_code == 0 and res.exit_code_source == "marker"
    assert res.stdout == "hello\nno newline"          # marker cut off exactly
    assert res.stderr == "oops\n"
    assert "wfph-exit" not in res.stdout_path.read_text()


@pytest.mark.parametrize("script, code", [("exit 7", 7), ("false", 1), ("sh -c 'kill -9 $$'", 137),
                                          ("echo out; exit 255", 255)])
def test_failing_command_exit_code(guest, script, code):
    res = guest.run_script(script)
    assert res.exit_code == code
    assert not res.ok


def test_check_raises_command_failed_not_infrastructure(guest):
    with pytest.raises(CommandFailed) as ei:
        guest.run(["sh", "-c", "exit 3"], check=True)
    assert ei.value.result.exit_code == 3
    assert not isinstance(ei.value, InfrastructureError)


def test_wrapper_killed_is_unknown_exit_not_a_fake_code(guest):
    # The command kills the shell that would print the marker: the exit
    # code is unknowable, and that must not pass for success or failure.
    with pytest.raises(ExitStatusUnknown) as ei:
        guest.run_script("echo before; kill -9 $$; sleep 1")
    assert isinstance(ei.value, InfrastructureError) and ei.value.phase == "exec"
    assert guest.run(["true"]).exit_code == 0   # connection unaffected


def test_host_keys_are_never_auto_accepted():
    import inspect
    import harness.vm.ssh as ssh_mod
    src = inspect.getsource(ssh_mod)
    assert "AutoAddPolicy" not in src and "WarningPolicy" not in src
    assert "RejectPolicy()" in src and "load_system_host_keys" not in src


def test_stdin_is_closed_so_readers_do_not_block(guest):
    # `cat` with no input must see EOF at once, not wait for the timeout.
    res = guest.run(["cat"], timeout=30)
    assert res.exit_code == 0 and res.stdout == ""


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                        max_size=30), min_size=1, max_size=5))
def test_posix_argv_round_trips_through_real_sshd(guest, args):
    res = guest.run(["printf", r"%s\0", *args], timeout=30)
    assert res.exit_code == 0
    got = res.stdout_path.read_bytes().split(b"\0")[:-1]
    assert got == [a.encode("utf-8") for a in args]


def test_large_output_streams_to_files(guest, tmp_path):
    data = os.urandom(12 * 1024 * 1024 + 17)
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    guest.upload(src, str(tmp_path / "remote-blob.bin"))
    # Both streams at once: the reader must service both or deadlock.
    res = guest.run_script(f"cat '{tmp_path}/remote-blob.bin' >&2 & cat '{tmp_path}/remote-blob.bin'; wait",
                           timeout=120)
    assert res.exit_code == 0
    assert hashlib.sha256(res.stdout_path.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert hashlib.sha256(res.stderr_path.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_output_files_can_be_chosen(guest, tmp_path):
    out, err = tmp_path / "ev" / "o.txt", tmp_path / "ev" / "e.txt"
    res = guest.run(["sh", "-c", "echo A; echo B >&2"], stdout_path=out, stderr_path=err)
    assert (res.stdout_path, res.stderr_path) == (out, err)
    assert out.read_text() == "A\n" and err.read_text() == "B\n"


# -- transfers -----------------------------------------------------------
def test_upload_download_file_round_trip(guest, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_001))
    remote = str(tmp_path / "remote" / "f.bin")
    (tmp_path / "remote").mkdir()
    up = guest.upload(src, remote)
    assert up.size == 300_001
    back = tmp_path / "back" / "f.bin"
    down = guest.download(remote, back)
    assert down.size == 300_001
    assert back.read_bytes() == src.read_bytes()
    assert not back.with_name("f.bin.part").exists()


def test_upload_download_directory_round_trip(guest, tmp_path):
    src = tmp_path / "tree"
    (src / "a" / "b").mkdir(parents=True)
    (src / "empty-dir").mkdir()
    (src / "top.txt").write_text("top\n")
    (src / "a" / "mid.bin").write_bytes(os.urandom(70_000))
    (src / "a" / "b" / "ünïcødé name.txt").write_text("x" * 5)
    (src / "a" / "b" / "zero").write_bytes(b"")
    remote = str(tmp_path / "remote" / "deep" / "tree")   # parents created
    ups = guest.upload_dir(src, remote)
    assert sorted(t.size for t in ups) == [0, 4, 5, 70_000]
    dst = tmp_path / "dst"
    downs = guest.download_dir(remote, dst)
    assert len(downs) == 4

    def tree(root: Path) -> dict[str, bytes | None]:
        return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
                for p in sorted(root.rglob("*"))}

    assert tree(dst) == tree(src)


def test_download_missing_file_is_not_an_infrastructure_fault(guest, tmp_path):
    with pytest.raises(FileNotFoundError):
        guest.download(str(tmp_path / "nope"), tmp_path / "x")
    assert not (tmp_path / "x.part").exists()


# -- host keys and authentication -------------------------------------
@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa"])
def test_wrong_pinned_host_key_is_refused_before_auth(sshd, tmp_path, keytool, key_type):
    other = keytool.keygen(tmp_path / f"other_{key_type}", key_type)
    pinned_line = Path(str(other) + ".pub").read_text()
    g = sshd.client(host_key=pinned_line)
    with pytest.raises(HostKeyMismatch) as ei:
        g.connect()
    err = ei.value
    assert isinstance(err, InfrastructureError) and err.phase == "hostkey"
    pinned_fp, real_fp = keytool.fingerprint(Path(str(other) + ".pub")), sshd.host_fingerprint
    assert err.pinned_fingerprint == pinned_fp and err.offered_fingerprint == real_fp
    assert pinned_fp in str(err) and real_fp in str(err)
    assert not g.is_connected()
    # sshd saw the pre-auth disconnect and never any authentication attempt.
    deadline = time.monotonic() + 10
    while "preauth" not in sshd.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = sshd.log()
    assert "preauth" in log
    assert "publickey" not in log and "Accepted" not in log


def test_right_pinned_key_in_known_hosts_form_connects(sshd):
    g = sshd.client(host_key=f"[127.0.0.1]:{sshd.port} {sshd.host_key_line}")
    with g:
        assert g.run(["true"]).exit_code == 0


def test_pinned_key_must_parse():
    with pytest.raises(ValueError):
        SshEndpoint(host="h", username="u", key_file="k", host_key="ssh-ed25519 not-base64!")
    with pytest.raises(ValueError):
        SshEndpoint(host="h", username="u", key_file="k", host_key="")


def test_unauthorized_key_is_infrastructure_fault(sshd, tmp_path, keytool):
    stranger = keytool.keygen(tmp_path / "stranger")
    g = sshd.client(key_file=stranger)
    with pytest.raises(AuthenticationFailed) as ei:
        g.connect()
    assert isinstance(ei.value, InfrastructureError) and ei.value.phase == "auth"
    assert not g.is_connected()


def test_nothing_listening_is_connect_fault(sshd):
    sshd.stop()
    g = sshd.client(connect_timeout=5.0)
    with pytest.raises(ConnectFailed) as ei:
        g.connect()
    assert isinstance(ei.value, InfrastructureError) and ei.value.phase == "connect"


# -- drops, hangs, reboots --------------------------------------------
def test_sshd_killed_mid_command_is_connection_drop(sshd, guest, tmp_path):
    started = tmp_path / "started"

    def killer():
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        sshd.kill_hard()

    th = threading.Thread(target=killer)
    th.start()
    try:
        with pytest.raises(ConnectionDropped) as ei:
            guest.run_script(f"echo begun; touch '{started}'; sleep 60", timeout=60)
    finally:
        th.join()
    err = ei.value
    assert isinstance(err, InfrastructureError) and err.phase == "exec"
    assert "dropped" in str(err)
    assert not guest.is_connected()
    # A further command reports the drop too, instead of hanging.
    with pytest.raises(ConnectionDropped):
        guest.run(["true"], timeout=10)


def test_hanging_command_hits_timeout_and_is_reported_as_hang(guest, tmp_path):
    pidfile = tmp_path / "hang.pid"
    try:
        with pytest.raises(CommandHang) as ei:
            guest.run_script(f"echo partial; echo $$ > '{pidfile}'; exec sleep 300", timeout=1.5)
        err = ei.value
        assert not isinstance(err, InfrastructureError)  # a hang may be the product's fault
        assert "HANG" in str(err) and err.timeout == 1.5
        assert err.stdout_path.read_text() == "partial\n"
        # The connection survived: only the channel was closed.
        assert guest.run(["echo", "still here"]).stdout == "still here\n"
    finally:
        if pidfile.exists():  # the sleep we started (Linux sshd does not signal it)
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_boot_id_detects_reboot(sshd, guest):
    first = guest.boot_id()
    assert first == sshd.boot_id_path.read_text().strip()
    assert guest.boot_id() == first and not guest.rebooted_since(first)
    sshd.boot_id_path.write_text(str(uuid.uuid4()) + "\n")   # the guest "rebooted"
    assert guest.rebooted_since(first)


def test_default_boot_id_path_is_the_kernel_boot_id(sshd):
    if not os.path.exists("/proc/sys/kernel/random/boot_id"):
        pytest.skip("no /proc boot_id on this kernel")
    with sshd.client(boot_id_path="/proc/sys/kernel/random/boot_id") as g:
        assert g.boot_id() == Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def test_drop_then_reconnect_tells_blip_from_reboot(sshd, guest):
    before = guest.boot_id()
    # Network blip: the SSH server dies and comes back, the "boot" is the same.
    sshd.kill_hard()
    with pytest.raises(ConnectionDropped):
        guest.run(["true"], timeout=10)
    sshd.start(port=sshd.port)
    guest.reconnect()
    assert not guest.rebooted_since(before)
    # Reboot/bugcheck: the connection drops and the boot id changes.
    sshd.kill_hard()
    sshd.boot_id_path.write_text(str(uuid.uuid4()) + "\n")
    sshd.start(port=sshd.port)
    guest.reconnect()
    assert guest.rebooted_since(before)
