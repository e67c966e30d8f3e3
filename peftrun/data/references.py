"""Reference files for `peftrun eval --predictions F --references R` (any dataset).

Accepted layouts, one instance per unique source, in the outputs file's order:
- `.csv` with `mr` and `ref` columns (the E2E layout): consecutive rows with the same `mr`
  form one instance, as the official E2E scorer groups them;
- `.jsonl` with a `references` list, or a single `summary` / `reference` / `ref` string;
- anything else: plain text. With blank lines, instances are separated by a blank line and hold
  one reference per line (the official E2E scorer's multi-reference layout); a file without blank
  lines has one reference per line, one line per instance (summarisation gold files such as
  `test.target`), aligned with the outputs.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from peftrun.errors import PeftrunError
from peftrun.files import read_utf8

SINGLE_KEYS = ("summary", "reference", "ref")


def read_references(path: Path) -> list[list[str]]:
    text = read_utf8(path, "references file")
    if path.suffix == ".csv":
        return _from_csv(text, path)
    if path.suffix == ".jsonl":
        return _from_jsonl(text, path)
    return _from_text(text)


def _from_text(text: str) -> list[list[str]]:
    """Plain text, as the official E2E scorer reads it: with a blank line anywhere, blank lines
    separate instances (several references each); without one, each line is one instance's
    single reference (summarisation gold files such as test.target)."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it is not a blank line
    if not any(not line.strip() for line in lines):
        return [[line] for line in lines]
    groups: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            groups[-1].append(line)
        elif groups[-1]:
            groups.append([])
    return [group for group in groups if group]


def _from_csv(text: str, path: Path) -> list[list[str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or not {"mr", "ref"} <= set(reader.fieldnames):
        raise PeftrunError(
            f"{path}: a references CSV needs 'mr' and 'ref' columns (rows of one MR grouped "
            f"consecutively); found {reader.fieldnames}"
        )
    groups: list[list[str]] = []
    previous = None
    for row in reader:
        if row["mr"] != previous:
            groups.append([])
            previous = row["mr"]
        groups[-1].append(row["ref"])
    return groups


def _from_jsonl(text: str, path: Path) -> list[list[str]]:
    groups = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise PeftrunError(f"{path}:{number}: invalid JSON ({err.msg})") from None
        refs = item.get("references") if isinstance(item, dict) else None
        if refs is None and isinstance(item, dict):
            refs = next(([item[k]] for k in SINGLE_KEYS if isinstance(item.get(k), str)), None)
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise PeftrunError(
                f"{path}:{number}: expected 'references' (a list of strings) or one of {SINGLE_KEYS}"
            )
        groups.append(refs)
    return groups
