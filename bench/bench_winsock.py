"""How much a simulated Winsock call costs, against a bare Python floor measured in the same run.

    python bench/bench_winsock.py [--seconds 1.0]

Prints, per case, calls/s and µs/call, and the ratios the project's goals
are stated in (issue "Foundation"): synchronous WSAIoctl at most 10x the
floor; overlapped WSAIoctl with an event plus WSAGetOverlappedResult at
most 3x the synchronous call. Figures only: nothing here asserts on time.
"""
from __future__ import annotations

import argparse
import os
import sys
import struct

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import per_second  # noqa: E402
from harness.winsock import constants as C
from harness.winsock.ctype import cfunc
from harness.winsock.layouts import WSAOVERLAPPED
from sim import SimulatedWinsock


class Floor:
    """The same C argument marshalling and the same 8 bytes of output writing, and nothing else."""

    def __init__(self):
        self.mem = bytearray(64)

    @cfunc("SOCKET s, DWORD dwIoControlCode, LPVOID lpvInBuffer, DWORD cbInBuffer, LPVOID lpvOutBuffer, "
           "DWORD cbOutBuffer, LPVOID lpcbBytesReturned, LPVOID lpOverlapped, LPVOID lpCompletionRoutine")
    def WSAIoctl(self, s, dwIoControlCode, lpvInBuffer, cbInBuffer, lpvOutBuffer, cbOutBuffer,
                 lpcbBytesReturned, lpOverlapped, lpCompletionRoutine):
        struct.pack_into("<I", self.mem, 0, 0)
        struct.pack_into("<I", self.mem, 8, 4)
        return 0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)

    api = SimulatedWinsock()
    mem = api.memory
    s = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    out, n = mem.alloc(4), mem.alloc(4)
    event = api.WSACreateEvent()
    ovl = mem.alloc(WSAOVERLAPPED.size)
    mem.write(ovl, WSAOVERLAPPED.pack(hEvent=event))
    xfer, flags = mem.alloc(4), mem.alloc(4)
    floor = Floor()
    ioctl, get_result = api.WSAIoctl, api.WSAGetOverlappedResult

    def floor_call():
        floor.WSAIoctl(s, C.FIONREAD, 0, 0, out, 4, n, 0, 0)

    def sync_call():
        ioctl(s, C.FIONREAD, 0, 0, out, 4, n, 0, 0)

    def overlapped_call():
        ioctl(s, C.FIONREAD, 0, 0, out, 4, n, ovl, 0)
        get_result(s, ovl, xfer, 0, flags)

    assert ioctl(s, C.FIONREAD, 0, 0, out, 4, n, 0, 0) == 0
    assert ioctl(s, C.FIONREAD, 0, 0, out, 4, n, ovl, 0) == 0 and get_result(s, ovl, xfer, 0, flags) == 1

    results = {name: per_second(fn, args.seconds) for name, fn in
               (("floor: marshalling only", floor_call), ("WSAIoctl(FIONREAD) sync", sync_call),
                ("WSAIoctl overlapped + event + WSAGetOverlappedResult", overlapped_call))}
    print(f"{'case':<56}{'calls/s':>12}{'µs/call':>10}")
    for name, r in results.items():
        print(f"{name:<56}{r:>12,.0f}{1e6 / r:>10.2f}")
    floor_r, sync_r, ovl_r = results.values()
    print(f"sync / floor       = {floor_r / sync_r:5.2f}x   (goal <= 10x)")
    print(f"overlapped / sync  = {sync_r / ovl_r:5.2f}x   (goal <= 3x)")


if __name__ == "__main__":
    main()
