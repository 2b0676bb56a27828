"""VM orchestrator: vSphere side (``vsphere``), lab config (``config``), typed
infrastructure failures (``errors``), and the guest side over SSH."""

from harness.vm.errors import InfrastructureError

__all__ = ["InfrastructureError"]
