"""E2E NLG (Novikova et al., 2017): the official CSVs, as Prefix-Tuning (Li & Liang, 2021) used them.

Sources are tables linearised as in the paper's files (``name : Blue Spice | Type : coffee shop``,
see docs/paper.md#e2e). Targets are the ``ref`` column: raw, or tokenised as in the paper's
``src1_*.txt`` files (:mod:`peftrun.data.e2e_tokenize`). Evaluation instances are one per MR with
all of its references in file order: dev and test group consecutive identical MRs, which gives
the official scorer's 547 dev / 630 test instances in the official order.

With ``data_dir=None`` the packaged, xz-compressed official files are read
(``peftrun/assets/e2e``, CC BY-SA 4.0, see the README there). A user folder holds the plain CSVs
``trainset.csv``, ``devset.csv`` and ``testset_w_refs.csv``; in place of ``trainset.csv`` it may
hold the three ``trainset.part{1,2,3}of3.csv`` parts of the shared data folder.
"""

from __future__ import annotations

import csv
import io
import lzma
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from peftrun.data.e2e_tokenize import tokenize_reference
from peftrun.data.examples import Instance, Pair
from peftrun.errors import PeftrunError

SPLITS = ("train", "dev", "test")
REFERENCE_STYLES = ("raw", "tokenized")
FILES = {"train": "trainset.csv", "dev": "devset.csv", "test": "testset_w_refs.csv"}
# The shared data folder keeps train in three parts (each under 4 MiB, each with the header).
TRAIN_PARTS = tuple(f"trainset.part{i}of3.csv" for i in (1, 2, 3))
# The attribute names the paper's tables use (docs/paper.md#e2e).
RENAMES = {"eatType": "Type", "priceRange": "price", "familyFriendly": "family friendly"}

_MR_ITEM = re.compile(r"([^\[\],]+)\[([^\[\]]*)\]")
_MR = re.compile(rf"\s*{_MR_ITEM.pattern}(?:\s*,\s*{_MR_ITEM.pattern})*\s*")

Row = tuple[str, str]  # (mr, ref)


def linearize_mr(mr: str) -> str:
    """``name[Blue Spice], eatType[coffee shop]`` -> ``name : Blue Spice | Type : coffee shop``.

    Values are tokenised like the references of the paper's files (``priceRange[£20-25]`` ->
    ``price : £ 20 - 25``): that is how the source side of ``src1_test.txt`` reads.
    """
    return _linearize(mr)


@lru_cache(maxsize=1 << 14)  # 4,862 distinct MRs in 42,061 train rows
def _linearize(mr: str) -> str:
    if not _MR.fullmatch(mr):
        raise PeftrunError(f"malformed E2E MR {mr!r}: write it as 'attribute[value], attribute[value], ...'")
    fields = []
    for attribute, value in _MR_ITEM.findall(mr):
        attribute = attribute.strip()
        fields.append(f"{RENAMES.get(attribute, attribute)} : {_value(value)}")
    return " | ".join(fields)


@lru_cache(maxsize=1 << 10)  # 77 distinct values in the whole data set
def _value(value: str) -> str:
    return tokenize_reference(value, "train").rstrip(" ")


def load_pairs(split: str, reference_style: str = "raw", data_dir: Path | None = None) -> list[Pair]:
    """One ``Pair(linearised MR, reference)`` per CSV row, in file order (train: 42,061)."""
    _check(split, reference_style)
    return list(_pairs(split, reference_style, _key(data_dir)))


def load_instances(split: str, reference_style: str = "raw", data_dir: Path | None = None) -> list[Instance]:
    """One ``Instance`` per MR with its references in file order; ``id`` is the raw MR.

    Dev and test group consecutive identical MRs, as the official scorer does (547 / 630, in the
    official order). Train, whose rows of one MR are scattered, groups all rows of an MR at the
    place it first appears (4,862).
    """
    _check(split, reference_style)
    return list(_instances(split, reference_style, _key(data_dir)))


def _check(split: str, reference_style: str) -> None:
    if split not in SPLITS:
        raise PeftrunError(f"unknown E2E split {split!r}: use one of {', '.join(SPLITS)}")
    if reference_style not in REFERENCE_STYLES:
        raise PeftrunError(
            f"unknown E2E reference style {reference_style!r}: use one of {', '.join(REFERENCE_STYLES)}"
        )


