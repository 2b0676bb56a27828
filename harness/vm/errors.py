"""Typed failures of the VM orchestrator.

Every exception raised by ``harness.vm`` for a lab problem (vCenter, TLS,
clone, power, VMware Tools, guest network, SSH transport) is an
``InfrastructureError``: the run could not test the product, so the verdict is
"infrastructure fault" (retryable), never "product test failed".  Callers
classify with ``isinstance(exc, InfrastructureError)`` and read ``exc.phase``
to know which step broke (e.g. ``"connect"``, ``"clone"``, ``"power_on"``).

Messages never contain secrets: the code that raises passes only names
(environment variable names, VM names, URLs without credentials).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.vm.ssh import ExecResult


class InfrastructureError(Exception):
    """A failure of the lab, not of the product under test.

    ``phase`` names the orchestration step that failed.  ``kind`` is always
    ``"infrastructure"`` so reports can show the classification without
    importing this module.
    """

    kind = "infrastructure"
    default_phase = "infrastructure"
    # Worth another attempt on a fresh clone?  False for faults that a retry
    # cannot fix (wrong CA, missing credentials, missing template): retrying
    # them only delays the report and hammers the lab.
    retryable = True
    # True when the fault concerns the whole lab (vCenter, placement), so
    # no other guest can succeed either: the run stops early.
    lab_wide = False

    def __init__(self, message: str, *, phase: str | None = None, vm: str | None = None) -> None:
        self.phase: str = phase or self.default_phase
        self.vm = vm
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        where = f" vm={self.vm}" if self.vm else ""
        return f"INFRASTRUCTURE fault [{self.phase}{where}]: {self.message}"


class ConnectError(InfrastructureError):
    """vCenter unreachable, login refused, or session lost."""
    default_phase = "connect"
    lab_wide = True


class TlsError(ConnectError):
    """The vCenter certificate did not verify (CA bundle or pinned thumbprint)."""
    default_phase = "tls"
    retryable = False


class CredentialsError(ConnectError):
    """The environment variables that should hold vCenter credentials are unset or empty."""
    default_phase = "credentials"
    retryable = False


class InventoryError(InfrastructureError):
    """A template, snapshot, datacenter, folder, pool or datastore was not found."""
    default_phase = "inventory"
    retryable = False


class CloneError(InfrastructureError):
    default_phase = "clone"


class PowerError(InfrastructureError):
    default_phase = "power"


class SnapshotError(InfrastructureError):
    default_phase = "snapshot"


class DestroyError(InfrastructureError):
    default_phase = "destroy"


class TaskTimeout(InfrastructureError):
    """A vSphere task did not finish within its budget."""
    default_phase = "task"


class ToolsTimeout(InfrastructureError):
    """VMware Tools did not report running within the tools timeout."""
    default_phase = "tools"


class IpTimeout(InfrastructureError):
    """The guest reported no usable IP address within the ip timeout."""
    default_phase = "ip"


class PreflightError(InfrastructureError):
    """The lab pre-flight check found a problem that makes a run pointless."""
    default_phase = "preflight"
    retryable = False


class HostKeyError(InfrastructureError):
    """The guest's pinned SSH host key could not be obtained out of band."""
    default_phase = "host_key"
    retryable = False


class SshError(InfrastructureError):
    """SSH transport to a guest failed (connect, auth, host key, channel)."""
    default_phase = "ssh"


# SSH faults, by where they happen (harness.vm.ssh raises them).
class HostKeyMismatch(SshError):
    """The guest offered a host key other than the pinned one."""
    default_phase = "hostkey"
    retryable = False  # never try again hoping for a different answer: fail closed

    def __init__(self, message: str, *, pinned_fingerprint: str, offered_fingerprint: str | None,
                 phase: str | None = None, vm: str | None = None) -> None:
        self.pinned_fingerprint = pinned_fingerprint
        self.offered_fingerprint = offered_fingerprint
        super().__init__(message, phase=phase, vm=vm)


class AuthenticationFailed(SshError):
    """The guest refused our key (not authorized, wrong user)."""
    default_phase = "auth"


class ConnectFailed(SshError):
    """TCP connect, banner or key exchange failed."""
    default_phase = "connect"


class ConnectionDropped(SshError):
    """The SSH connection died while an operation was in flight."""
    default_phase = "exec"


