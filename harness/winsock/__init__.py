"""The Winsock contract: SDK constants, Win64 layouts and the WinsockApi protocol.

Imports nothing else of the project (docs/decisions.md §2).
"""
from harness.winsock.constants import *  # noqa: F401,F403
from harness.winsock import constants, layouts, ctype  # noqa: F401
from harness.winsock.api import PROTOTYPES, EXTENSION_PROTOTYPES, Memory, WinsockApi  # noqa: F401
