"""`wfp-harness scenario list|run` (and its alias `python -m sim scenario ...`).

    wfp-harness scenario run two-vendors [--json] [--pcap two-vendors.pcapng] [--profile NAME]

Exit status, as `wfp-harness capture analyze`: 0 when every connection of the
story reached its destination intact (verdict `ok`), 1 on `loop` or `error`,
2 on bad input (an unknown scenario or profile, a capture file that cannot be
written), with one line on stderr.
"""
from __future__ import annotations

import json
import sys


def register(subparsers, prog: str = "wfp-harness") -> None:
    from sim.worlds.scenarios import SCENARIOS
    scen = subparsers.add_parser(
        "scenario", help="list and run named end-to-end redirect stories in the simulator",
        description="Named end-to-end stories: connections through WFP redirect callouts and proxies, "
                    "with each hop, the verdict (ok, loop, error) and optionally a capture.")
    ssub = scen.add_subparsers(dest="action", required=True)
    ls = ssub.add_parser("list", help="list the scenarios", description="List the scenarios with one line each.")
    ls.set_defaults(fn=cmd_list)
    r = ssub.add_parser("run", help="run one scenario and print its story",
                        description="Run one scenario. Exit 0 when its verdict is ok, 1 on loop or error, "
                                    "2 on bad input.")
    r.add_argument("name", choices=sorted(SCENARIOS), help="the scenario (see `scenario list`)")
    r.add_argument("--json", action="store_true", help="print the full report as JSON")
    r.add_argument("--pcap", metavar="FILE", help="write the simulated packets there (.pcapng keeps "
                                                  "the per-packet comments naming vendors and destinations)")
    r.add_argument("--profile", default="documented", help="behaviour profile: a built-in name or a file")
    r.set_defaults(fn=cmd_run, prog=prog)


def cmd_list(args) -> int:
    from sim.worlds.scenarios import SCENARIOS
    for name, fn in SCENARIOS.items():
        print(f"{name:<24} {(fn.__doc__ or '').strip().splitlines()[0]}")
    return 0


def _fail(args, message: str) -> int:
    print(f"{getattr(args, 'prog', 'wfp-harness')}: {message}", file=sys.stderr)
    return 2


def cmd_run(args) -> int:
    from sim.profiles import ProfileError
    from sim.worlds.scenarios import run
    try:
        report, world = run(args.name, args.profile)
    except ProfileError as exc:
        return _fail(args, str(exc))
    if args.pcap:
        from sim import pcap
        fmt = "pcapng" if args.pcap.endswith(".pcapng") else "pcap"
        try:
            pcap.write(world.network.packets, args.pcap, fmt=fmt)
        except OSError as exc:
            return _fail(args, f"--pcap {args.pcap}: cannot write: {exc.strerror}")
        report["pcap"] = args.pcap
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_text(report))
    return 0 if report["verdict"] == "ok" else 1


def _text(report: dict) -> str:
    lines = [f"{report['scenario']}: {report['verdict']} (profile {report['profile']})"]
    for c in report["connections"]:
        chain = " -> ".join([c["original_destination"]] + [h["redirected_to"] for h in c["hops"]
                                                            if h["redirected_to"]])
        bytes_state = "bytes intact" if c["intact"] else "bytes not intact"
        lines.append(f"  {c['label']}: {c['verdict']}  via {chain or 'direct'}  "
                     f"final {c['final_destination'] or '(none)'}  {bytes_state}"
                     + (f"  error {c['error']}" if c["error"] else ""))
    lines += [f"  proxy: {err}" for err in report["proxy_errors"]]
    lines += [f"  {d['kind']}: {d['message']}" for d in report["diagnostics"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    """`python -m sim scenario ...`: the same commands as `wfp-harness scenario ...`."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m sim", description="Simulated WFP redirect stories "
                                     "(the same as `wfp-harness scenario`)")
    register(parser.add_subparsers(dest="command", required=True), prog="python -m sim")
    args = parser.parse_args(argv)
    return args.fn(args)
