"""`wfp-harness trace ...` and `wfp-harness profile probe|diff`.

    wfp-harness trace record -o FILE [--target sim] [--profile P] [-- pytest args]
    wfp-harness trace replay FILE [--target sim] [--profile P] [--last-error failure|always|never] [--json]
    wfp-harness profile probe -o FILE [--target sim] [--profile P] [--name N] [--inherit windows-observed]
    wfp-harness profile diff A B

Exit status: trace replay 0 identical, 1 diverged; profile diff 0 identical,
1 different; 2 for bad input (a malformed trace or profile: a one-line
error naming the file, line and field).
"""
from __future__ import annotations

import argparse
import json
import sys

import pytest

from harness.targets import TARGETS as TARGET_NAMES
from harness.wording import plural

from .recorder import RecordingApi
from .trace import Trace, TraceError, make_header

def _fail(message: str) -> int:
    print(f"wfp-harness: {message}", file=sys.stderr)
    return 2


def _profile(name):
    """(Profile, None) or (None, exit code 2 after a one-line error)."""
    from sim.profiles import ProfileError, load
    try:
        return load(name), None
    except ProfileError as exc:
        return None, _fail(str(exc))


def _options(args) -> dict:
    return {"agent_command": getattr(args, "agent_command", None)}


def _check_target(target, options=None):
    from harness import targets
    try:
        targets.check(target, options)
    except targets.TargetError as exc:
        return _fail(str(exc))
    return None


def api_factory(target: str, profile, options=None):
    """A no-argument callable making a fresh provider for `target` (harness.targets.make_api)."""
    from harness import targets
    return lambda: targets.make_api(target, profile, options)


# --- trace record -------------------------------------------------------------------------

class TraceRecorderPlugin:
    """A pytest plugin object: wraps every `api` fixture value in a RecordingApi.

    Pass it to pytest.main(..., plugins=[TraceRecorderPlugin(trace)]); each
    test becomes one session of `trace`, named by its node id. No change to
    harness.pytest_plugin is needed: the hook replaces the fixture's value
    after the plugin's own `api` fixture made it.
    """

    def __init__(self, trace: Trace, argname: str = "api"):
        self.trace = trace
        self.argname = argname
        self.sessions = 0

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        result = yield
        if fixturedef.argname != self.argname or result is None or isinstance(result, RecordingApi):
            return result
        rec = RecordingApi(result, self.trace, session=request.node.nodeid)
        if request.node.get_closest_marker("sim_only"):
            # World controls (a host's port range, faults) are not calls: no replay reproduces the case.
            self.trace.steps[-1]["sim_only"] = True
        cached = fixturedef.cached_result
        if cached is not None and cached[0] is result:
            fixturedef.cached_result = (rec, *cached[1:])
        self.sessions += 1
        return rec


def cmd_record(args) -> int:
    bad = _check_target(args.target, _options(args))
    if bad:
        return bad
    from harness import targets
    args.profile = args.profile or targets.default_profile(args.target)
    profile, bad = _profile(args.profile)
    if bad:
        return bad
    trace = Trace(make_header(args.target, profile.name, targets.os_build(args.target, _options(args))))
    plugin = TraceRecorderPlugin(trace)
    argv = ["--pyargs", "harness.conformance", "--target", args.target, "--profile", args.profile,
            "-q", "-p", "no:cacheprovider", *args.pytest_args]
    if args.agent_command:
        argv[4:4] = ["--agent-command", args.agent_command]
    code = pytest.main(argv, plugins=[plugin])
    if code == pytest.ExitCode.USAGE_ERROR:
        return _fail("trace record: pytest refused the arguments passed on to it (above); no trace written")
    if plugin.sessions == 0:
        # An empty trace would replay as "identical" anywhere: write none.
        print(f"wfp-harness: trace record: no test ran (pytest exit {int(code)}); no trace written",
              file=sys.stderr)
        return int(code) or 1
    trace.dump(args.output)
    calls = sum(1 for s in trace.steps if s.get('op') == 'call')
    print(f"trace: {plural(plugin.sessions, 'test')}, {plural(len(trace.steps), 'step')}, "
          f"{plural(calls, 'call')} -> {args.output}")
    return int(code)


