"""tokenize_reference rebuilds the tokenised references of Prefix-Tuning's E2E files byte for byte.

The files (shared data README, "prefix_tuning_format") pair one to one with the rows of the
official CSVs: ``src1_test.txt`` with ``testset_w_refs.csv``, ``src1_valid.txt`` with ``devset.csv``.
"""

from __future__ import annotations

import csv

import pytest
from conftest import SHARED
from conftest import shared_path as _shared

from peftrun.data.e2e_tokenize import tokenize_reference
from peftrun.errors import PeftrunError

E2E = SHARED / "data" / "e2e"

# (paper file, official CSV, split whose convention it follows)
FILES = {
    "test": ("src1_test.txt", "testset_w_refs.csv", "test"),
    "valid": ("src1_valid.txt", "devset.csv", "dev"),
}
# Lines our rules do not rebuild: none today. Add (line number, ours, file's) here if a rule
# change ever trades one line for many; the test pins both the count and the lines.
KNOWN_MISMATCHES: dict[str, list[tuple[int, str, str]]] = {"test": [], "valid": []}


def _file_references(name: str) -> list[str]:
    text = _shared(E2E / "prefix_tuning_format" / name).read_text(encoding="utf-8")
    lines = text.split("\n")
    assert lines[-1] == ""  # every line ends in "\n", no "\r"
    return [line.split("||", 1)[1] for line in lines[:-1]]


def _csv_references(name: str) -> list[str]:
    with open(_shared(E2E / "original" / name), encoding="utf-8", newline="") as handle:
        return [row["ref"] for row in csv.DictReader(handle)]


@pytest.mark.parametrize("which", sorted(FILES))
def test_rebuilds_paper_file(which: str) -> None:
    paper_file, csv_file, split = FILES[which]
    wanted = _file_references(paper_file)
    raw = _csv_references(csv_file)
    assert len(raw) == len(wanted)
    # The rows align one to one: tokenisation only adds spaces.
    assert all("".join(r.split()) == "".join(w.split()) for r, w in zip(raw, wanted, strict=True))
    ours = [tokenize_reference(text, split) for text in raw]
    mismatches = [(i, o, w) for i, (o, w) in enumerate(zip(ours, wanted, strict=True)) if o != w]
    assert mismatches == KNOWN_MISMATCHES[which]
    assert (len(wanted) - len(mismatches)) / len(wanted) >= 0.995


def test_the_two_conventions_really_differ() -> None:
    # Why tokenize_reference takes a split: one rule set cannot rebuild both files.
    raw = _csv_references("devset.csv")
    wanted = _file_references("src1_valid.txt")
    as_test = sum(tokenize_reference(r, "test") == w for r, w in zip(raw, wanted, strict=True))
    assert as_test / len(wanted) < 0.99


@pytest.mark.parametrize(
    ("text", "train_dev", "test"),
    [
        ("It isn't cheap.", "It isn 't cheap . ", "It is n't cheap . "),
        ("You won't regret it", "You won 't regret it ", "You wo n't regret it "),
        ("It costs £20-£25.", "It costs £ 20- £ 25 . ", "It costs £ 20-£25 . "),
        (
            "A 5-star, family-friendly pub.",
            "A 5 - star , family - friendly pub . ",
            "A 5-star , family - friendly pub . ",
        ),
        ("'The Mill' is near.", "'The Mill ' is near . ", "' The Mill ' is near . "),
        ("rated 5. it is good", "rated 5. it is good ", "rated 5 . it is good "),
        ("a good rating. its cheap", "a good rating . its cheap ", "a good rating . its cheap "),
        ("hors d'oeuvres", "hors d 'oeuvres ", "hors d'oeuvres "),
        ("thats it", "thats it ", "that s it "),
        ("price 20£-25 here", "price 20 £ -25 here ", "price 20£-25 here "),
        ("family friendly..", "family friendly .. ", "family friendly .. "),
        ('A "The Punter"  pub', 'A " The Punter " pub ', 'A " The Punter " pub '),
        ("", "", ""),
    ],
)
def test_hand_cases(text: str, train_dev: str, test: str) -> None:
    assert tokenize_reference(text, "train") == train_dev
    assert tokenize_reference(text, "dev") == train_dev
    assert tokenize_reference(text, "test") == test


def test_unknown_split_is_a_user_error() -> None:
    with pytest.raises(PeftrunError, match="train, dev, test"):
        tokenize_reference("A pub.", "validation")
