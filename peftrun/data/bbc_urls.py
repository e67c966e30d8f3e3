"""XSum article topics from the BBC URL list, and the paper's two extrapolation splits.

Li & Liang (2021), Sec. 6.3 / ACL Table 4 ("Extrapolation"), test whether a prefix trained on
some XSum topics generalises to unseen ones. The topic of an article comes from its URL:

* ``news-to-sports``: train (and dev) on news articles, test on sport articles;
* ``within-news``: train (and dev) on world, UK and business news, test on the other news
  categories (the paper names health and technology as examples).

Source of the definitions: the paper's text only. The public code (XiangLi1999/PrefixTuning
@ 6519d30, ``seq2seq/train_bart.py``) just reads prepared folders ``/data/xsum_news``
(``--mode xsum_news``) and ``/data/xsum_topic-news-sports`` (``--mode xsum_news_sport``), both with
512-token sources; the script that built them was never published (issue #20 there asks for it:
its ``xsum_news`` dev/test hold 7,186 / 11,333 articles, which official splits do not explain).
What we do, precisely, and where it may differ:

* The URL list is the XSum authors' ``XSum-WebArxiveUrls.txt`` (EdinburghNLP/XSum): one archived
  URL a line, e.g. ``http://web.archive.org/web/2015.../http://www.bbc.co.uk/news/business-33261110``.
  The BBC id is the trailing number; the *category* is the BBC path before it, lower-cased:
  ``news/business``, ``news/uk-wales-south-east-wales``, ``sport/football``. A ``0`` path segment
  (BBC Sport's older ``sport/0/football/…`` scheme) is dropped.
* The *section* is the category's first segment (``news``, ``sport``; anything else, e.g.
  ``newsbeat``, belongs to neither side of either split). Within news, the *topic* is the first
  hyphen-separated word of the second segment: ``uk-wales-…`` → ``uk``, ``world-asia-india`` →
  ``world``, ``uk-politics`` → ``uk`` (so UK politics counts as UK news). News articles with no
  second segment (``news/12345678``) have no topic and sit on neither side of ``within-news``.
* We keep the official train/dev/test membership and only filter each split by topic
  (train and dev keep the train-side topics, test keeps the test-side topics), so no test
  article is ever trained on. The original may have redrawn splits; its sizes are unknown.

Malformed lines (no BBC host, no trailing numeric id) are skipped and counted, not fatal: the
full list has one line per article (~227k) and one odd URL should not block a run; the count and
the first line numbers are logged, and a file with no usable line at all is an error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from peftrun.errors import PeftrunError

log = logging.getLogger(__name__)

EXTRAPOLATIONS = ("news-to-sports", "within-news")
# Li & Liang Sec. 6.3: "train on {world, UK, business} news, test on the remaining news categories".
WITHIN_NEWS_TRAIN_TOPICS = frozenset({"world", "uk", "business"})

# The BBC host (bbc.co.uk or bbc.com, any subdomain such as www., optional :port) and the path
# after it, up to a query string, fragment or whitespace. The archive prefix also contains
# "http://", so the *last* match on a line is the article's own URL.
_BBC_URL = re.compile(r"(?:^|/)(?:[a-z0-9-]+\.)*bbc\.(?:co\.uk|com)(?::\d+)?/(?P<path>[^?#\s]*)", re.I)
# Category, a separator ('-' for news, '/' for sport) and the trailing BBC id.
_TRAILING_ID = re.compile(r"^(?P<category>.*[^-/])[-/](?P<id>\d+)$")


@dataclass(frozen=True)
class UrlIndex:
    """A parsed URL list: BBC id → category, plus the 1-based numbers of the lines skipped."""

    categories: dict[str, str]
    skipped_lines: tuple[int, ...]


def parse_url(line: str) -> tuple[str, str] | None:
    """``(id, category)`` for one URL line, or None when it has no BBC path ending in an id."""
    matches = list(_BBC_URL.finditer(line.strip()))
    if not matches:
        return None
    path = matches[-1].group("path").strip("/")
    found = _TRAILING_ID.match(path)
    if found is None:
        return None
    segments = [s for s in found.group("category").lower().split("/") if s and s != "0"]
    if not segments:
        return None
    return found.group("id"), "/".join(segments)


def read_url_file(url_file: str | Path) -> UrlIndex:
    """Parse the XSum URL list; blank lines are ignored, malformed ones skipped and counted.

    An id seen twice keeps its first category (the official list has one line per article).
    """
    path = Path(url_file)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise PeftrunError(
            f"cannot read the XSum URL list {path} ({exc.strerror or exc}); point data.url_file at "
            "XSum-WebArxiveUrls.txt from github.com/EdinburghNLP/XSum"
        ) from exc
    categories: dict[str, str] = {}
    skipped: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parsed = parse_url(line)
        if parsed is None:
            skipped.append(number)
            continue
        categories.setdefault(parsed[0], parsed[1])
    if not categories:
        raise PeftrunError(
            f"{path}: no BBC article URL found in {len(skipped)} non-blank lines; expected lines like "
            "http://web.archive.org/web/20151007204229/http://www.bbc.co.uk/news/business-33261110"
        )
    if skipped:
        shown = ", ".join(str(n) for n in skipped[:5])
        log.warning(
            "%s: skipped %d line(s) without a BBC URL ending in an id (lines %s%s)",
            path,
            len(skipped),
            shown,
            ", …" if len(skipped) > 5 else "",
        )
    return UrlIndex(categories=categories, skipped_lines=tuple(skipped))


def categories(url_file: str | Path) -> dict[str, str]:
    """BBC id → category (``news/business``, ``sport/football``) for every usable line."""
    return read_url_file(url_file).categories


def section(category: str) -> str:
    """First path segment: ``news``, ``sport`` or another BBC section."""
    return category.split("/", 1)[0]


def news_topic(category: str) -> str:
    """Topic of a news category (``news/uk-wales`` → ``uk``); ``""`` when it is not news or has none."""
    segments = category.split("/")
    if segments[0] != "news" or len(segments) < 2:
        return ""
    return segments[1].split("-", 1)[0]


def check_extrapolation(extrapolation: str) -> str:
    """Return the name if it is a known split, else raise with the valid names."""
    if extrapolation not in EXTRAPOLATIONS:
        raise PeftrunError(
            f"unknown XSum extrapolation {extrapolation!r}; use one of {', '.join(EXTRAPOLATIONS)}"
        )
    return extrapolation


def split_ids(categories: dict[str, str], extrapolation: str) -> tuple[set[str], set[str]]:
    """``(train-side ids, test-side ids)`` of an extrapolation split; ids on neither side are absent.

    Train-side ids serve both the train and the dev split; test-side ids the test split.
    """
    check_extrapolation(extrapolation)
    train: set[str] = set()
    test: set[str] = set()
    for bbc_id, category in categories.items():
        if extrapolation == "news-to-sports":
            side = {"news": train, "sport": test}.get(section(category))
        else:
            topic = news_topic(category)
            side = None if not topic else train if topic in WITHIN_NEWS_TRAIN_TOPICS else test
        if side is not None:
            side.add(bbc_id)
    return train, test


def check_coverage(categories: dict[str, str], ids: Iterable[str], url_file: str | Path) -> int:
    """How many of ``ids`` the URL list knows; raise when it knows none (wrong or partial file)."""
    wanted = list(ids)
    matched = sum(1 for bbc_id in wanted if bbc_id in categories)
    if wanted and matched == 0:
        raise PeftrunError(
            f"{url_file} covers 0 of {len(wanted)} XSum articles' ids; point data.url_file at the full "
            "XSum-WebArxiveUrls.txt (one URL per article) from github.com/EdinburghNLP/XSum"
        )
    return matched
