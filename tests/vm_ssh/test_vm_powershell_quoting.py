"""The PowerShell quoting function against hostile input.

Without ``pwsh`` on the machine, a small tokenizer written here from
PowerShell's rules for single-quoted strings (Tokenizer.ScanStringLiteral:
any of the five single-quote characters opens/closes; two in a row stand for
the second one; nothing else is special) parses the generated command line
and must give back every argument exactly, with nothing outside quotes but
the call operator, spaces and parameter names.  With ``pwsh`` present, the
same lines also run for real.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import PurePosixPath, PureWindowsPath

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from harness.vm import powershell as ps
from harness.vm.powershell import Param, decode_command, encode_command, quote_command, quote_literal
from harness.vm.ssh import PowerShellDialect

QUOTES = "'\u2018\u2019\u201a\u201b"
HOSTILE = list(
    QUOTES + "\"\u201c\u201d\u201e`$(){}[];|&<>@#%*?~,.:=+!\\/ \t\r\n\u00a0\u2028\u0085\u000b\u000c"
    "-–—é漢🙂\u200b\ufeff"
) + ["$(", "$env:PATH", "${x}", "@(", "--%", "`n", "';", "';calc;'", "\u2019;calc;\u2018"]


class Unsafe(AssertionError):
    pass


def tokenize(line: str) -> list[tuple[str, str]]:
    """Tokens of ``& 'cmd' 'arg' -Param ...`` under PowerShell's rules."""
    if not line.startswith("& "):
        raise Unsafe("must start with the call operator")
    tokens: list[tuple[str, str]] = [("op", "&")]
    i, n = 1, len(line)
    while i < n:
        c = line[i]
        if c == " ":
            i += 1
            continue
        if c in QUOTES:
            i += 1
            buf = []
            while True:
                if i >= n:
                    raise Unsafe("unterminated string")
                ch = line[i]
                if ch in QUOTES:
                    if i + 1 < n and line[i + 1] in QUOTES:
                        buf.append(line[i + 1])   # doubled: keep the second
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(ch)
                i += 1
            if i < n and line[i] != " ":
                raise Unsafe(f"text glued after a string at {i}: {line[i:i+10]!r}")
            tokens.append(("str", "".join(buf)))
            continue
        m = re.compile(r"-[A-Za-z_][A-Za-z0-9_]*:?(?= |\Z)").match(line, i)
        if m:
            tokens.append(("param", m.group()))
            i = m.end()
            continue
        raise Unsafe(f"character outside quotes at {i}: {c!r}")
    return tokens


def expected_text(a) -> str:
    return str(a)


# Multi-character fragments ($(, ';calc;' ...) are glued from pieces.
hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE),
              st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
    max_size=20).map("".join)
arg = st.one_of(
    hostile_text,
    st.integers(min_value=-(2**63), max_value=2**64),
    hostile_text.map(lambda s: PureWindowsPath("C:\\", s or "x")),
    hostile_text.map(lambda s: PurePosixPath("/tmp", s or "x")),
)


@settings(max_examples=500, deadline=None)
@given(hostile_text.filter(bool), st.lists(arg, max_size=6))
@example("C:\\Program Files\\x.exe", ["it's", "\u2018a\u2019", "$(calc)", "`", ";|&", "a\nb", ""])
@example("'", ["''", "'''", "\u201b\u201a", "x'; Remove-Item -Recurse C:\\ ; '"])
def test_every_argument_round_trips_and_nothing_is_outside_quotes(cmd, args):
    line = quote_command(cmd, *args)
    toks = tokenize(line)
    assert toks[0] == ("op", "&")
    assert all(kind == "str" for kind, _ in toks[1:])
    assert [v for _, v in toks[1:]] == [cmd] + [expected_text(a) for a in args]


@given(hostile_text)
def test_quote_literal_is_one_token(s):
    toks = tokenize("& " + quote_literal(s))
    assert toks == [("op", "&"), ("str", s)]


def test_each_unicode_single_quote_is_doubled():
    for q in QUOTES:
        assert quote_literal(f"a{q}b") == f"'a{q}{q}b'"
    # Double quotes, backticks and dollars are inert inside single quotes.
    assert quote_literal('"`$x') == "'\"`$x'"


def test_params_are_bare_and_validated():
    line = quote_command("Get-ChildItem", Param("Path"), "C:\\x y", Param("-Force"))
    assert tokenize(line) == [("op", "&"), ("str", "Get-ChildItem"), ("param", "-Path"),
                              ("str", "C:\\x y"), ("param", "-Force")]
    for bad in ["Path;calc", "-", "a b", "-$x", "Pa'th"]:
        with pytest.raises(ValueError):
            Param(bad)


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800"])
def test_nul_and_lone_surrogates_are_refused(bad):
    with pytest.raises(ValueError):
        quote_command("x", bad)
    with pytest.raises(ValueError):
        quote_command(bad)


def test_ambiguous_types_are_refused():
    with pytest.raises(TypeError):
        quote_command("x", True)
    with pytest.raises(TypeError):
        quote_command("x", b"bytes")


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=500)
       .filter(str.strip))
def test_encoded_command_round_trips(script):
    line = encode_command(script)
    assert line.startswith("powershell -NoProfile -NonInteractive -EncodedCommand ")
    b64 = line.rsplit(" ", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9+/=]*", b64)       # nothing a shell could interpret
    assert base64.b64decode(b64).decode("utf-16-le") == script
    assert decode_command(line) == script


def test_encoded_command_respects_cmd_exe_limit():
    with pytest.raises(ValueError, match="-File"):
        encode_command("x" * 4000)
    assert len(encode_command("x" * 2900)) <= ps.MAX_CMD_EXE_LINE


def test_empty_script_is_refused():
    with pytest.raises(ValueError):
        encode_command("  \n")


def test_executable_name_is_validated():
    assert encode_command("1", executable="pwsh").startswith("pwsh ")
    with pytest.raises(ValueError):
        encode_command("1", executable="powershell & calc")


def test_powershell_dialect_wrapper_uses_lastexitcode_and_marker():
    prof = PowerShellDialect()
    script = quote_command("C:\\t\\conformance.exe", "--out", "C:\\ev\\it's here")
    line = prof.wrap(script, "abc123")
    inner = decode_command(line)
    assert script in inner
    assert "$global:LASTEXITCODE" in inner
    assert "<<<wfph-exit abc123 $__wfph_code>>>" in inner
    assert line.startswith("powershell -NoProfile -NonInteractive -EncodedCommand ")
    assert "LastBootUpTime" in prof.boot_id_script()


@pytest.mark.skipif(shutil.which("pwsh") is None, reason="pwsh not installed (not a Debian package)")
@settings(max_examples=50, deadline=None)
@given(st.lists(hostile_text, min_size=1, max_size=5))
def test_arguments_round_trip_in_real_pwsh(args):
    # A PowerShell function receives the arguments exactly as parsed.
    script = ("function Show-Args { foreach ($a in $args) { [Console]::Out.Write("
              "[Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes([string]$a)) + \"`n\") } }\n"
              + quote_command("Show-Args", *args))
    line = encode_command(script, executable="pwsh")
    out = subprocess.run(line.split(" "), capture_output=True, text=True, timeout=60, check=True).stdout
    got = [base64.b64decode(x).decode() for x in out.splitlines()]
    assert got == list(args)
