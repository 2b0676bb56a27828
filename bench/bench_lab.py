"""Bench: one stand-in guest vs eight in parallel, against vcsim.

    python3 bench/bench_lab.py [--guests 8] [--driver]

Starts the vCenter simulator (tools/vcsim) and one real sshd per guest on
127.0.0.1, builds the guest wheelhouse once, then runs `nightly` twice: with
one guest, and with N guests at parallelism N.  Prints wall times, their
ratio (target: at most 1.25) and the per-phase times.  Every stand-in runs
the lab tests' selection of the conformance suite against Wine's ws2_32
(its uploaded winsock-agent under wine64), so on a machine with fewer cores
than guests the suites compete for CPU; the bench prints the core count and
the CPU time so the figure can be read in context.  Figures only: nothing
is asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "vm_orchestrator"), str(REPO / "tests" / "vm_vsphere")]


def _cpu() -> float:
    """Busy CPU seconds of the whole machine (the guests' suites run under
    sshd, outside this process's rusage)."""
    try:
        f = open("/proc/stat").readline().split()[1:]
        busy = sum(int(x) for x in f) - int(f[3]) - int(f[4])   # minus idle and iowait
        return busy / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        r, s = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime + s.ru_utime + s.ru_stime


def run(n: int, base: Path, vc, wheel: Path, driver: Path | None) -> tuple[float, float, dict]:
    from harness.vm.config import load_config
    from harness.vm.orchestrator import Orchestrator
    from lab_testlib import make_standin, run_options, write_lab
    stands = [make_standin(base / f"standins-{n}", f"g{i + 1}") for i in range(n)]
    try:
        cfg = write_lab(base / f"lab-{n}.toml", vc, "".join(s.guest_toml() for s in stands),
                        run_extra=f"parallelism = {n}\nretries = 0\n")
        lab = load_config(cfg)
        opts, stream = run_options(base, wheel, vc, driver=driver, parallelism=n)
        c0, t0 = _cpu(), time.perf_counter()
        out = Orchestrator(lab, opts).run()
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        bad = [g["guest"] for g in out.results["guests"] if g["status"] != "passed"]
        if bad:
            print(stream.getvalue(), file=sys.stderr)
            raise SystemExit(f"guests failed: {bad} (see {out.run_dir})")
        phases: dict[str, list[float]] = {}
        for g in out.results["guests"]:
            for p, t in g["phase_times"].items():
                phases.setdefault(p, []).append(t)
        return wall, cpu, phases
    finally:
        for s in stands:
            s.sshd.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--guests", type=int, default=8)
    ap.add_argument("--driver", action="store_true", help="also install a driver (adds the verifier reboot)")
    args = ap.parse_args()
    import vsphere_testlib as vt
    from harness.vm.package import build_wheelhouse
    from lab_testlib import make_driver
    with tempfile.TemporaryDirectory(prefix="wfph-bench-") as tmp:
        base = Path(tmp)
        os.environ.setdefault("XDG_CACHE_HOME", str(Path.home() / ".cache"))
        binary = vt.build_vcsim()
        wheel = build_wheelhouse(base / "wheelhouse")
        driver = make_driver(base) if args.driver else None
        with vt.start_vcsim(binary, base / "vcsim") as vc:
            run(1, base / "warm", vc, wheel, driver)            # warm caches, not measured
            w1, c1, p1 = run(1, base / "one", vc, wheel, driver)
            wn, cn, pn = run(args.guests, base / "many", vc, wheel, driver)
    print(f"cores: {os.cpu_count()}   driver phases: {'yes' if args.driver else 'no'}")
    print(f"1 guest : wall {w1:6.2f} s   cpu {c1:6.2f} s")
    print(f"{args.guests} guests: wall {wn:6.2f} s   cpu {cn:6.2f} s   (parallelism {args.guests})")
    print(f"ratio   : {wn / w1:.2f}x  (target <= 1.25x)")
    cores = os.cpu_count() or 1
    # With every core busy, no scheduler can beat (CPU seconds / cores); the
    # gap between that bound and the measured ratio is the orchestrator's cost.
    print(f"CPU use : {cn / (wn * cores):.0%} of {cores} core(s) during the {args.guests}-guest run "
          f"(CPU-bound lower bound for the ratio: {cn / cores / w1:.2f}x)")
    print(f"\n{'phase':<18}{'1 guest':>10}{f'{args.guests} guests mean':>18}{'max':>8}")
    for p in sorted(set(p1) | set(pn), key=lambda k: -max(pn.get(k, [0]))):
        a = p1.get(p, [0.0])[0]
        b = pn.get(p, [0.0])
        print(f"{p:<18}{a:>9.2f}s{sum(b) / len(b):>17.2f}s{max(b):>7.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
