"""User output is plain text: no Python reprs (quotes, brackets, True/False, tuples) and counts with
the right plural, in trace record and replay and in replay's divergences."""
from __future__ import annotations

import re

import pytest

from harness import cli
from harness.replay.replayer import Divergence
from harness.replay.symbols import Symbols, UnresolvedSymbol

REPR = re.compile(r"\[\w+, \d|'|\"|\bTrue\b|\bFalse\b|\bNone\b|\(\d+, \d+\)")


@pytest.fixture(scope="module")
def one_test_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "one.jsonl"
    assert cli.main(["trace", "record", "-o", str(path), "-q", "-k", "test_unknown_code_overlapped_routine"]) == 0
    return path


def test_record_counts_one_test_in_the_singular(one_test_trace, capsys):
    assert cli.main(["trace", "record", "-o", str(one_test_trace), "-q", "-k",
                     "test_unknown_code_overlapped_routine"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("trace: 1 test, ") and "1 tests" not in line


def test_replay_divergences_are_plain_text(one_test_trace, capsys):
    capsys.readouterr()
    assert cli.main(["trace", "replay", str(one_test_trace), "--profile", "windows-observed"]) == 1
    out = capsys.readouterr().out
    divergences = [line for line in out.splitlines() if line.startswith("  step ")]
    assert divergences and not [line for line in divergences if REPR.search(line)], out
    assert re.search(r"completions: recorded none, replayed routine0\(", out)     # a symbol by its name


def test_an_unresolved_symbol_reads_plainly():
    with pytest.raises(UnresolvedSymbol) as info:
        Symbols().value(["alloc", 3, 16])
    assert str(info.value) == "alloc3+16 has no value on this target (the runs diverged earlier)"
    step = {"op": "call", "fn": "WSAIoctl", "args": [["handle", 0], 4, ["alloc", 3, 16]]}
    d = Divergence(7, "", "WSAIoctl", "unresolved", step, str(info.value))
    assert d.describe() == ("step 7 (line 9) WSAIoctl: unresolved: recorded WSAIoctl(handle0, 4, alloc3+16), "
                            "replayed alloc3+16 has no value on this target (the runs diverged earlier)")
    raised = Divergence(1, "", "WSARecv", "raised", "returned", "TypeError: lpBuffers must be an int")
    assert "recorded returned, replayed TypeError: lpBuffers must be an int" in raised.describe()