@dataclass(frozen=True)
class _Folder:
    """A data folder as a cache key: one entry per folder however its path is spelt, and a new one
    when one of its CSVs changes (size or mtime), so a long-lived process (the Python API, a
    notebook, a test) never serves a file's old contents."""

    path: Path
    stamp: tuple


def _key(data_dir: Path | None) -> _Folder | None:
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser().resolve()
    stamp = []
    for name in (*FILES.values(), *TRAIN_PARTS):
        try:
            info = (path / name).stat()
        except OSError:
            continue
        stamp.append((name, info.st_size, info.st_mtime_ns))
    return _Folder(path, tuple(stamp))


@lru_cache(maxsize=32)
def _pairs(split: str, reference_style: str, data_dir: _Folder | None) -> tuple[Pair, ...]:
    rows = _rows(split, data_dir)
    targets = _targets(split, reference_style, data_dir)
    return tuple(Pair(linearize_mr(mr), target) for (mr, _), target in zip(rows, targets, strict=True))


@lru_cache(maxsize=32)
def _instances(split: str, reference_style: str, data_dir: _Folder | None) -> tuple[Instance, ...]:
    rows = _rows(split, data_dir)
    targets = _targets(split, reference_style, data_dir)
    groups: dict[str, list[str]] = {}
    order: list[tuple[str, list[str]]] = []
    for (mr, _), target in zip(rows, targets, strict=True):
        if split == "train":
            refs = groups.get(mr)
            if refs is None:
                refs = groups[mr] = []
                order.append((mr, refs))
        elif order and order[-1][0] == mr:
            refs = order[-1][1]
        else:
            refs = []
            order.append((mr, refs))
        refs.append(target)
    return tuple(Instance(linearize_mr(mr), tuple(refs), id=mr) for mr, refs in order)


@lru_cache(maxsize=32)
def _targets(split: str, reference_style: str, data_dir: _Folder | None) -> tuple[str, ...]:
    refs = [ref for _, ref in _rows(split, data_dir)]
    if reference_style == "raw":
        return tuple(refs)
    # Each split follows the convention of the paper's own file for it (see e2e_tokenize).
    return tuple(tokenize_reference(ref, split) for ref in refs)


def read_rows(split: str, data_dir: Path | None = None) -> tuple[Row, ...]:
    """The split's CSV rows, (mr, ref), in file order (packaged copy when data_dir is None)."""
    return _rows(split, _key(data_dir))


@lru_cache(maxsize=16)  # the train file is 9 MB: parse it once per process
def _rows(split: str, folder: _Folder | None) -> tuple[Row, ...]:
    name = FILES[split]
    if folder is None:
        packaged = resources.files("peftrun").joinpath("assets", "e2e", name + ".xz")
        return _parse(lzma.decompress(packaged.read_bytes()), f"packaged {name}.xz")
    data_dir = folder.path
    path = data_dir / name
    if path.is_file():
        return _parse(path.read_bytes(), str(path))
    parts = [data_dir / part for part in TRAIN_PARTS]
    if split == "train" and all(part.is_file() for part in parts):
        return tuple(row for part in parts for row in _parse(part.read_bytes(), str(part)))
    also = f" (or {', '.join(TRAIN_PARTS)})" if split == "train" else ""
    raise PeftrunError(
        f"E2E {split} file {path} not found: put the official {name}{also} in {data_dir}, "
        "or leave data_dir unset to use the packaged copy"
    )


def _parse(data: bytes, where: str) -> tuple[Row, ...]:
    """Rows of one E2E CSV; the csv module keeps the CRLF inside two quoted train refs."""
    try:
        # strict: a quote opened and never closed is an error, not a field that swallows the next rows
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), strict=True)
        header = next(reader, [])
        if not {"mr", "ref"} <= set(header):
            raise PeftrunError(
                f"{where} is not an E2E CSV (header {header}): it needs 'mr' and 'ref' columns"
            )
        mr_at, ref_at = header.index("mr"), header.index("ref")
        width = max(mr_at, ref_at) + 1
        rows: list[Row] = []
        # csv.reader (not DictReader) halves the time on the 42,061 train rows.
        for row in reader:
            if not row:  # a blank line, as DictReader would skip it
                continue
            if len(row) < width:
                raise PeftrunError(
                    f"{where} line {reader.line_num} has no 'mr' or 'ref' field: use the official file"
                )
            rows.append((row[mr_at], row[ref_at]))
    except (UnicodeDecodeError, csv.Error) as error:
        raise PeftrunError(
            f"{where} cannot be read as a UTF-8 CSV ({error}): use the official file"
        ) from None
    return tuple(rows)
