"""docs/model-your-callout.md runs: its Python blocks, in order, in one namespace.

The guide is the public callout API's tutorial (sim.wfp.api); executing it
here means its example (a third vendor's callout and proxy beside the
sample driver, TCP and UDP, IPv4 and IPv6, the story, a diagnostic) cannot
rot. The printed diagnostic it shows is checked too.
"""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "model-your-callout.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```\n(?:\nprints\n\n((?:    [^\n]*\n)+))?", re.S | re.M)


def blocks():
    """[(code, expected output or None)] of the guide's python blocks."""
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(GUIDE.read_text(encoding="utf-8"))]


def test_the_guide_has_its_example():
    found = blocks()
    assert len(found) >= 5
    assert any("class FabrikamCallout" in code for code, _ in found)
    assert any(expected for _, expected in found)


def test_the_guide_runs_as_written():
    namespace = {"__name__": "model_your_callout"}
    for index, (code, expected) in enumerate(blocks()):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{GUIDE.name} block {index + 1}", "exec"), namespace)
        if expected is not None:
            want = "".join(line[4:] for line in expected.splitlines(keepends=True))
            assert out.getvalue() == want, f"block {index + 1} printed {out.getvalue()!r}"
    assert namespace["told"].verdict == "ok"
