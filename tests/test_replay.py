"""Differential replay: traces of C-shaped calls, replay on another target, observed profiles."""
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sim
from harness import cli
from harness.conformance import support
from harness.replay import RecordingApi, TraceError, load_trace, loads_trace, recording, replay
from harness.replay.probes import API_PROBES, PROBES, REDIRECT_PROBES, diff_profiles, probe_profile
from harness.winsock import constants as C
from harness.winsock.layouts import WSABUF
from sim.decision_points import DECISIONS
from harness import targets
from sim.profiles import BUILTIN, load, load_file

UNKNOWN = 0xDEADBEEF


def _wsabuf(api, size):
    buf = api.memory.alloc(size)
    arr = api.memory.alloc(WSABUF.size)
    api.memory.write(arr, WSABUF.pack(len=size, buf=buf))       # a pointer stored in memory
    return arr, buf


def scenario(api):
    """A run touching every kind of step: handles, pointers in memory, routines, ports, events, errors."""
    client, server, lst = support.tcp_pair(api)
    # Completion routine that itself calls the API (nested steps).
    event = api.WSACreateEvent()
    seen = []

    def on_done(err, n, ovl, flags):
        seen.append((err, n))
        api.WSASetEvent(event)
    routine = api.completion_routine(on_done)
    arr, buf = _wsabuf(api, 16)
    flags = support.dword(api, 0)
    ovl = support.overlapped(api)
    assert api.WSARecv(server, arr, 1, 0, flags.ptr, ovl, routine) == C.SOCKET_ERROR
    data = api.memory.alloc(5)
    api.memory.write(data, b"hello")
    assert api.send(client, data, 5, 0) == 5
    assert api.SleepEx(100, True) == C.WAIT_IO_COMPLETION and seen == [(0, 5)]
    # Event handles stored in memory, waited on.
    events = api.memory.alloc(8)
    api.memory.write_u64(events, event)
    assert api.WSAWaitForMultipleEvents(1, events, False, 0, False) == 0
    # A completion port: the packet carries the OVERLAPPED's address (a pointer written by the call).
    port = support.make_iocp(api, client, key=7)
    ovl2 = support.overlapped(api)
    out, n = support.Guarded(api, 4), support.dword(api)
    assert api.WSAIoctl(client, C.FIONREAD, 0, 0, out.ptr, 4, n.ptr, ovl2, 0) == 0
    assert support.dequeue(api, port)[4] == ovl2
    # Unknown code, synchronous and overlapped (the profiles disagree on the second).
    assert api.WSAIoctl(client, UNKNOWN, 0, 0, 0, 0, n.ptr, 0, 0) == C.SOCKET_ERROR
    api.WSAGetLastError()
    api.WSAIoctl(client, UNKNOWN, 0, 0, 0, 0, n.ptr, support.overlapped(api), 0)
    api.WSAGetLastError()
    support.dequeue(api, port)
    # Extension function pointer fetched into memory, then called.
    recvmsg = support.get_extension(api, server, C.WSAID_WSARECVMSG)
    api.call(recvmsg, server, 0, n.ptr, 0, 0)
    # Bad pointers and handles.
    api.WSAIoctl(client, C.FIONREAD, 0, 0, api.memory.invalid_pointer(), 4, n.ptr, 0, 0)
    api.closesocket(0xDEADBEEF)
    api.memory.free(data)
    return client, server, event


def _record(profile="documented", fn=scenario):
    with recording(sim.SimulatedWinsock(profile)) as api:
        fn(api)
    return api


# --- recording and replay -----------------------------------------------------------------

def test_record_then_replay_on_fresh_simulator_is_identical():
    rec = _record()
    trace = rec.trace
    calls = [s for s in trace.steps if s["op"] == "call"]
    assert {"WSARecv", "SleepEx", "GetQueuedCompletionStatus", "WSAWaitForMultipleEvents", "WSARecvMsg"} <= \
        {s["fn"] for s in calls}
    sleep = next(s for s in calls if s["fn"] == "SleepEx")
    [completion] = sleep["completions"]
    assert completion["args"][:2] == [0, 5] and completion["args"][2][0] == "alloc"
    assert [c["fn"] for c in completion["calls"]] == ["WSASetEvent"]      # the routine's own call, nested
    recv = next(s for s in calls if s["fn"] == "WSARecv")
    assert recv["args"][0][0] == "handle" and recv["args"][1][0] == "alloc" and recv["args"][6][0] == "routine"
    result = replay(trace, sim.SimulatedWinsock("documented"))
    assert result.identical, result.format()
    assert result.calls == len(calls) + 1 and result.first is None       # + the nested WSASetEvent


