"""The list of Wine's known deviations (harness/conformance/wine-deviations.toml) is well formed:
every entry cites Wine in the form its kind asks, every Wine function it names is listed in
docs/sources.md, every pattern names conformance cases that exist, and no case is covered twice.
Runs without Wine."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.conformance import deviations as D

ROOT = Path(__file__).resolve().parents[1]
SOURCES = (ROOT / "docs" / "sources.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def wine():
    return D.load_target("wine")


@pytest.fixture(scope="module")
def node_ids():
    """Every conformance case's node id after the last "/", as the plugin matches them."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "harness.conformance", "--collect-only", "-q",
                           "-p", "no:cacheprovider", "--target", "sim"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    ids = [line.rsplit("/", 1)[-1] for line in proc.stdout.splitlines() if "::" in line]
    assert len(ids) > 250, proc.stdout[-2000:] + proc.stderr[-2000:]
    return ids


def test_every_entry_cites_wine_in_the_form_of_its_kind(wine):
    assert len(wine) >= 20
    for dev in wine:
        assert dev.kind in D.KINDS and D.KINDS[dev.kind].search(dev.wine), dev
        assert dev.windows and dev.differs


def test_every_wine_function_cited_is_listed_in_sources(wine):
    tests_table = SOURCES.split("## Wine conformance tests", 1)[1]
    impl_table = SOURCES.split("## Wine's implementation", 1)[1]
    for dev in wine:
        for fn in re.findall(r"\btest_\w+", dev.wine + " " + dev.windows):
            if "Wine dlls/ws2_32/tests/" in dev.wine + dev.windows:
                assert f"`{fn}`" in tests_table, f"{fn} (line {dev.line}) is not in docs/sources.md"
        if dev.kind == "source":
            fn = re.search(r"Wine (?:dlls/\w+(?:/\w+)?|server)/\w+\.c (\w+):", dev.wine).group(1)
            assert f"`{fn}`" in impl_table, f"{fn} (line {dev.line}) is not in docs/sources.md's implementation table"
        if dev.kind in ("fixme", "observed"):
            fn = re.search(r"Wine 8\.0 \w+\.dll (\w+)", dev.wine).group(1)
            if dev.kind == "fixme":
                assert f"`{fn}`" in impl_table, fn


def test_every_pattern_names_existing_cases_and_no_case_is_covered_twice(wine, node_ids):
    for dev in wine:
        for pattern in dev.tests:
            assert any(D._pattern(pattern).fullmatch(n) for n in node_ids), f"line {dev.line}: {pattern} matches nothing"
    for n in node_ids:
        covering = [dev.line for dev in wine if dev.matches(n)]
        assert len(covering) <= 1, f"{n} is covered by the entries at lines {covering}"


def test_brackets_in_node_ids_are_literal():
    dev = D.Deviation(("test_x.py::test_y[0x1]",), "d", "w", "observed", "Wine 8.0 ws2_32.dll f: observed", 1)
    assert dev.matches("harness/conformance/test_x.py::test_y[0x1]")
    assert not dev.matches("harness/conformance/test_x.py::test_y[1]")


ENTRY = '''[[deviation]]
tests = ["test_wsapoll.py::test_no_valid_socket"]
differs = "something"
windows = "docs/windows-observed.md item 5"
kind = "{kind}"
wine = "{wine}"
'''


@pytest.mark.parametrize("kind,wine,field", [
    ("todo_wine", "", "deviation[0].wine"),                                     # no citation at all
    ("todo_wine", "Wine differs here", "deviation[0].wine"),                    # no Wine test and todo_wine
    ("fixme", "Wine dlls/ws2_32/tests/sock.c test_WSAPoll: todo_wine on x", "deviation[0].wine"),
    ("source", "it just does", "deviation[0].wine"),
    ("guess", "Wine 8.0 ws2_32.dll WSAPoll: observed", "deviation[0].kind"),
])
def test_an_entry_without_a_citation_of_its_kind_is_refused(tmp_path, kind, wine, field):
    path = tmp_path / "dev.toml"
    path.write_text("# header\n\n" + ENTRY.format(kind=kind, wine=wine), encoding="utf-8")
    with pytest.raises(D.DeviationError) as info:
        D.load(path)
    assert (info.value.line, info.value.field) == (3, field)


def test_a_missing_field_or_unknown_key_is_named(tmp_path):
    path = tmp_path / "dev.toml"
    path.write_text('[[deviation]]\ntests = ["test_a.py::b"]\ndiffers = "d"\nkind = "observed"\n'
                    'wine = "Wine 8.0 ws2_32.dll f: observed"\n', encoding="utf-8")
    with pytest.raises(D.DeviationError, match="deviation.0..windows: required"):
        D.load(path)
    path.write_text('[[deviation]]\ntests = ["nonode"]\n', encoding="utf-8")
    with pytest.raises(D.DeviationError, match="tests"):
        D.load(path)


def test_only_wine_has_a_deviation_list():
    assert D.load_target("sim") is None and D.load_target("native") is None and D.load_target("agent") is None