class ExitStatusUnknown(SshError):
    """The remote wrapper ended without printing its exit marker."""
    default_phase = "exec"


class TransferError(SshError):
    """An SFTP transfer ended with the wrong size or failed on the wire."""
    default_phase = "transfer"


class HostileGuest(SshError):
    """The guest sent something no honest guest sends: more bytes than it
    reported, a file over the configured limit, a tree too deep, a name
    too long or one that climbs out of the artifact folder.  Stopped, never
    retried (a fresh clone of the same template would do it again)."""
    default_phase = "download"
    retryable = False


class KeyLoadError(SshError):
    """The client private key could not be read or decrypted."""
    default_phase = "key"
    retryable = False


class BootIdError(SshError):
    """The boot identifier could not be read from the guest."""
    default_phase = "boot_id"


class CommandHang(TimeoutError):
    """A remote command did not finish within its timeout.

    Not an infrastructure fault: the guest answered, the command did not.
    The channel was closed; partial output is in ``stdout_path`` and
    ``stderr_path``.  The remote process may still run (Windows OpenSSH
    cannot deliver signals); revert or reboot the guest to be sure.
    """

    def __init__(self, message: str, *, command: str, timeout: float,
                 stdout_path: Path, stderr_path: Path) -> None:
        super().__init__(message)
        self.kind = "hang"
        self.phase = "exec"
        self.command = command
        self.timeout = timeout
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path


class CommandFailed(Exception):
    """``check=True`` and the command exited non-zero (a test/product result)."""

    def __init__(self, result: "ExecResult") -> None:
        super().__init__(f"remote command failed with exit code {result.exit_code}: {result.command}")
        self.result = result


class GuestSetupError(InfrastructureError):
    """A clone is not in the state its template promises (test signing off,
    Python missing, the reboot never happened): a template problem, so a
    fresh clone of the same template would fail the same way."""
    default_phase = "guest_setup"
    retryable = False


class ProductFailure(Exception):
    """The product under test failed: a test failed, the driver did not
    install or load, the guest bugchecked, or a command hung while the
    driver was loaded.  Never retried."""

    kind = "product"

    def __init__(self, message: str, *, phase: str, reason: str) -> None:
        self.phase = phase
        self.reason = reason      # "tests_failed", "driver_install", "bugcheck", "hang", ...
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return f"PRODUCT failure [{self.phase}/{self.reason}]: {self.message}"


class GuestFault(ProductFailure):
    """The guest went away under the suite while a Winsock call was in flight in
    its winsock-agent (controller-side runs): what a bugcheck looks like from the
    controller.  Not the lab's fault (the guest answered until then) and not a
    test's verdict (the test never got its answer): the report names the call
    (``in_flight``) and its test.  Never retried."""

    kind = "guest"

    def __init__(self, message: str, *, phase: str, reason: str, in_flight: dict | None = None) -> None:
        super().__init__(message, phase=phase, reason=reason)
        self.in_flight = in_flight

    def __str__(self) -> str:
        return f"GUEST fault [{self.phase}/{self.reason}]: {self.message}"


class HarnessError(Exception):
    """Our own bug or misuse (e.g. the suite could not even start).  Never retried."""

    kind = "harness"

    def __init__(self, message: str, *, phase: str = "harness") -> None:
        self.phase = phase
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return f"HARNESS error [{self.phase}]: {self.message}"


def classify(exc: BaseException) -> str:
    """``"infrastructure"``, ``"guest"``, ``"product"`` or ``"harness"`` for any exception.

    Anything not known to be the lab's or the product's fault is ours: an
    unexpected exception must never be retried away or blamed on the driver."""
    if isinstance(exc, InfrastructureError):
        return "infrastructure"
    if isinstance(exc, GuestFault):
        return "guest"
    if isinstance(exc, ProductFailure):
        return "product"
    return "harness"


__all__ = [
    "InfrastructureError", "ConnectError", "TlsError", "CredentialsError",
    "InventoryError", "CloneError", "PowerError", "SnapshotError", "DestroyError",
    "TaskTimeout", "ToolsTimeout", "IpTimeout", "PreflightError", "HostKeyError", "SshError",
    "GuestSetupError", "ProductFailure", "GuestFault", "HarnessError", "HostileGuest", "classify",
]