def test_trace_round_trips_through_a_file(tmp_path):
    trace = _record().trace
    path = tmp_path / "run.jsonl"
    trace.dump(path)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "wfp-harness-trace" and header["version"] == 1
    assert (header["target"], header["profile"]) == ("sim", "documented") and header["harness_version"]
    assert len(lines) == 1 + len(trace.steps)
    loaded = load_trace(path)
    assert loaded.steps == trace.steps
    assert replay(loaded, sim.SimulatedWinsock("documented")).identical


def test_replay_on_another_profile_finds_the_divergence_at_its_step():
    trace = _record("documented").trace
    expected = next(i for i, s in enumerate(trace.steps)
                    if s["op"] == "call" and s["fn"] == "WSAIoctl" and s["args"][1] == UNKNOWN and s["args"][7] != 0)
    result = replay(trace, sim.SimulatedWinsock("windows-observed"))
    assert not result.identical
    first = result.first
    assert (first.step, first.line, first.fn, first.field) == (expected, expected + 2, "WSAIoctl", "error")
    assert (first.recorded, first.replayed) == (C.WSAEOPNOTSUPP, C.WSA_IO_PENDING)
    assert "WSAEOPNOTSUPP" in first.describe() and "WSA_IO_PENDING" in first.describe()
    # Everything before the overlapped unknown code agreed; the later WSAGetLastError shows it too.
    assert all(d.step >= expected for d in result.divergences)
    assert any(d.step == expected + 1 and d.fn == "WSAGetLastError" and d.field == "ret"
               and (d.recorded, d.replayed) == (C.WSAEOPNOTSUPP, C.WSA_IO_PENDING) for d in result.divergences)


def test_divergence_in_written_bytes_and_completions_is_reported():
    """close_cancel_status differs: the routine's dwError differs (completions), so does the packet."""
    def run(api):
        _client, server, _ = support.tcp_pair(api)
        log = support.RoutineLog(api)
        arr, _buf = _wsabuf(api, 8)
        api.WSARecv(server, arr, 1, 0, support.dword(api, 0).ptr, support.overlapped(api), log.ptr)
        api.closesocket(server)
        api.SleepEx(0, True)
    trace = _record("documented", run).trace
    result = replay(trace, sim.SimulatedWinsock("windows-observed"))
    [div] = [d for d in result.divergences if d.field == "completions"]
    assert div.fn == "SleepEx"
    assert div.recorded[0][1][0] == C.WSA_OPERATION_ABORTED and div.replayed[0][1][0] == C.WSAECONNABORTED


def test_symbolic_pointers_and_handles_survive_address_and_handle_shifts():
    rec = _record()
    target = sim.SimulatedWinsock("documented")
    for _ in range(5):                                  # shift every address and handle of the target
        target.memory.alloc(3000)
        target.socket(C.AF_INET, C.SOCK_STREAM, 0)
        target.WSACreateEvent()
    before = set(target.process.handles)
    result = replay(rec.trace, target)
    assert result.identical, result.format()
    replay_handles = set(target.process.handles) - before
    assert replay_handles and not replay_handles & set(rec.symbols.handles)     # numbered differently
    [replayed] = result.symbols
    assert replayed.handles != rec.symbols.handles and len(replayed.handles) == len(rec.symbols.handles)
    assert all(a[0] != b[0] for a, b in zip(replayed.allocs, rec.symbols.allocs))   # every address moved
    # The event handle and the buffer pointer the test stored in memory were recorded as symbols.
    writes = [s for s in rec.trace.steps if s["op"] == "write" and s["syms"]]
    kinds = {sym[0] for s in writes for _, sym in s["syms"]}
    assert {"handle", "alloc"} <= kinds


def test_literal_handles_would_not_survive_the_shift():
    """Control for the test above: a trace with symbols replaced by the recorded numbers diverges."""
    rec = _record()
    trace = rec.trace
    literal = loads_trace(trace.dumps())
    for step in literal.steps:
        if step["op"] == "call":
            step["args"] = [rec.symbols.value(a) if isinstance(a, list) and a[0] == "handle" else a
                            for a in step["args"]]
    target = sim.SimulatedWinsock("documented")
    target.socket(C.AF_INET, C.SOCK_STREAM, 0)
    assert not replay(literal, target).identical


