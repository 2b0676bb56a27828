"""Wording shared by the analysis' reasons and the CLI: counts with the right plural."""
from __future__ import annotations


def plural(n: int, singular: str, many: str | None = None) -> str:
    """'1 flow', '2 flows', '1 proxy', '3 proxies' (give `many` when adding 's' is wrong)."""
    return f"{n} {singular if n == 1 else many or singular + 's'}"


def times(n: int) -> str:
    """'once', '2 times'."""
    return "once" if n == 1 else f"{n} times"


def nbytes(n: int) -> str:
    return plural(n, "byte")
