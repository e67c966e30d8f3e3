"""Significance in a report: is the best row better than each other row, beyond chance?

Per metric, the row with the best mean (B) is compared with every other row (A) by a two-level
paired cluster bootstrap (`metrics/bootstrap.py`, :func:`~peftrun.metrics.bootstrap.two_level`;
the procedure and its references: docs/design.md#significance):

- pairing: runs of the two rows are paired by (train.seed, data.subset_seed) (:func:`pairs_by_seed`);
  a row whose runs are identical (nothing trained, greedy decoding: `Row.identical`) is one run,
  paired with every run of the other row;
- two levels: each resample draws the test instances with replacement (clusters: a drawn instance
  keeps every seed's output for it, for both rows) and the S seed pairs with replacement; its
  statistic is mean_s score(B_s) − mean_s score(A_s) on the drawn instances and seed pairs;
- two-sided p; the resampled instances depend only on (N, samples, seed 0), so every comparison
  over the same N instances shares them;
- one PRIMARY metric per dataset (:data:`PRIMARY_METRIC`: BLEU for E2E, ROUGE-2 for XSum) is
  tested at 0.05 as is; a row's other metrics are Holm-adjusted among themselves (:func:`holm`);
  † (`best_better`) at adjusted two-sided p ≤ :data:`ALPHA` with the best row ahead;
- least seeds: with S = 1 the seed level has nothing to resample (the instance-level test,
  `seeds_resampled` false). With S seed pairs of which one disagrees with the others (say B ≪ A on
  it), the resamples that draw only that pair, a share (1/S)^S, fall on the wrong side of 0, so
  two-sided p ≥ 2 (1/S)^S: 0.5 at S = 2, 0.074 at S = 3, 0.0078 at S = 4. Seeds that disagree can
  be significant from :data:`LEAST_SEED_PAIRS` = 4 seed pairs on.

E2E: BLEU and NIST (either variant) are re-scored from each run's predictions (the corpus formula
on resampled sufficient statistics); METEOR, ROUGE-L and CIDEr are means of the per-instance scores
stored in metrics/SPLIT.json (ROUGE-L and CIDEr re-scored when a run has none stored), so no Java
is needed. XSum: ROUGE-1/2/L are means of stored per-instance scores.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from peftrun.errors import PeftrunError
from peftrun.studies.report_data import Report, Row, RunRecord
from peftrun.studies.values import sort_key

ALPHA = 0.05  # † at (Holm-adjusted where it applies) two-sided p ≤ ALPHA
PRIMARY_METRIC = {"e2e": "BLEU", "xsum": "ROUGE-2"}  # dataset → its primary column, tested as is
PRIMARY = PRIMARY_METRIC
INSTANCE_SEED = 0  # the seed of the instance draws: comparisons over the same instances share them
LEAST_SEED_PAIRS = 4  # from here on, one disagreeing seed pair no longer bounds p above ALPHA


@dataclass
class Comparison:
    """Row B against row A on one report column, on the report's print scale."""

    metric: str  # the report's column name
    mean_a: float  # mean over the seed pairs of A's score (the paired runs' mean)
    mean_b: float
    delta: float  # mean_b − mean_a
    ci_low: float  # 95% percentile interval of the resampled deltas
    ci_high: float
    p: float  # two-sided, unadjusted
    instances: int  # N
    seed_pairs: int  # S
    samples: int
    deltas: np.ndarray = field(repr=False, compare=False)  # resampled B − A, print scale

    @property
    def seeds_resampled(self) -> bool:
        """False with one seed pair: the instance-level test only."""
        return self.seed_pairs > 1


def holm(pvalues: list[float]) -> list[float]:
    """Holm (1979) step-down adjusted p-values, in the given order: the k-th smallest (k from 0)
    is multiplied by m − k, made monotone (never below the one before it) and capped at 1."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted = [1.0] * len(pvalues)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def primary_metric(report: Report) -> str | None:
    return PRIMARY_METRIC.get(report.dataset)


def mark_significance(report: Report) -> None:
    """Per metric: the best row (highest mean) against each other row; fills `best` and
    `significance` (p of the non-primary metrics Holm-adjusted per row)."""
    cache: dict[tuple[int, int], dict[str, Comparison]] = {}
    tested: dict[int, dict[str, Comparison | None]] = {}
    for col in (c for c in report.columns if c.quality):
        rows = [row for row in report.rows if row.values.get(col.name)]
        if not rows:
            continue
        best = max(rows, key=lambda row: row.stats(col.name)[0])
        best.best.append(col.name)
        best.significance[col.name] = None
        for row in rows:
            if row is best:
                continue
            if (id(row), id(best)) not in cache:
                cache[id(row), id(best)] = compare_rows(row, best, report)
            tested.setdefault(id(row), {})[col.name] = cache[id(row), id(best)].get(col.name)
    primary = primary_metric(report)
    for row in report.rows:
        results = tested.get(id(row), {})
        others = [name for name, c in results.items() if c is not None and name != primary]
        adjusted = dict(zip(others, holm([results[name].p for name in others]), strict=True))
        for name, comparison in results.items():
            row.significance[name] = significance_entry(comparison, adjusted.get(name))


def significance_entry(comparison: Comparison | None, adjusted: float | None) -> dict[str, Any]:
    """A row's JSON `significance` for one metric (see tables.py)."""
    if comparison is None:
        empty = dict.fromkeys(("p", "p_raw", "delta", "ci"))
        return {"best_better": False, **empty, "instances": 0, "seed_pairs": 0, "pairs": 0,
                "seeds_resampled": False}  # fmt: skip
    p = comparison.p if adjusted is None else adjusted
    return {
        "best_better": bool(p <= ALPHA and comparison.delta > 0),
        "p": p,
        "p_raw": comparison.p,
        "delta": comparison.delta,
        "ci": [comparison.ci_low, comparison.ci_high],
        "instances": comparison.instances,
        "seed_pairs": comparison.seed_pairs,
        "pairs": comparison.seed_pairs,  # the name before seed_pairs
        "seeds_resampled": comparison.seeds_resampled,
    }


