"""Paired bootstrap resampling over instances for comparing two systems on the E2E metrics.

Koehn (2004), "Statistical Significance Tests for Machine Translation Evaluation": draw
``samples`` test sets of N instances with replacement; score both systems on each draw
(the same draw for both, hence *paired*); the spread of ``score(B) - score(A)`` gives a
confidence interval for the difference.

Each instance is reduced once to sufficient statistics, so a resample is a weighted sum
(weights = how often each instance was drawn), not a re-run of the scorers:

* BLEU / NIST (both variants): per-instance n-gram match counts, hypothesis n-gram
  counts, reference lengths and (NIST) information-weighted matches; the corpus formula is
  applied to the resampled sums.  NIST information weights stay those of the full
  reference set.
* ROUGE_L, CIDEr: the corpus score is the mean of instance scores (CIDEr's document
  frequencies stay those of the full set).
* METEOR: the mean of METEOR's segment scores.  The official corpus METEOR aggregates the
  segments' match statistics instead, so ``score_a``/``score_b`` for METEOR here are
  segment means and differ slightly from :func:`score_e2e`'s METEOR.

:func:`paired_bootstrap_means` is the same test on given per-instance scores (XSum's ROUGE, or
stored METEOR segment scores), for metrics whose corpus score is their mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from peftrun.errors import PeftrunError
from peftrun.metrics import coco, mteval, ptb_tokenizer
from peftrun.metrics.e2e import METRICS, one_line, repair_reference


@dataclass
class BootstrapResult:
    """Scores of A and B on the full set, and the bootstrap distribution of B - A."""

    metric: str
    score_a: float
    score_b: float
    delta: float  # score_b - score_a on the full set
    ci_low: float
    ci_high: float
    confidence: float
    b_better: float  # fraction of resamples in which B scored higher than A
    samples: int


def _resample_weights(num: int, samples: int, seed: int) -> np.ndarray:
    """(samples, num) matrix: how often each instance is drawn in each resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num, size=(samples, num))
    offsets = (np.arange(samples) * num)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=samples * num)
    return counts.reshape(samples, num).astype(np.float64)


def _corpus_scorers(num: int) -> dict[str, tuple[str, Callable[[Sequence[float]], float]]]:
    """Metric -> (statistics table, corpus formula applied to summed statistics)."""
    return {
        "BLEU": ("bleu_perl", mteval.bleu_perl),
        "NIST": ("nist_perl", lambda sums: mteval.nist_perl(sums, num)),
        "BLEU_py": ("bleu_py", mteval.bleu_py),
        "NIST_py": ("nist_py", mteval.nist_py),
    }


