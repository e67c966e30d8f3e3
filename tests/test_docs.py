"""The documents the project cites ship with it (issue 17): a user's clone has docs/, not the
maintainers' notes kept beside the checkout, so code, tests, scripts, configs and the README cite
only docs/, and every docs/ link or citation names a file and a heading anchor that exist."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT

THIS = Path(__file__).resolve()
SCANNED = ("peftrun", "tests", "scripts", "configs", "benchmarks", "docs")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".cfg", ".txt", ".json"}
# The maintainers' notes, which do not ship (written so that this file does not cite them itself).
NOTES = re.compile(r"\b(?:DESIGN|PAPER|STYLE)\.md\b")
# A docs/ file cited in plain text (docstrings, comments), with an optional heading anchor.
DOCS_CITATION = re.compile(r"\bdocs/([\w.-]+\.md)(?:#([\w-]+))?")
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def shipped_text_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for folder in SCANNED:
        files += sorted(p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    return [p for p in files if p.resolve() != THIS and "__pycache__" not in p.parts]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower-cased, everything but letters, digits, spaces,
    hyphens and underscores dropped, spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    """Every heading anchor of a Markdown file (outside fenced code); repeats get -1, -2, ..."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            anchor = github_anchor(match.group(2))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def broken_target(path: Path, anchor: str | None) -> str | None:
    """Why `path#anchor` does not resolve, or None."""
    if not path.exists():
        return f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} does not exist"
    if anchor and path.suffix == ".md" and anchor not in anchors(path):
        return f"{path.relative_to(ROOT)} has no heading with anchor #{anchor}"
    return None


def test_nothing_cites_the_maintainers_notes():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in shipped_text_files()
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if NOTES.search(line)
    ]
    assert offenders == [], "cite docs/design.md or docs/paper.md instead:\n" + "\n".join(offenders)


def test_docs_citations_in_code_tests_scripts_and_configs_resolve():
    broken = []
    for path in shipped_text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for match in DOCS_CITATION.finditer(line):
                why = broken_target(ROOT / "docs" / match.group(1), match.group(2))
                if why:
                    broken.append(f"{path.relative_to(ROOT)}:{number}: {why}")
    assert broken == [], "\n".join(broken)


def test_links_in_the_readme_and_docs_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert (ROOT / "docs" / "design.md") in pages and (ROOT / "docs" / "paper.md") in pages
    broken = []
    for page in pages:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for match in MARKDOWN_LINK.finditer(line):
                target = match.group(1)
                if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...: not ours to check
                    continue
                file, _, anchor = target.partition("#")
                why = broken_target((page.parent / file).resolve() if file else page, anchor or None)
                if why:
                    broken.append(f"{page.relative_to(ROOT)}:{number}: [{target}] {why}")
    assert broken == [], "\n".join(broken)


def test_tests_named_in_the_docs_exist():
    """`tests/FILE.py::name` (or `::name` after a file on the same line) must name a test function
    of that file, so that the design's list of equivalence proofs follows renames."""
    missing, named = [], 0
    for page in sorted((ROOT / "docs").glob("*.md")):
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            current = None
            for span in re.findall(r"`([^`]+)`", line):
                match = re.fullmatch(r"(tests/[\w/.-]+\.py)?(?:::(\w+)(?:\[[^\]]*\])?)?", span)
                if not match or not any(match.groups()):
                    continue
                current = ROOT / match.group(1) if match.group(1) else current
                where = f"{page.relative_to(ROOT)}:{number}: {span}"
                if current is None or not current.is_file():
                    missing.append(f"{where}: no such test file")
                elif match.group(2):
                    named += 1
                    source = current.read_text(encoding="utf-8")
                    if not re.search(rf"^\s*def {match.group(2)}\(", source, re.M):
                        missing.append(f"{where}: no test {match.group(2)} in {current.relative_to(ROOT)}")
    assert named >= 20, "the design's equivalence table names its tests"
    assert missing == [], "\n".join(missing)


def test_the_readme_links_the_documentation():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {match.group(1).partition("#")[0] for match in MARKDOWN_LINK.finditer(readme)}
    assert {"docs/design.md", "docs/paper.md"} <= linked


def test_github_anchors_are_computed_as_github_computes_them():
    assert github_anchor("The flow of one run") == "the-flow-of-one-run"
    assert github_anchor("Loss") == "loss"
    assert github_anchor("Low-data settings") == "low-data-settings"
    assert github_anchor("Equivalence claims and the tests that check them") == (
        "equivalence-claims-and-the-tests-that-check-them"
    )
    assert github_anchor("LoRA and bottleneck adapters") == "lora-and-bottleneck-adapters"
    assert github_anchor("Studies: sweeps") == "studies-sweeps"
    assert github_anchor("Set-up: two commands") == "set-up-two-commands"
    assert github_anchor("`peftrun eval` (scores)") == "peftrun-eval-scores"
