"""ROUGE-1/2/L for XSum, as Li & Liang (2021) report it (Table 2; BART-large, XSum test).

Definition used here: Google's ``rouge-score`` package,
``RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)``: F1 (``fmeasure``) per
instance, ×100, then the plain mean over instances. ``rougeL`` is sentence-level LCS over the whole
text, not ``rougeLsum`` (no newline splitting). With several references an instance takes, per
metric, the reference with the highest F1 (``RougeScorer.score_multi``); XSum has one.

Difference from the original: XiangLi1999/PrefixTuning (``seq2seq/utils.py: calculate_rouge``,
rouge-score 0.0.4) fed each evaluation batch (batch size 8) to a ``BootstrapAggregator``, took the
bootstrap ``mid`` F1 of that batch and averaged those estimates over batches. The bootstrap mid is
a resampled (unseeded, so not repeatable) estimate of the batch mean, so the original number is a
noisy, batch-dependent approximation of the exact mean computed here; we do not copy it.

The ``rouge-score`` tokenizer lower-cases and keeps only ``[a-z0-9]`` runs, so non-ASCII letters
and symbols (``£``, accented names) never match; the Porter stemmer only touches tokens longer
than 3 characters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata

from peftrun.errors import PeftrunError

# rouge-score names → the names reports print.
ROUGE_TYPES = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}


@dataclass
class RougeReport:
    """Corpus ROUGE F1 ×100 (``scores``), per-instance F1 ×100, scorer identity and caveats."""

    scores: dict[str, float]
    per_example: dict[str, list[float]]
    scorers: dict[str, object]
    notes: list[str] = field(default_factory=list)


def _rouge_version() -> str:
    try:
        return metadata.version("rouge-score")
    except metadata.PackageNotFoundError:
        return "unknown"


def score_rouge(hypotheses: list[str], references: list[list[str]]) -> RougeReport:
    """Score one output per instance against that instance's references (max over references).

    ``references[i]`` holds every reference of instance ``i`` (XSum: one). Raises
    :class:`PeftrunError` when the counts differ or an instance has no reference.
    """
    if len(hypotheses) != len(references):
        raise PeftrunError(
            f"ROUGE: expected {len(references)} outputs (one per instance), got {len(hypotheses)}"
        )
    if not hypotheses:
        raise PeftrunError("ROUGE: nothing to score (0 instances); check the evaluation split")
    try:
        from rouge_score import rouge_scorer  # lazy: only XSum runs need it
    except ImportError as exc:
        raise PeftrunError("ROUGE needs the rouge-score package: pip install rouge-score") from exc

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    per_example: dict[str, list[float]] = {name: [] for name in ROUGE_TYPES.values()}
    for index, (hypothesis, refs) in enumerate(zip(hypotheses, references, strict=True)):
        if isinstance(refs, str) or not refs:
            raise PeftrunError(f"ROUGE: instance {index} needs a list of one or more references")
        # score_multi(targets, prediction): per metric, the reference with the highest F1.
        result = scorer.score_multi(list(refs), hypothesis)
        for key, name in ROUGE_TYPES.items():
            per_example[name].append(100.0 * result[key].fmeasure)

    scores = {name: sum(values) / len(values) for name, values in per_example.items()}
    empty = sum(1 for h in hypotheses if not h.strip())
    notes = [
        "F1 x100, mean over instances (exact mean; the original averaged bootstrap mid "
        "estimates over batches of 8)",
        "rougeL is sentence-level LCS on the whole text (not rougeLsum)",
    ]
    if empty:
        notes.append(f"{empty} of {len(hypotheses)} outputs are empty and score 0")
    return RougeReport(
        scores=scores,
        per_example=per_example,
        scorers={
            "package": "rouge-score",
            "version": _rouge_version(),
            "rouge_types": list(ROUGE_TYPES),
            "use_stemmer": True,
            "multi_reference": "max F1 per metric",
            "aggregation": "mean of per-instance F1 x100",
        },
        notes=notes,
    )
