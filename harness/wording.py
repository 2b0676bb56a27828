"""Wording every command shares: counts with the right plural, values as plain text (no Python reprs)."""
from __future__ import annotations


def plural(n: int, singular: str, many: str | None = None) -> str:
    """'1 flow', '2 flows', '1 proxy', '3 proxies' (give `many` when adding 's' is wrong)."""
    return f"{n} {singular if n == 1 else many or singular + 's'}"


def times(n: int) -> str:
    """'once', '2 times'."""
    return "once" if n == 1 else f"{n} times"


def plain(value) -> str:
    """A value as a user reads it: strings bare, booleans yes/no, sequences comma-separated."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(plain(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{plain(k)}={plain(v)}" for k, v in value.items())
    if value is None:
        return "none"
    return str(value)