# --- trace replay ---------------------------------------------------------------------------

def cmd_replay(args) -> int:
    from .classify import classify, format_classified
    from .replayer import replay
    from .trace import load
    try:
        trace = load(args.file)
    except TraceError as exc:
        return _fail(str(exc))
    bad = _check_target(args.target, _options(args))
    if bad:
        return bad
    profile, bad = _profile(args.profile or _default_profile(trace))
    if bad:
        return bad
    from harness.agent.protocol import AgentError
    try:
        factory = api_factory(args.target, profile, _options(args))
        result = replay(trace, factory, last_error=args.last_error)
    except (OSError, AgentError) as exc:     # e.g. an agent that cannot start
        return _fail(f"--target {args.target}: {str(exc).splitlines()[0]}")
    if args.json:
        print(json.dumps({"identical": result.identical, "calls": result.calls, "skipped": result.skipped,
                          "polls": result.polls,
                          "divergences": [{**d.to_dict(), "known": dev.differs if dev else None}
                                          for d, dev in classify(result, args.target)]},
                         indent=2, default=str))
    else:
        print(f"replay of {args.file} (recorded on {trace.header['target']}/{trace.header['profile']}) "
              f"on {args.target}/{profile.name}")
        print(result.format())
        if not result.identical and args.target != "sim":
            print(format_classified(classify(result, args.target)))
    return 0 if result.identical else 1


def _default_profile(trace: Trace) -> str:
    from sim.profiles import BUILTIN
    name = trace.header.get("profile", "")
    return name if name in BUILTIN else "documented"


# --- profile probe / diff --------------------------------------------------------------------

def cmd_probe(args) -> int:
    from .probes import CRASHY, probe_profile
    bad = _check_target(args.target, _options(args))
    if bad:
        return bad
    from harness import targets
    profile, bad = _profile(args.profile or targets.default_profile(args.target))
    if bad:
        return bad
    simulated = args.target == "sim"
    # The simulator's unprobed answers are those of the profile it ran under; a real target's come from
    # what Windows was seen to do.
    parent, bad = _profile(args.inherit or (profile.name if simulated else "windows-observed"))
    if bad:
        return bad
    redirected = None
    options = _options(args)
    try:
        capabilities = targets.capabilities(args.target, options)
    except targets.TargetError as exc:
        return _fail(str(exc))
    if "requires_redirect" in capabilities:
        redirected = lambda: targets.redirected(args.target, profile, options=options)     # noqa: E731
    build = targets.os_build(args.target, options)
    try:
        result = probe_profile(api_factory(args.target, profile, options), redirected, target=args.target, os_build=build,
                               skip=CRASHY if not simulated else (), source_profile=profile if simulated else None)
    except OSError as exc:
        return _fail(f"--target {args.target}: {exc}")
    name = args.name or (f"sim-{profile.name}-probed" if simulated else f"observed-{args.target}")
    path = result.write_toml(args.output, name, inherit=parent.name, description=args.description or "",
                             source=args.source or "")
    found = "probed on the simulator (provenance kept from " + profile.name + ")" if simulated else "observed"
    print(f"{path}: {plural(len(result.answers), 'decision point')} {found}, {len(result.unmatched)} unmatched, "
          f"{len(result.not_probed)} not probed (inherited from {parent.name})")
    for key, obs in result.answers.items():
        print(f"  {key:<32} {obs.value}")
    for key, ev in result.unmatched.items():
        print(f"  {key:<32} UNMATCHED: {ev}")
    return 0


