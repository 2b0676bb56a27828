"""Build PowerShell command lines that are safe for any argument content.

There is ONE quoting function, :func:`quote_command`; everything that sends
a command to a Windows guest goes through it.  Each argument becomes a
PowerShell *single-quoted* string, the only literal PowerShell has: no
``$`` expansion, no backtick escapes, no subexpressions.  Inside it the only
special characters are the five single quotes the tokenizer accepts
(U+0027 and the typographic U+2018, U+2019, U+201A, U+201B); each is doubled.
NUL is refused (no Windows command line can carry it), and so are lone
surrogates (they cannot be encoded for ``-EncodedCommand``).

The executable is quoted the same way and run with the call operator ``&``,
so a path with spaces or a hostile name is never parsed as code.

Limitation (Windows PowerShell 5.1 and PowerShell < 7.3 only): when the
target is a *native* executable, PowerShell re-joins the arguments into one
Win32 command line without escaping embedded double quotes, drops empty
arguments, and mishandles a trailing backslash in an argument with spaces.
The PowerShell side is exact (cmdlets, functions and scripts receive every
argument verbatim); pass such values to native programs through a file or
an environment variable instead.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import PurePath
from typing import Union

__all__ = [
    "SINGLE_QUOTES",
    "Param",
    "quote_literal",
    "quote_command",
    "encode_command",
    "decode_command",
    "MAX_CMD_EXE_LINE",
]

# Characters PowerShell's tokenizer treats as a single quote
# (System.Management.Automation.Language.CharExtensions.IsSingleQuote).
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"

# cmd.exe (Windows OpenSSH's default shell) refuses command lines longer than
# 8191 characters; -EncodedCommand grows a script about 2.7 times.
MAX_CMD_EXE_LINE = 8191

_PARAM_RE = re.compile(r"-[A-Za-z_][A-Za-z0-9_]*:?\Z")


class Param(str):
    """A cmdlet parameter name (``-Path``), emitted bare.

    A quoted ``'-Path'`` would be a positional string, so parameter names
    need their own type; only plain identifiers are accepted.
    """

    def __new__(cls, name: str) -> "Param":
        text = name if name.startswith("-") else "-" + name
        if not _PARAM_RE.match(text):
            raise ValueError(f"not a PowerShell parameter name: {name!r}")
        return super().__new__(cls, text)


Arg = Union[str, int, os.PathLike, Param]


def _text(value: Arg) -> str:
    if isinstance(value, bool):
        # True would become the string 'True'; make the caller choose.
        raise TypeError("bool arguments are ambiguous; pass a str or a Param switch")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bytes):
        raise TypeError("bytes arguments are not supported; decode them first")
    if not isinstance(value, str):
        raise TypeError(f"unsupported argument type {type(value).__name__}")
    return value


def quote_literal(value: Arg) -> str:
    """``value`` as a PowerShell single-quoted string literal."""
    s = _text(value)
    if "\x00" in s:
        raise ValueError("NUL cannot be passed in a PowerShell command line")
    try:
        s.encode("utf-16-le")
    except UnicodeEncodeError as exc:
        raise ValueError("argument contains a lone surrogate") from exc
    out = []
    for ch in s:
        # Doubling makes the tokenizer skip the first and keep the second.
        out.append(ch + ch if ch in SINGLE_QUOTES else ch)
    return "'" + "".join(out) + "'"


def quote_command(command: Arg, *args: Arg) -> str:
    """A PowerShell statement calling ``command`` with ``args``.

    ``& 'C:\\Program Files\\x.exe' 'arg one' '5'``.  Arguments may be
    strings, ints, paths, or :class:`Param` names (emitted bare).
    """
    parts = ["&", quote_literal(command)]
    for a in args:
        parts.append(str(a) if isinstance(a, Param) else quote_literal(a))
    return " ".join(parts)


def encode_command(script: str, executable: str = "powershell") -> str:
    """``powershell -NoProfile -NonInteractive -EncodedCommand <base64>``.

    The script travels as base64 of UTF-16LE, so no shell between the SSH
    server and PowerShell (cmd.exe by default on Windows OpenSSH) can
    reinterpret any of it.
    """
    if "\x00" in script:
        raise ValueError("NUL cannot be part of a PowerShell script")
    if not script.strip():
        raise ValueError("empty PowerShell script")
    if not re.fullmatch(r"[A-Za-z0-9_.:\\/-]+", executable):
        raise ValueError(f"unexpected PowerShell executable {executable!r}")
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    line = f"{executable} -NoProfile -NonInteractive -EncodedCommand {encoded}"
    if len(line) > MAX_CMD_EXE_LINE:
        raise ValueError(
            f"encoded PowerShell command is {len(line)} characters; cmd.exe accepts "
            f"{MAX_CMD_EXE_LINE}. Upload the script as a .ps1 file and run it with -File")
    return line


def decode_command(line: str) -> str:
    """The script inside a line made by :func:`encode_command` (for logs/tests)."""
    m = re.search(r"-EncodedCommand\s+([A-Za-z0-9+/=]+)\s*\Z", line)
    if not m:
        raise ValueError("not an -EncodedCommand line")
    return base64.b64decode(m.group(1), validate=True).decode("utf-16-le")
