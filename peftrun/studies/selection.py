"""Tune on dev, test once: a sweep's `select:` section and what it decides.

    cases:                                    # what is compared (as in any sweep)
      - {method: {kind: prefix, prefix_len: 10}}
      - {method: {kind: lora, rank: 4}}
      - {method: {kind: full}, train.epochs: 0, select: false}   # a baseline: nothing to tune
    seeds: [101]                              # the seeds the grid runs with
    select:
      grid: {train.lr: [1e-4, 1e-3, 1e-2]}    # the settings to choose among (× every case)
      within: [method.kind, method.variant]   # the groups: one winner per group
      metric: BLEU                            # a dev metric (report column; higher wins) or dev_loss
      seeds: [102, 103]                       # seeds trained for each winner after the choice

`peftrun sweep` then (1) trains every setting of every case with `seeds`, decoding dev only (the
runs' `decode.splits` become [dev]); (2) picks each group's winner by its mean dev criterion over
those seeds (dev metrics from metrics/dev.json, on the runs' fixed dev decode subset; dev_loss: the
lowest dev loss a run logged, `best_dev_loss` in meta.json); (3) trains the winners' `select.seeds`;
(4) decodes test for the winners' runs only, with their own decoding settings. Test predictions of
a setting that did not win are never produced. A case with `select: false` is its own group of one
setting (a baseline). Ties go to the setting first in sweep order. A group any of whose settings
did not finish is not decided (its winner would be chosen on part of the grid).

`<sweep folder>/selection.json` records the rule, every setting's dev score, the winners and which
runs had test decoded. A later invocation that would pick another winner for a group whose test was
already decoded stops, unless `--reselect`; a reselection is recorded there and shown by the report.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftrun.errors import PeftrunError
from peftrun.runs import Run
from peftrun.studies.selection_record import SELECTION, Record  # noqa: F401 - the sweep's record
from peftrun.studies.sweep_file import DEV_LOSS, SelectSpec


@dataclass
class Setting:
    """One setting of a group: its grid points (one per grid seed) and its dev criterion."""

    key: str  # the point name without its seed suffix
    values: dict[str, Any]  # what the point sets (for the report's dev grid)
    points: list[Any]  # sweep_file.Point of the grid seeds
    score: float | None = None
    runs_done: int = 0  # runs with a dev score
    finished: bool = False  # every run of the setting is DONE


def group_of(flat: dict[str, Any], within: list[str]) -> str:
    """A group's name: its `within` values (absent keys: none)."""
    return ", ".join(f"{key}={flat.get(key)}" for key in within)


def dev_score(run_dir: Path, metric: str) -> float | None:
    """A finished run's dev criterion: its dev metric, or its lowest logged dev loss."""
    from peftrun.runs import Run
    from peftrun.studies.report import columns

    run = Run(run_dir, writer=False)
    if not run.done:
        return None
    if metric == DEV_LOSS:
        value = run.meta().get("best_dev_loss")
        return float(value) if isinstance(value, (int, float)) else None
    scores = (run.read_metrics().get("dev") or {}).get("scores") or {}
    for dataset in ("e2e", "xsum"):
        column = next((c for c in columns(dataset) if c.name == metric and c.quality), None)
        if column is not None and column.source in scores:
            return float(scores[column.source]) * column.scale
    return None


def check_metric(spec: SelectSpec, dataset: str) -> None:
    from peftrun.studies.report import columns

    names = [c.name for c in columns(dataset) if c.quality]
    if spec.metric != DEV_LOSS and spec.metric not in names:
        raise PeftrunError(
            f"select.metric {spec.metric!r}: choose dev_loss or a {dataset} metric: {', '.join(names)}"
        )


def choose(groups: dict[str, list[Setting]], metric: str) -> tuple[dict[str, str], dict[str, str]]:
    """Each decided group's winning setting key, and why undecided groups are not decided. A group of
    one setting (a `select: false` baseline) wins once its runs are done, with or without a score
    (an untrained run has no dev loss)."""
    winners, undecided = {}, {}
    for group, settings in groups.items():
        if len(settings) == 1 and settings[0].finished:
            winners[group] = settings[0].key
            continue
        missing = [s.key or "run" for s in settings if s.score is None]
        if missing:
            undecided[group] = (
                f"{len(missing)} of {len(settings)} settings have no dev score yet ({missing[0]})"
            )
            continue
        pick = min if metric == DEV_LOSS else max
        winners[group] = pick(settings, key=lambda s: s.score).key  # first in sweep order on a tie
    return winners, undecided


def score_settings(groups: dict[str, list[Setting]], metric: str) -> None:
    for settings in groups.values():
        for setting in settings:
            scores = [dev_score(p.run_dir, metric) for p in setting.points]
            done = [s for s in scores if s is not None]
            setting.runs_done = len(done)
            setting.finished = all(Run(p.run_dir, writer=False).done for p in setting.points)
            setting.score = statistics.fmean(done) if len(done) == len(scores) else None