def cmd_diff(args) -> int:
    from .probes import diff_profiles
    a, bad = _profile(args.a)
    if bad:
        return bad
    b, bad = _profile(args.b)
    if bad:
        return bad
    rows = diff_profiles(a, b)
    if not rows:
        print(f"{a.name} and {b.name} agree on every decision point")
        return 0
    print(f"{plural(len(rows), 'decision point')} {'differs' if len(rows) == 1 else 'differ'} between "
          f"{a.name} and {b.name}:")
    for key, x, y in rows:
        print(f"{key}")
        print(f"    {a.name:<24} {x.value:<22} {x.provenance:<10} {x.source}")
        print(f"    {b.name:<24} {y.value:<22} {y.provenance:<10} {y.source}")
    return 1


# --- registration ------------------------------------------------------------------------------

def register(subparsers) -> None:
    p = subparsers.add_parser("trace", help="record C-shaped call traces and replay them on another target")
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("record", help="record a conformance run as a trace (one session per test)")
    r.add_argument("-o", "--output", required=True, help="the trace file to write (JSON Lines)")
    r.add_argument("--target", default="sim", help="where the calls go: " + ", ".join(TARGET_NAMES))
    r.add_argument("--agent-command", help="--target agent: the command that starts the winsock-agent")
    r.add_argument("--profile", default=None, help="profile name or file (default: the target's; documented "
                                                   "on sim)")
    r.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: passed to pytest (e.g. -k wait)")
    r.set_defaults(fn=cmd_record)
    r = sub.add_parser("replay", help="replay a trace on a target and print where it diverges "
                                      "(exit 0 identical, 1 diverged, 2 bad file)")
    r.add_argument("file", help="a trace written by `trace record`")
    r.add_argument("--target", default="sim", help="where the calls go: " + ", ".join(TARGET_NAMES))
    r.add_argument("--agent-command", help="--target agent: the command that starts the winsock-agent")
    r.add_argument("--profile", default=None, help="profile for a sim target (default: the trace's own)")
    r.add_argument("--last-error", choices=("failure", "always", "never"), default="failure",
                   help="compare the last error after failing calls (default), every call, or never")
    r.add_argument("--json", action="store_true", help="print the divergences as JSON")
    r.set_defaults(fn=cmd_replay)

    group = subparsers.choices.get("profile")
    # harness/cli.py leaves the `profile` group's subparsers in its defaults for us.
    psub = group.get_default("_subparsers") if group is not None else None
    if psub is None:
        group = subparsers.add_parser("profile", help="show, probe and diff behaviour profiles")
        psub = group.add_subparsers(dest="action", required=True)
    pr = psub.add_parser("probe", help="answer each decision point by experiment on a target; write "
                                                        "the answers as a profile")
    pr.add_argument("-o", "--output", required=True, help="the profile file to write (.toml)")
    pr.add_argument("--target", default="sim", help="where the calls go: " + ", ".join(TARGET_NAMES))
    pr.add_argument("--agent-command", help="--target agent: the command that starts the winsock-agent")
    pr.add_argument("--profile", default=None, help="profile of a sim target (default: the target's; documented "
                                                    "on sim)")
    pr.add_argument("--name", help="the written profile's name (default: observed-TARGET; sim-PROFILE-probed "
                                   "for the simulator)")
    pr.add_argument("--description", help="the written profile's description (default: observed on TARGET)")
    pr.add_argument("--source", help="what the answers were observed on, the start of each answer's source "
                                     "(e.g. \"wine-8.0 ws2_32\"; default: the target and its OS build)")
    pr.add_argument("--inherit", default=None,
                    help="parent profile for the points not probed (default: the profile a sim target runs "
                         "under; windows-observed for a real target)")
    pr.set_defaults(fn=cmd_probe)
    d = psub.add_parser("diff", help="decision points where two profiles differ (exit 0 same, 1 differ, 2 bad file)")
    d.add_argument("a", help="profile name or file")
    d.add_argument("b", help="profile name or file")
    d.set_defaults(fn=cmd_diff)
