"""The C-shaped wrappers reduce every Python int to its C width exactly as ctypes does."""
from __future__ import annotations

import ctypes

import pytest
from hypothesis import given, settings, strategies as st

from harness.winsock.ctype import C_TYPES, cfunc

CTYPES_OF = {(bits, signed): getattr(ctypes, f"c_{'' if signed else 'u'}int{bits}")
             for bits, signed in set(C_TYPES.values())}
NAMES = sorted(C_TYPES)
PARAMS = [f"p{i}" for i in range(len(NAMES))]

# A method with one parameter of every C type that returns what the wrapper handed it
# (cfunc checks the method's parameter names against the signature, so it is built by name).
_namespace: dict = {}
exec(f"def echo(self, {', '.join(PARAMS)}): return ({', '.join(PARAMS)},)", _namespace)
echo = cfunc(", ".join(f"{t} {p}" for t, p in zip(NAMES, PARAMS)))(_namespace["echo"])


def expected(value: int) -> tuple:
    return tuple(CTYPES_OF[C_TYPES[t]](value).value for t in NAMES)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(1 << 70), 1 << 70))
def test_every_c_type_wraps_like_ctypes(value):
    assert echo(None, *[value] * len(NAMES)) == expected(value)


@pytest.mark.parametrize("value", [0x8004667E, -1, 1 << 31, -(1 << 31) - 1, 1 << 63, True])
def test_edges_wrap_like_ctypes(value):
    assert echo(None, *[value] * len(NAMES)) == expected(int(value))
