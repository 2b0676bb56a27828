"""Wording shared by the analysis' reasons and the CLI: counts with the right plural."""
from __future__ import annotations

from harness.wording import plural  # noqa: F401  (the one rule for plurals; re-exported for capture)


def times(n: int) -> str:
    """'once', '2 times'."""
    return "once" if n == 1 else f"{n} times"


def nbytes(n: int) -> str:
    return plural(n, "byte")
