"""Malformed profiles and traces: one line naming the file, exit 2, never a traceback.

Hypothesis mutates the shipped profiles and a recorded trace (truncation, byte
flips, splices, type swaps, nesting) and runs the commands that load them in
this process. Each run either succeeds or fails with exit 2 and a single line
that names the file, and stays within a memory bound.
"""
from __future__ import annotations

import contextlib
import io
import json
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import sim
from harness import cli
from harness.replay import recording
from harness.replay.trace import Trace, make_header

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted((ROOT / "sim" / "profiles").glob("*.toml"))
MEMORY_BOUND = 64 << 20          # bytes a load may allocate at its peak


@pytest.fixture(scope="module")
def trace_text(tmp_path_factory) -> str:
    """A small real trace: a few calls on the simulator, recorded."""
    from harness.winsock import constants as C
    trace = Trace(make_header("sim", "documented"))
    with recording(sim.SimulatedWinsock(), trace, session="fuzz") as api:
        s = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
        out, n = api.memory.alloc(4), api.memory.alloc(4)
        api.WSAIoctl(s, C.FIONREAD, 0, 0, out, 4, n, 0, 0)
        api.WSAIoctl(s, 0xDEADBEEF, 0, 0, 0, 0, n, 0, 0)
        api.closesocket(s)
    return trace.dumps()


def _run(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as exc:          # argparse and pytest.exit paths
            code = exc.code
    return code, err.getvalue()


def _check(argv, path: Path, ok_codes=(0,)):
    tracemalloc.start()
    try:
        code, err = _run(argv)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "Traceback" not in err
    assert peak < MEMORY_BOUND
    if code not in ok_codes:
        assert code == 2, (code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("wfp-harness: ") and str(path) in lines[0], err


def _mutations(data: bytes):
    n = len(data)
    position = st.integers(0, max(n - 1, 0))
    return st.one_of(
        position.map(lambda i: data[:i]),                                               # truncation
        st.tuples(position, st.integers(1, 255)).map(                                   # byte flip
            lambda t: data[:t[0]] + bytes([data[t[0]] ^ t[1]]) + data[t[0] + 1:] if n else data),
        st.tuples(position, position, position).map(                                   # splice
            lambda t: data[:t[0]] + data[min(t[1], t[2]):max(t[1], t[2])] + data[t[0]:]),
        st.tuples(position, st.sampled_from([b'"x"', b"[]", b"{}", b"1e999", b"true", b"-1", b"[[[[[[",
                                             b"9" * 5000, b"\xff\xfe", b"null", b"{\"a\":"])).map(
            lambda t: data[:t[0]] + t[1] + data[t[0]:]),                                # type swaps
        st.integers(1, 3000).map(lambda k: b"[" * k + data + b"]" * k),                 # nesting
    )


@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
def test_mutated_profiles_get_one_line_or_load(profile, tmp_path_factory):
    data = profile.read_bytes()

    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(_mutations(data))
    def run(mutated):
        path = tmp_path_factory.mktemp("p") / "mutated.toml"
        path.write_bytes(mutated)
        _check(["profile", "show", str(path)], path)
    run()


def test_mutated_traces_get_one_line_or_replay(trace_text, tmp_path_factory):
    data = trace_text.encode()

    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(_mutations(data))
    def run(mutated):
        path = tmp_path_factory.mktemp("t") / "mutated.jsonl"
        path.write_bytes(mutated)
        _check(["trace", "replay", str(path), "--target", "sim"], path, ok_codes=(0, 1))   # 1: diverged
    run()


@pytest.mark.parametrize("step, field", [
    ({"op": "call", "fn": ["socket"], "args": [2, 1, 6], "ret": 1, "error": 0}, "fn"),
    ({"op": "call", "fn": "socket", "args": [2, 1, 10 ** 30], "ret": 1, "error": 0}, "args[2]"),
    ({"op": "alloc", "size": 4, "prot": "rw", "result": ["alloc", 0, 0], "completions": []}, "completions"),
    ({"op": "call", "fn": "socket", "args": [2, 1, 6], "ret": 1, "error": 0, "ext": "yes"}, "ext"),
])
def test_each_known_trace_fault_names_its_field(trace_text, tmp_path, step, field):
    lines = trace_text.splitlines()
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([lines[0], json.dumps({"op": "session", "name": "x"}), json.dumps(step)]) + "\n")
    code, err = _run(["trace", "replay", str(path), "--target", "sim"])
    assert code == 2 and err.strip() == err.strip().splitlines()[0]
    assert f"{path}:3: {field}:" in err


@pytest.mark.parametrize("text, fragment", [
    (b"\xff\xfe bad", ":1: file: not UTF-8"),
    (b'name = "x"\n[decisions.sio_flush]\nvalue = [1]\nprovenance = "assumed"\nsource = "x"\n',
     ":3: decisions.sio_flush.value: list is not one of"),
    (b'name = "x"\nv = ' + b"[" * 2000 + b"]" * 2000 + b"\n", ": syntax: nested too deeply"),
])
def test_each_known_profile_fault_names_its_field(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_bytes(text)
    code, err = _run(["profile", "show", str(path)])
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1


def test_an_inherit_cycle_through_files_is_refused(tmp_path):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text(f'name = "a"\ninherit = "{b}"\n')
    b.write_text(f'name = "b"\ninherit = "{a}"\n')
    code, err = _run(["profile", "show", str(a)])
    assert code == 2 and "inherit" in err and "cycle" in err


def test_an_unknown_inherited_profile_names_the_inheriting_file(tmp_path):
    """Found by the mutation test: `inherit = "eocumented"` answered with the parent's name only."""
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\n\ninherit = "eocumented"\n', encoding="utf-8")
    code, err = _run(["profile", "show", str(path)])
    assert code == 2 and err.strip() == (f"wfp-harness: {path}:3: inherit: 'eocumented' is neither a built-in "
                                         "profile (documented, windows-observed, wine-8.0) nor a profile file")
