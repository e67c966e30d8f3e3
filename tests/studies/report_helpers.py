"""Synthetic run directories with known numbers, written by hand (no training), for report tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peftrun.config import Config

# A tiny E2E-like test set: 12 instances, two references each.
NAMES = ["Alimentum", "Aromi", "Bibimbap House", "Blue Spice", "Clowns", "Cocum"]
AREAS = ["city centre", "riverside"]
INSTANCES = [
    {
        "id": i,
        "source": f"name[{NAMES[i % 6]}], area[{AREAS[i % 2]}]",
        "references": [
            f"{NAMES[i % 6]} is a restaurant in the {AREAS[i % 2]} area serving food number {i}.",
            f"In the {AREAS[i % 2]} there is {NAMES[i % 6]}, place {i}.",
        ],
    }
    for i in range(12)
]
GOOD = [inst["references"][0] for inst in INSTANCES]  # outputs equal to a reference
BAD = ["It is a place." for _ in INSTANCES]


def make_run(
    path: Path,
    *,
    method: dict[str, Any] | None = None,
    seed: int = 101,
    data: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    scores: dict[str, float] | None = None,
    outputs: list[str] | None = None,
    per_example: dict[str, list[float]] | None = None,
    status: str = "done",
    error: str | None = None,
    params: tuple[float, float] = (7.256, 0.069),
    train_seconds: float = 100.0,
    tokens_per_s: float = 2000.0,
    log: list[dict[str, Any]] | None = None,
    scored: bool | None = None,
) -> Path:
    """One run directory: config.resolved.yaml, meta.json, train_log.jsonl, and, when done,
    predictions/test.jsonl, metrics/test.json and DONE.

    ``scored`` writes predictions and metrics whatever the status (default: only when done), as a
    run that failed or was interrupted after scoring leaves them; DONE is written only when done.
    """
    cfg = Config.model_validate(
        {
            "method": method or {"kind": "prefix", "prefix_len": 5},
            "data": data or {},
            "train": {"seed": seed, **(train or {})},
            "output": {"run_dir": str(path)},
        }
    )
    path.mkdir(parents=True)
    (path / "config.resolved.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    meta = {
        "parameters": {
            "base": 1000,
            "trainable": 72,
            "stored": 1,
            "trainable_pct": params[0],
            "stored_pct": params[1],
        },
        "status": status,
        "error": error,
        "train_seconds": train_seconds,
        "train_tokens": int(train_seconds * tokens_per_s),
        "tokens_per_s": tokens_per_s,
    }
    (path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    lines = log if log is not None else [{"step": 10, "loss": 3.0, "lr": 1e-4}, {"step": 10, "dev_loss": 3.2}]
    (path / "train_log.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8"
    )
    if not (status == "done" if scored is None else scored):
        return path
    outputs = outputs if outputs is not None else GOOD
    records = [{**inst, "output": out} for inst, out in zip(INSTANCES, outputs, strict=True)]
    (path / "predictions").mkdir()
    (path / "predictions" / "test.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8"
    )
    (path / "metrics").mkdir()
    metrics = {"split": "test", "scores": scores or {}, "per_example": per_example or {}}
    (path / "metrics" / "test.json").write_text(json.dumps(metrics), encoding="utf-8")
    if status == "done":
        (path / "DONE").write_text("2026-12-01T00:00:00\n", encoding="utf-8")
    return path


def e2e_scores(bleu: float, **extra: float) -> dict[str, float]:
    """Stored E2E scores on the official raw scale (BLEU 0.62, not 62)."""
    return {
        "BLEU": bleu,
        "NIST": 8.0 + bleu,
        "BLEU_py": bleu + 0.01,
        "NIST_py": 8.1 + bleu,
        "METEOR": 0.45,
        "ROUGE_L": 0.70,
        "CIDEr": 2.4,
        **extra,
    }


def meteor(value: float) -> dict[str, list[float]]:
    return {"METEOR": [value] * len(INSTANCES)}


def write_manifest(folder: Path, points: list[dict[str, Any]]) -> None:
    """A sweep.json as `peftrun sweep` writes it (only the fields the report reads)."""
    payload = {"name": folder.name, "points": points}
    (folder / "sweep.json").write_text(json.dumps(payload), encoding="utf-8")