def pairs_by_seed(runs_a: list[RunRecord], runs_b: list[RunRecord]) -> list[tuple[RunRecord, RunRecord]]:
    """Runs of two rows with the same (train.seed, data.subset_seed), in seed order."""

    def keyed(runs: list[RunRecord]) -> dict[tuple[Any, ...], RunRecord]:
        seen: Counter = Counter()
        out = {}
        for run in runs:
            out[(*run.seed_key, seen[run.seed_key])] = run  # the k-th run of a seed under --by
            seen[run.seed_key] += 1
        return out

    a, b = keyed(runs_a), keyed(runs_b)
    return [(a[k], b[k]) for k in sorted(a.keys() & b.keys(), key=lambda k: tuple(sort_key(v) for v in k))]


def run_pairs(row_a: Row, row_b: Row) -> list[tuple[RunRecord, RunRecord]]:
    """The seed pairs of two rows: by seed, except that a row of identical runs (one run) is paired
    with every run of the other row."""
    if row_a.identical or row_b.identical:
        return [(a, b) for a in row_a.runs for b in row_b.runs]  # one side has a single run
    return pairs_by_seed(row_a.runs, row_b.runs)


Statistics = tuple[tuple[Any, ...] | None, dict[str, np.ndarray]]


def _run_statistics(record: RunRecord, report: Report) -> Statistics:
    """A run's instance ids (from its predictions; None when it has none) and per-instance
    statistics by stored metric name, cached on the report (a run enters many comparisons)."""
    key = ("statistics", str(record.path), report.split)
    if key in report.cache:
        return report.cache[key]
    sources = [c.source for c in report.columns if c.quality]
    stored = {
        m: np.asarray(v, dtype=np.float64)
        for m, v in record.per_example.items()
        if m in sources and isinstance(v, list)
    }
    ids: tuple[Any, ...] | None = None
    stats: dict[str, np.ndarray] = {}
    if report.dataset == "e2e":
        from peftrun.metrics.bootstrap import CORPUS_METRICS, instance_statistics

        try:
            records = record.read_predictions(report.split)
        except PeftrunError:
            records = None
        if records:
            ids = tuple(r["id"] for r in records)
            stats = {m: v for m, v in stored.items() if m not in CORPUS_METRICS and len(v) == len(ids)}
            rescored = [m for m in sources if m != "METEOR" and m not in stats]
            stats.update(
                instance_statistics(
                    [r["output"] for r in records], [r["references"] for r in records], rescored
                )
            )
    else:
        stats = stored
        try:  # the instances' ids, so that runs scored on different articles never pair
            records = record.read_predictions(report.split)
        except PeftrunError:
            records = None
        if records and all(len(v) == len(records) for v in stats.values()):
            ids = tuple(r.get("id") for r in records)
    report.cache[key] = ids, stats
    return ids, stats


def compare_rows(row_a: Row, row_b: Row, report: Report) -> dict[str, Comparison]:
    """Row B against row A on every quality column both can be tested on, keyed by column name,
    on the report's print scale (see the module docstring). A column is tested on the seed pairs
    whose runs both have its per-instance statistics over the same instances."""
    from peftrun.metrics.bootstrap import two_level

    pairs = [(_run_statistics(a, report), _run_statistics(b, report)) for a, b in run_pairs(row_a, row_b)]
    out: dict[str, Comparison] = {}
    for col in (c for c in report.columns if c.quality):
        stats_a: list[np.ndarray] = []
        stats_b: list[np.ndarray] = []
        instances: tuple[Any, ...] | int | None = None
        for (ids_a, a), (ids_b, b) in pairs:
            if col.source not in a or col.source not in b or ids_a != ids_b:
                continue  # not a paired sample of this metric
            if len(a[col.source]) != len(b[col.source]):
                continue
            here = ids_a if ids_a is not None else len(a[col.source])
            if instances is None:
                instances = here
            if here != instances:
                continue  # other instances than the first pair's (another decode.limit)
            stats_a.append(a[col.source])
            stats_b.append(b[col.source])
        if not stats_a:
            continue
        result = two_level(stats_a, stats_b, col.source, samples=report.samples, seed=INSTANCE_SEED)
        scale = col.scale
        out[col.name] = Comparison(
            metric=col.name,
            mean_a=result.score_a * scale,
            mean_b=result.score_b * scale,
            delta=result.delta * scale,
            ci_low=result.ci_low * scale,
            ci_high=result.ci_high * scale,
            p=result.p,
            instances=result.instances,
            seed_pairs=result.seed_pairs,
            samples=result.samples,
            deltas=result.deltas * scale,
        )
    return out
