"""bench/bench_redirect.py runs end to end on a tiny budget: its checks hold, its table is whole.

Figures are not asserted on (tests never assert on time); what is checked is
that each case ran its connections through both proxies with nothing left
open, and that the machine figure came back from its worker processes.
"""
from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench" / "bench_redirect.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_redirect", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("proxy", ["iocp", "poll"])
@pytest.mark.parametrize("count", [1, 3])
def test_client_counts_and_checks_its_connections(bench, count, proxy):
    client = bench.Client(count, bench.PROXIES[proxy])
    setup_s, total_s = client.run(batches=2)
    assert client.done == 2 * count
    assert 0 < setup_s <= total_s
    client.check()                      # both hops forwarded for each, no errors, nothing left open
    proxies = client.story.proxies.values()
    assert all(p.stats.accepted == 3 * count for p in proxies)    # warm-up batch + two


@pytest.mark.parametrize("proxy", ["iocp", "poll"])
def test_check_notices_a_connection_left_open(bench, proxy):
    client = bench.Client(2, bench.PROXIES[proxy])
    client._open = client._setup()       # set up, not torn down: the proxies still hold them
    with pytest.raises(AssertionError):
        client.check()


@pytest.mark.parametrize("proxy", ["iocp", "poll"])
def test_bench_prints_every_case(bench, capsys, proxy):
    bench.main(["--seconds", "0.02", "--connections", "4", "--in-flight", "2", "--workers", "2", "--proxy", proxy])
    out = capsys.readouterr().out
    for label in ("records query", "one world, 1 at a time", "one world, 2 in flight",
                  "this machine: 2 worlds in 2 processes", "floor: dict bookkeeping"):
        line = next((l for l in out.splitlines() if label in l), None)
        assert line is not None, label
        figures = re.findall(r"\d[\d,]*", line[70:])          # the columns after the 70-wide label
        assert figures and int(figures[0].replace(",", "")) > 0, line
