"""How a world scales: the cost of a redirected connection beside N idle connections.

    python bench/bench_scale.py [--direct 0,1000,10000,30000] [--proxied 0,1000,5000]
                                [--batches 20] [--in-flight 16] [--seconds 2] [--workers N]
                                [--proxy iocp|poll]

Issue "Scale like Windows": on Windows the cost of one more connection does
not depend on how many the machine already holds. Each case builds a fresh
two-vendor story (bench_redirect's), opens N idle connections in it, then
times `--batches` batches of `--in-flight` redirected connections (set up
and torn down, as bench_redirect). It prints, in one run:
- µs per redirected connection beside N idle direct connections (the
  application to a server port no driver redirects) and beside N idle
  proxied ones (held open through both vendors' proxies), and each against
  N = 0 of the same run;
- the time to build the N idle connections, and per connection;
- bytes per idle direct and per idle proxied connection (tracemalloc: what
  Python allocated for them, all processes of the world included);
- the longest garbage-collector pause while the largest world runs;
- connections per second for one world and for the machine (one world per
  core, bench_redirect's figure).
Goals (the issue): the per-connection cost at N = 30,000 direct and 5,000
proxied within 1.25x of N = 0; 30,000 idle connections built in under 10 s;
one world >= 5,000/s, the machine >= 10,000/s set up; <= 2 KB per idle direct
and <= 10 KB per idle proxied connection. Figures only: nothing asserts on time.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_redirect import PROXIES, Client, run_workers  # noqa: E402
from harness.winsock import constants as C
from harness.winsock import sockaddr
from harness.proxy.poller import WRITE, Poller
from sim.worlds.ready import SERVER
from sim.world import World
from sim.worlds.services import EchoServer

DIRECT_PORT = 8080          # a server port no driver redirects


class Idle:
    """N idle connections of one kind held open by the story's application."""

    def __init__(self, client: Client):
        self.client = client
        story = client.story
        self.story, self.app, self.world = story, story.app, story.world
        self.direct_server = None
        self.held = []

    def open(self, n: int, proxied: bool) -> None:
        """Open `n` connections (non-blocking connects, then the world runs until all are up)."""
        if not n:
            return
        app, world, sc = self.app, self.world, self.story.scratch
        port = 80 if proxied else DIRECT_PORT
        if not proxied and self.direct_server is None:
            api = world.start_process(self.story.server_host, "direct-echo")
            echo = type(self.story.echo) if self.story.echo is not None else EchoServer
            self.direct_server = echo(api, tcp_port=DIRECT_PORT)
            world.add_service(self.direct_server.poll, api)
        # Half over IPv4, half over IPv6: a host has 16,384 ephemeral ports per family (docs/facts.md §9).
        names = []
        for family, server in ((C.AF_INET, SERVER[0]), (C.AF_INET6, SERVER[1])):
            name = sockaddr.from_text(server, port)
            addr = app.memory.alloc(len(name))
            app.memory.write(addr, name)
            names.append((family, addr, len(name)))
        poller = Poller(app)
        chunk = 100                   # in chunks within the servers' listen backlogs (128)
        for first in range(0, n, chunk):
            socks = []
            family, addr, namelen = names[(first // chunk) % 2]
            for _ in range(min(chunk, n - first)):
                s = app.socket(family, C.SOCK_STREAM, 0)
                app.ioctlsocket(s, C.FIONBIO, sc.value)
                rc = app.connect(s, addr, namelen)
                assert rc == 0 or app.WSAGetLastError() == C.WSAEWOULDBLOCK, app.WSAGetLastError()
                socks.append(s)
            want = {s: WRITE for s in socks}
            while want:
                for s, revents in poller.poll(list(want.items()), -1):
                    assert not revents & (C.POLLERR | C.POLLHUP), (s, revents)
                    del want[s]
            self.held += socks
        world.run_until_idle()
        poller.close()


def parse_sizes(text: str) -> list:
    return [int(x) for x in text.split(",") if x.strip()]


def measure_case(n: int, proxied: bool, batches: int, in_flight: int, proxy=None) -> dict:
    client = Client(in_flight, proxy)
    idle = Idle(client)
    gc.collect()
    start = time.perf_counter()
    idle.open(n, proxied)
    setup_s = time.perf_counter() - start
    client.run(2)                   # warm: the first batches beside the idle ones
    proxies = client.story.proxies.values()
    forwarded = sum(p.stats.forwarded for p in proxies)
    held = sum(len(p.connections) for p in proxies)
    _setup, total = client.run(batches)
    done = batches * in_flight
    # every connection of the batches went through both proxies and is gone again; no errors
    assert sum(p.stats.forwarded for p in proxies) - forwarded == 2 * done
    assert sum(len(p.connections) for p in proxies) == held
    assert not [e for p in proxies for e in p.stats.errors]
    return {"n": n, "proxied": proxied, "us": total / done * 1e6, "setup_s": setup_s}


def bytes_per_connection(n: int, proxied: bool, proxy=None) -> float:
    client = Client(1, proxy)
    idle = Idle(client)
    idle.open(min(n, 50), proxied)     # the server process and first allocations outside the count
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    idle.open(n, proxied)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / n


def gc_pauses(n: int, proxy=None) -> tuple:
    """(longest collection in ms, objects tracked) while a world of `n` idle direct connections runs batches."""
    client = Client(16, proxy)
    idle = Idle(client)
    idle.open(n, False)
    longest = [0.0]
    started = [0.0]

    def timer(phase, _info):
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            longest[0] = max(longest[0], time.perf_counter() - started[0])

    gc.callbacks.append(timer)
    try:
        gc.collect()                 # a full collection of the built world: the worst case
        full = longest[0]
        objects = len(gc.get_objects())
        World.freeze()               # the world is built: out of the collector's sight
        longest[0] = 0.0
        gc.collect()
        frozen = longest[0]
        longest[0] = 0.0
        client.run(40)
    finally:
        gc.callbacks.remove(timer)
        gc.unfreeze()
    return full * 1e3, frozen * 1e3, longest[0] * 1e3, objects


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--direct", default="0,1000,10000,30000")
    parser.add_argument("--proxied", default="0,1000,5000")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--memory-n", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--proxy", choices=tuple(PROXIES), default="iocp",
                        help="the vendors' proxies: the completion-port proxy (iocp, the default here: what a "
                             "turn costs does not grow with what it holds) or the WSAPoll model (poll)")
    args = parser.parse_args(argv)
    proxy = PROXIES[args.proxy]

    rows = []
    for proxied, sizes in ((False, parse_sizes(args.direct)), (True, parse_sizes(args.proxied))):
        for n in sizes:
            rows.append(measure_case(n, proxied, args.batches, args.in_flight, proxy))
            r = rows[-1]
            print(f"  measured: {'proxied' if proxied else 'direct'} N={n:,}: {r['us']:,.0f} µs/connection, "
                  f"built in {r['setup_s']:.2f} s", file=sys.stderr, flush=True)
    direct_bytes = bytes_per_connection(args.memory_n, False, proxy)
    proxied_bytes = bytes_per_connection(args.memory_n, True, proxy)
    biggest = max(parse_sizes(args.direct) or [0])
    gc_full, gc_frozen, gc_longest, objects = gc_pauses(biggest, proxy)

    one = Client(args.in_flight, proxy)
    setup_s, total_s = one.run(seconds=args.seconds)
    one.check()
    one_world = (one.done / setup_s, one.done / total_s)
    machine = run_workers(args.workers, args.in_flight, args.seconds, proxy) if args.workers > 1 else None

    print(f"{'idle connections held':<34}{'µs/connection':>14}{'vs N=0':>8}{'build N':>10}{'µs/built':>10}")
    for proxied in (False, True):
        base = next((r["us"] for r in rows if r["proxied"] == proxied and r["n"] == 0), None)
        for r in (r for r in rows if r["proxied"] == proxied):
            label = f"N = {r['n']:,} {'proxied (both vendors)' if proxied else 'direct'}"
            ratio = f"{r['us'] / base:.2f}x" if base else ""
            built = f"{r['setup_s'] / r['n'] * 1e6:,.0f}" if r["n"] else ""
            print(f"{label:<34}{r['us']:>14,.0f}{ratio:>8}{r['setup_s']:>9.2f}s{built:>10}")
    print(f"bytes per idle direct connection:  {direct_bytes:,.0f} (goal <= 2,048; N = {args.memory_n:,})")
    print(f"bytes per idle proxied connection: {proxied_bytes:,.0f} (goal <= 10,240; N = {args.memory_n:,})")
    print(f"garbage collector, world of {biggest:,} idle connections ({objects:,} objects): full collection "
          f"{gc_full:,.0f} ms; after World.freeze() {gc_frozen:,.1f} ms; longest pause of 40 batches after it "
          f"{gc_longest:,.1f} ms")
    print(f"one world, {args.in_flight} in flight: {one_world[0]:,.0f}/s set up, {one_world[1]:,.0f}/s set up "
          f"and torn down (goal >= 5,000/s set up)")
    if machine is not None:
        print(f"this machine, {args.workers} worlds: {machine[0]:,.0f}/s set up, {machine[1]:,.0f}/s set up and "
              f"torn down (goal >= 10,000/s set up)")


if __name__ == "__main__":
    main()
