"""Paired bootstrap of ``score(B) - score(A)``: over instances, and over instances and seed pairs.

One seed pair (one run of A against one run of B): Koehn (2004), "Statistical Significance Tests
for Machine Translation Evaluation". Draw ``samples`` test sets of N instances with replacement;
score both systems on each draw (the same draw for both, hence *paired*); the spread of
``score(B) - score(A)`` gives a confidence interval and a p-value for the difference.

S seed pairs (runs of A and B paired by seed): a **two-level paired cluster bootstrap**
(:func:`two_level`; Davison & Hinkley 1997, *Bootstrap Methods and their Application*, §3.8
"multi-stage sampling"; on seeds as a source of variance, Dror et al. 2018, 2019). Instances are
the clusters: each resample draws N instances with replacement, and a drawn instance keeps every
seed's output for it, for both systems (one instance draw for all). Each resample also draws S
seed pairs with replacement. Its statistic is the mean over the drawn seed pairs of
``score(B_s)`` on the drawn instances minus the same mean of ``score(A_s)``; the point estimate is
``mean_s score(B_s) - mean_s score(A_s)`` on the full set. With S = 1 the seed level has nothing
to resample and the test is the instance-level one above (``seeds_resampled`` is False).

p is two-sided: ``p = min(1, 2 (min(#{Δ* <= 0}, #{Δ* >= 0}) + 1) / (B + 1))`` over the B
resampled differences Δ* (the +1 keeps p above 0: a finite bootstrap cannot show p = 0).
p <= 0.05 matches, up to that +1, a 95% percentile interval that excludes 0.

The instance weights depend only on (N, samples, seed) (:func:`resample_weights`), and the seed
draws only on (S, samples, seed) (:func:`seed_counts`), so comparisons over the same instances
share their draws resample by resample.

Each instance is reduced once to sufficient statistics, so a resample is a weighted sum
(weights = how often each instance was drawn), not a re-run of the scorers:

* BLEU / NIST (both variants): per-instance n-gram match counts, hypothesis n-gram
  counts, reference lengths and (NIST) information-weighted matches; the corpus formula is
  applied to the resampled sums (vectorised here; the full-set scores use mteval's own
  formulas).  NIST information weights stay those of the full reference set.
* ROUGE_L, CIDEr: the corpus score is the mean of instance scores (CIDEr's document
  frequencies stay those of the full set).
* METEOR: the mean of METEOR's segment scores.  The official corpus METEOR aggregates the
  segments' match statistics instead, so ``score_a``/``score_b`` for METEOR here are
  segment means and differ slightly from :func:`score_e2e`'s METEOR.

:func:`paired_bootstrap_means` is the same test on given per-instance scores (XSum's ROUGE, or
stored METEOR segment scores), for metrics whose corpus score is their mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from peftrun.errors import PeftrunError
from peftrun.metrics import coco, mteval
from peftrun.metrics.e2e import METRICS, one_line, repair_reference

CORPUS_METRICS = ("BLEU", "NIST", "BLEU_py", "NIST_py")  # a corpus formula on summed statistics
_TABLES = {"BLEU": "bleu_perl", "NIST": "nist_perl", "BLEU_py": "bleu_py", "NIST_py": "nist_py"}


@dataclass
class BootstrapResult:
    """Scores of A and B on the full set, and the bootstrap distribution of B - A."""

    metric: str
    score_a: float  # mean over the seed pairs of A's score on the full set
    score_b: float
    delta: float  # score_b - score_a
    ci_low: float  # percentile interval of the resampled deltas
    ci_high: float
    confidence: float
    b_better: float  # fraction of resamples in which B scored higher than A
    samples: int
    p: float = 1.0  # two-sided (see the module docstring)
    instances: int = 0  # N
    seed_pairs: int = 1  # S
    deltas: np.ndarray | None = field(default=None, repr=False, compare=False)  # resampled B - A

    @property
    def seeds_resampled(self) -> bool:
        """False for one seed pair: the instance-level test only."""
        return self.seed_pairs > 1

    def summary(self) -> dict[str, object]:
        """The numbers, without the resampled deltas (JSON-ready)."""
        out: dict[str, object] = {k: v for k, v in self.__dict__.items() if k != "deltas"}
        out["seeds_resampled"] = self.seeds_resampled
        return out


def resample_weights(num: int, samples: int, seed: int) -> np.ndarray:
    """(samples, num) matrix: how often each instance is drawn in each resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num, size=(samples, num))
    offsets = (np.arange(samples) * num)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=samples * num)
    return counts.reshape(samples, num).astype(np.float64)


_resample_weights = resample_weights  # the name earlier callers import


