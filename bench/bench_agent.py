"""How much a call through the winsock-agent under wine64 costs.

    python bench/bench_agent.py [--seconds 1.0]

Prints calls/s and µs per round trip for: a PING (framing and the reader
thread only), GetCurrentThreadId (a CALL, handed to the agent's worker thread),
a synchronous WSAIoctl(FIONREAD) with its argument checking, a 4-byte
memory.read, and an overlapped WSAIoctl with an event plus
WSAGetOverlappedResult. Goal: a CALL round trip under 100 µs. Figures only:
nothing here asserts on time.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import per_second  # noqa: E402

from harness.agent.pool import make_agent_api  # noqa: E402
from harness.winsock import constants as C  # noqa: E402
from harness.winsock.layouts import WSAOVERLAPPED  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)

    api = make_agent_api("wine")
    try:
        mem, session = api.memory, api.session
        s = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
        out, n = mem.alloc(4), mem.alloc(4)
        event = api.WSACreateEvent()
        ovl = mem.alloc(WSAOVERLAPPED.size)
        mem.write(ovl, WSAOVERLAPPED.pack(hEvent=event))
        xfer, flags = mem.alloc(4), mem.alloc(4)

        def overlapped():
            api.WSAIoctl(s, C.FIONREAD, 0, 0, out, 4, n, ovl, 0)
            api.WSAGetOverlappedResult(s, ovl, xfer, 1, flags)

        cases = [
            ("PING (reader thread only)", session.ping),
            ("GetCurrentThreadId", api.GetCurrentThreadId),
            ("WSAIoctl(FIONREAD), synchronous", lambda: api.WSAIoctl(s, C.FIONREAD, 0, 0, out, 4, n, 0, 0)),
            ("memory.read(4 bytes)", lambda: mem.read(out, 4)),
            ("overlapped WSAIoctl + WSAGetOverlappedResult", overlapped),
        ]
        print(f"winsock-agent {api.hello.build_id} on {api.hello.os}, pid {api.hello.pid}")
        for name, fn in cases:
            fn()
            rate = per_second(fn, args.seconds, batch=64)
            print(f"  {name:<46} {rate:>10,.0f} calls/s  {1e6 / rate:>8.1f} µs/call")
    finally:
        api.close()


if __name__ == "__main__":
    main()
