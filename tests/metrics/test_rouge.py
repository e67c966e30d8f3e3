"""ROUGE-1/2/L F1 ×100 (rouge-score, Porter stemming, rougeL) on hand-checked cases."""

from __future__ import annotations

from importlib import metadata

import pytest

from peftrun.errors import PeftrunError
from peftrun.metrics.rouge import score_rouge


def scores(hypothesis: str, *references: str) -> dict[str, float]:
    return score_rouge([hypothesis], [list(references)]).scores


def test_identical_is_100() -> None:
    # Case and punctuation vanish in rouge-score's tokenizer: same tokens, F1 = 1 everywhere.
    assert scores("The cat sat on the mat.", "the cat sat on the mat") == pytest.approx(
        {"ROUGE-1": 100.0, "ROUGE-2": 100.0, "ROUGE-L": 100.0}
    )


def test_disjoint_is_0() -> None:
    assert scores("alpha beta gamma", "delta epsilon zeta") == {
        "ROUGE-1": 0.0,
        "ROUGE-2": 0.0,
        "ROUGE-L": 0.0,
    }


def test_hand_checked_unigram_bigram_lcs() -> None:
    # After stemming (tokens longer than 3 characters): police→polic, arrested→arrest.
    #   hyp: polic arrest man in london                (5 tokens)
    #   ref: a man was arrest by polic in london       (8 tokens)
    # ROUGE-1: overlap {polic, arrest, man, in, london} = 5 → P 5/5, R 5/8, F = 2·1·.625/1.625 = 10/13
    # ROUGE-2: hyp bigrams 4, ref bigrams 7, shared only "in london" → P 1/4, R 1/7, F = 2/11
    # ROUGE-L: longest common subsequence "man in london" (3) → P 3/5, R 3/8, F = .45/.975 = 6/13
    got = scores("Police arrest man in London", "A man was arrested by police in London")
    assert got["ROUGE-1"] == pytest.approx(100 * 10 / 13)
    assert got["ROUGE-2"] == pytest.approx(100 * 2 / 11)
    assert got["ROUGE-L"] == pytest.approx(100 * 6 / 13)


def test_stemming_matches_inflections() -> None:
    # cats→cat, running→run, runs→run; "cat" (3 chars) is not stemmed and needs no stemming.
    # Without the stemmer no token would match (F1 = 0); with it both tokens match: 100.
    assert scores("cats running", "cat runs")["ROUGE-1"] == pytest.approx(100.0)
    assert scores("cats running", "cat runs")["ROUGE-2"] == pytest.approx(100.0)


def test_mean_over_instances_and_per_example() -> None:
    report = score_rouge(["the cat sat", "alpha beta"], [["the cat sat"], ["gamma delta"]])
    assert report.per_example["ROUGE-1"] == pytest.approx([100.0, 0.0])
    assert report.scores["ROUGE-1"] == pytest.approx(50.0)  # plain mean of 100 and 0
    assert report.scorers["version"] == metadata.version("rouge-score")
    assert report.scorers["rouge_types"] == ["rouge1", "rouge2", "rougeL"]
    assert report.scorers["use_stemmer"] is True
    assert any("bootstrap" in note for note in report.notes)


def test_multi_reference_takes_the_best() -> None:
    # Against "dogs bark loudly" F1 = 0; against "the cat sat" F1 = 1: the max (100) counts,
    # whatever the order of the references.
    for refs in (["dogs bark loudly", "the cat sat"], ["the cat sat", "dogs bark loudly"]):
        assert score_rouge(["the cat sat"], [refs]).scores["ROUGE-1"] == pytest.approx(100.0)


def test_empty_output_scores_zero_with_a_note() -> None:
    report = score_rouge(["", "the cat"], [["the cat"], ["the cat"]])
    assert report.per_example["ROUGE-L"] == pytest.approx([0.0, 100.0])
    assert any("1 of 2 outputs are empty" in note for note in report.notes)


def test_length_mismatch() -> None:
    with pytest.raises(PeftrunError, match="expected 2 outputs .*got 1"):
        score_rouge(["a"], [["a"], ["b"]])


def test_bad_references() -> None:
    with pytest.raises(PeftrunError, match="nothing to score"):
        score_rouge([], [])
    with pytest.raises(PeftrunError, match="instance 0 needs a list"):
        score_rouge(["a"], [[]])
    with pytest.raises(PeftrunError, match="instance 0 needs a list"):
        score_rouge(["a"], ["a"])  # type: ignore[list-item]  # a bare string, not a list
