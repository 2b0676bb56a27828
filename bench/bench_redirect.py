"""Redirect-path figures: records queries per second and proxied connections per second.

    python bench/bench_redirect.py [--seconds 1.0] [--connections 600] [--in-flight 16] [--workers N]
                                   [--proxy iocp|poll]

Goals (issue "Simulated WFP connect-redirect"): a synchronous records query
on a redirected accepted socket at least 200,000 calls/s; at least 5,000
redirected TCP connections per second set up through two vendors' proxies
(connect, redirect, accept, query, set, connect out, one round trip of
data). Each is printed beside a bare Python floor measured in the same run.
Figures only: nothing here asserts on time.

Two rates per case, because the goal's list stops at the round trip:
- "set up": the clock runs from the application's first connect until every
  connection of the batch has had its round trip (three handshakes, two
  classifies that redirect and one that passes, two accepts, four queries,
  two SETs, two connects out, the data both ways through both proxies);
  then the application closes, and the teardown (FINs through both proxies,
  their shutdowns and closes) runs to quiet with the clock stopped;
- "set up and torn down": the same with the teardown on the clock.

The last figure is this machine's: one world per worker process, all at
once (a world is single-threaded: one lock, one virtual clock), summed; each
worker runs the same in-flight client as the single-world case.

Where a proxied connection's time goes (2-core machine): one at a time,
69 C-shaped calls (the application 5, the echo server 10 of which 3 are
WSAPolls, each proxy 27 of which 6 are WSAPolls); 16 in flight, 51 (the
WSAPolls shared), with 21 TCP segments and 3 classifies: about 1,170 Python
function calls, 1,120 calls into C and 48,000 bytecodes. callgrind, per
connection: the three classifies (both vendors' callouts, the hop
tracking) about 9% of the instructions, creating objects 10% and freeing
them 10%, the scheduler's heap 4%, the cyclic garbage collector 2% (flat
over a long run: the world keeps a bounded report and connections leave no
cycles). No Python function takes more than 4% (perf, sampling): what is
left is the bytecode a faithful model runs. With the completion-port proxies
and echo server (the default, --proxy iocp), 16 in flight: about 70 C-shaped
calls (each proxy 29), 15 overlapped requests, 21 segments, 3 classifies,
about 1,900 Python function calls and 1,600 calls into C, 4.37M instructions
(bench/RESULTS.md, session 7); no Python function above about 4% (cProfile).
Wall-clock figures move with the machine; instructions_per_connection.py
counts what does not.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import per_second  # noqa: E402
from harness.winsock import constants as C
from harness.winsock import sockaddr
from harness.proxy.poller import READ, WRITE, Poller
from harness.proxy.reference import IocpRedirectProxy, RedirectProxy
from sim.worlds.ready import redirected_tcp
from sim.worlds.scenarios import PAYLOAD, Story
from sim.worlds.services import CompletionEchoServer, EchoServer

PROXIES = {"iocp": IocpRedirectProxy, "poll": RedirectProxy}     # --proxy: completion port or WSAPoll
ECHOES = {IocpRedirectProxy: CompletionEchoServer, RedirectProxy: EchoServer}    # the server's, alike


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=600, help="per case in one world")
    parser.add_argument("--in-flight", type=int, default=16, help="connections at once in the in-flight cases")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worlds in parallel processes for the machine figure (default: one per core)")
    parser.add_argument("--proxy", choices=tuple(PROXIES), default="iocp",
                        help="the vendors' proxies: the completion-port proxy (iocp, the scenarios' default) "
                             "or the WSAPoll model of event loops (poll)")
    args = parser.parse_args(argv)
    proxy = PROXIES[args.proxy]

    # 1. Records query rate on a redirected, accepted socket.
    r = redirected_tcp()
    api, sock = r.api, r.sock
    out, n = api.memory.alloc(1024), api.memory.alloc(4)
    ioctl = api.WSAIoctl
    assert ioctl(sock, C.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS, 0, 0, out, 1024, n, 0, 0) == 0
    floor_buf = bytearray(1024)
    blob = api.memory.read(out, api.memory.read_u32(n))

    def floor_query():          # the same work in plain Python: argument checks, copy the blob, store the size
        for v in (sock, C.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS, 0, 0, out, 1024, n, 0, 0):
            if type(v) is not int:
                raise TypeError
        floor_buf[:len(blob)] = blob
        floor_buf[1020:1024] = len(blob).to_bytes(4, "little")

    query_rate = per_second(lambda: ioctl(sock, C.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS, 0, 0, out, 1024, n,
                                          0, 0), args.seconds)
    floor_rate = per_second(floor_query, args.seconds)

    # 2. Redirected connections through two vendors' proxies in one world: one at a time (a
    #    blocking client), then `--in-flight` at once (a non-blocking client on WSAPoll, like a
    #    load generator), each in a fresh story.
    single = {}
    for in_flight in (1, args.in_flight):
        client = Client(in_flight, proxy)
        batches = max(1, args.connections // in_flight)
        setup_s, total_s = client.run(batches)
        single[in_flight] = (client.done / setup_s, client.done / total_s)
        client.check()

    # 3. The machine: one world per worker process, at the same time.
    machine = run_workers(args.workers, args.in_flight, args.seconds, proxy) if args.workers > 1 else None

    def floor_connection():     # a Python floor: the bookkeeping of three connections in dicts
        d = {}
        for hop in range(3):
            d[hop] = {"state": "SYN_SENT", "rx": bytearray()}
            d[hop]["state"] = "ESTABLISHED"
            d[hop]["rx"] += PAYLOAD
            d[hop]["rx"].clear()
        return d

    floor_conn = per_second(floor_connection, args.seconds)
    row = "{:<70}{:>12}{:>16}"
    print(row.format("case", "set up/s", "set up+down/s"))
    print(f"{'records query, sync, redirected accepted socket':<70}{query_rate:>12,.0f}   (goal >= 200,000)")
    print(f"{'  floor: same argument checks and copy in plain Python':<70}{floor_rate:>12,.0f}")
    print(row.format("redirected TCP connections via two vendors' proxies (goal >= 5,000/s set up):", "", ""))
    for in_flight, (setup, total) in single.items():
        label = "  one world, 1 at a time" if in_flight == 1 else f"  one world, {in_flight} in flight"
        print(row.format(label, f"{setup:,.0f}", f"{total:,.0f}"))
    if machine is not None:
        setup, total = machine
        label = f"  this machine: {args.workers} worlds in {args.workers} processes, {args.in_flight} in flight each"
        print(row.format(label, f"{setup:,.0f}", f"{total:,.0f}"))
    print(f"{'  floor: dict bookkeeping of three connections':<70}{floor_conn:>12,.0f}")
    print("each connection: connect, two redirects, two accepts, four queries, two SETs, two connects out, "
          "one round trip; every hop forwarded, no proxy errors, every connection closed")


class Client:
    """The application of a two-vendor story, opening `count` connections a batch.

    `run()` times each batch's set-up and teardown apart and checks every
    connection's round trip; `check()` then checks the proxies' books.
    """

    def __init__(self, count: int, proxy=None):
        self.count = count
        self.story = story = Story("documented", ("VendorX", "VendorY"), udp=False, proxy=proxy,
                                   echo=ECHOES.get(proxy))     # TCP proxies only
        story.world.network.record = False           # no packet log: measure the redirect path itself
        app, sc = story.app, story.scratch
        self.name = sockaddr.from_text("192.0.2.20", 80)
        app.memory.write(sc.addr, self.name)
        app.memory.write(sc.buf + 8192, PAYLOAD)
        app.memory.write_u32(sc.value, 1)
        self.poller = Poller(app)
        self.done = 0
        self._open = self._setup()                     # warm up: caches, first allocations
        self._teardown()

    def run(self, batches: int = 0, seconds: float = 0.0) -> tuple:
        """(set-up seconds, set-up + teardown seconds) of `batches` batches, or, without
        `batches`, of as many as fit in `seconds` of wall time."""
        setup_s = total_s = 0.0
        clock = time.perf_counter
        ran = 0
        while (ran < batches) if batches else (total_s < seconds):
            start = clock()
            self._open = self._setup()
            mid = clock()
            self._teardown()
            end = clock()
            setup_s += mid - start
            total_s += end - start
            self.done += self.count
            ran += 1
        return setup_s, total_s

    def _setup(self) -> list:
        return self._one() if self.count == 1 else self._many()

    def _one(self) -> list:
        app, sc, name = self.story.app, self.story.scratch, self.name
        s = app.socket(C.AF_INET, C.SOCK_STREAM, 0)
        assert app.connect(s, sc.addr, len(name)) == 0
        assert app.send(s, sc.buf + 8192, len(PAYLOAD), 0) == len(PAYLOAD)
        assert app.recv(s, sc.buf, len(PAYLOAD), C.MSG_WAITALL) == len(PAYLOAD)
        return [s]

    def _many(self) -> list:
        app, sc, name = self.story.app, self.story.scratch, self.name
        want = {}
        for _ in range(self.count):
            s = app.socket(C.AF_INET, C.SOCK_STREAM, 0)
            app.ioctlsocket(s, C.FIONBIO, sc.value)
            app.connect(s, sc.addr, len(name))           # WSAEWOULDBLOCK: WSAPoll says when it is done
            want[s] = WRITE
        opened = list(want)
        got = dict.fromkeys(want, 0)
        while want:
            for s, _revents in self.poller.poll(list(want.items()), -1):
                if want[s] == WRITE:
                    assert app.send(s, sc.buf + 8192, len(PAYLOAD), 0) == len(PAYLOAD)
                    want[s] = READ
                    continue
                n = app.recv(s, sc.buf, 4096, 0)
                assert n > 0
                got[s] += n
                if got[s] == len(PAYLOAD):
                    del want[s]
        return opened

    def _teardown(self) -> None:
        app = self.story.app
        for s in self._open:
            app.closesocket(s)
        self._open = []
        self.story.world.run_until_idle()        # FINs through both proxies, their shutdowns and closes

    def check(self) -> None:
        proxies = self.story.proxies.values()
        proxied = sum(p.stats.forwarded for p in proxies)
        errors = [e for p in proxies for e in p.stats.errors]
        left = sum(len(p.connections) for p in proxies)
        expected = 2 * (self.done + self.count)      # two hops a connection, the warm-up batch included
        assert proxied == expected and not errors and not left, (proxied, expected, errors, left)


def _worker(in_flight: int, seconds: float, proxy, barrier, results) -> None:
    try:
        client = Client(in_flight, proxy)
        barrier.wait(timeout=120)                   # every world starts its clock together
        setup_s, total_s = client.run(seconds=seconds)
        client.check()
        results.put((client.done, setup_s, total_s))
    except BaseException as exc:                    # reported by the parent, not lost in a child
        results.put(f"{type(exc).__name__}: {exc}")
        raise


def run_workers(workers: int, in_flight: int, seconds: float, proxy=None) -> tuple:
    """(set-up rate, set-up + teardown rate) summed over `workers` worlds run at once."""
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(in_flight, seconds, proxy, barrier, results)) for _ in range(workers)]
    for p in procs:
        p.start()
    try:
        figures = [results.get(timeout=600) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    failures = [f for f in figures if isinstance(f, str)]
    if failures:
        raise RuntimeError(f"bench worker failed: {failures[0]}")
    return (sum(done / setup_s for done, setup_s, _ in figures),
            sum(done / total_s for done, _, total_s in figures))


if __name__ == "__main__":
    main()
