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


class InfrastructureError(Exception):
    """A failure of the lab, not of the product under test.

    ``phase`` names the orchestration step that failed.  ``kind`` is always
    ``"infrastructure"`` so reports can show the classification without
    importing this module.
    """

    kind = "infrastructure"
    default_phase = "infrastructure"

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


class TlsError(ConnectError):
    """The vCenter certificate did not verify (CA bundle or pinned thumbprint)."""
    default_phase = "tls"


class CredentialsError(ConnectError):
    """The environment variables that should hold vCenter credentials are unset or empty."""
    default_phase = "credentials"


class InventoryError(InfrastructureError):
    """A template, snapshot, datacenter, folder, pool or datastore was not found."""
    default_phase = "inventory"


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


class HostKeyError(InfrastructureError):
    """The guest's pinned SSH host key could not be obtained out of band."""
    default_phase = "host_key"


class SshError(InfrastructureError):
    """SSH transport to a guest failed (connect, auth, host key, channel)."""
    default_phase = "ssh"


__all__ = [
    "InfrastructureError", "ConnectError", "TlsError", "CredentialsError",
    "InventoryError", "CloneError", "PowerError", "SnapshotError", "DestroyError",
    "TaskTimeout", "ToolsTimeout", "IpTimeout", "PreflightError", "HostKeyError", "SshError",
]
