"""Scoring outside a training run: re-score a run, score any outputs file, compare two runs.

`peftrun eval` calls these; a run's own decode-and-score step calls `score_records` too, so a
run's metrics and a re-score are the same code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peftrun.errors import PeftrunError
from peftrun.runs import RESOLVED, Run


def log(message: str) -> None:
    import typer

    typer.echo(message, err=True)


def score_records(run: Run, split: str, dataset: str, reference_style: str) -> dict[str, Any]:
    from peftrun.metrics import score

    records = run.read_predictions(split)
    report = score(dataset, [r["output"] for r in records], [r["references"] for r in records])
    for note in report.notes:
        log(f"note: {note}")
    payload = {
        "split": split,
        "dataset": dataset,
        "reference_style": reference_style,
        "instances": len(records),
        "scores": report.scores,
        "scorers": report.scorers,
        "notes": report.notes,
        "per_example": report.per_example,
    }
    run.write_metrics(split, payload)
    return payload


def open_run(run_dir: str | Path):
    """A finished or unfinished run directory and its resolved config."""
    from peftrun import config as config_module

    run = Run(Path(run_dir))
    if not run.resolved_config_path.is_file():
        raise PeftrunError(f"{run.path} is not a peftrun run directory (no {RESOLVED})")
    return run, config_module.load(run.resolved_config_path)


def rescore(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    run, cfg = open_run(run_dir)
    splits = run.prediction_splits()
    if not splits:
        raise PeftrunError(f"{run.path} has no predictions yet; run `peftrun decode {run.path}`")
    return {split: score_records(run, split, cfg.data.dataset, cfg.data.reference_style) for split in splits}


def read_outputs(path: Path) -> list[str]:
    """An outputs file: one output per line (.txt), or JSONL objects with an `output` field."""
    from peftrun.files import read_utf8

    lines = read_utf8(path, "outputs file").splitlines()
    if path.suffix != ".jsonl":
        return lines
    outputs = []
    for number, line in enumerate(lines, 1):
        try:
            outputs.append(json.loads(line)["output"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise PeftrunError(f"{path}:{number}: expected a JSON object with an 'output' field") from None
    return outputs


def score_file(
    path: Path, dataset: str, split: str, reference_style: str, references: Path | None = None
) -> dict[str, Any]:
    """Score any outputs file against a dataset split's references (official order), or against
    a references file."""
    from peftrun import data
    from peftrun.config import DataConfig
    from peftrun.data.references import read_references
    from peftrun.metrics import score

    if references is not None:
        refs, source = read_references(Path(references)), str(references)
    else:
        try:
            data_cfg = DataConfig(dataset=dataset, reference_style=reference_style)
        except ValueError:
            raise PeftrunError(
                "--dataset must be e2e or xsum and --reference-style raw or tokenized"
            ) from None
        refs, source = (
            [list(i.references) for i in data.load_instances(data_cfg, split)],
            f"{dataset} {split}",
        )
    outputs = read_outputs(Path(path))
    if len(outputs) != len(refs):
        raise PeftrunError(
            f"{path} has {len(outputs)} outputs; {source} has {len(refs)} instances (expected {len(refs)}, one per instance, in order)"  # noqa: E501
        )
    empty = sum(1 for o in outputs if not o.strip())
    if empty:
        log(f"warning: {empty} empty outputs (scored as empty)")
    report = score(dataset, outputs, refs)
    for note in report.notes:
        log(f"note: {note}")
    return {
        "split": split,
        "dataset": dataset,
        "references": source,
        "reference_style": reference_style,
        "scores": report.scores,
        "scorers": report.scorers,
        "notes": report.notes,
    }


def compare_runs(
    run_a: str | Path, run_b: str | Path, split: str, samples: int, seed: int
) -> list[dict[str, Any]]:
    """Paired bootstrap (Koehn 2004) of B − A over the instances both runs decoded (E2E)."""
    from dataclasses import asdict

    from peftrun.metrics.bootstrap import paired_bootstrap

    records_a, records_b = Run(Path(run_a)).read_predictions(split), Run(Path(run_b)).read_predictions(split)
    if [r["id"] for r in records_a] != [r["id"] for r in records_b]:
        raise PeftrunError(
            f"{run_a} and {run_b} decoded different {split} instances; compare runs of the same split"
        )
    results = paired_bootstrap(
        [r["output"] for r in records_a],
        [r["output"] for r in records_b],
        [r["references"] for r in records_a],
        samples=samples,
        seed=seed,
    )
    return [asdict(result) for result in results.values()]
