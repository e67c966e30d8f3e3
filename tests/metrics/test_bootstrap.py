"""Paired bootstrap resampling over instances."""

from __future__ import annotations

import numpy as np
import pytest
from _e2e_testdata import require

from peftrun.errors import PeftrunError
from peftrun.metrics import coco
from peftrun.metrics.bootstrap import (
    _resample_weights,
    corpus_formulas,
    instance_statistics,
    paired_bootstrap,
    paired_bootstrap_means,
    seed_counts,
    two_level,
    two_sided_p,
)
from peftrun.metrics.e2e import score_e2e

FAST = ("BLEU", "NIST", "BLEU_py", "NIST_py", "ROUGE_L", "CIDEr")
NAMES = ["The Eagle", "Blue Spice", "The Mill", "Zizzi", "Aromi", "Cotto", "The Punter", "Alimentum"]
FOODS = ["Chinese", "French", "Indian", "Italian", "English"]
AREAS = ["the city centre", "the riverside"]


def synthetic_set(num: int = 40) -> tuple[list[str], list[str], list[list[str]]]:
    """References per instance; system A copies the first one, B drops its second half."""
    refs = []
    for i in range(num):
        name, food, area = NAMES[i % 8], FOODS[i % 5], AREAS[i % 2]
        refs.append(
            [
                f"{name} serves {food} food in {area}.",
                f"In {area} there is {name}, which serves {food} food.",
                f"{name} is a {food} place located in {area}.",
            ][: 1 + i % 3]
        )
    good = [r[0] for r in refs]
    bad = [" ".join(r[0].split()[:3]) for r in refs]
    return good, bad, refs


def test_resample_weights_draw_n_instances_per_sample() -> None:
    weights = _resample_weights(7, 50, seed=3)
    assert weights.shape == (50, 7)
    assert np.all(weights.sum(axis=1) == 7)
    assert np.array_equal(weights, _resample_weights(7, 50, seed=3))
    assert not np.array_equal(weights, _resample_weights(7, 50, seed=4))


def test_full_set_scores_equal_the_corpus_scores() -> None:
    good, bad, refs = synthetic_set()
    results = paired_bootstrap(good, bad, refs, samples=20, metrics=FAST)
    report = score_e2e(bad, refs, metrics=FAST)
    for metric in FAST:
        assert results[metric].score_b == pytest.approx(report.scores[metric], rel=1e-12)


def test_worse_system_gets_a_negative_interval() -> None:
    good, bad, refs = synthetic_set()
    results = paired_bootstrap(good, bad, refs, samples=200, seed=1, metrics=FAST)
    for metric, result in results.items():
        assert result.delta < 0, metric
        assert result.ci_low <= result.delta <= result.ci_high, metric
        assert result.ci_high < 0, metric
        assert result.b_better == 0.0


def test_identical_systems_have_a_zero_interval() -> None:
    good, _, refs = synthetic_set()
    results = paired_bootstrap(good, good, refs, samples=50, metrics=FAST)
    assert all(r.delta == 0 and r.ci_low == 0 and r.ci_high == 0 for r in results.values())


def test_seeded_and_reproducible() -> None:
    good, bad, refs = synthetic_set()
    mixed = [g if i % 2 else b for i, (g, b) in enumerate(zip(good, bad, strict=True))]
    first = paired_bootstrap(mixed, bad, refs, samples=100, seed=5, metrics=("BLEU",))["BLEU"]
    again = paired_bootstrap(mixed, bad, refs, samples=100, seed=5, metrics=("BLEU",))["BLEU"]
    other = paired_bootstrap(mixed, bad, refs, samples=100, seed=6, metrics=("BLEU",))["BLEU"]
    assert first == again
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)


def test_meteor_uses_segment_means() -> None:
    require(coco.java_available(), "METEOR needs Java")
    good, bad, refs = synthetic_set(12)
    result = paired_bootstrap(good, bad, refs, samples=100, metrics=("METEOR",))["METEOR"]
    segments = score_e2e(bad, refs, metrics=("METEOR",)).per_example["METEOR"]
    assert result.score_b == pytest.approx(np.mean(segments))
    assert result.ci_high < 0


def test_length_mismatch_is_an_error() -> None:
    good, bad, refs = synthetic_set()
    with pytest.raises(PeftrunError, match="expected 40 outputs per system"):
        paired_bootstrap(good[:-1], bad, refs)


def test_bootstrap_of_means_matches_the_instance_metrics_of_paired_bootstrap() -> None:
    good, bad, refs = synthetic_set()
    corpus = paired_bootstrap(bad, good, refs, samples=300, seed=4, metrics=("ROUGE_L",))["ROUGE_L"]
    tok_bad, tok_refs = coco.tokenize(bad, refs)
    tok_good, _ = coco.tokenize(good, refs)
    a, b = coco.rouge_l(tok_bad, tok_refs)[1], coco.rouge_l(tok_good, tok_refs)[1]
    means = paired_bootstrap_means({"ROUGE_L": a}, {"ROUGE_L": b}, samples=300, seed=4)["ROUGE_L"]
    assert means == corpus  # same resamples, same statistic
    with pytest.raises(PeftrunError, match="same number"):
        paired_bootstrap_means({"R": [1.0, 2.0]}, {"R": [1.0]})


# --------------------------------------------------------------------------- two levels


