"""Differential replay: record C-shaped calls as a trace, replay them on another target, diff.

    from harness.replay import recording, replay, load_trace
    with recording(sim.SimulatedWinsock("documented")) as api:
        ...                                   # any code written against WinsockApi
    result = replay(api.trace, sim.SimulatedWinsock("windows-observed"))
    print(result.format())                    # first divergence and all divergences

Observed profiles: `probe_profile(api_factory)` answers each decision point
by experiment and writes a profile file (harness.replay.probes).

Commands (registered into `wfp-harness` by `register`):

    wfp-harness trace record -o FILE [--target sim] [--profile P] [-- pytest args]
    wfp-harness trace replay FILE [--target sim] [--profile P]
    wfp-harness profile probe -o FILE [--target sim] [--profile P]
    wfp-harness profile diff A B
"""
from .recorder import RecordingApi, recording
from .replayer import Divergence, ReplayResult, replay
from .trace import Trace, TraceError
from .trace import load as load_trace
from .trace import loads as loads_trace

__all__ = ["RecordingApi", "recording", "replay", "ReplayResult", "Divergence", "Trace", "TraceError",
           "load_trace", "loads_trace", "register", "probe_profile", "diff_profiles"]


def register(subparsers) -> None:
    from .cli import register as _register
    _register(subparsers)


def __getattr__(name):
    if name in ("probe_profile", "diff_profiles", "ProbeResult", "PROBES"):
        from . import probes
        return getattr(probes, name)
    raise AttributeError(name)