def test_recording_wrapper_is_transparent():
    """The wrapped api returns exactly what the provider returns and keeps the last error."""
    api = RecordingApi(sim.SimulatedWinsock())
    s = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
    assert s in api.inner.process.sockets
    assert api.WSAIoctl(s, UNKNOWN, 0, 0, 0, 0, support.dword(api).ptr, 0, 0) == C.SOCKET_ERROR
    assert api.WSAGetLastError() == C.WSAEOPNOTSUPP           # not disturbed by the recorder's reads
    step = [x for x in api.trace.steps if x["op"] == "call" and x["fn"] == "WSAIoctl"][0]
    assert step["error"] == C.WSAEOPNOTSUPP and step["ret"] == -1
    assert step["writes"] == [{"alloc": 0, "offset": 32, "hex": "00000000a5a5a5a5", "syms": []}]


def test_simulated_threads_are_recorded():
    def run(api):
        client, server, _ = support.tcp_pair(api)
        log = support.RoutineLog(api)
        issuer = api.new_thread("issuer")
        arr, _ = _wsabuf(api, 8)
        with api.as_thread(issuer):
            api.WSARecv(server, arr, 1, 0, support.dword(api, 0).ptr, support.overlapped(api), log.ptr)
        data = api.memory.alloc(2)
        api.send(client, data, 2, 0)
        assert api.SleepEx(20, True) == 0                     # the APC belongs to the issuer
        with api.as_thread(issuer):
            assert api.SleepEx(0, True) == C.WAIT_IO_COMPLETION
    trace = _record("documented", run).trace
    assert [s["op"] for s in trace.steps if "thread" in s["op"]] == ["thread", "enter_thread", "exit_thread",
                                                                     "enter_thread", "exit_thread"]
    assert replay(trace, sim.SimulatedWinsock()).identical


@given(st.lists(st.tuples(st.sampled_from([UNKNOWN, C.FIONREAD, C.SIO_FLUSH, C.FIONBIO,
                                           C.SIO_QUERY_WFP_CONNECTION_REDIRECT_RECORDS]),
                          st.integers(0, 12), st.booleans(), st.booleans()), min_size=1, max_size=6))
def test_hypothesis_example_recorded_through_recording_replays_identically(ops):
    def run(api):
        s = api.socket(C.AF_INET, C.SOCK_STREAM, 0)
        log = support.RoutineLog(api)
        for code, size, overlapped, routine in ops:
            out, n = support.Guarded(api, size), support.dword(api)
            inp = support.dword(api, 1)
            api.WSAIoctl(s, code, inp.ptr, 4 if code == C.FIONBIO else 0, out.ptr, size, n.ptr,
                         support.overlapped(api) if overlapped else 0, log.ptr if routine and overlapped else 0)
            api.WSAGetLastError()
        api.SleepEx(0, True)
    trace = _record("documented", run).trace
    again = loads_trace(trace.dumps())
    result = replay(again, sim.SimulatedWinsock("documented"))
    assert result.identical, result.format()
    assert result.calls == len(trace.calls)


# --- malformed traces -----------------------------------------------------------------------

HEADER = '{"format":"wfp-harness-trace","version":1,"target":"sim","profile":"documented","harness_version":"0.1.0"}'
SESSION = '{"op":"session","name":"t"}'


