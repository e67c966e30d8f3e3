"""Paired bootstrap resampling over instances."""

from __future__ import annotations

import numpy as np
import pytest
from _e2e_testdata import require

from peftrun.errors import PeftrunError
from peftrun.metrics import coco
from peftrun.metrics.bootstrap import _resample_weights, paired_bootstrap, paired_bootstrap_means
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
