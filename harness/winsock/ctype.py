"""C argument types for the C-shaped API.

A C caller can pass any bit pattern, but only of the parameter's width: a
DWORD is 32 bits, a pointer 64. Python callers pass ints; we reduce them to
the C width exactly as ctypes does (two's complement wrap), so the simulator
and a real ws2_32 (through the winsock-agent) see the same value. A value that is not an int is a
Python mistake, not a C one, and raises TypeError naming the parameter.
"""
from __future__ import annotations

import functools
import inspect

# name -> (bits, signed)
C_TYPES = {
    "SOCKET": (64, False), "HANDLE": (64, False), "WSAEVENT": (64, False),
    "LPVOID": (64, False), "PTR": (64, False), "ULONG_PTR": (64, False),
    "SIZE_T": (64, False), "UINT64": (64, False),
    "DWORD": (32, False), "ULONG": (32, False), "UINT": (32, False), "u_long": (32, False),
    "int": (32, True), "INT": (32, True), "BOOL": (32, True), "LONG": (32, True),
    "WORD": (16, False), "u_short": (16, False), "UCHAR": (8, False),
}


def coerce(value, ctype: str, param: str, func: str = "") -> int:
    """Reduce `value` to C type `ctype`; TypeError if it is not an integer."""
    if type(value) is not int:
        if isinstance(value, bool) or (isinstance(value, int)):
            value = int(value)
        else:
            where = f"{func}() " if func else ""
            raise TypeError(f"{where}parameter {param!r} ({ctype}) must be an int, "
                            f"not {type(value).__name__}")
    bits, signed = C_TYPES[ctype]
    value &= (1 << bits) - 1
    if signed and value >> (bits - 1):
        value -= 1 << bits
    return value


def parse_signature(signature: str) -> list[tuple[str, str]]:
    """[(C type, name)] of 'TYPE name, ...'."""
    params = []
    for part in filter(None, (p.strip() for p in signature.split(","))):
        ctype, name = part.split()
        if ctype not in C_TYPES:
            raise ValueError(f"unknown C type {ctype}")
        params.append((ctype, name))
    return params


# What coercion_lines' code refers to, for the namespace it is compiled in.
COERCION_NAMESPACE = {"_coerce": coerce, "_type": type, "_int": int}


def coercion_lines(params, func: str) -> list[str]:
    """Straight-line source (indented one level) that reduces each parameter to its C width."""
    lines = []
    for ctype, name in params:
        bits, signed = C_TYPES[ctype]
        mask = (1 << bits) - 1
        lines.append(f"    if _type({name}) is not _int: {name} = _coerce({name}, {ctype!r}, {name!r}, {func!r})")
        if signed:
            # coerce()'s two's complement wrap, inline: e.g. FIONBIO (0x8004667E) as a LONG.
            half = 1 << (bits - 1)
            lines.append(f"    elif not -{half} <= {name} < {half}: {name} = (({name} + {half}) & {mask}) - {half}")
        else:
            lines.append(f"    elif not 0 <= {name} <= {mask}: {name} = {name} & {mask}")
    return lines


def cfunc(signature: str):
    """Decorate a method taking C arguments; `signature` is 'TYPE name, ...'.

    The wrapper is generated as straight-line code so the per-call cost stays
    near that of the checks themselves (bench/ measures it).
    """
    params = parse_signature(signature)

    def decorate(fn):
        names = [n for _, n in params]
        sig_params = list(inspect.signature(fn).parameters)[1:]
        if sig_params != names:
            raise ValueError(f"{fn.__name__}: signature {sig_params} != declared {names}")
        lines = [f"def {fn.__name__}(self, {', '.join(names)}):"]
        lines += coercion_lines(params, fn.__name__)
        lines.append(f"    return _fn(self, {', '.join(names)})")
        namespace = dict(COERCION_NAMESPACE, _fn=fn)
        exec("\n".join(lines), namespace)  # noqa: S102 - generated from a fixed grammar
        wrapper = functools.wraps(fn)(namespace[fn.__name__])
        wrapper.__c_signature__ = tuple(params)
        return wrapper

    return decorate
