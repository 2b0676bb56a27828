"""``wfp-harness lab ...``: pre-flight, nightly, gate, janitor, merge.

    wfp-harness lab preflight --config lab.toml [--json]
    wfp-harness lab nightly   --config lab.toml [--driver DIR] [--shard i/n] [--run-id ID]
    wfp-harness lab gate      --config lab.toml --driver DIR --baseline results.json
    wfp-harness lab janitor   --config lab.toml [--run-id ID] [--dry-run]
    wfp-harness lab merge     --out DIR SHARD_DIR...
    wfp-harness lab demo      [--out DIR]      (vcsim + two stand-in guests, nightly then gate)

Exit codes: 0 all good, 1 product failures (or gate verdict fail),
2 usage or config error, 3 infrastructure (lab broken; gate inconclusive),
4 harness bug, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register", "main"]


def register(subparsers) -> None:
    lab = subparsers.add_parser("lab", help="run the conformance suite on vSphere guests: preflight, nightly, "
                                            "gate, janitor, merge; demo runs it all on this machine",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = lab.add_subparsers(dest="lab_command", required=True)

    p = sub.add_parser("preflight", help="check vCenter (verified TLS), templates, snapshots, datastore space, "
                                         "Secure Boot and published test-signing state")
    _config(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(fn=cmd_preflight)

    for name, text in (("nightly", "run the whole guest matrix"),
                       ("gate", "run the matrix for one driver package and decide against a baseline")):
        p = sub.add_parser(name, help=text)
        _config(p)
        p.add_argument("--driver", type=Path, required=name == "gate",
                       help="driver package: a directory with the INF/SYS/CAT (or one file)")
        p.add_argument("--driver-service", help="service name (default: from the INF, else the .sys name)")
        p.add_argument("--wheel", type=Path, help="project wheel to install on guests (default: build one)")
        p.add_argument("--wheelhouse", type=Path,
                       help="ready wheelhouse for the guests (project wheel, pytest's wheels, requirements.txt)")
        p.add_argument("--run-id", help="run id (default: UTC time + random suffix)")
        p.add_argument("--shard", help="i/n: run only the i-th of n deterministic slices of the matrix")
        p.add_argument("--parallel", type=int, help="guests at once (default: run.parallelism)")
        p.add_argument("--artifact-dir", type=Path, help="default: run.artifact_dir from the config")
        p.add_argument("--no-preflight", action="store_true", help="skip the pre-flight check")
        p.add_argument("--progress-interval", type=float, default=15.0,
                       help="seconds between status lines (0: only on changes)")
        if name == "gate":
            p.add_argument("--baseline", type=Path, required=True,
                           help="results.json / verdict.json of the reference run, or its directory")
        p.set_defaults(fn=cmd_run, mode=name)

    p = sub.add_parser("janitor", help="destroy clones a crashed run left behind (by run id or expiry)")
    _config(p)
    p.add_argument("--run-id", help="also destroy every clone of this run, expired or not")
    p.add_argument("--dry-run", action="store_true", help="list what would be destroyed")
    p.set_defaults(fn=cmd_janitor)

    p = sub.add_parser("demo", help="start vcsim and two stand-in guests, run nightly then gate, print the reports")
    p.add_argument("--out", type=Path, default=Path("wfp-lab-demo"), help="where the config and reports go")
    p.add_argument("--keep", action="store_true", help="keep the stand-ins' working files")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("merge", help="combine the reports of several shards")
    p.add_argument("--out", type=Path, required=True, help="directory for the merged reports")
    p.add_argument("runs", nargs="+", type=Path, help="run directories (or their results.json)")
    p.set_defaults(fn=cmd_merge)


def _config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, required=True, help="lab config (TOML)")


def _load(path: Path):
    from harness.vm.config import ConfigError, load_config
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"wfp-harness lab: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _infra(e) -> int:
    print(f"wfp-harness lab: {e}", file=sys.stderr)
    return 3


def cmd_preflight(args) -> int:
    from harness.vm.errors import InfrastructureError
    from harness.vm.vsphere import VSphere
    lab = _load(args.config)
    try:
        with VSphere(lab) as vs:
            rep = vs.preflight()
            d = rep.to_dict()
            # Test signing is a guest setting; templates publish it at build
            # time (guestinfo), and every clone is checked again at run time.
            for t, g in zip(d["templates"], lab.guests):
                ts = None
                if t["found"]:
                    try:
                        ts = vs.extra_config(vs.template(g)).get("guestinfo.wfp.testsigning")
                    except InfrastructureError:
                        ts = None
                t["test_signing"] = ts or "unknown (checked on every clone at run time)"
    except InfrastructureError as e:
        return _infra(e)
    if args.json:
        print(json.dumps(d, indent=1))
    else:
        print(f"vCenter {d['vcenter_url']}: {d['vcenter_version']} (API {d['api_version']}), TLS {d['tls']}")
        print(f"datastore {d['datastore']}: {d['datastore_free_gb']} GB free of {d['datastore_capacity_gb']} GB "
              f"(minimum {d['min_free_gb']:g})")
        for t in d["templates"]:
            state = "OK" if not t["problems"] else "PROBLEM"
            print(f"  {state:<8} {t['guest']:<14} template {t['template']} found={t['found']} "
                  f"snapshot {t['snapshot']} found={t['snapshot_found']} firmware={t['firmware']} "
                  f"secure_boot={t['secure_boot']} test_signing={t['test_signing']}")
            for prob in t["problems"]:
                print(f"           - {prob}")
        for prob in d["problems"]:
            print(f"  PROBLEM  {prob}")
        print("pre-flight " + ("OK" if rep.ok else "FAILED"))
    return 0 if rep.ok else 3


def cmd_run(args) -> int:
    from harness.vm.errors import HarnessError
    from harness.vm.orchestrator import Orchestrator, RunOptions
    from harness.vm.report import parse_shard
    lab = _load(args.config)
    try:
        shard = parse_shard(args.shard) if args.shard else None
        opts = RunOptions(mode=args.mode, driver=args.driver, driver_service=args.driver_service,
                          wheel=args.wheel, wheelhouse=args.wheelhouse, run_id=args.run_id, shard=shard, parallelism=args.parallel,
                          artifact_dir=args.artifact_dir, baseline=getattr(args, "baseline", None),
                          preflight=not args.no_preflight, progress_interval=args.progress_interval)
        orch = Orchestrator(lab, opts)
    except ValueError as e:
        # A usage error: one line, nothing started.
        print(f"wfp-harness lab {args.mode}: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    try:
        out = orch.run()
    except HarnessError as e:
        print(f"wfp-harness lab {args.mode}: {e}", file=sys.stderr)
        return 4
    print(f"run {out.run_id}: exit {out.exit_code}; report {out.run_dir / 'report.md'}")
    if out.verdict is not None:
        print(f"verdict: {out.verdict['verdict'].upper()} ({out.run_dir / 'verdict.json'})")
        for r in out.verdict["reasons"]:
            print(f"  - {r}")
    return out.exit_code


def cmd_janitor(args) -> int:
    from harness.vm.errors import InfrastructureError
    from harness.vm.vsphere import VSphere
    lab = _load(args.config)
    try:
        with VSphere(lab) as vs:
            rep = vs.janitor(run_id=args.run_id, dry_run=args.dry_run)
    except InfrastructureError as e:
        return _infra(e)
    verb = "would destroy" if args.dry_run else "destroyed"
    for n in rep.destroyed:
        print(f"{verb} {n}")
    for n, err in rep.failed.items():
        print(f"FAILED {n}: {err}")
    print(f"janitor: {verb} {len(rep.destroyed)}, kept {len(rep.kept)}, failed {len(rep.failed)}")
    return 3 if rep.failed else 0


def cmd_demo(args) -> int:
    from harness.vm.demo import DemoError, run_demo
    try:
        return run_demo(args.out, keep=args.keep)
    except DemoError as e:
        print(f"wfp-harness lab demo: {e}", file=sys.stderr)
        return 2


def cmd_merge(args) -> int:
    from harness.vm.report import merge_runs
    try:
        merged = merge_runs(args.runs, args.out)
    except (OSError, ValueError) as e:
        print(f"wfp-harness lab merge: {e}", file=sys.stderr)
        return 2
    print(f"merged {len(merged['shards'])} shard(s), {len(merged['guests'])} guest(s) into {args.out}")
    bad = [g for g in merged["guests"] if g["status"] != "passed"]
    return 1 if any(g["status"] == "failed" for g in bad) else 3 if bad else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="wfp-harness")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
