"""User-mode redirect services written only against the Winsock contract.

`redirect` wraps the usual IOCTL and cmsg sequences, `poller` is readiness
over one WSAPoll, and `reference` is the reference redirect proxy built
from both. They run on any `WinsockApi`: the simulator, Wine through the
agent, or Windows.
"""
