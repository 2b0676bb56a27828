"""The winsock-agent target: the WinsockApi served by a Windows process over stdio.

`driver-fixtures/winsock-agent/` is a small Windows program that executes
Winsock and kernel32 calls on request; this package builds it (mingw-w64),
starts it (under wine64, or through any command such as an SSH exec channel)
and offers `AgentWinsock`, the whole `WinsockApi` over it, so the conformance
suite runs against Wine's ws2_32 or a remote Windows host unchanged:

    wfp-harness conformance --target wine
    wfp-harness conformance --target agent --agent-command "ssh winhost C:\\\\wfp\\\\winsock-agent.exe"
"""
from harness.agent.protocol import (AgentAccessViolation, AgentDied, AgentError, AgentProtocolError,
                                    AgentRequestError, AgentTimeout, AgentUnavailable, AgentVersionError)
from harness.agent.provider import AgentMemory, AgentThread, AgentWinsock
from harness.agent.session import AgentSession

__all__ = ["AgentWinsock", "AgentMemory", "AgentThread", "AgentSession", "AgentError", "AgentProtocolError",
           "AgentVersionError", "AgentDied", "AgentTimeout", "AgentRequestError", "AgentUnavailable",
           "AgentAccessViolation"]
