"""Scorers, by dataset: the E2E challenge suite, or ROUGE for XSum.

Each returns a report with `scores` (metric → value), `per_example` (metric → per-instance
values, for significance tests), `scorers` (names, versions, options) and `notes` (warnings).
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

SCORERS = {
    "e2e": ("peftrun.metrics.e2e", "score_e2e"),
    "xsum": ("peftrun.metrics.rouge", "score_rouge"),
}
KEY_METRIC = {"e2e": "BLEU", "xsum": "ROUGE-L"}


def score(dataset: str, hypotheses: list[str], references: list[list[str]]):
    module, function = SCORERS[dataset]
    return getattr(import_module(module), function)(hypotheses, references)


def evaluate_module_path() -> str:
    """The folder of peftrun's Hugging Face `evaluate` module (the E2E suite and XSum ROUGE, the
    numbers `peftrun eval` prints): `evaluate.load(evaluate_module_path())` loads it offline.
    A string, since `evaluate.load` splits its argument as text (a `Path` fails there)."""
    return str(Path(__file__).resolve().parent.parent / "assets" / "evaluate" / "peftrun_metrics")
