"""Errors used inside the simulator.

`WsaError` carries a Winsock/Win32 error code from deep inside an operation
to the C boundary, which turns it into SOCKET_ERROR and the last error. It
never escapes a C-shaped call.
"""
from __future__ import annotations

from sim.kernel import SimulationDeadlock  # noqa: F401  (re-exported)
from sim.memory import AccessViolation  # noqa: F401  (re-exported)


class WsaError(Exception):
    __slots__ = ("code",)

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code
