"""Test Windows Filtering Platform connect-redirect drivers and their proxies: a simulated Windows, a
conformance suite for any Winsock target, call traces, behaviour profiles, packet evidence, a VM lab.

    wfp-harness conformance [--target sim] [--profile documented] [--junitxml FILE] [--format text|html]
                            [-- pytest args]
    wfp-harness fidelity [--format text|markdown|json]
    wfp-harness profile show NAME|FILE

Bad input (an unknown target, a malformed profile) gets a one-line error
naming the file, line and field, and exit code 2.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

import pytest

from harness import targets
from harness.input_error import InputError
from harness.wording import plural


def _load_profile(name):
    from sim.profiles import ProfileError, load
    try:
        return load(name)
    except ProfileError as exc:
        print(f"wfp-harness: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


class _Collector:
    """pytest plugin object: keeps each test's outcome and prints the report at the end of pytest's summary,
    so pytest's last line ("55 passed, 248 deselected in 1.19s") is the run's one elapsed time."""

    def __init__(self, profile, target, junit, deviations=None, selection=()):
        self.profile, self.target, self.junit, self.deviations = profile, target, junit, deviations
        self.selection = list(selection)
        self.results = {}
        self.skips = collections.Counter()
        self.notes = []                      # lines the command adds at the end of the report

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":
            if hasattr(report, "wasxfail"):          # a known deviation that still deviates
                self.results[report.nodeid] = "xfailed"
                return
            if report.skipped:
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
                self.skips[reason.removeprefix("Skipped: ")] += 1
            self.results[report.nodeid] = report.outcome if report.when == "call" or report.skipped else "error"

    def pytest_configure(self, config):
        # The JUnit file says when it holds a selection rather than the whole suite
        # (recorded by harness.pytest_plugin's testsuite properties).
        config._wfp_selection = " ".join(self.selection)

    def pytest_terminal_summary(self, terminalreporter):
        for line in report_lines(self, self.profile, self.target, self.junit, self.deviations, self.notes):
            terminalreporter.write_line(line)


def default_junit(target: str, profile_name: str, selection) -> Path:
    """The whole suite's results go to one file per target and profile; a selection (any pytest
    arguments) gets a file of its own, so it never overwrites the whole run's results."""
    suffix = "-selection" if selection else ""
    return Path(f"reports/conformance-{target}-{profile_name}{suffix}.xml")


def cmd_conformance(args) -> int:
    args.profile = args.profile or targets.default_profile(args.target)
    profile = _load_profile(args.profile)
    options = {"agent_command": args.agent_command}
    try:
        targets.check(args.target, options)
    except targets.TargetError as exc:
        print(f"wfp-harness: {exc}", file=sys.stderr)
        return 2
    from harness.conformance.deviations import DeviationError, load_target
    try:
        deviations = load_target(args.target)
    except DeviationError as exc:
        print(f"wfp-harness: {exc}", file=sys.stderr)
        return 2
    junit = Path(args.junitxml) if args.junitxml else default_junit(args.target, profile.name, args.pytest_args)
    junit.parent.mkdir(parents=True, exist_ok=True)
    page = junit.with_suffix(".html") if args.format == "html" else None
    collector = _Collector(profile, args.target, junit, deviations, args.pytest_args)
    if args.pytest_args and not args.junitxml:
        collector.notes.append(f"  (a selection: the whole suite's results, {default_junit(args.target, profile.name, ())}"
                               ", are left as they were)")
    if page is not None:
        collector.notes.append(f"  HTML report: {page}")
    argv = ["--pyargs", "harness.conformance", "--target", args.target, "--profile", args.profile,
            f"--junitxml={junit}", "-q", "-p", "no:cacheprovider", *args.pytest_args]
    if args.agent_command:
        argv[4:4] = ["--agent-command", args.agent_command]
    code = pytest.main(argv, plugins=[collector])
    if code == pytest.ExitCode.USAGE_ERROR:
        print("wfp-harness conformance: pytest refused the arguments passed on to it (above)", file=sys.stderr)
        return 2
    if page is not None and junit.exists():
        from harness.run_report import read_run, to_html
        from harness.traceability import load as load_statements
        page.write_text(to_html(read_run(junit), load_statements(), profile, deviations), encoding="utf-8")
    return int(code)


def report_lines(collector, profile, target, junit, deviations=None, notes=()) -> list:
    """The text report of a conformance run (its time is pytest's own summary line, just below)."""
    by_area = collections.defaultdict(collections.Counter)
    for nodeid, outcome in collector.results.items():
        area = nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")
        by_area[area][outcome] += 1
    totals = collections.Counter(o for o in collector.results.values())
    prov = collections.Counter(a.provenance for a in profile.assignments.values())
    out = ["", "=" * 72, f"Conformance report: target {target}, profile {profile.name}",
           "  profile decisions: " + ", ".join(f"{n} {k}" for k, n in sorted(prov.items()))]
    columns = ("passed", "failed", "xfailed", "skipped", "error")
    out.append(f"  {'area':<28}" + "".join(f"{'errors' if c == 'error' else c:>9}" for c in columns))
    for area in sorted(by_area):
        out.append(f"  {area:<28}" + "".join(f"{by_area[area][c]:>9}" for c in columns))
    out.append(f"  {'total':<28}" + "".join(f"{totals[c]:>9}" for c in columns))
    failed = [n for n, o in collector.results.items() if o in ("failed", "error")]
    out += [f"  FAILED {nodeid}" for nodeid in failed[:50]]
    if len(failed) > 50:
        out.append(f"  ... and {plural(len(failed) - 50, 'more failure')}")
    for reason, count in collector.skips.most_common(10):
        out.append(f"  skipped {plural(count, 'case')}: {reason}")
    if deviations is not None:
        out += _deviation_lines(collector, target, deviations)
    out.append(f"  JUnit: {junit}")
    out += list(notes)
    out.append("=" * 72)
    return out


