"""The whole conformance trace, recorded on the simulator under the wine-8.0 profile (every decision
point answered as Wine does), replayed on Wine's ws2_32 through the winsock-agent: each divergence
must be classified (harness/replay/classify.py: a known Wine deviation of
harness/conformance/wine-deviations.toml, by the case that shows it or by its `replay` signatures).
The replay compares ports the system chose, the local address routing picked and host-valued option
defaults by order of appearance (ports.py, hostvalues.py), address buffers up to the returned length
(names.py, msgname.py), the bytes a call defines only (undefined.py), what pending operations write
once both sides are done (settle.py, asyncwrites.py), polling loops where they end (polls.py), and
leaves out the cases it cannot replay (sim_only, simulated threads), counted. About two minutes.
"""
import subprocess
import sys

from harness.replay import load_trace, replay
from harness.replay.classify import classify, format_classified
from harness import targets


def test_conformance_trace_replays_on_wine_with_every_divergence_classified(wine_available, tmp_path):
    path = tmp_path / "conformance.trace"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "trace", "record", "-o", str(path),
                           "--profile", "wine-8.0"], capture_output=True, text=True, timeout=600)
    assert path.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    trace = load_trace(path)
    sessions = [s for s in trace.steps if s["op"] == "session"]
    assert len(sessions) > 500, len(sessions)            # the whole suite, not a selection
    result = replay(trace, lambda: targets.make_api("wine", "wine-8.0"))
    pairs = classify(result, "wine")
    assert result.calls > 6000 and len(result.skipped) < 10, (result.calls, result.skipped)
    assert all(dev is not None for _, dev in pairs), format_classified(pairs)
