"""The winsock-agent's memory over a long session under wine64: one pooled agent, many providers.

    python bench/bench_agent_memory.py [--providers 2000] [--allocations 50]

Each provider does what a differential program or a replay does to memory:
allocations of varied sizes, some protected read-only or no-access, half of
them freed, the invalid pointer, a socket, a completion routine and a second
agent thread; then it closes, which retires what it left. Printed at ten
points: the Linux mappings of the agent's wine process (vm.max_map_count is
65,530 by default), its resident and virtual size, and providers per second;
or the provider that failed and why. Figures only: nothing here asserts on them.
"""
from __future__ import annotations

import argparse
import time

from harness.agent import AgentError
from harness.agent.pool import make_agent_api
from harness.winsock import constants as C


def _process(pid: int) -> tuple[int, int, int]:
    """(mappings, VmRSS KiB, VmSize KiB) of a Linux process."""
    with open(f"/proc/{pid}/maps") as maps:
        mappings = sum(1 for _ in maps)
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return mappings, int(fields["VmRSS"].split()[0]), int(fields["VmSize"].split()[0])


def _provider(allocations: int) -> int:
    """One provider's life; returns the agent's Linux pid."""
    api = make_agent_api("wine")
    try:
        mem = api.memory
        live = []
        for i in range(allocations):
            live.append(mem.alloc(16 + (i * 37) % 5000))
            if i % 3 == 0:
                mem.protect(live[-1], "r")
            if i % 5 == 0:
                mem.protect(live[-1], "none")
            if i % 2:
                mem.free(live.pop())
        mem.invalid_pointer()
        api.closesocket(api.socket(C.AF_INET, C.SOCK_STREAM, 0))
        api.completion_routine(lambda *args: None)
        with api.as_thread(api.new_thread()):
            api.GetCurrentThreadId()
        return api.session.pid
    finally:
        api.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--providers", type=int, default=2000)
    parser.add_argument("--allocations", type=int, default=50, help="allocations per provider (half freed)")
    args = parser.parse_args(argv)

    step = max(1, args.providers // 10)
    start = time.perf_counter()
    print(f"{args.providers} providers on one agent, {args.allocations} allocations each")
    print(f"  {'providers':>9} {'mappings':>9} {'RSS KiB':>9} {'VmSize KiB':>11} {'providers/s':>12}")
    for n in range(1, args.providers + 1):
        try:
            pid = _provider(args.allocations)
        except AgentError as exc:
            raise SystemExit(f"  provider {n} failed: {exc}") from None
        if n == 1 or n % step == 0:
            mappings, rss, size = _process(pid)
            rate = n / (time.perf_counter() - start)
            print(f"  {n:>9} {mappings:>9} {rss:>9} {size:>11} {rate:>12.1f}", flush=True)


if __name__ == "__main__":
    main()