def seed_counts(pairs: int, samples: int, seed: int) -> np.ndarray:
    """(samples, pairs) matrix: how often each seed pair is drawn in each resample (rows sum to
    ``pairs``). One pair: all ones (nothing to resample). Drawn from a stream of its own, so the
    instance weights of the same seed are those of :func:`resample_weights`."""
    if pairs == 1:
        return np.ones((samples, 1))
    rng = np.random.default_rng([seed, pairs])
    draws = rng.integers(0, pairs, size=(samples, pairs))
    offsets = (np.arange(samples) * pairs)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=samples * pairs)
    return counts.reshape(samples, pairs).astype(np.float64)


def two_sided_p(deltas: np.ndarray) -> float:
    """``min(1, 2 (min(#{d <= 0}, #{d >= 0}) + 1) / (B + 1))``."""
    below, above = int(np.sum(deltas <= 0)), int(np.sum(deltas >= 0))
    return min(1.0, 2.0 * (min(below, above) + 1) / (len(deltas) + 1))


# --------------------------------------------------------------------------- corpus formulas


def _bleu_perl(s: np.ndarray) -> np.ndarray:
    """mteval.bleu_perl on the last axis of ``s`` (vectorised; the same branches)."""
    n = mteval.BLEU_N
    ref_len, m, t = s[..., 0], s[..., 1 : 1 + n], s[..., 1 + n : 1 + 2 * n]
    t0 = t[..., 0]
    safe_t0 = np.where(t0 > 0, t0, 1.0)
    exp_len = np.where(t0 > 0, np.exp(np.minimum(0.0, 1.0 - ref_len / safe_t0)), 0.0)
    zero = (t > 0) & (m == 0)
    smooth = np.cumsum(zero, axis=-1)  # 2**smooth: mteval doubles its smoothing per empty order
    safe_t = np.where(t > 0, t, 1.0)
    safe_m = np.where(m > 0, m, 1.0)
    iscore = np.where(
        t == 0, 0.0, np.where(m == 0, -smooth * math.log(2) - np.log(safe_t), np.log(safe_m / safe_t))
    )
    return np.exp(iscore.sum(axis=-1) / n) * exp_len


def _bleu_py(s: np.ndarray) -> np.ndarray:
    n = mteval.BLEU_N
    ref_len, hits, cand = s[..., 0], s[..., 1 : 1 + n], s[..., 1 + n : 1 + 2 * n]
    c0 = cand[..., 0]
    bp = np.where(c0 <= ref_len, np.exp(1.0 - ref_len / np.where(c0 != 0, c0, 1e-5)), 1.0)
    log_sum = np.log(np.maximum(hits, 1e-15) / np.maximum(cand, 1e-9)).sum(axis=-1)
    return bp * np.exp(log_sum / n)


_BETA = -math.log(0.5) / math.log(1.5) ** 2


def _brevity(ratio: np.ndarray) -> np.ndarray:
    safe = np.where(ratio > 0, ratio, 1.0)
    return np.where(ratio >= 1, 1.0, np.where(ratio <= 0, 0.0, np.exp(-_BETA * np.log(safe) ** 2)))


def _nist_perl(s: np.ndarray, num_segments: int) -> np.ndarray:
    n = mteval.NIST_N
    infos, hyp = s[..., :n], s[..., n : 2 * n]
    ref_words, num_refs = s[..., 2 * n], s[..., 2 * n + 1]
    score = (infos / np.maximum(hyp, 1)).sum(axis=-1)
    return score * _brevity(hyp[..., 0] / (ref_words / (num_refs / num_segments)))


def _nist_py(s: np.ndarray) -> np.ndarray:
    n = mteval.NIST_N
    infos, cand, avg_ref_len = s[..., :n], s[..., n : 2 * n], s[..., 2 * n]
    nist_sum = np.where(cand != 0, infos / np.where(cand != 0, cand, 1.0), 0.0).sum(axis=-1)
    return _brevity(cand[..., 0] / avg_ref_len) * nist_sum


def corpus_formulas(num: int) -> dict[str, tuple[Callable[[Sequence[float]], float], Callable]]:
    """Metric -> (mteval's formula on one row of sums, the same formula vectorised on the last axis)."""
    return {
        "BLEU": (mteval.bleu_perl, _bleu_perl),
        "NIST": (lambda sums: mteval.nist_perl(sums, num), lambda s: _nist_perl(s, num)),
        "BLEU_py": (mteval.bleu_py, _bleu_py),
        "NIST_py": (mteval.nist_py, _nist_py),
    }


# --------------------------------------------------------------------------- the bootstrap


