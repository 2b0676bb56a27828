"""Redirect-path figures: records queries per second and proxied connections per second.

    python bench/bench_redirect.py [--seconds 1.0] [--connections 300]

Goals (issue "Simulated WFP connect-redirect"): a synchronous records query
on a redirected accepted socket at least 200,000 calls/s; at least 5,000
redirected TCP connections per second set up through two vendors' proxies
(connect, redirect, accept, query, set, connect out, one round trip of
data). Each is printed beside a bare Python floor measured in the same run.
Figures only: nothing here asserts on time.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import per_second  # noqa: E402
from harness.winsock import constants as C
from harness.winsock import redirect as rd
from sim.fixtures import redirected_tcp
from sim.scenarios import PAYLOAD, Story


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=300)
    args = parser.parse_args(argv)

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

    # 2. Redirected connections through two vendors' proxies.
    story = Story("documented", ("VendorX", "VendorY"), udp=False)     # TCP proxies only
    story.world.network.record = False           # no packet log: measure the redirect path itself
    app, sc = story.app, story.scratch
    name = rd.sockaddr_bytes("192.0.2.20", 80)
    app.memory.write(sc.addr, name)
    app.memory.write(sc.buf + 8192, PAYLOAD)

    def one_connection():
        s = app.socket(C.AF_INET, C.SOCK_STREAM, 0)
        assert app.connect(s, sc.addr, len(name)) == 0
        assert app.send(s, sc.buf + 8192, len(PAYLOAD), 0) == len(PAYLOAD)
        assert app.recv(s, sc.buf, len(PAYLOAD), C.MSG_WAITALL) == len(PAYLOAD)
        app.closesocket(s)

    one_connection()
    start = time.perf_counter()
    for _ in range(args.connections):
        one_connection()
    conn_rate = args.connections / (time.perf_counter() - start)
    proxied = sum(p.stats.forwarded for p in story.proxies.values())

    def floor_connection():     # a Python floor: the bookkeeping of three connections in dicts
        d = {}
        for hop in range(3):
            d[hop] = {"state": "SYN_SENT", "rx": bytearray()}
            d[hop]["state"] = "ESTABLISHED"
            d[hop]["rx"] += PAYLOAD
            d[hop]["rx"].clear()
        return d

    floor_conn = per_second(floor_connection, args.seconds)
    print(f"{'case':<58}{'per second':>14}")
    print(f"{'records query, sync, redirected accepted socket':<58}{query_rate:>14,.0f}   (goal >= 200,000)")
    print(f"{'  floor: same argument checks and copy in plain Python':<58}{floor_rate:>14,.0f}")
    print(f"{'redirected TCP connections via two vendors proxies':<58}{conn_rate:>14,.0f}   (goal >= 5,000)")
    print(f"{'  floor: dict bookkeeping of three connections':<58}{floor_conn:>14,.0f}")
    print(f"proxied hops completed: {proxied}; virtual time {story.world.now_ns / 1e6:.1f} ms; "
          f"diagnostics {len(story.world.kernel.diagnostics)}")


if __name__ == "__main__":
    main()