def test_two_level_matches_a_hand_computation() -> None:
    # 2 seed pairs × 3 instances, a mean metric; two resamples given by hand.
    a = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]
    b = [[2.0, 2.0, 5.0], [1.0, 4.0, 1.0]]
    weights = np.array([[2, 1, 0], [0, 0, 3]])  # draw 1: instances 0, 0, 1; draw 2: 2, 2, 2
    draws = np.array([[1, 1], [0, 2]])  # draw 1: both seed pairs; draw 2: seed pair 2 twice
    result = two_level(a, b, "R", weights=weights, draws=draws)
    # draw 1: A = (4/3 + 0)/2, B = (6/3 + 6/3)/2 → 2 − 2/3; draw 2: A = 0, B = 1 → 1
    assert result.deltas == pytest.approx([4 / 3, 1.0])
    assert result.score_a == pytest.approx(1.0) and result.score_b == pytest.approx(2.5)
    assert result.delta == pytest.approx(1.5)  # mean_s B_s − mean_s A_s on the full set
    assert result.p == pytest.approx(2 / 3)  # 2 (0 + 1) / (2 + 1): no resample at or below 0
    assert (result.instances, result.seed_pairs, result.samples) == (3, 2, 2)
    assert result.seeds_resampled


def test_two_level_corpus_formula_on_resampled_sums_per_seed_pair() -> None:
    # BLEU/NIST: the corpus formula on each drawn seed pair's weighted statistics, then averaged.
    good, bad, refs = synthetic_set(10)
    half = [g if i % 2 else b for i, (g, b) in enumerate(zip(good, bad, strict=True))]
    rng = np.random.default_rng(1)
    weights = rng.integers(0, 3, size=(5, 10))
    draws = np.array([[2, 0], [1, 1], [0, 2], [1, 1], [2, 0]])
    for metric in ("BLEU", "NIST", "BLEU_py", "NIST_py"):
        a = [instance_statistics(h, refs, [metric])[metric] for h in (bad, half)]
        b = [instance_statistics(h, refs, [metric])[metric] for h in (good, good)]
        result = two_level(a, b, metric, weights=weights, draws=draws)
        scalar = corpus_formulas(10)[metric][0]
        by_hand = [
            sum(d[s] * (scalar(list(w @ b[s])) - scalar(list(w @ a[s]))) for s in range(2)) / 2
            for w, d in zip(weights, draws, strict=True)
        ]
        assert result.deltas == pytest.approx(by_hand, rel=1e-9, abs=1e-12), metric
        full = [score_e2e(h, refs, metrics=(metric,)).scores[metric] for h in (bad, half)]
        assert result.score_a == pytest.approx(np.mean(full), rel=1e-12), metric


def test_vectorised_corpus_formulas_equal_mteval_on_edge_rows() -> None:
    # Rows with empty orders (BLEU's smoothing doubles per empty order), no output, short output.
    good, bad, refs = synthetic_set(12)
    hyps = ["", "x", *bad[2:6], *good[6:]]
    for metric in ("BLEU", "NIST", "BLEU_py", "NIST_py"):
        table = instance_statistics(hyps, refs, [metric])[metric]
        scalar, vector = corpus_formulas(12)[metric]
        rows = np.vstack([table, table[:3] * 12, np.add.accumulate(table)])
        with np.errstate(divide="ignore", invalid="ignore"):
            got = vector(rows)
        for row, value in zip(rows, got, strict=True):
            try:
                expected = scalar(list(row))
            except (ZeroDivisionError, ValueError):
                continue
            assert value == pytest.approx(expected, rel=1e-12, abs=1e-15), (metric, row)


def test_one_seed_pair_is_the_instance_level_test() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 5.0, 3.0]
    result = two_level([a], [b], "R", samples=300, seed=2)
    assert result.seed_pairs == 1 and not result.seeds_resampled
    weights = _resample_weights(4, 300, seed=2)
    assert result.deltas == pytest.approx(weights @ (np.array(b) - np.array(a)) / 4)
    assert np.array_equal(seed_counts(1, 300, 2), np.ones((300, 1)))
    counts = seed_counts(3, 300, 2)
    assert counts.shape == (300, 3) and np.all(counts.sum(axis=1) == 3)
    assert np.array_equal(counts, seed_counts(3, 300, 2))


def test_p_is_two_sided() -> None:
    deltas = np.array([-1.0] * 3 + [0.0] + [1.0] * 96)  # 4 of 100 at or below 0
    assert two_sided_p(deltas) == pytest.approx(2 * 5 / 101)
    assert two_sided_p(-deltas) == pytest.approx(2 * 5 / 101)  # either direction
    assert two_sided_p(np.zeros(50)) == 1.0  # identical systems
    assert two_sided_p(np.ones(999)) == pytest.approx(2 / 1000)  # never 0


@pytest.mark.parametrize("pairs", [2, 3, 4, 5])
def test_one_disagreeing_seed_pair_bounds_p_from_below(pairs: int) -> None:
    # B is 10 ahead on every seed pair but the last, where it is 1 behind. The resamples drawing
    # only the last pair, a share (1/S)^S, fall below 0: p >= 2 (1/S)^S (0.5, 0.074, 0.0078, ...),
    # so seeds that disagree cannot be significant at 0.05 below 4 seed pairs.
    a = [[30.0 + (i * 3) % 7 for i in range(50)] for _ in range(pairs)]
    b = [[x + 10 for x in a[s]] for s in range(pairs - 1)] + [[x - 1 for x in a[-1]]]
    result = two_level(a, b, "R", samples=20000, seed=0)
    share = (1 / pairs) ** pairs
    assert np.mean(result.deltas <= 0) == pytest.approx(share, rel=0.15, abs=2e-4)
    assert result.p == pytest.approx(2 * share, rel=0.15, abs=3e-4)
    assert (result.p > 0.05) == (pairs < 4)
