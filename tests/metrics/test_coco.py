"""ROUGE-L, CIDEr-D and METEOR as the COCO caption code computes them."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from _e2e_testdata import OFFICIAL, official_system, require, require_shared
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from peftrun.metrics import coco

B2 = 1.2**2  # ROUGE-L beta squared, computed the way COCO does


def lcs_by_dynamic_programming(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def test_bit_parallel_lcs_equals_dynamic_programming() -> None:
    rng = random.Random(0)
    for _ in range(500):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 80))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 80))]
        assert coco.lcs_length(a, b) == lcs_by_dynamic_programming(a, b)


def test_rouge_l_by_hand() -> None:
    # hyp "the cat sat on the mat" (6 words)
    #   vs "the cat is on the mat": LCS 5 -> P 5/6, R 5/6
    #   vs "the cat":               LCS 2 -> P 2/6, R 2/2
    # COCO takes max P and max R separately: P = 5/6, R = 1.
    hyp, refs = "the cat sat on the mat", ["the cat is on the mat", "the cat"]
    p, r = 5 / 6, 1.0
    assert coco.rouge_l_instance(hyp, refs) == pytest.approx((1 + B2) * p * r / (r + B2 * p), rel=1e-15)
    assert coco.rouge_l_instance("", refs) == 0.0  # "" is one empty token: no match


def test_cider_d_by_hand() -> None:
    # Two instances, every n-gram in one reference set only: idf = log(2) - log(1) for all,
    # so cosines are those of raw counts.
    # Instance 1: hyp "a b c", ref "a b c d"
    #   1-grams 3 / (sqrt 3 * 2); 2-grams 2 / (sqrt 2 * sqrt 3); 3-grams 1 / sqrt 2; 4-grams 0
    #   length = number of bigrams: 2 vs 3 -> penalty exp(-1 / (2 * 6^2))
    # Instance 2: hyp = ref = "x y": 1-, 2-grams cosine 1; 3-, 4-grams 0 -> 10 * 2/4 = 5
    cos = [math.sqrt(3) / 2, math.sqrt(2 / 3), 1 / math.sqrt(2), 0.0]
    first = 10 * math.exp(-1 / 72) * sum(cos) / 4
    score, per = coco.cider_d(["a b c", "x y"], [["a b c d"], ["x y"]])
    assert per == pytest.approx([first, 5.0], rel=1e-13)
    assert score == pytest.approx((first + 5) / 2, rel=1e-13)


def test_cider_d_clips_repeated_ngrams() -> None:
    # hyp "a a", ref "a b": unigram vectors (2, 0) and (1, 1) times idf; clipped dot
    # min(2, 1) * 1 = 1, norms 2 and sqrt 2 -> cosine 1 / (2 sqrt 2); bigrams share nothing.
    _, per = coco.cider_d(["a a", "x y"], [["a b"], ["x y"]])
    assert per[0] == pytest.approx(10 * (1 / (2 * math.sqrt(2))) / 4, rel=1e-13)


def test_cider_d_ignores_ngrams_in_every_reference_set() -> None:
    # "the" appears in both instances' references: idf 0, it carries no weight.
    _, per = coco.cider_d(["the a", "the b"], [["the a"], ["the b"]])
    _, per_without = coco.cider_d(["a", "b"], [["a"], ["b"]])
    assert per[0] == pytest.approx(10 * (1 + 1) / 4)  # unigram "a" and bigram "the a" match
    assert per_without[0] == pytest.approx(10 * 1 / 4)


def test_cider_d_without_any_reference_ngram_is_zero() -> None:
    # References that tokenise to nothing: pycocoevalcap's Cider fails here; the score is 0.
    assert coco.cider_d(["a b", ""], [[""], ["", ""]]) == (0.0, [0.0, 0.0])


def test_tokenize_groups_references_per_instance() -> None:
    hyps, refs = coco.tokenize(["A cat.", ""], [["The cat, sat.", "A dog!"], ["x"]])
    assert hyps == ["a cat", ""]
    assert refs == [["the cat sat", "a dog"], ["x"]]


@pytest.mark.parametrize("name", ["tgen_dev", "perturbed_test"])
def test_rouge_and_cider_match_official(name: str) -> None:
    require_shared()
    hyps, refs = coco.tokenize(*official_system(name))
    assert coco.rouge_l(hyps, refs)[0] == pytest.approx(OFFICIAL[name]["ROUGE_L"], rel=1e-15)
    assert coco.cider_d(hyps, refs)[0] == pytest.approx(OFFICIAL[name]["CIDEr"], rel=1e-15)


def pycocoevalcap_scores(scorer, hyps: list[str], refs: list[list[str]]) -> tuple[float, list[float]]:
    """pycocoevalcap's own scorer, called as COCOEvalCap calls it (dicts keyed by id)."""
    corpus, per = scorer().compute_score(
        {i: list(r) for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)}
    )
    assert isinstance(per, np.ndarray) and len(per) == len(hyps)
    return float(corpus), per.tolist()


def test_rouge_l_equals_pycocoevalcap_on_random_tokens() -> None:
    # Short vocabularies give long common subsequences; "" gives empty tokens (as COCO splits).
    rng = random.Random(1)

    def words() -> str:
        return " ".join(rng.choice(["a", "b", "c", "", "d"]) for _ in range(rng.randint(0, 30)))

    hyps = [words() for _ in range(300)]
    refs = [[words() for _ in range(rng.randint(1, 6))] for _ in hyps]
    assert coco.rouge_l(hyps, refs) == pycocoevalcap_scores(Rouge, hyps, refs)


@pytest.mark.parametrize("name", ["tgen_dev", "perturbed_test"])
def test_rouge_and_cider_equal_pycocoevalcap_on_real_data(name: str) -> None:
    # Real E2E outputs (perturbed_test has empty, truncated and upper-cased outputs) after
    # the same tokenisation: corpus and every instance score identical to the package's.
    require_shared()
    hyps, refs = coco.tokenize(*official_system(name))
    assert coco.rouge_l(hyps, refs) == pycocoevalcap_scores(Rouge, hyps, refs)
    assert coco.cider_d(hyps, refs) == pycocoevalcap_scores(Cider, hyps, refs)


def test_meteor_process_scores_segments_and_corpus() -> None:
    require(coco.java_available(), "METEOR needs Java")
    hyps = ["the cat sat on the mat", "", "a dog"]
    refs = [["the cat sat on the mat", "a cat on a mat"], ["something"], ["the dog barks"]]
    score, segments = coco.meteor(hyps, refs)
    assert len(segments) == 3
    assert segments[0] > segments[2] > segments[1] == 0.0
    assert 0 < score < 1
    assert coco.meteor(hyps, refs) == (score, segments)  # the shared process is reusable
