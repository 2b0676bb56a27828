"""`wfp-harness capture analyze` on long redirect-loop captures: time and peak memory by size.

    python bench/bench_capture.py [--frames 1000,2000,4096,16384] [--kind proxy|wfp] [--against DIR] [--timeout 600]

Each capture is a long redirect loop written by sim.pcap as pcapng:
- proxy (default): a proxy connecting back to its own port
  (tests/capture/simworlds.py looping_proxy; 6 frames a hop, so the counts
  land within a few frames of the asked ones);
- wfp: the missing-set-loop story (sim/worlds/scenarios.py) with the world's loop
  limit raised: the sample driver redirects the proxy's own connection back
  to it, and each SYN carries the redirect note. Frames per hop fall from
  about 5.7 to 5.2 as the loop grows, so the counts land up to 10% under the
  asked ones (the table shows the real counts); the simulator's hop
  tracking makes a 16,384-frame one take a minute or two to generate.
Each analysis is a fresh
`python -m harness.cli capture analyze FILE --json` process, so the time
includes starting Python, importing scapy (about 0.3 s) and decoding every
frame with it, and the peak is the process's maximum resident set (about
60 MB of it is the interpreter and scapy).

--against DIR runs the same captures with another checkout's analyzer too
(for a before/after table, e.g. `git archive OLD harness sim | tar -x -C DIR`);
a run past --timeout is stopped and shown as such.
Goal (issue "capture analyze is super-linear"): 16,384 frames well under a
minute. Figures only: nothing here asserts on time.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRAMES_PER_HOP, FRAMES_OUTSIDE_HOPS = 6, 7          # looping_proxy: 6 * times + 7 frames
WFP_FRAMES_PER_HOP = 5.72                           # missing-set-loop story, 350 hops


def _simworlds():
    spec = importlib.util.spec_from_file_location("capture_simworlds", ROOT / "tests" / "capture" / "simworlds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wfp_loop(frames: int):
    from harness.winsock import constants as C
    from sim.worlds.ready import SERVER
    from sim.worlds.scenarios import Story
    story = Story(vendors=("VendorX",), set_records=False)
    story.world.hops.loop_limit = max(1, round(frames / WFP_FRAMES_PER_HOP))
    story.tcp("app -> server:80", C.AF_INET, SERVER[0])
    story.finish()
    return story.world


def write_loop_capture(frames: int, path: Path, kind: str) -> int:
    """A loop capture of about `frames` frames at `path`; returns the exact count."""
    from sim import pcap
    if kind == "wfp":
        world = _wfp_loop(frames)
    else:
        world = _simworlds().looping_proxy(times=max(1, round((frames - FRAMES_OUTSIDE_HOPS) / FRAMES_PER_HOP)))
    return pcap.write(world.network.packets, path, fmt="pcapng")


def analyze(checkout: Path, capture: Path, timeout: float) -> tuple[float | None, int, int | None]:
    """(seconds or None past the timeout, peak RSS in KiB, exit status) of one analysis process."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "capture", "analyze", str(capture), "--json"],
                            cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)     # reaped here, not by Popen
            return time.perf_counter() - start, usage.ru_maxrss, proc.returncode
        if time.perf_counter() - start > timeout:
            proc.kill()
            _pid, _status, usage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            return None, usage.ru_maxrss, None
        time.sleep(0.02)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", default="1000,2000,4096,16384", help="capture sizes, comma-separated")
    parser.add_argument("--kind", choices=("proxy", "wfp"), default="proxy", help="which loop (see above)")
    parser.add_argument("--against", type=Path, metavar="DIR", help="another checkout to run the same captures with")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS", help="per analysis (default 600)")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.frames.split(",")]
    checkouts = [("this tree", ROOT)] + ([(str(args.against), args.against.resolve())] if args.against else [])
    rows = {"frames": []}
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        for size in sizes:
            capture = Path(tmp) / f"loop-{size}.pcapng"
            rows["frames"].append(f"{write_loop_capture(size, capture, args.kind):,}")
            for label, checkout in checkouts:
                seconds, peak_kib, status = analyze(checkout, capture, args.timeout)
                shown = f"> {args.timeout:g} s" if seconds is None else f"{seconds:.2f} s"
                if status not in (None, 1):                  # a loop capture must exit 1
                    shown += f" (exit {status})"
                rows.setdefault(f"{label}: time", []).append(shown)
                rows.setdefault(f"{label}: peak RSS", []).append(f"{peak_kib / 1024:.0f} MB")
            print(f"  {rows['frames'][-1]} frames done", file=sys.stderr, flush=True)
    width = max(map(len, rows))
    cols = [max(len(row[i]) for row in rows.values()) for i in range(len(sizes))]
    for name, cells in rows.items():
        print(f"{name:<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, cols)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
