"""Every citation in the repository resolves from a clone.

Citations name the project's own documents (docs/README.md describes the
forms): `docs/facts.md §5.7`, `docs/decisions.md §4`,
`docs/windows-observed.md item 47` or `§E`, `docs/seed-page.md REC-ERR-WSAEINVAL`,
or a primary source directly (`Wine dlls/ws2_32/tests/sock.c test_xxx`,
listed in docs/sources.md). This test scans every git-tracked text file and
the strings the program emits from data (profile sources through the profile
loader, the traceability table through its parser) and fails, naming file,
line and citation, when:

* a `docs/X.md` citation names a file, a section (§) or an item that does not exist;
* a citation still points outside the repository (`../shared`, `shared/spec`,
  `reference-projects`) or uses a short form without its folder (`facts §`,
  `decisions §`, `decisions.md`, `windows-observed.md`, `windows-observed item`,
  `observed item`);
* a `§` reference follows no document;
* a Wine test function is cited that docs/sources.md does not list;
* a traceability statement label has no heading in docs/seed-page.md.
"""
from __future__ import annotations

import re
import subprocess
import tomllib
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SELF = "tests/test_citations.py"

# -- the documents' labels ---------------------------------------------------------------------

_HEADING = re.compile(r"^#{1,6}\s+(.*)$")
_H_SECTION = re.compile(r"^§([A-Z]|\d+(?:\.\d+)*)\b")
_H_ITEM = re.compile(r"^(\d+)\.(?:\s|$)")
_H_LABEL = re.compile(r"^(C\d+|(?:REC|CTX|SET)-[A-Za-z0-9_-]+)\b")


@lru_cache(maxsize=None)
def labels(doc: str) -> dict:
    """{'sections': {...}, 'items': {...}, 'labels': {...}} of docs/<doc>.md, from its headings."""
    path = DOCS / f"{doc}.md"
    out = {"sections": set(), "items": set(), "labels": set()}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _HEADING.match(line)
        if not m:
            continue
        text = m.group(1).strip()
        for rx, key in ((_H_SECTION, "sections"), (_H_ITEM, "items"), (_H_LABEL, "labels")):
            hm = rx.match(text)
            if hm:
                out[key].add(hm.group(1))
    return out


@lru_cache(maxsize=None)
def wine_functions() -> set:
    """(file, function) pairs of the Wine table in docs/sources.md."""
    text = (DOCS / "sources.md").read_text(encoding="utf-8")
    part = text.split("## Wine conformance tests", 1)[-1]
    return {(m.group(1), m.group(2))
            for m in re.finditer(r"^\|\s*(sock\.c|afd\.c|ntdll/tests/file\.c)\s*\|\s*`?(\w+)`?\s*\|", part, re.M)}


# -- citation forms -----------------------------------------------------------------------------

_DOC = re.compile(r"(?<![\w.-])(?P<prefix>docs/)?(?P<doc>[A-Za-z0-9_-]+)\.md\b")
_SECTION = re.compile(r"§\s?(?P<a>[A-Z](?![a-z])|\d+(?:\.\d+)*)(?:\s?[-–]\s?§?(?P<b>[A-Z]|\d+(?:\.\d+)*))?")
_ITEMS = re.compile(r"\bitems?\s+(?P<list>\d+(?:\s*[-–]\s*\d+)?(?:\s*(?:,|,?\s*and)\s*\d+(?:\s*[-–]\s*\d+)?)*)")
_CLABEL = re.compile(r"\bC(\d+)(?:\s?[-–]\s?C(\d+))?\b")
_SEEDLABEL = re.compile(r"\b(?:REC|CTX|SET)-(?:DESC|PARAM|RET|ERR|REM)-[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*")
_WINE = re.compile(r"\bWine(?:'s)?\s+(?:dlls/(?:ws2_32/tests/)?)?(?:(?P<file>sock|afd|ntdll/tests/file)\.c\s+)?"
                   r"(?P<fn>(?:test|check)_\w+)")
_BAD = [
    (re.compile(r"\.\./shared|shared/spec"), "points outside the repository (../shared/spec)"),
    (re.compile(r"reference-projects"), "cites reference-projects.md, which is not in the repository"),
    (re.compile(r"(?<![\w/.-])facts(?:\.md)?\s?§|(?<![\w/.-])facts \d"), "short form: write docs/facts.md §N"),
    (re.compile(r"(?<![\w/.-])decisions\s?§"), "short form: write docs/decisions.md §N"),
    (re.compile(r"(?<![\w/.-])windows-observed\s+(?:items?\s+\d|§)"),
     "short form: write docs/windows-observed.md item N"),
    (re.compile(r"(?<![\w/.-])(?<!windows-)observed\s+items?\s+\d"),
     "short form: write docs/windows-observed.md item N"),
    (re.compile(r"(?<![\w/.-])(?:decisions|windows-observed|winsock-wfp-redirect-facts|facts)\.md"),
     "document named without docs/"),
    (re.compile(r"(?<![\w/.-])seed-sio-query-wfp-connection-redirect-records"),
     "the seed page is cited as docs/seed-page.md or by its URL"),
]
_DOC_ALIASES = {"winsock-wfp-redirect-facts": "facts"}