@pytest.mark.parametrize("text,line,field", [
    (HEADER + "\n" + SESSION + "\n{not json\n", 3, "json"),
    (HEADER + '\n{"op":"call","args":[],"ret":0,"error":0}\n', 2, "fn"),
    (HEADER.replace('"version":1', '"version":7') + "\n", 1, "version"),
    (HEADER.replace('"version":1,', '') + "\n", 1, "version"),
    (HEADER.replace('"wfp-harness-trace"', '"other"') + "\n", 1, "format"),
    (HEADER.replace('"target":"sim",', '') + "\n", 1, "target"),
    (HEADER + "\n" + SESSION + '\n{"op":"call","fn":"closesocket","args":[["handle"]],"ret":0,"error":0}\n',
     3, "args[0]"),
    (HEADER + "\n" + SESSION + '\n{"op":"call","fn":"closesocket","args":[1,2],"ret":0,"error":0}\n', 3, "args"),
    (HEADER + "\n" + SESSION + '\n{"op":"call","fn":"NtNothing","args":[],"ret":0,"error":0}\n', 3, "fn"),
    (HEADER + "\n" + SESSION + '\n{"op":"write","ptr":["alloc",0,0],"hex":"zz"}\n', 3, "hex"),
    (HEADER + "\n" + SESSION + '\n{"op":"teleport"}\n', 3, "op"),
    (HEADER + "\n" + SESSION + '\n{"op":"call","fn":"SleepEx","args":[0,1],"ret":0,"error":0,'
     '"completions":[{"routine":["routine",0],"args":[0,0,0,0],"calls":[{"op":"call","fn":"SleepEx"}]}]}\n',
     3, "completions[0].calls[0].args"),
    ("", 0, "header"),
    (HEADER + "\n[1,2]\n", 2, "line"),
])
def test_malformed_trace_names_file_line_and_field(tmp_path, capsys, text, line, field):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(TraceError) as info:
        load_trace(path)
    assert (info.value.path, info.value.line, info.value.field) == (str(path), line, field)
    assert cli.main(["trace", "replay", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and field in err
    assert (f":{line}:" in err) if line else True


def test_unreadable_trace_file(tmp_path, capsys):
    assert cli.main(["trace", "replay", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: file: cannot read" in capsys.readouterr().err


# --- the trace commands ------------------------------------------------------------------------

def test_trace_record_and_replay_commands(tmp_path, capsys):
    path = tmp_path / "conf.jsonl"
    code = cli.main(["trace", "record", "-o", str(path), "--", "-k",
                     "test_wait_any_lowest_index_and_wait_all or test_unknown_code_overlapped_port"])
    assert code == 0
    trace = load_trace(path)
    sessions = [s["name"] for s in trace.steps if s["op"] == "session"]
    assert len(sessions) == 4 and all("::" in name for name in sessions)       # one per test, by node id
    assert any(s["op"] == "call" and s["fn"] == "WSAWaitForMultipleEvents" for s in trace.steps)
    capsys.readouterr()
    assert cli.main(["trace", "replay", str(path)]) == 0
    assert "identical" in capsys.readouterr().out
    assert cli.main(["trace", "replay", str(path), "--profile", "windows-observed"]) == 1
    out = capsys.readouterr().out
    assert "first: step" in out and "WSAIoctl: error" in out and "WSA_IO_PENDING" in out
    assert cli.main(["trace", "replay", str(path), "--target", "vax"]) == 2


def test_a_simulator_only_case_is_marked_and_not_replayed(tmp_path):
    """A sim_only case (its host's port range is a world control, not a call) records as such, and a
    replay leaves it out and says so: a fresh provider has not had the controls."""
    path = tmp_path / "conf.jsonl"
    assert cli.main(["trace", "record", "-o", str(path), "--", "-k",
                     "test_ephemeral_ports_run_out and udp or test_wait_any_lowest_index_and_wait_all"]) == 0
    trace = load_trace(path)
    marked = {s["name"].rsplit("::", 1)[-1]: s.get("sim_only", False) for s in trace.steps if s["op"] == "session"}
    assert marked == {"test_ephemeral_ports_run_out[udp]": True, "test_wait_any_lowest_index_and_wait_all": False}
    profile = load("documented")
    result = replay(trace, lambda: sim.SimulatedWinsock(profile))
    assert result.identical and [n.rsplit("::", 1)[-1] for n in result.skipped] == ["test_ephemeral_ports_run_out[udp]"]
    recorded_calls = sum(1 for s in trace.steps if s["op"] == "call")
    assert 0 < result.calls < recorded_calls
    assert "1 session not replayed" in result.format()


# --- profiles: diff and probes ------------------------------------------------------------------

DIFFERING = {"unknown_ioctl_overlapped", "sio_flush", "close_cancel_status", "acceptex_short_address",
             "poll_no_valid_socket", "poll_nval_counted", "sockopt_negative_length"}


def test_profile_diff_lists_exactly_the_differing_points(capsys):
    doc, obs = load("documented"), load("windows-observed")
    rows = diff_profiles(doc, obs)
    assert {k for k, _, _ in rows} == DIFFERING
    assert {k for k in DECISIONS if doc.value(k) != obs.value(k)} == DIFFERING
    assert cli.main(["profile", "diff", "documented", "windows-observed"]) == 1
    out = capsys.readouterr().out
    listed = {line.strip() for line in out.splitlines() if line and not line.startswith(" ")}
    assert listed - {next(iter(out.splitlines()))} == DIFFERING
    assert "inline_ioctl_signals_event" not in out          # same value, other provenance: no disagreement
    assert "immediate" in out and "pending" in out and "observed" in out and "docs/windows-observed.md item 12" in out
    assert cli.main(["profile", "diff", "documented", "documented"]) == 0


def test_profile_diff_malformed_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "p"\ninherit = "documented"\n[decisions.sio_flush]\nvalue = "maybe"\n'
                   'provenance = "observed"\nsource = "s"\n')
    assert cli.main(["profile", "diff", str(bad), "documented"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{bad}:4: decisions.sio_flush.value" in err


def test_probes_cover_the_points_the_api_alone_can_answer():
    assert {"unknown_ioctl_error", "unknown_ioctl_overlapped", "sio_flush", "inline_ioctl_signals_event",
            "wait_satisfaction_order", "gqcs_bad_out_pointer", "zero_length_probe", "getoverlappedresult_null_out",
            "bad_event_at_issue", "close_cancel_status", "query_udp_socket", "query_unconnected",
            "set_after_connect", "wfp_sockopt_on_tcp", "set_bad_blob"} <= set(API_PROBES)
    assert set(PROBES) <= set(DECISIONS)


@pytest.mark.parametrize("name", BUILTIN)
def test_probes_reproduce_the_builtin_profiles(name):
    profile = load(name)
    result = probe_profile(lambda: sim.SimulatedWinsock(profile), lambda: targets.redirected("sim", profile))
    assert set(result.answers) == set(PROBES) and not result.unmatched
    assert {k: o.value for k, o in result.answers.items()} == {k: profile.value(k) for k in PROBES}
    assert set(result.not_probed) == set(DECISIONS) - set(PROBES)


def test_redirect_probes_are_not_probed_without_a_redirected_fixture():
    result = probe_profile(lambda: sim.SimulatedWinsock("documented"))
    assert set(REDIRECT_PROBES) <= set(result.not_probed)
    assert set(result.answers) == set(API_PROBES)


@pytest.mark.parametrize("key,choice", [(k, c) for k in PROBES for c in DECISIONS[k].choices
                                        if len(DECISIONS[k].choices) > 1])
def test_each_probe_tells_every_choice_apart(key, choice):
    """A simulator answering the point differently is observed differently: the probe measures, not guesses."""
    profile = load("documented").with_overrides(**{key: choice})
    result = probe_profile(lambda: sim.SimulatedWinsock(profile), lambda: targets.redirected("sim", profile), only={key})
    assert result.answers[key].value == choice


def test_observed_profile_file_loads_and_inherits(tmp_path, capsys):
    path = tmp_path / "observed.toml"
    assert cli.main(["profile", "probe", "-o", str(path), "--profile", "windows-observed"]) == 0
    observed = load_file(path)
    text = path.read_text()
    parent = load("windows-observed")
    for key in DECISIONS:
        a = observed.assignments[key]
        assert a.value == parent.value(key)
        if key in PROBES:
            # the simulator reproduced the profile's answer: its provenance and source, not `observed`
            assert (a.provenance, a.source) == (parent.assignments[key].provenance, parent.assignments[key].source)
        else:
            assert a == parent.assignments[key] and f"#   {key}:" in text       # listed as not probed
    assert 'inherit = "windows-observed"' in text
    capsys.readouterr()
    assert cli.main(["profile", "diff", str(path), "windows-observed"]) == 0
    documented = tmp_path / "observed-doc.toml"
    assert cli.main(["profile", "probe", "-o", str(documented), "--profile", "documented"]) == 0
    assert {k for k, _, _ in diff_profiles(load_file(documented), load("documented"))} == set()


def test_profile_show_still_works(capsys):
    assert cli.main(["profile", "show", "windows-observed"]) == 0
    assert "sio_flush" in capsys.readouterr().out


def test_a_probe_of_the_simulator_never_writes_observed(tmp_path, capsys):
    """Probing the simulator observes the simulator: each answer keeps the source profile's provenance
    and source (documented answers stay documented), and the file's name says it was probed."""
    path = tmp_path / "doc.toml"
    assert cli.main(["profile", "probe", "-o", str(path), "--profile", "documented"]) == 0
    out = capsys.readouterr().out
    probed, documented = load_file(path), load("documented")
    assert probed.name == "sim-documented-probed" and 'inherit = "documented"' in path.read_text()
    assert probed.assignments == documented.assignments
    assert "probed on the simulator" in out and " observed," not in out


def test_an_answer_the_simulator_does_not_reproduce_is_assumed():
    from harness.replay.probes import Observation, ProbeResult
    documented = load("documented")
    other = next(c for c in DECISIONS["sio_flush"].choices if c != documented.value("sio_flush"))
    result = ProbeResult("sim", "simulated", answers={"sio_flush": Observation(other, "WSAIoctl -> 0")},
                         profile=documented)
    text = result.to_toml("p", inherit="documented")
    assert 'provenance = "assumed"' in text and "simulator under profile documented: probe sio_flush" in text
    assert 'provenance = "observed"' not in text