def paired_bootstrap(
    hypotheses_a: list[str],
    hypotheses_b: list[str],
    references: list[list[str]],
    *,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    metrics: tuple[str, ...] = METRICS,
) -> dict[str, BootstrapResult]:
    """Paired bootstrap confidence intervals of ``score(B) - score(A)`` per metric.

    METEOR is skipped (absent from the result) when Java is not available.
    """
    num = len(references)
    if len(hypotheses_a) != num or len(hypotheses_b) != num:
        raise PeftrunError(
            f"expected {num} outputs per system, got {len(hypotheses_a)} and {len(hypotheses_b)}"
        )
    if num == 0 or samples < 1 or not 0 < confidence < 1:
        raise PeftrunError("need at least one instance, samples >= 1 and 0 < confidence < 1")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise PeftrunError(f"unknown E2E metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    hyps_a = [one_line(h) for h in hypotheses_a]
    hyps_b = [one_line(h) for h in hypotheses_b]
    refs = [[repair_reference(r) for r in rs] for rs in references]
    weights = _resample_weights(num, samples, seed)
    resampled: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # metric -> (A, B) per resample
    full: dict[str, tuple[float, float]] = {}

    scorers = {m: s for m, s in _corpus_scorers(num).items() if m in metrics}
    if scorers:
        stats = [mteval.instance_stats(h, refs) for h in (hyps_a, hyps_b)]
        for metric, (table, formula) in scorers.items():
            tables = [getattr(s, table) for s in stats]
            sums = [weights @ np.asarray(t, dtype=np.float64) for t in tables]
            resampled[metric] = (
                np.array([formula(row) for row in sums[0]]),
                np.array([formula(row) for row in sums[1]]),
            )
            full[metric] = (formula(mteval.column_sums(tables[0])), formula(mteval.column_sums(tables[1])))

    instance_scores: dict[str, tuple[list[float], list[float]]] = {}
    if any(m in metrics for m in ("ROUGE_L", "CIDEr", "METEOR")):
        tok_a, tok_refs = coco.tokenize(hyps_a, refs)
        tok_b = ptb_tokenizer.tokenize(hyps_b)
        if "ROUGE_L" in metrics:
            instance_scores["ROUGE_L"] = (coco.rouge_l(tok_a, tok_refs)[1], coco.rouge_l(tok_b, tok_refs)[1])
        if "CIDEr" in metrics:
            # document frequencies come from tok_refs: the full set's, the same for A and B
            instance_scores["CIDEr"] = (coco.cider_d(tok_a, tok_refs)[1], coco.cider_d(tok_b, tok_refs)[1])
        if "METEOR" in metrics and coco.java_available():
            instance_scores["METEOR"] = (coco.meteor(tok_a, tok_refs)[1], coco.meteor(tok_b, tok_refs)[1])
    for metric, (inst_a, inst_b) in instance_scores.items():
        a, b = np.asarray(inst_a), np.asarray(inst_b)
        resampled[metric] = (weights @ a / num, weights @ b / num)
        full[metric] = (float(np.mean(a)), float(np.mean(b)))

    return {
        metric: _result(metric, *resampled[metric], *full[metric], confidence, samples)
        for metric in metrics
        if metric in resampled
    }


def paired_bootstrap_means(
    scores_a: dict[str, Sequence[float]],
    scores_b: dict[str, Sequence[float]],
    *,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, BootstrapResult]:
    """The same test for metrics whose corpus score is the mean of per-instance scores (XSum's
    ROUGE-1/2/L, METEOR's segment mean): ``scores_a[metric][i]`` is A's score on instance i.

    The resamples are those :func:`paired_bootstrap` draws for the same N, samples and seed.
    """
    results = {}
    for metric in scores_a.keys() & scores_b.keys():
        a, b = np.asarray(scores_a[metric], dtype=np.float64), np.asarray(scores_b[metric], dtype=np.float64)
        num = len(a)
        if len(b) != num or num == 0 or samples < 1 or not 0 < confidence < 1:
            raise PeftrunError(
                f"{metric}: expected the same number (> 0) of instance scores per system, got {num} and "
                f"{len(b)}; samples >= 1 and 0 < confidence < 1"
            )
        weights = _resample_weights(num, samples, seed)
        res_a, res_b = weights @ a / num, weights @ b / num
        results[metric] = _result(
            metric, res_a, res_b, float(np.mean(a)), float(np.mean(b)), confidence, samples
        )
    return dict(sorted(results.items()))


def _result(
    metric: str,
    res_a: np.ndarray,
    res_b: np.ndarray,
    score_a: float,
    score_b: float,
    confidence: float,
    samples: int,
) -> BootstrapResult:
    """Summarise one metric's resampled scores of A and B."""
    tail = (1 - confidence) / 2
    deltas = res_b - res_a
    low, high = np.quantile(deltas, [tail, 1 - tail])
    return BootstrapResult(
        metric=metric,
        score_a=score_a,
        score_b=score_b,
        delta=score_b - score_a,
        ci_low=float(low),
        ci_high=float(high),
        confidence=confidence,
        b_better=float(np.mean(deltas > 0)),
        samples=samples,
    )
