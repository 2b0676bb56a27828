"""The registry as the driver reads it: REG_DWORD and REG_MULTI_SZ values, and .reg text
(what regedit exports and imports) for the service's Parameters key."""
from __future__ import annotations

import re
import struct
from collections.abc import Mapping

from harness.sample_driver.common import (MAX_DWORD, MAX_MULTI_SZ_BYTES, PARAMETERS_KEY, REG_BINARY, REG_DWORD, REG_EXPAND_SZ,
                                          REG_MULTI_SZ, REG_SZ, _type_name)

def _dword(name: str, regtype, value) -> int:
    if regtype != REG_DWORD:
        raise ValueError(f"{name}: expected REG_DWORD, got {_type_name(regtype)}")
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 4:
            raise ValueError(f"{name}: REG_DWORD data must be 4 bytes, got {len(value)}")
        return struct.unpack("<I", value)[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: REG_DWORD value must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_DWORD:
        raise ValueError(f"{name}: {value} does not fit in a REG_DWORD")
    return value


def _multi_sz_strings(name: str, regtype, value) -> list[str]:
    """Strings of a REG_MULTI_SZ as the driver walks them.

    The walk stops at the first empty string or at the end of the data
    (a missing final terminator is tolerated, like the driver does).
    """
    if regtype != REG_MULTI_SZ:
        raise ValueError(f"{name}: expected REG_MULTI_SZ, got {_type_name(regtype)}")
    if isinstance(value, (bytes, bytearray)):
        if len(value) % 2:
            raise ValueError(f"{name}: REG_MULTI_SZ data has an odd length ({len(value)} bytes)")
        try:
            text = bytes(value).decode("utf-16-le")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{name}: REG_MULTI_SZ data is not UTF-16: {exc}") from None
        strings = text.split("\0")
    elif isinstance(value, (list, tuple)):
        strings = []
        for s in value:
            if not isinstance(s, str):
                raise ValueError(f"{name}: REG_MULTI_SZ items must be str, not {type(s).__name__}")
            if "\0" in s:
                raise ValueError(f"{name}: REG_MULTI_SZ item {s!r} contains NUL")
            strings.append(s)
    else:
        raise ValueError(f"{name}: REG_MULTI_SZ value must be a list of str or bytes, "
                         f"not {type(value).__name__}")
    size = len(value) if isinstance(value, (bytes, bytearray)) else sum(len(s) + 1 for s in strings) * 2 + 2
    if size > MAX_MULTI_SZ_BYTES:
        raise ValueError(f"{name}: REG_MULTI_SZ data is {size} bytes, at most {MAX_MULTI_SZ_BYTES}")
    out = []
    for s in strings:
        if s == "":
            break
        out.append(s)
    return out


# --- .reg files ----------------------------------------------------------------
REG_HEADER = "Windows Registry Editor Version 5.00"
_VALUE_LINE = re.compile(r'(?:"((?:[^"\\]|\\.)*)"|(@))=(.*)\Z', re.S)
_HEX_PREFIX = re.compile(r"hex(?:\(([0-9a-fA-F]{1,8})\))?:(.*)\Z", re.S)


def _unescape(text: str, lineno: int) -> str:
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text):
                raise ValueError(f".reg line {lineno}: dangling backslash")
            out.append(text[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _logical_lines(text: str):
    """Join regedit's hex continuation lines; yields (first line number, text)."""
    pending, start = None, 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if pending is not None:
            line = line.lstrip()
        stripped = line.rstrip()
        if pending is None:
            start = lineno
            pending = ""
        if stripped.endswith("\\"):
            pending += stripped[:-1]
            continue
        yield start, pending + stripped
        pending = None
    if pending is not None:
        raise ValueError(f".reg line {start}: continuation line at end of file (truncated?)")


def _closing_quote(data: str) -> int:
    """Index of the quote closing the string that opens data[0], or -1."""
    i = 1
    while i < len(data):
        if data[i] == "\\":
            i += 2
        elif data[i] == '"':
            return i
        else:
            i += 1
    return -1


def _parse_data(name: str, data: str, lineno: int):
    """One value's data -> (REG type, decoded value), or None for a deletion."""
    where = f"{name}: .reg line {lineno}"
    if data == "-":
        return None
    if data.startswith('"'):
        end = _closing_quote(data)
        if end != len(data) - 1:
            raise ValueError(f"{where}: unterminated string or text after it")
        return REG_SZ, _unescape(data[1:-1], lineno)
    if data.lower().startswith("dword:"):
        digits = data[6:]
        if not re.fullmatch(r"[0-9a-fA-F]{1,8}", digits):
            raise ValueError(f"{where}: bad dword data {digits!r}")
        return REG_DWORD, int(digits, 16)
    m = _HEX_PREFIX.fullmatch(data)
    if m:
        regtype = int(m.group(1), 16) if m.group(1) else REG_BINARY
        body = m.group(2).strip()
        raw = bytearray()
        if body:
            for token in body.split(","):
                token = token.strip()
                if not re.fullmatch(r"[0-9a-fA-F]{2}", token):
                    raise ValueError(f"{where}: bad hex byte {token!r}")
                raw.append(int(token, 16))
        return regtype, _decode_raw(name, regtype, bytes(raw))
    raise ValueError(f"{where}: unrecognised data {data[:40]!r}")


def _decode_raw(name: str, regtype: int, raw: bytes):
    if regtype == REG_DWORD:
        return _dword(name, REG_DWORD, raw)
    if regtype == REG_MULTI_SZ:
        return _multi_sz_strings(name, REG_MULTI_SZ, raw)
    if regtype in (REG_SZ, REG_EXPAND_SZ):
        if len(raw) % 2:
            raise ValueError(f"{name}: string data has an odd length ({len(raw)} bytes)")
        return raw.decode("utf-16-le", errors="strict").split("\0", 1)[0]
    return raw


def parse_reg(text: str, key: str = PARAMETERS_KEY) -> dict[str, tuple[int, object]]:
    """Values of ``key`` in a ``Windows Registry Editor Version 5.00`` file.

    Returns ``{name: (REG type, decoded value)}`` (see
    :func:`parse_registry_values`). Other keys are skipped; ``"name"=-``
    deletes a value, ``[-key]`` the key. Raises ValueError on a missing
    header, a missing key, or malformed lines.
    """
    if not isinstance(text, str):
        raise ValueError(f".reg text must be str, not {type(text).__name__}")
    text = text.lstrip("\ufeff")
    lines = _logical_lines(text)
    header = None
    for lineno, line in lines:
        if line.strip():
            header = line.strip()
            break
    if header != REG_HEADER:
        raise ValueError(f"not a .reg file: expected header {REG_HEADER!r}, got {header!r}")
    wanted = key.lower()
    current = None
    seen_key = False
    values: dict[str, tuple[int, object]] = {}
    for lineno, line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith(";"):
            continue
        if stripped.startswith("["):
            if not stripped.endswith("]"):
                raise ValueError(f".reg line {lineno}: unterminated key {stripped[:60]!r}")
            name = stripped[1:-1]
            if name.startswith("-"):
                if name[1:].lower() == wanted:
                    values.clear()
                    seen_key = False
                current = None
                continue
            current = name.lower()
            if current == wanted:
                seen_key = True
            continue
        m = _VALUE_LINE.match(stripped)
        if not m:
            raise ValueError(f".reg line {lineno}: not a value line {stripped[:60]!r}")
        if current is None:
            raise ValueError(f".reg line {lineno}: value outside any key")
        vname = "" if m.group(2) else _unescape(m.group(1), lineno)
        parsed = _parse_data(vname or "@", m.group(3).strip(), lineno)
        if current != wanted:
            continue
        if parsed is None:
            values.pop(vname, None)
        else:
            values[vname] = parsed
    if not seen_key:
        raise ValueError(f"key [{key}] not found in the .reg text")
    return values


def _encode_raw(regtype: int, value) -> bytes:
    if regtype == REG_MULTI_SZ:
        return "".join(s + "\0" for s in value).encode("utf-16-le") + b"\0\0"
    if isinstance(value, str):
        return (value + "\0").encode("utf-16-le")
    return bytes(value)


def _hex_lines(prefix: str, raw: bytes) -> str:
    """Format like regedit: comma-separated bytes, wrapped with ``,\\``."""
    tokens = [f"{b:02x}" for b in raw]
    lines, line = [], prefix
    for i, token in enumerate(tokens):
        piece = token + ("," if i < len(tokens) - 1 else "")
        if len(line) + len(piece) > 78 and line.strip():
            lines.append(line + "\\")
            line = "  "
        line += piece
    lines.append(line)
    return "\r\n".join(lines)


def render_reg(values: Mapping[str, tuple[int, object]], key: str = PARAMETERS_KEY) -> str:
    """Render ``{name: (REG type, value)}`` as .reg text (CRLF, like regedit)."""
    out = [REG_HEADER, "", f"[{key}]"]
    for name, (regtype, value) in values.items():
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"='
        if regtype == REG_DWORD:
            out.append(f"{quoted}dword:{_dword(name, regtype, value):08x}")
        elif regtype == REG_SZ and isinstance(value, str):
            out.append(quoted + '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif regtype == REG_BINARY:
            out.append(_hex_lines(quoted + "hex:", _encode_raw(regtype, value)))
        else:
            out.append(_hex_lines(f"{quoted}hex({regtype:x}):", _encode_raw(regtype, value)))
    return "\r\n".join(out) + "\r\n"


