"""XSum loading: the real shared samples, JSONL/parquet errors, the hub fallback, extrapolation."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from conftest import shared_path as shared_file

from peftrun.data import xsum
from peftrun.data.examples import Instance, Pair
from peftrun.errors import PeftrunError

URL_FIXTURE = Path(__file__).parent / "fixtures" / "xsum_urls.txt"
EMPTY_DOCUMENT_ID = "32556640"  # the one validation article with an empty document


def sample(name: str) -> Path:
    return shared_file("data", "xsum", name)


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def row(bbc_id: object, document: str = "Some text.", summary: str = "A summary.") -> dict[str, object]:
    return {"document": document, "summary": summary, "id": bbc_id}


# --- the real samples ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "count"),
    [("test_sample_a.jsonl", 1000), ("test_sample_b.jsonl", 910), ("validation_sample.jsonl", 1000)],
)
def test_real_samples_load(name: str, count: int) -> None:
    records = xsum.load_records(sample(name), "test")
    assert len(records) == count
    assert all(isinstance(r.id, str) and r.id.isdigit() for r in records)
    assert all(r.summary for r in records)
    assert len({r.id for r in records}) == count


def test_first_test_item_is_the_hub_order() -> None:
    pairs = xsum.load_pairs({"test": sample("test_sample_a.jsonl")}, "test")
    instances = xsum.load_instances({"test": sample("test_sample_a.jsonl")}, "test")
    assert instances[0].id == "38264402"
    assert isinstance(pairs[0], Pair) and isinstance(instances[0], Instance)
    assert instances[0].references == (pairs[0].target,)
    assert instances[0].source == pairs[0].source


def test_empty_document_is_kept() -> None:
    files = {"dev": sample("validation_sample.jsonl")}
    instances = xsum.load_instances(files, "dev")
    assert len(instances) == 1000
    empty = [i for i in instances if i.id == EMPTY_DOCUMENT_ID]
    assert len(empty) == 1 and empty[0].source == "" and empty[0].references[0]
    pairs = xsum.load_pairs(files, "dev", join_lines=True)
    assert sum(p.source == "" for p in pairs) == 1


# --- text handling ------------------------------------------------------------------------------


def test_strip_keep_lines_or_join(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [row(7, "  First line.\n Second.\n\nThird. ", " Sum. \n")])
    (record,) = xsum.load_records(path, "train")
    assert record == xsum.XsumRecord(id="7", document="First line.\n Second.\n\nThird.", summary="Sum.")
    (pair,) = xsum.load_pairs({"train": path}, "train", join_lines=True)
    assert pair == Pair(source="First line. Second. Third.", target="Sum.")


def test_blank_lines_skipped_and_int_ids(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(row(1)) + "\n\n   \n" + json.dumps(row("2")) + "\n", encoding="utf-8")
    assert [r.id for r in xsum.load_records(path, "train")] == ["1", "2"]


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "pattern"),
    [
        ([json.dumps(row(1)), json.dumps(row(2)), "{not json"], r"t\.jsonl line 3: invalid JSON"),
        ([json.dumps(row(1)), json.dumps({"document": "d", "id": 2})], r"line 2: missing field 'summary'"),
        (["[1, 2]"], r"line 1: expected a JSON object"),
        ([json.dumps(row(1, document=None))], r"line 1: field 'document' must be a string"),  # type: ignore[arg-type]
        ([json.dumps(row(True))], r"line 1: field 'id' must be a string or an integer"),
        ([json.dumps(row(1.5))], r"line 1: field 'id' must be"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, lines: list[str], pattern: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(PeftrunError, match=pattern) as info:
        xsum.load_records(path, "train")
    assert "\n" not in str(info.value)


def test_missing_file_unknown_split_missing_entry(tmp_path: Path) -> None:
    with pytest.raises(PeftrunError, match=r"does not exist; fix the path in data\.files"):
        xsum.load_records(tmp_path / "nope.jsonl", "train")
    with pytest.raises(PeftrunError, match=r"unknown XSum split 'validation'; use one of train, dev, test"):
        xsum.load_pairs({"validation": tmp_path / "v.jsonl"}, "validation")
    with pytest.raises(PeftrunError, match=r"data\.files has no 'test' entry; add data\.files\.test="):
        xsum.load_pairs({"train": tmp_path / "t.jsonl"}, "test")
    with pytest.raises(PeftrunError, match="is a folder"):
        xsum.load_records(tmp_path, "train")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"document": "caf\xe9", "summary": "s", "id": 1}\n')
    with pytest.raises(PeftrunError, match="not UTF-8"):
        xsum.load_records(latin, "train")


# --- parquet ------------------------------------------------------------------------------------


def test_parquet_round_trip(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed (pip install pyarrow)")
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    table = pa.table({"document": ["One.\nTwo.", ""], "summary": ["S1.", "S2."], "id": [11, 12]})
    pq.write_table(table, path)
    assert xsum.load_pairs({"train": path}, "train") == [Pair("One.\nTwo.", "S1."), Pair("", "S2.")]
    assert [i.id for i in xsum.load_instances({"train": path}, "train")] == ["11", "12"]

    pq.write_table(pa.table({"document": ["d"], "id": ["1"]}), tmp_path / "bad.parquet")
    with pytest.raises(PeftrunError, match="missing column 'summary'"):
        xsum.load_records(tmp_path / "bad.parquet", "train")


def test_parquet_without_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import fail, as if pyarrow were not installed.
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(PeftrunError, match=r"pip install pyarrow"):
        xsum.load_records(tmp_path / "x.parquet", "train")


# --- the hub ------------------------------------------------------------------------------------


def fake_datasets(monkeypatch: pytest.MonkeyPatch, load_dataset) -> None:  # noqa: ANN001
    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)


def test_hub_failure_is_one_line_with_the_local_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(name: str, split: str) -> None:
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)\nmore detail")

    fake_datasets(monkeypatch, offline)
    with pytest.raises(PeftrunError) as info:
        xsum.load_pairs(None, "test", hub_name="nobody/unreachable-xsum")
    message = str(info.value)
    assert "\n" not in message
    assert "'nobody/unreachable-xsum'" in message and "ConnectionError" in message
    assert "data.files.test=path/to/test.jsonl" in message


def test_hub_without_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(PeftrunError, match=r"pip install datasets.*data\.files\.dev="):
        xsum.load_instances(None, "dev")


def test_hub_dev_is_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_dataset(name: str, split: str) -> list[dict[str, object]]:
        calls.append((name, split))
        return [row("5", "Doc.", "Sum.")]

    fake_datasets(monkeypatch, load_dataset)
    assert xsum.load_instances(None, "dev") == [Instance("Doc.", ("Sum.",), "5")]
    assert calls == [("EdinburghNLP/xsum", "validation")]


def test_real_datasets_offline_unreachable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # With the real package (if installed), forced offline: any failure must be a PeftrunError.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    if "datasets" in sys.modules:
        pytest.skip("datasets was imported earlier, so offline mode can no longer be forced")
    pytest.importorskip("datasets", reason="datasets not installed (pip install datasets)")
    with pytest.raises(PeftrunError, match=r"data\.files\.train="):
        xsum.load_pairs(None, "train", hub_name="nobody/unreachable-xsum-0")


# --- extrapolation ------------------------------------------------------------------------------


def synthetic_split(tmp_path: Path, numbers: range) -> Path:
    """Articles with ids 90000001... matching tests/fixtures/xsum_urls.txt (synthetic text)."""
    rows = [row(str(90000000 + n), f"Article {n}.", f"Summary {n}.") for n in numbers]
    return write_jsonl(tmp_path / "split.jsonl", rows)


def test_news_to_sports_filters_each_split(tmp_path: Path) -> None:
    path = synthetic_split(tmp_path, range(1, 17))
    files = {"train": path, "dev": path, "test": path}
    kw = {"url_file": URL_FIXTURE, "extrapolation": "news-to-sports"}
    train = xsum.load_instances(files, "train", **kw)
    dev = xsum.load_instances(files, "dev", **kw)
    test = xsum.load_instances(files, "test", **kw)
    news = [str(90000000 + n) for n in (1, 2, 3, 4, 5, 6, 9, 11, 12)]
    assert [i.id for i in train] == news and [i.id for i in dev] == news  # file order kept
    assert [i.id for i in test] == ["90000007", "90000008", "90000015"]


def test_within_news(tmp_path: Path) -> None:
    path = synthetic_split(tmp_path, range(1, 17))
    kw = {"url_file": URL_FIXTURE, "extrapolation": "within-news"}
    train = xsum.load_pairs({"train": path}, "train", **kw)
    test = xsum.load_pairs({"test": path}, "test", **kw)
    assert [p.source for p in train] == [f"Article {n}." for n in (1, 2, 3, 4, 12)]
    assert [p.source for p in test] == [f"Article {n}." for n in (5, 6, 9)]


def test_extrapolation_errors(tmp_path: Path) -> None:
    path = synthetic_split(tmp_path, range(7, 9))  # sport articles only
    with pytest.raises(PeftrunError, match=r"use one of news-to-sports, within-news"):
        xsum.load_pairs({"train": path}, "train", url_file=URL_FIXTURE, extrapolation="sports")
    with pytest.raises(PeftrunError, match=r"needs the XSum URL list.*data\.url_file="):
        xsum.load_pairs({"train": path}, "train", extrapolation="within-news")
    with pytest.raises(PeftrunError, match=r"none of the 2 articles .* train side of 'news-to-sports'"):
        xsum.load_pairs({"train": path}, "train", url_file=URL_FIXTURE, extrapolation="news-to-sports")


def test_zero_coverage_with_the_real_files() -> None:
    # The shared URL sample's 20 ids are not among the sample articles: 0 of 1000 match.
    urls = sample("XSum-WebArxiveUrls.sample.txt")
    with pytest.raises(PeftrunError, match=r"covers 0 of 1000 XSum articles") as info:
        xsum.load_pairs(
            {"dev": sample("validation_sample.jsonl")}, "dev", url_file=urls, extrapolation="news-to-sports"
        )
    assert str(urls) in str(info.value)
