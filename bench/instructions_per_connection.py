"""Machine instructions per proxied connection, counted by valgrind: a figure that does not move with the machine.

    python bench/instructions_per_connection.py [--in-flight 16] [--batches 30] [--proxy poll|iocp]

Wall-clock rates (bench_redirect.py) move with the machine: on the shared
2-core machines we work on, the same code has measured 2x apart from one day
to the next. The instruction count of the interpreter running one proxied
connection does not, so it is the figure to compare a change with, or one
session with another. It runs bench_redirect's two-vendor client under
callgrind twice, with a warm-up of 5 batches and with `--batches` more, and
prints the difference per connection (so start-up and imports cancel out).
Needs valgrind (Debian: apt-get install valgrind); takes about half a minute.
Figures only: nothing asserts on them.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
WARM_UP = 5


def _run_batches(in_flight: int, batches: int, proxy: str) -> None:
    sys.path.insert(0, HERE)
    from bench_redirect import PROXIES, Client
    client = Client(in_flight, PROXIES[proxy])
    client.run(batches)
    client.check()


def _instructions(in_flight: int, batches: int, proxy: str) -> int:
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
           "--child", str(batches), "--in-flight", str(in_flight), "--proxy", proxy]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--proxy", choices=("iocp", "poll"), default="iocp",
                        help="the vendors' proxies: the completion-port proxy (the scenarios' default) or "
                             "the WSAPoll model of event loops")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _run_batches(args.in_flight, args.child, args.proxy)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    with ThreadPoolExecutor(2) as pool:           # the two runs are independent: one per core
        short, long = pool.map(lambda b: _instructions(args.in_flight, b, args.proxy),
                               (WARM_UP, WARM_UP + args.batches))
    per_connection = (long - short) / (args.batches * args.in_flight)
    print(f"{per_connection / 1e6:.3f} M instructions per redirected TCP connection through two vendors' "
          f"{'completion-port' if args.proxy == 'iocp' else 'WSAPoll'} proxies ({args.in_flight} in flight, set up and torn down; {sys.implementation.name} "
          f"{sys.version.split()[0]})")


if __name__ == "__main__":
    main()
