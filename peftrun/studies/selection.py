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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from peftrun.errors import PeftrunError
from peftrun.files import read_json, write_json

SELECTION = "selection.json"
DEV_LOSS = "dev_loss"


class SelectSpec(BaseModel):
    """A sweep's `select:` section."""

    model_config = ConfigDict(extra="forbid")

    grid: dict[str, list[Any]] = Field(default_factory=dict, description="settings to choose among")
    within: list[str] = Field(
        default_factory=lambda: ["method.kind", "method.variant"], description="keys of the groups"
    )
    metric: str = Field("BLEU", description="a dev report column (higher wins) or dev_loss (lower wins)")
    seeds: list[int] = Field(default_factory=list, description="seeds trained for each winner")

    @field_validator("grid")
    @classmethod
    def _values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"select.grid key {key!r} has no values")
        return grid

    def rule(self) -> str:
        direction = "lowest dev loss" if self.metric == DEV_LOSS else f"highest dev {self.metric}"
        grid = "; ".join(f"{k} in {v}" for k, v in self.grid.items()) or "no grid (cases only)"
        return f"within {', '.join(self.within)}: {direction} (mean over the grid's seeds), among {grid}"


@dataclass
class Setting:
    """One setting of a group: its grid points (one per grid seed) and its dev criterion."""

    key: str  # the point name without its seed suffix
    values: dict[str, Any]  # what the point sets (for the report's dev grid)
    points: list[Any]  # sweep_file.Point of the grid seeds
    score: float | None = None
    runs_done: int = 0


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
    """Each decided group's winning setting key, and why undecided groups are not decided."""
    winners, undecided = {}, {}
    for group, settings in groups.items():
        missing = [s.key for s in settings if s.score is None]
        if missing:
            undecided[group] = f"{len(missing)} of {len(settings)} settings have no dev score yet ({missing[0]})"
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
            setting.score = statistics.fmean(done) if len(done) == len(scores) else None


class Record:
    """`<sweep folder>/selection.json`: the rule, the dev grid, winners, test decodes, reselections."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / SELECTION
        self.data: dict[str, Any] = read_json(self.path) if self.path.is_file() else {}

    @property
    def winners(self) -> dict[str, str]:
        return dict(self.data.get("winners", {}))

    @property
    def test_decoded(self) -> list[str]:
        return list(self.data.get("test_decoded", []))

    def check_changes(self, winners: dict[str, str], reselect: bool) -> list[dict[str, Any]]:
        """Groups whose winner changed after their test was decoded: refused unless `reselect`."""
        changed = []
        decoded = set(self.test_decoded)
        for group, old in self.winners.items():
            new = winners.get(group)
            if new is not None and new != old and any(n == old or n.startswith(f"{old}-seed") for n in decoded):
                changed.append({"group": group, "from": old, "to": new, "at": _now()})
        if changed and not reselect:
            first = changed[0]
            raise PeftrunError(
                f"the selection changed after test was decoded: {first['group']} now picks {first['to']} "
                f"(was {first['from']}); pass --reselect to accept (the report will say so)"
            )
        return changed

    def save(self, spec: SelectSpec, groups: dict[str, list[Setting]], winners, undecided, changed) -> None:
        self.data.update(
            {
                "rule": spec.rule(),
                "metric": spec.metric,
                "within": spec.within,
                "grid": spec.grid,
                "seeds_added": spec.seeds,
                "updated": _now(),
                "groups": {
                    group: [
                        {"setting": s.key, "values": s.values, "dev_score": s.score, "runs": s.runs_done}
                        for s in settings
                    ]
                    for group, settings in groups.items()
                },
                "winners": {**self.winners, **winners},
                "undecided": undecided,
            }
        )
        if changed:
            self.data.setdefault("reselections", []).extend(changed)
        write_json(self.path, self.data)

    def add_test_decoded(self, name: str) -> None:
        names = self.test_decoded
        if name not in names:
            self.data["test_decoded"] = [*names, name]
            write_json(self.path, self.data)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --------------------------------------------------------------------------- what the report reads


def in_setting(run_name: str, setting: str) -> bool:
    """Whether a run folder's name is one of the setting's runs (the name, or name-seed<k>)."""
    return run_name == setting or run_name.startswith(f"{setting}-seed")


def find_records(directories: list[Path]) -> dict[Path, dict[str, Any]]:
    """selection.json of every selection sweep under the folders (or that is one), by sweep folder."""
    found = {}
    for top in map(Path, directories):
        for path in [top / SELECTION, *top.rglob(SELECTION)]:
            if path.is_file():
                found[path.parent.resolve()] = read_json(path)
    return found


def is_unselected(run_path: Path, records: dict[Path, dict[str, Any]]) -> bool:
    """A run of a selection sweep whose setting did not win (its test is never decoded)."""
    record = records.get(run_path.parent.resolve())
    if record is None:
        return False
    return not any(in_setting(run_path.name, key) for key in record.get("winners", {}).values())


def markdown(records: dict[Path, dict[str, Any]]) -> list[str]:
    """Each selection sweep's dev grid: every setting's dev score, the winner in bold."""
    lines: list[str] = []
    for folder, record in sorted(records.items()):
        lines += [
            "",
            f"### Selection on dev ({folder.name}): {record.get('rule', '')}",
            "",
            f"| group | setting | dev {record.get('metric', '')} (mean over the grid's seeds) | runs | selected |",
            "|---|---|---:|---:|---|",
        ]
        winners = record.get("winners", {})
        for group, settings in record.get("groups", {}).items():
            for s in settings:
                won = winners.get(group) == s["setting"]
                score = "—" if s["dev_score"] is None else f"{s['dev_score']:.4g}"
                score = f"**{score}**" if won else score
                lines.append(f"| {group} | {s['setting']} | {score} | {s['runs']} | {'yes' if won else ''} |")
        for group, why in record.get("undecided", {}).items():
            lines.append(f"\nNot decided for {group}: {why}.")
        for change in record.get("reselections", []):
            lines.append(
                f"\n**Reselected after test was decoded** ({change['at']}): {change['group']} "
                f"from {change['from']} to {change['to']} (`peftrun sweep --reselect`)."
            )
    return lines
