"""python -m sim scenario list | run NAME [--json] [--pcap FILE] [--profile NAME]"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    from sim.worlds.scenarios import SCENARIOS, run
    parser = argparse.ArgumentParser(prog="python -m sim", description="Simulated WFP redirect stories")
    sub = parser.add_subparsers(dest="command", required=True)
    scen = sub.add_parser("scenario", help="named end-to-end stories")
    ssub = scen.add_subparsers(dest="action", required=True)
    ssub.add_parser("list", help="list the scenarios")
    r = ssub.add_parser("run", help="run one scenario")
    r.add_argument("name", choices=sorted(SCENARIOS))
    r.add_argument("--json", action="store_true", help="print the full report as JSON")
    r.add_argument("--pcap", metavar="FILE", help="write the simulated packets (.pcapng for comments)")
    r.add_argument("--profile", default="documented")
    args = parser.parse_args(argv)
    if args.action == "list":
        for name, fn in SCENARIOS.items():
            print(f"{name:<24} {(fn.__doc__ or '').strip().splitlines()[0]}")
        return 0
    from sim.profiles import ProfileError
    try:
        report, world = run(args.name, args.profile)
    except ProfileError as exc:
        print(f"python -m sim: {exc}", file=sys.stderr)
        return 2
    if args.pcap:
        from sim import pcap
        fmt = "pcapng" if args.pcap.endswith(".pcapng") else "pcap"
        pcap.write(world.network.packets, args.pcap, fmt=fmt)
        report["pcap"] = args.pcap
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['scenario']}: {report['verdict']} (profile {report['profile']})")
        for c in report["connections"]:
            chain = " -> ".join([c["original_destination"]] + [h["redirected_to"] for h in c["hops"]
                                                                if h["redirected_to"]])
            print(f"  {c['label']}: {c['verdict']}  via {chain or 'direct'}  final {c['final_destination'] or '-'}"
                  f"  intact {c['intact']}{'  error ' + c['error'] if c['error'] else ''}")
        for err in report["proxy_errors"]:
            print(f"  proxy: {err}")
        for d in report["diagnostics"]:
            print(f"  {d['kind']}: {d['message']}")
    return 0        # the verdict is the story's result, not a failure of the command


if __name__ == "__main__":
    sys.exit(main())
