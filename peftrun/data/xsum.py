"""XSum (Narayan et al., 2018): BBC article → one-sentence summary, the paper's summarisation task.

Li & Liang (2021) fine-tune BART-large on XSum (Sec. 5, Table 2) and use topic-based subsets for
extrapolation (Sec. 6.3, Table 4; see :mod:`peftrun.data.bbc_urls`). Sizes of the full data:
204,045 / 11,332 / 11,334 (train / validation / test); our split names are ``train``, ``dev``
(the hub's ``validation``) and ``test``.

Sources, in order of preference:

* **Local files**, one per split (config ``data.files.<split>=path``): JSON Lines, one object a
  line with ``document``, ``summary`` and ``id`` (the BBC id, int or str, kept as str); or parquet
  (``*.parquet``) with the same columns, which needs ``pyarrow``. Blank lines are skipped.
* **The Hugging Face hub** (``datasets.load_dataset(hub_name, split=...)``), a convenience only:
  any failure there (offline, ``datasets`` missing, a ``datasets`` release that refuses
  script-based repos) becomes a one-line error that says how to point at local files.

Text: documents and summaries are kept verbatim apart from stripping leading/trailing
whitespace; line breaks between the article's sentences stay. The original code
(XiangLi1999/PrefixTuning ``seq2seq/utils.py``) read one document per line of a ``.source``
file, so its documents held no line breaks; how its files joined the lines is not public.
``join_lines=True`` puts every document on one line (line breaks → one space) for callers who
want that form; BART's tokenizer otherwise encodes each ``\\n`` as a token of its own.
Empty documents are real (validation id 32556640) and kept: the source is ``""``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from peftrun.data import bbc_urls
from peftrun.data.examples import Instance, Pair
from peftrun.errors import PeftrunError

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
DEFAULT_HUB = "EdinburghNLP/xsum"
FIELDS = ("document", "summary", "id")
# A path with one of these suffixes is a local file even when it does not exist (→ "missing").
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
_LINE_BREAKS = re.compile(r"\s*\n\s*")


@dataclass(frozen=True)
class XsumRecord:
    """One XSum article: BBC id, article text and its reference summary."""

    id: str
    document: str
    summary: str


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise with the valid names."""
    if split not in SPLITS:
        raise PeftrunError(
            f"unknown XSum split {split!r}; use one of {', '.join(SPLITS)} (dev = the hub's validation)"
        )
    return split


def _local_hint(split: str) -> str:
    return (
        f"point at local files instead: data.files.{split}=path/to/{split}.jsonl "
        "(JSON Lines or parquet with document, summary, id)"
    )


def _record(obj: object, where: str) -> XsumRecord:
    """Validate one JSON object / parquet row; ``where`` names the file and line for errors."""
    if not isinstance(obj, dict):
        raise PeftrunError(f"{where}: expected a JSON object with {', '.join(FIELDS)}")
    missing = [name for name in FIELDS if name not in obj]
    if missing:
        raise PeftrunError(f"{where}: missing field {', '.join(map(repr, missing))}")
    for name in ("document", "summary"):
        if not isinstance(obj[name], str):
            raise PeftrunError(f"{where}: field {name!r} must be a string")
    bbc_id = obj["id"]
    # bool is an int subclass; a float id would print as "3.2e7": both are data errors.
    if isinstance(bbc_id, bool) or not isinstance(bbc_id, (int, str)):
        raise PeftrunError(f"{where}: field 'id' must be a string or an integer")
    return XsumRecord(
        id=str(bbc_id).strip(), document=obj["document"].strip(), summary=obj["summary"].strip()
    )


def read_jsonl(path: str | Path) -> list[XsumRecord]:
    """Records of a JSON Lines file; any bad line raises with the file and line number."""
    path = Path(path)
    records = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{path} line {number}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise PeftrunError(
                        f"{where}: invalid JSON ({exc.msg}); expected one object per line"
                    ) from exc
                records.append(_record(obj, where))
    except FileNotFoundError as exc:
        raise PeftrunError(f"XSum file {path} does not exist; fix the path in data.files") from exc
    except UnicodeDecodeError as exc:
        raise PeftrunError(f"{path}: not UTF-8 text ({exc.reason}); save the file as UTF-8") from exc
    except OSError as exc:
        raise PeftrunError(f"cannot read XSum file {path} ({exc.strerror or exc})") from exc
    return records