def _expand(a: str, b: str | None) -> list[str]:
    return [a] if not b else [a, b]


def check_line(text: str, doc_context: str | None = None, in_docs: bool = False,
               file_doc: str | None = None) -> list[str]:
    """Problems with the citations in one line of text.

    doc_context: the document a `§` at the start of this line continues (from earlier lines);
    in_docs: the text is inside docs/ (documents link each other as `facts.md`);
    file_doc: the docs/ document the line belongs to (a bare `§` there means that document).
    """
    problems = []
    if not in_docs:
        for rx, why in _BAD:
            for m in rx.finditer(text):
                problems.append(f"{m.group(0)!r}: {why}")
    # Split the line at each document mention; the text after a mention belongs to it.
    mentions = []
    for m in _DOC.finditer(text):
        name = _DOC_ALIASES.get(m.group("doc"), m.group("doc"))
        if m.group("prefix") or in_docs:
            if in_docs and not m.group("prefix") and not (DOCS / f"{name}.md").is_file():
                continue            # a file name of some other repository, quoted in a document
            mentions.append((m.start(), m.end(), name, m.group(0)))
    if not in_docs:
        for m in _DOC.finditer(text):
            if m.group("prefix") and not (DOCS / f"{m.group('doc')}.md").is_file():
                problems.append(f"{m.group(0)!r}: no such document")
    spans = []
    first = mentions[0][0] if mentions else len(text)
    spans.append((0, first, doc_context or file_doc))
    for i, (s, e, name, raw) in enumerate(mentions):
        end = mentions[i + 1][0] if i + 1 < len(mentions) else len(text)
        if in_docs:
            # inside docs/, a mention is a link text "[facts.md §4.7](facts.md)": it ends at "]"
            close = text.find("]", e, end)
            if close != -1:
                spans.append((e, close, name))
                spans.append((close, end, file_doc))
                continue
        spans.append((e, end, name))
    for start, end, name in spans:
        chunk = text[start:end]
        for m in _SECTION.finditer(chunk):
            if name is None:
                problems.append(f"{m.group(0)!r}: a § reference that follows no document")
                continue
            have = labels(name)["sections"]
            for lab in _expand(m.group("a"), m.group("b")):
                if lab not in have:
                    problems.append(f"docs/{name}.md §{lab}: no such section in docs/{name}.md")
        if name == "windows-observed" and (start > 0 or doc_context == "windows-observed") and not in_docs:
            have = labels(name)["items"]
            for m in _ITEMS.finditer(chunk):
                for n in _item_numbers(m.group("list")):
                    if str(n) not in have:
                        problems.append(f"docs/windows-observed.md item {n}: no such item")
        if name == "facts":
            have = labels("facts")["labels"]
            for m in _CLABEL.finditer(chunk):
                for n in _expand(m.group(1), m.group(2)):
                    if f"C{n}" not in have:
                        problems.append(f"docs/facts.md C{n}: no such contradiction label")
        if name == "seed-page":
            have = labels("seed-page")["labels"]
            for m in _SEEDLABEL.finditer(chunk):
                if m.group(0) not in have:
                    problems.append(f"docs/seed-page.md {m.group(0)}: no such statement label")
    for m in _WINE.finditer(text):
        f = (m.group("file") or "sock") + ".c"
        if (f, m.group("fn")) not in wine_functions():
            problems.append(f"{m.group(0)!r}: Wine {f} {m.group('fn')} is not listed in docs/sources.md")
    return problems


def _item_numbers(spec: str) -> list[int]:
    out = []
    for part in re.split(r"\s*(?:,|and)\s*", spec):
        part = part.strip().rstrip(",")
        if not part:
            continue
        if re.search(r"[-–]", part):
            a, b = (int(x) for x in re.split(r"\s*[-–]\s*", part))
            out.extend(range(a, b + 1))
        else:
            out.append(int(part))
    return out


def last_doc(text: str, in_docs: bool) -> str | None:
    """The last document a line mentions (a `§` on the next line may continue it)."""
    found = None
    for m in _DOC.finditer(text):
        if m.group("prefix") or in_docs:
            found = _DOC_ALIASES.get(m.group("doc"), m.group("doc"))
    return found


def check_file(rel: str, text: str) -> list[str]:
    in_docs = rel.startswith("docs/") and rel.endswith(".md")
    if rel == "docs/README.md":
        return []                   # it describes the forms, good and bad, by example
    file_doc = Path(rel).stem if in_docs else None
    uses_items = "docs/windows-observed.md" in text and not in_docs
    problems = []
    context, context_age = None, 0
    for no, line in enumerate(text.splitlines(), 1):
        for p in check_line(line, context if context_age <= 2 else None, in_docs, file_doc):
            problems.append(f"{rel}:{no}: {p}")
        # bare "item 8" in a file that says its item numbers are docs/windows-observed.md's
        if uses_items and not _DOC.search(line):
            have = labels("windows-observed")["items"]
            for m in _ITEMS.finditer(line):
                for n in _item_numbers(m.group("list")):
                    if str(n) not in have:
                        problems.append(f"{rel}:{no}: item {n}: no such item in docs/windows-observed.md")
        d = None if in_docs else last_doc(line, in_docs)
        if d:
            context, context_age = d, 0
        elif line.strip():
            context_age += 1
    return problems


