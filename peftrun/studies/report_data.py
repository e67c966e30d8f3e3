"""What a report is made of: its columns, the runs it read (one `RunRecord` each), its rows (one
per group, with their values, best marks and significance) and the report itself. report.py fills
them; significance.py, tables.py and plots.py read them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftrun.run_states import RunState

SEEDS = ("train.seed", "data.subset_seed")  # collapsed in a row; runs are paired on them


@dataclass(frozen=True)
class Column:
    """One number per run: where it is read (`where`, `source`), its print scale and digits."""

    name: str  # JSON and CSV name
    label: str  # table header
    where: str  # scores (metrics/SPLIT.json), parameters (meta.json), meta (meta.json)
    source: str
    scale: float = 1.0
    digits: int = 2
    quality: bool = True  # a score: best in bold, significance

    def value(self, record: RunRecord) -> float | None:
        if self.where == "scores":
            value = (record.scores or {}).get(self.source)
        elif self.where == "parameters":
            value = (record.meta.get("parameters") or {}).get(self.source)
        else:
            value = record.meta.get(self.source)
        return float(value) * self.scale if isinstance(value, (int, float)) else None


@dataclass
class RunRecord:
    """A run directory (or a sweep point without one) as the report sees it."""

    path: Path
    state: str  # done, failed, incomplete, running, missing, "no SPLIT metrics"
    flat: dict[str, Any]  # resolved config, dotted keys
    error: str | None = None
    scores: dict[str, Any] | None = None
    per_example: dict[str, list[float]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    partial: bool = False  # a sweep point's config rebuilt from its values only (see point_config)
    # The folder whose predictions/ and metrics/ the record's numbers come from: the run directory
    # itself (None), or one of its decodes (RUN/decodes/NAME, `peftrun report --decode NAME`).
    outputs_dir: Path | None = None
    # `peftrun report --reference-style STYLE`: the scores are the outputs re-scored against STYLE
    # references, and so are the predictions' references the significance test re-scores with.
    reference_style: str | None = None

    def read_predictions(self, split: str) -> list[dict[str, Any]]:
        """The prediction records behind this record's scores (the run's own, or its decode's;
        with a reference style, each record's references those of that style); a one-line
        PeftrunError when there are none."""
        from peftrun.runs import Outputs

        records = Outputs(self.outputs_dir or self.path, writer=False).read_predictions(split)
        if self.reference_style is None:
            return records
        from peftrun.scoring import open_run, style_references

        _, cfg = open_run(self.path)
        references = style_references(records, cfg, split, self.reference_style, self.path)
        return [{**r, "references": refs} for r, refs in zip(records, references, strict=True)]

    def prediction_splits(self) -> list[str]:
        from peftrun.runs import Outputs

        return Outputs(self.outputs_dir or self.path, writer=False).prediction_splits()

    @property
    def finished(self) -> bool:
        return self.state == RunState.DONE and self.scores is not None

    @property
    def seed_key(self) -> tuple[Any, ...]:
        return tuple(self.flat.get(key) for key in SEEDS)


@dataclass
class Row:
    group: dict[str, Any]
    runs: list[RunRecord] = field(default_factory=list)  # finished: the cells' values
    # Finished runs identical to runs[0] (same scores and predictions: nothing trained, greedy
    # decoding): the row is one run (n = 1), and runs[0] is paired with every run of another row.
    identical: list[RunRecord] = field(default_factory=list)
    missing: list[RunRecord] = field(default_factory=list)  # shown, never averaged
    values: dict[str, list[float]] = field(default_factory=dict)
    best: list[str] = field(default_factory=list)  # metrics where this row has the best mean
    significance: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # None: the best row

    def stats(self, name: str) -> tuple[float | None, float | None, int]:
        """Mean, sample standard deviation (None below two values) and n of one column."""
        values = self.values.get(name, [])
        mean = statistics.fmean(values) if values else None
        return mean, statistics.stdev(values) if len(values) > 1 else None, len(values)


@dataclass
class Report:
    dataset: str
    split: str
    bleu: str
    samples: int
    keys: list[str]
    columns: list[Column]
    rows: list[Row]
    cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)  # significance.py's
    selection: dict[Any, Any] = field(default_factory=dict)  # sweep folder → its selection.json
    claims: list[Any] = field(default_factory=list)  # claims.ClaimResult of the declared claims
    claim_notes: list[str] = field(default_factory=list)  # e.g. claims edited after the sweep started
    decode: str | None = None  # `--decode NAME`: the numbers come from each run's decodes/NAME
    references: str | None = None  # `--references STYLE`: the outputs re-scored against STYLE

    @property
    def scale(self) -> dict[str, float]:
        """Column name → the factor applied to the stored number."""
        return {c.name: c.scale for c in self.columns}
