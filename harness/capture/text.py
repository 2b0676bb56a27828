"""Wording shared by the analysis' reasons and the CLI: counts with the right plural."""
from __future__ import annotations

from harness.wording import plural, times  # noqa: F401  (the one rule for counts; re-exported for capture)


def nbytes(n: int) -> str:
    return plural(n, "byte")