# -- the files ----------------------------------------------------------------------------------

def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True,
                             capture_output=True).stdout.decode()
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                 if p.is_file() and ".git" not in p.parts and ".venv" not in p.parts]
    return sorted(n for n in names if n != SELF and (ROOT / n).is_file())


def _read(rel: str) -> str | None:
    data = (ROOT / rel).read_bytes()
    if b"\0" in data[:4096]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_docs_exist_with_numbered_headings():
    for doc in ("README", "decisions", "facts", "windows-observed", "seed-page", "sources"):
        assert (DOCS / f"{doc}.md").is_file(), f"docs/{doc}.md is missing"
    assert {str(n) for n in range(1, 7)} <= labels("decisions")["sections"]
    assert {"3.6", "5.7", "4.7"} <= labels("facts")["sections"]
    assert {f"C{n}" for n in range(1, 19)} <= labels("facts")["labels"]
    assert set("ABCDEMNP") <= labels("windows-observed")["sections"]
    assert {str(n) for n in range(1, 59)} <= labels("windows-observed")["items"]


def test_every_tracked_file_cites_resolvably():
    problems = []
    for rel in tracked_files():
        text = _read(rel)
        if text is not None:
            problems.extend(check_file(rel, text))
    assert not problems, "unresolved citations:\n" + "\n".join(problems)


def _line_of(path: Path, needle: str) -> int:
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if needle in line:
            return no
    return 0


def test_profile_sources_emitted_at_run_time_resolve():
    """What `wfp-harness fidelity` / `profile show` print: each decision's source, via the loader."""
    from sim.profiles import BUILTIN, BUILTIN_DIR, load
    problems = []
    for name in BUILTIN:
        profile = load(name)
        for key, a in profile.assignments.items():
            where = None
            for candidate in BUILTIN:
                path = BUILTIN_DIR / f"{candidate}.toml"
                line = _line_of(path, a.source)
                if line:
                    where = f"{path.relative_to(ROOT)}:{line}"
                    break
            where = where or f"profile {name}, decisions.{key}.source"
            for p in check_line(a.source):
                problems.append(f"{where}: {p}")
    assert not problems, "unresolved citations in profile sources:\n" + "\n".join(sorted(set(problems)))


def test_traceability_strings_resolve():
    """What `wfp-harness report` prints: statements, notes and reasons, via the traceability parser."""
    from harness.traceability import default_path, parse
    path = default_path()
    statements = parse(tomllib.loads(path.read_text(encoding="utf-8")), path)
    seed = labels("seed-page")["labels"]
    facts = labels("facts")["labels"]
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    problems = []
    for s in statements:
        line = _line_of(path, f'id = "{s.id}"')
        if s.id not in seed:
            problems.append(f"{rel}:{line}: {s.id}: no heading for this statement in docs/seed-page.md")
        for c in s.contradiction:
            if c not in facts:
                problems.append(f"{rel}:{line}: {s.id}: contradiction {c} is not a label in docs/facts.md §3.6")
        for text in (s.statement, s.note, s.untestable):
            for p in check_line(text):
                problems.append(f"{rel}:{line}: {s.id}: {p}")
    assert not problems, "unresolved citations in the traceability table:\n" + "\n".join(problems)


@pytest.mark.parametrize("line", [
    "(facts §5.7)", "decisions.md §4: order", "decisions §5", "windows-observed.md items 13 and 14",
    "windows-observed item 9", "observed item 47", "../shared/spec/windows-observed.md",
    "winsock-wfp-redirect-facts.md §3.6", "(reference-projects §6a)", "docs/facts.md §9.9",
    "docs/windows-observed.md item 200", "docs/decisions.md §7", "docs/nowhere.md §1",
    "Wine test_no_such_function", "docs/facts.md §3.6 C99", "(§5.4 on its own)",
])
def test_old_and_broken_forms_are_caught(line):
    assert check_line(line), f"{line!r} should be reported"


@pytest.mark.parametrize("line", [
    "docs/facts.md §5.7 step 7", "docs/facts.md §5.4, §5.5, §5.7", "docs/facts.md §5.1-5.4",
    "docs/decisions.md §4 table", "docs/windows-observed.md items 13 and 14",
    "docs/windows-observed.md §A (items 1-9)", "docs/facts.md §3.6, C1-C17",
    "docs/facts.md §4.7 and docs/windows-observed.md item 131", "Wine dlls/ws2_32/tests/sock.c test_AcceptEx",
    "Wine afd.c test_poll", "sim/decision_points.py", "--profile windows-observed", "[decisions.sio_flush]",
    "docs/seed-page.md REC-ERR-WSAEINVAL",
])
def test_resolvable_forms_pass(line):
    assert check_line(line) == []