def _deviation_lines(collector, target, deviations) -> list:
    """The reviewed list of the target's known deviations, with what each covered in this run."""
    out = [f"  known {target} deviations ({len(deviations)}, {deviations.path.name}; xfail strict):"]
    for dev in deviations:
        covered = collections.Counter(o for n, o in collector.results.items() if dev.matches(n))
        seen = ", ".join(f"{v} {k}" for k, v in sorted(covered.items())) or "not run"
        out += [f"    - {dev.differs}", f"      {dev.kind}: {dev.wine}", f"      cases: {seen}"]
    return out


def cmd_fidelity(args) -> int:
    from sim.decision_points import DECISIONS
    from sim.profiles import BUILTIN
    profiles = [_load_profile(n) for n in BUILTIN] + [_load_profile(p) for p in args.profile or []]
    rows = []
    for name, dp in DECISIONS.items():
        rows.append({"decision": name, "area": dp.area, "question": dp.question,
                     "profiles": {p.name: {"value": p.assignments[name].value,
                                           "means": dp.choices[p.assignments[name].value],
                                           "provenance": p.assignments[name].provenance,
                                           "source": p.assignments[name].source} for p in profiles}})
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if args.format == "markdown":
        head = "| decision | question | " + " | ".join(p.name for p in profiles) + " |"
        print(head)
        print("|" + "---|" * (2 + len(profiles)))
        for r in rows:
            cells = [f"`{v['value']}` ({v['provenance']}: {v['source']})" for v in r["profiles"].values()]
            print(f"| {r['decision']} | {r['question']} | " + " | ".join(cells) + " |")
        return 0
    for r in rows:
        print(f"{r['decision']}  [{r['area']}]")
        print(f"    {r['question']}")
        for pname, v in r["profiles"].items():
            print(f"    {pname:<18} {v['value']:<22} {v['provenance']:<10} {v['source']}")
    counts = {p.name: collections.Counter(a.provenance for a in p.assignments.values()) for p in profiles}
    print()
    for pname, c in counts.items():
        print(f"{pname}: " + ", ".join(f"{n} {k}" for k, n in sorted(c.items())))
    return 0


def cmd_profile(args) -> int:
    profile = _load_profile(args.name)
    print(f"{profile.name}: {profile.description}")
    for key, a in profile.assignments.items():
        print(f"  {key:<32} {a.value:<22} {a.provenance:<10} {a.source}")
    return 0


def main(argv=None) -> int:
    """Run a command. Bad input in a file is one line and exit 2; a reader that went away
    (`| head`) ends the output quietly with the status a shell gives a broken pipe (141)."""
    try:
        code = _run(argv)
        sys.stdout.flush()                  # inside the try: a closed pipe is seen here, not at exit
        return code
    except InputError as exc:
        print(f"wfp-harness: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit
        return 141


def _run(argv) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "pytest_args"):
        # Commands that run pytest pass on what they do not know (`conformance -k overlapped`);
        # `--` still separates explicitly.
        rest = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
        args.pytest_args = extra + rest
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.fn(args)


class OneLineParser(argparse.ArgumentParser):
    """Bad options get one line (what is wrong, and where help is) and exit 2, like bad files."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Every command and option of wfp-harness (the other parts register theirs)."""
    from harness import __version__
    parser = OneLineParser(prog="wfp-harness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"wfp-harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("conformance", help="run the conformance suite against a target and report "
                                           "the results (text, or also an HTML page)")
    p.add_argument("--target", default="sim", help="where the calls go: " + ", ".join(targets.TARGETS))
    p.add_argument("--agent-command", help="--target agent: the command that starts the winsock-agent")
    p.add_argument("--profile", default=None,
                   help="profile name or file (default: the target's, harness.targets.default_profile: "
                        "documented; wine-8.0 for --target wine)")
    p.add_argument("--junitxml", help="where to write JUnit XML (default: reports/conformance-TARGET-PROFILE.xml; "
                                      "a selection, i.e. any pytest arguments: ...-selection.xml)")
    p.add_argument("--format", choices=("text", "html"), default="text",
                   help="text (default) prints the report; html also writes it as a page beside the JUnit file")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: passed to pytest")
    p.set_defaults(fn=cmd_conformance)
    p = sub.add_parser("fidelity", help="list every decision point with each profile's answer, "
                                        "provenance and source")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                   help="text (default), markdown or json")
    p.add_argument("--profile", action="append", help="also show this profile file")
    p.set_defaults(fn=cmd_fidelity)
    p = sub.add_parser("profile", help="show, probe (by experiment on a target) and diff behaviour profiles")
    psub = p.add_subparsers(dest="action", required=True)
    p.set_defaults(_subparsers=psub)        # other modules add `profile` subcommands (harness.replay)
    show = psub.add_parser("show", help="print a profile's answers")
    show.add_argument("name", help="a built-in profile's name or a profile file")
    show.set_defaults(fn=cmd_profile)
    # Commands of other parts register themselves (lab orchestration, packet evidence).
    for module in ("sim.worlds.cli", "harness.vm.cli", "harness.capture.cli", "harness.traceability",
                   "harness.replay"):
        try:
            register = __import__(module, fromlist=["register"]).register
        except ModuleNotFoundError as exc:
            if not (exc.name and module.startswith(exc.name)):
                raise          # a missing dependency inside the module is a real error
            continue
        register(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
