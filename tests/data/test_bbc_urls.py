"""BBC URL list parsing and the XSum extrapolation splits (Li & Liang 2021, Sec. 6.3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import shared_path as shared_file

from peftrun.data import bbc_urls
from peftrun.errors import PeftrunError

FIXTURE = Path(__file__).parent / "fixtures" / "xsum_urls.txt"


def ids(*numbers: int) -> set[str]:
    return {str(90000000 + n) for n in numbers}


def test_real_sample_file_format() -> None:
    # The 20 real lines of the XSum authors' list: every line must parse, none skipped.
    index = bbc_urls.read_url_file(shared_file("data", "xsum", "XSum-WebArxiveUrls.sample.txt"))
    assert index.skipped_lines == ()
    assert len(index.categories) == 20
    assert index.categories["33261110"] == "news/business"
    assert index.categories["37543139"] == "sport/football"  # bbc.com:80 host
    assert index.categories["36469756"] == "sport/rugby-league"
    assert index.categories["33002541"] == "news/uk-wales-south-east-wales"
    assert index.categories["32143053"] == "news/world-asia-india"
    assert {bbc_urls.section(c) for c in index.categories.values()} == {"news", "sport"}


def test_fixture_categories_and_skipped_lines() -> None:
    index = bbc_urls.read_url_file(FIXTURE)
    cats = index.categories
    assert index.skipped_lines == (14, 15)  # "news/world" without id, and a non-URL line
    assert cats["90000001"] == "news/uk"  # the later duplicate (news/health) is ignored
    assert cats["90000002"] == "news/uk-politics"
    assert cats["90000003"] == "news/world-europe"
    assert cats["90000007"] == "sport/football"
    assert cats["90000008"] == "sport/cricket"  # old "sport/0/cricket" scheme
    assert cats["90000009"] == "news/science-environment"  # query string dropped
    assert cats["90000010"] == "newsbeat"
    assert cats["90000011"] == "news"
    assert cats["90000012"] == "news/uk-england-2012"  # digits inside the category
    assert cats["90000015"] == "sport/rugby-union"  # trailing slash
    assert len(cats) == 13  # 17 lines - 1 blank - 2 skipped - 1 duplicate
    assert bbc_urls.categories(FIXTURE) == cats


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("http://www.bbc.co.uk/news/business-33261110", ("33261110", "news/business")),
        ("https://m.bbc.co.uk/sport/football/37543139#comments", ("37543139", "sport/football")),
        ("http://www.bbc.co.uk/news/world", None),
        ("http://www.example.com/news/uk-12345678", None),
        ("", None),
    ],
)
def test_parse_url(line: str, expected: tuple[str, str] | None) -> None:
    assert bbc_urls.parse_url(line) == expected


def test_topics() -> None:
    assert bbc_urls.news_topic("news/uk-wales-south-east-wales") == "uk"
    assert bbc_urls.news_topic("news/world-asia-india") == "world"
    assert bbc_urls.news_topic("news/entertainment-arts") == "entertainment"
    assert bbc_urls.news_topic("news") == ""
    assert bbc_urls.news_topic("sport/football") == ""


def test_news_to_sports_split() -> None:
    train, test = bbc_urls.split_ids(bbc_urls.categories(FIXTURE), "news-to-sports")
    assert train == ids(1, 2, 3, 4, 5, 6, 9, 11, 12)  # every news/... article
    assert test == ids(7, 8, 15)  # every sport/... article; newsbeat (10) on neither side


def test_within_news_split() -> None:
    train, test = bbc_urls.split_ids(bbc_urls.categories(FIXTURE), "within-news")
    assert train == ids(1, 2, 3, 4, 12)  # uk, uk-politics, world-europe, business, uk-england
    assert test == ids(5, 6, 9)  # health, technology, science-environment
    # sport, newsbeat and topic-less news ("news/90000011") are on neither side


def test_unknown_extrapolation_lists_valid_names() -> None:
    with pytest.raises(PeftrunError, match="news-to-sports, within-news"):
        bbc_urls.split_ids({}, "news-to-politics")


def test_coverage() -> None:
    cats = bbc_urls.categories(FIXTURE)
    assert bbc_urls.check_coverage(cats, ["90000001", "12345"], FIXTURE) == 1
    with pytest.raises(PeftrunError, match=r"covers 0 of 3 .*data\.url_file") as info:
        bbc_urls.check_coverage(cats, ["1", "2", "3"], FIXTURE)
    assert str(FIXTURE) in str(info.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PeftrunError, match="cannot read the XSum URL list"):
        bbc_urls.read_url_file(tmp_path / "missing.txt")
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\nworld\n", encoding="utf-8")
    with pytest.raises(PeftrunError, match="no BBC article URL found in 2 non-blank lines"):
        bbc_urls.read_url_file(junk)
