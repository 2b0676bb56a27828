"""The command surface: every command and option says what it is, `--version` works, and a bad
option is one line and exit 2 for every command."""
from __future__ import annotations

import argparse
import contextlib
import io
import re

import pytest

from harness import __version__
from harness.cli import build_parser, main


def _commands(parser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in action._choices_actions}
            for name, sub in action.choices.items():
                yield path + (name,), sub, helps.get(name)
                yield from _commands(sub, path + (name,))


COMMANDS = [(path, sub, text) for path, sub, text in _commands(build_parser())]
LEAVES = [path for path, sub, _ in COMMANDS
          if not any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)]


@pytest.mark.parametrize("path, sub, text", COMMANDS, ids=[" ".join(c[0]) for c in COMMANDS])
def test_every_command_and_option_says_what_it_is(path, sub, text):
    assert text or sub.description, f"wfp-harness {' '.join(path)} has no help"
    for action in sub._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        assert action.help, f"wfp-harness {' '.join(path)}: {action.option_strings or action.dest} has no help"


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_version():
    code, out, _ = _run(["--version"])
    assert code == 0 and out.strip() == f"wfp-harness {__version__}"


PYTEST_RUNNERS = {("conformance",), ("trace", "record")}      # unknown options go on to pytest


@pytest.mark.parametrize("path", [p for p in LEAVES if p not in PYTEST_RUNNERS], ids=" ".join)
def test_a_bad_option_is_one_line_and_exit_2(path):
    code, _, err = _run([*path, "--no-such-option"])
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("wfp-harness") and "--help" in err


@pytest.mark.parametrize("path", sorted(PYTEST_RUNNERS), ids=" ".join)
def test_commands_that_run_pytest_pass_options_on_and_a_refused_one_is_exit_2(path, tmp_path):
    extra = ["-o", str(tmp_path / "t.jsonl")] if path == ("trace", "record") else []
    code, _, err = _run([*path, *extra, "--no-such-option"])
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("wfp-harness")
    assert not (tmp_path / "t.jsonl").exists()


def test_trace_record_that_runs_no_test_writes_no_trace(tmp_path):
    out = tmp_path / "t.jsonl"
    code, _, err = _run(["trace", "record", "-o", str(out), "-k", "no_test_has_this_name"])
    assert code != 0 and "no test ran" in err and not out.exists()


def test_the_command_says_what_it_is_for():
    description = build_parser().description
    assert "wfp-harness" not in description and "Windows Filtering Platform" in description


# sim/worlds/cli.py owns `scenario`'s help (proposed: "list and run named end-to-end redirect stories").
GROUPS = [(path, sub, text) for path, sub, text in COMMANDS if path not in LEAVES and path != ("scenario",)]


@pytest.mark.parametrize("path, sub, text", GROUPS, ids=[" ".join(c[0]) for c in GROUPS])
def test_a_group_of_commands_names_each_of_them(path, sub, text):
    """`wfp-harness --help` is the one list users read: a group's line says what each of its commands does."""
    names = [name for p, _, _ in COMMANDS if len(p) == len(path) + 1 and p[:len(path)] == path for name in p[-1:]]
    missing = [n for n in names if not re.search(rf"\b{n}\b", text)]
    assert not missing, f"wfp-harness {' '.join(path)}: {text!r} does not mention {missing}"
