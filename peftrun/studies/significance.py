"""Significance in a report: is the best row better than each other row, beyond chance?

Per metric, the row with the best mean (B) is compared with every other row (A) by a one-sided paired
bootstrap over test instances (Koehn 2004; `metrics/bootstrap.py`). Runs of the two rows are paired
by (train.seed, data.subset_seed); the paired runs' instances (outputs and references) are pooled
into one paired sample, so every seed both rows ran counts. B is significantly better than A when
B − A > 0 in at least THRESHOLD of the resamples (one-sided p = 1 − that fraction ≤ 0.05).

E2E: BLEU, NIST, ROUGE-L, CIDEr are re-scored on the pooled sample by `paired_bootstrap`; METEOR
uses the segment scores stored in metrics/SPLIT.json (the bootstrap's METEOR statistic is their
mean, so the result is the same without starting Java). XSum: ROUGE-1/2/L are means of stored
per-instance scores (`paired_bootstrap_means`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from peftrun.errors import PeftrunError
from peftrun.runs import Run
from peftrun.studies.report_data import Report, Row, RunRecord
from peftrun.studies.values import sort_key

THRESHOLD = 0.95  # best − row > 0 in at least this fraction of resamples: one-sided p ≤ 0.05


def mark_significance(report: Report) -> None:
    """Per metric: the best row (highest mean) against each other row; fills `best` and `significance`."""
    cache: dict[tuple[int, int], tuple[dict[str, Any], int]] = {}
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
            if (id(best), id(row)) not in cache:
                cache[id(best), id(row)] = compare(best, row, report)
            results, pairs = cache[id(best), id(row)]
            result = results.get(col.source)
            row.significance[col.name] = {
                "best_better": bool(result is not None and result.b_better >= THRESHOLD),
                "p": None if result is None else 1.0 - result.b_better,
                "pairs": pairs,
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


def compare(best: Row, row: Row, report: Report) -> tuple[dict[str, Any], int]:
    """Bootstrap results (by stored metric name) of best (B) against row (A), and pairs pooled."""
    from peftrun.metrics.bootstrap import paired_bootstrap, paired_bootstrap_means

    hyps_a: list[str] = []
    hyps_b: list[str] = []
    refs: list[list[str]] = []
    means_a: dict[str, list[float]] = {}
    means_b: dict[str, list[float]] = {}
    e2e = report.dataset == "e2e"
    mean_metrics = ["METEOR"] if e2e else [c.source for c in report.columns if c.quality]
    used = 0
    for run_b, run_a in pairs_by_seed(best.runs, row.runs):
        if e2e:
            try:
                rec_a, rec_b = (Run(r.path).read_predictions(report.split) for r in (run_a, run_b))
            except PeftrunError:
                continue
            if [r["id"] for r in rec_a] != [r["id"] for r in rec_b]:
                continue  # different instances (e.g. another decode.limit): not a paired sample
            hyps_a += [r["output"] for r in rec_a]
            hyps_b += [r["output"] for r in rec_b]
            refs += [r["references"] for r in rec_b]
        for metric in mean_metrics:
            a, b = run_a.per_example.get(metric), run_b.per_example.get(metric)
            if a is None or b is None or len(a) != len(b) or (e2e and len(a) != len(rec_a)):
                means_a[metric] = means_b[metric] = None  # one pair lacks it: no test for it
            elif means_a.get(metric, []) is not None:
                means_a.setdefault(metric, []).extend(a)
                means_b.setdefault(metric, []).extend(b)
        used += 1
    results: dict[str, Any] = {}
    options = {"samples": report.samples, "seed": 0}
    if e2e and refs:
        corpus = tuple(c.source for c in report.columns if c.quality and c.source != "METEOR")
        results.update(paired_bootstrap(hyps_a, hyps_b, refs, metrics=corpus, **options))
    means_a = {m: v for m, v in means_a.items() if v}
    means_b = {m: v for m, v in means_b.items() if v}
    if means_a:
        results.update(paired_bootstrap_means(means_a, means_b, **options))
    return results, used