def read_parquet(path: str | Path) -> list[XsumRecord]:
    """Records of a parquet file with columns document, summary, id (needs ``pyarrow``)."""
    path = Path(path)
    try:
        import pyarrow.parquet as pq  # lazy: an optional dependency, only for parquet input
    except ImportError as exc:
        raise PeftrunError(
            f"{path}: reading parquet needs pyarrow (pip install pyarrow), or convert it to JSON Lines"
        ) from exc
    if not path.exists():
        raise PeftrunError(f"XSum file {path} does not exist; fix the path in data.files")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt or non-parquet files
        raise PeftrunError(
            f"{path}: not a readable parquet file ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    missing = [name for name in FIELDS if name not in table.column_names]
    if missing:
        raise PeftrunError(
            f"{path}: missing column {', '.join(map(repr, missing))}; expected {', '.join(FIELDS)}"
        )
    rows = table.select(list(FIELDS)).to_pylist()
    return [_record(row, f"{path} row {number}") for number, row in enumerate(rows, start=1)]


def read_hub(hub_name: str, split: str) -> list[XsumRecord]:
    """Records of one split from the Hugging Face hub; every failure becomes a one-line error."""
    check_split(split)
    hub_split = HUB_SPLITS[split]
    try:
        import datasets  # lazy: optional, and slow to import
    except ImportError as exc:
        raise PeftrunError(
            f"cannot load XSum {split} from the hub: the 'datasets' package is not installed "
            f"(pip install datasets); or {_local_hint(split)}"
        ) from exc
    try:
        rows = datasets.load_dataset(hub_name, split=hub_split)
        return [_record(dict(row), f"{hub_name} {hub_split} row {n}") for n, row in enumerate(rows, start=1)]
    except PeftrunError:
        raise
    except Exception as exc:  # offline, unknown repo, script-based repo refused, ...
        raise PeftrunError(
            f"could not load {hub_name!r} split {hub_split!r} from the Hugging Face hub "
            f"({type(exc).__name__}: {_first_line(exc)}); {_local_hint(split)}"
        ) from exc


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception message, shortened: errors stay on one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else "no message"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_local(path_or_hub: str | Path) -> bool:
    """True for an existing path or a name ending in .jsonl/.json/.parquet; else a hub name."""
    path = Path(path_or_hub)
    return isinstance(path_or_hub, Path) or path.exists() or path.suffix.lower() in LOCAL_SUFFIXES


def load_records(path_or_hub: str | Path, split: str) -> list[XsumRecord]:
    """Records of one split from a local file (see :func:`is_local`) or a hub dataset name."""
    check_split(split)
    if not is_local(path_or_hub):
        return read_hub(str(path_or_hub), split)
    path = Path(path_or_hub)
    if path.is_dir():
        raise PeftrunError(f"{path} is a folder; data.files.{split} must name one file")
    return read_parquet(path) if path.suffix.lower() == ".parquet" else read_jsonl(path)


def _select(
    files: Mapping[str, str | Path] | None,
    split: str,
    hub_name: str,
    url_file: str | Path | None,
    extrapolation: str | None,
) -> list[XsumRecord]:
    """Records of ``split`` from ``files`` (or the hub when None), filtered to an extrapolation side."""
    check_split(split)
    if extrapolation is not None:
        bbc_urls.check_extrapolation(extrapolation)  # fail before reading large files
        if url_file is None:
            raise PeftrunError(
                f"extrapolation {extrapolation!r} needs the XSum URL list for article topics: set "
                "data.url_file=path/to/XSum-WebArxiveUrls.txt (github.com/EdinburghNLP/XSum)"
            )
    if files is None:
        records = read_hub(hub_name, split)
    elif split in files:
        records = load_records(files[split], split)
    else:
        raise PeftrunError(f"data.files has no {split!r} entry; add data.files.{split}=path/to/{split}.jsonl")
    if extrapolation is None:
        return records
    return _filter_side(records, split, url_file, extrapolation)


def _filter_side(
    records: list[XsumRecord], split: str, url_file: str | Path, extrapolation: str
) -> list[XsumRecord]:
    """Keep the records on this split's side (train/dev → train side, test → test side)."""
    categories = bbc_urls.categories(url_file)
    train_ids, test_ids = bbc_urls.split_ids(categories, extrapolation)
    covered = bbc_urls.check_coverage(categories, (r.id for r in records), url_file)
    side, keep = ("test", test_ids) if split == "test" else ("train", train_ids)
    kept = [r for r in records if r.id in keep]
    log.info(
        "XSum %s, %s %s side: kept %d of %d articles (%d not in %s)",
        split,
        extrapolation,
        side,
        len(kept),
        len(records),
        len(records) - covered,
        url_file,
    )
    if not kept:
        raise PeftrunError(
            f"XSum {split}: none of the {covered} articles found in {url_file} is on the {side} side of "
            f"{extrapolation!r}; check that data.files.{split} and data.url_file are the full files"
        )
    return kept


def _document(record: XsumRecord, join_lines: bool) -> str:
    return _LINE_BREAKS.sub(" ", record.document) if join_lines else record.document


def load_pairs(
    files: Mapping[str, str | Path] | None,
    split: str,
    *,
    hub_name: str = DEFAULT_HUB,
    url_file: str | Path | None = None,
    extrapolation: str | None = None,
    join_lines: bool = False,
) -> list[Pair]:
    """Training pairs (article → summary) of one split, in file order.

    ``files`` maps split names to local files; ``None`` loads ``hub_name`` from the hub instead.
    ``extrapolation`` (``news-to-sports`` / ``within-news``, with ``url_file``) keeps only the
    articles on this split's side of that split (Li & Liang Sec. 6.3).
    """
    records = _select(files, split, hub_name, url_file, extrapolation)
    return [Pair(source=_document(r, join_lines), target=r.summary) for r in records]


def load_instances(
    files: Mapping[str, str | Path] | None,
    split: str,
    *,
    hub_name: str = DEFAULT_HUB,
    url_file: str | Path | None = None,
    extrapolation: str | None = None,
    join_lines: bool = False,
) -> list[Instance]:
    """Evaluation instances, one per article: ``references=(summary,)``, ``id`` = BBC id.

    Arguments as for :func:`load_pairs`. XSum has a single reference per article.
    """
    records = _select(files, split, hub_name, url_file, extrapolation)
    return [Instance(source=_document(r, join_lines), references=(r.summary,), id=r.id) for r in records]