def two_level(
    stats_a: Sequence[np.ndarray],
    stats_b: Sequence[np.ndarray],
    metric: str,
    *,
    samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    weights: np.ndarray | None = None,
    draws: np.ndarray | None = None,
) -> BootstrapResult:
    """Two-level paired cluster bootstrap of B − A (see the module docstring).

    ``stats_a[s]`` / ``stats_b[s]``: seed pair s's per-instance statistics, (N, k) for the corpus
    metrics (:data:`CORPUS_METRICS`, an mteval statistics table) and (N,) scores for any other
    metric (its corpus score is their mean). Instance i is the same instance in every array.
    ``weights`` (samples, N) and ``draws`` (samples, S) default to :func:`resample_weights` and
    :func:`seed_counts` of ``seed``.
    """
    pairs = len(stats_a)
    if pairs == 0 or len(stats_b) != pairs:
        raise PeftrunError(f"{metric}: expected the same number (> 0) of seed pairs: {pairs}, {len(stats_b)}")
    arrays = [np.asarray(x, dtype=np.float64) for x in (*stats_a, *stats_b)]
    num = len(arrays[0])
    if num == 0 or any(len(x) != num for x in arrays) or samples < 1 or not 0 < confidence < 1:
        raise PeftrunError(
            f"{metric}: expected the same number (> 0) of instance scores per system and seed pair, got "
            f"{sorted({len(x) for x in arrays})}; samples >= 1 and 0 < confidence < 1"
        )
    if weights is None:
        weights = resample_weights(num, samples, seed)
    if draws is None:
        draws = seed_counts(pairs, samples, seed)
    weights, draws = np.asarray(weights, dtype=np.float64), np.asarray(draws, dtype=np.float64)
    samples = len(weights)
    a, b = np.stack(arrays[:pairs]), np.stack(arrays[pairs:])  # (S, N) or (S, N, k)
    if metric in CORPUS_METRICS:
        scalar, vector = corpus_formulas(num)[metric]
        full = [[scalar(mteval.column_sums(x.tolist())) for x in side] for side in (a, b)]
        with np.errstate(divide="ignore", invalid="ignore"):
            per_pair = [vector(np.matmul(weights, side)) for side in (a, b)]  # (S, samples)
    else:
        full = [[float(np.mean(x)) for x in side] for side in (a, b)]
        per_pair = [side @ weights.T / num for side in (a, b)]  # (S, samples)
    res_a, res_b = ((draws * p.T).sum(axis=1) / pairs for p in per_pair)
    deltas = res_b - res_a
    score_a, score_b = float(np.mean(full[0])), float(np.mean(full[1]))
    tail = (1 - confidence) / 2
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
        p=two_sided_p(deltas),
        instances=num,
        seed_pairs=pairs,
        deltas=deltas,
    )


def instance_statistics(
    hypotheses: list[str], references: list[list[str]], metrics: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per-instance statistics of one system for :func:`two_level`: an (N, k) mteval table per
    corpus metric, (N,) instance scores for ROUGE_L, CIDEr and METEOR (skipped without Java).
    Outputs and references are cleaned as :func:`score_e2e` cleans them."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise PeftrunError(f"unknown E2E metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    hyps = [one_line(h) for h in hypotheses]
    refs = [[repair_reference(r) for r in rs] for rs in references]
    out: dict[str, np.ndarray] = {}
    if any(m in CORPUS_METRICS for m in metrics):
        stats = mteval.instance_stats(hyps, refs)
        for metric in (m for m in metrics if m in CORPUS_METRICS):
            out[metric] = np.asarray(getattr(stats, _TABLES[metric]), dtype=np.float64)
    if any(m in metrics for m in ("ROUGE_L", "CIDEr", "METEOR")):
        tok_hyps, tok_refs = coco.tokenize(hyps, refs)
        if "ROUGE_L" in metrics:
            out["ROUGE_L"] = np.asarray(coco.rouge_l(tok_hyps, tok_refs)[1])
        if "CIDEr" in metrics:  # document frequencies from tok_refs: the full set's
            out["CIDEr"] = np.asarray(coco.cider_d(tok_hyps, tok_refs)[1])
        if "METEOR" in metrics and coco.java_available():
            out["METEOR"] = np.asarray(coco.meteor(tok_hyps, tok_refs)[1])
    return out


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
    """Paired bootstrap of ``score(B) - score(A)`` per metric, one output of A and B per instance
    (one seed pair: the instance-level test). METEOR is skipped (absent) without Java."""
    num = len(references)
    if len(hypotheses_a) != num or len(hypotheses_b) != num:
        raise PeftrunError(
            f"expected {num} outputs per system, got {len(hypotheses_a)} and {len(hypotheses_b)}"
        )
    if num == 0 or samples < 1 or not 0 < confidence < 1:
        raise PeftrunError("need at least one instance, samples >= 1 and 0 < confidence < 1")
    stats_a = instance_statistics(hypotheses_a, references, metrics)
    stats_b = instance_statistics(hypotheses_b, references, metrics)
    options = {"samples": samples, "seed": seed, "confidence": confidence}
    return {m: two_level([stats_a[m]], [stats_b[m]], m, **options) for m in metrics if m in stats_a}


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
    options = {"samples": samples, "seed": seed, "confidence": confidence}
    return {
        metric: two_level([scores_a[metric]], [scores_b[metric]], metric, **options)
        for metric in sorted(scores_a.keys() & scores_b.keys())
    }
