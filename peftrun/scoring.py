"""One run, start to finish (DESIGN.md's flow):

    config → run dir (lock, meta, resume point) → model + method → data → fit → adapter
           → decode (one output per unique source) → metrics → DONE

Everything that can fail because of the user's input (config, model name, data files, an
existing run directory) is checked before the run directory is created.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peftrun import config as config_module
from peftrun.config import Config
from peftrun.errors import PeftrunError
from peftrun.runs import Run, read_json, write_json


def log(message: str) -> None:
    import typer

    typer.echo(message, err=True)


def check_against_model(cfg: Config):
    """Phase two of validation: the config against the model's architecture (no weights)."""
    from peftrun import models

    arch = models.summarize(models.hf_config(cfg.model.name))
    cfg.method.check(arch)
    return arch


def resolve(config_path: str | Path, overrides: list[str], run_dir: str | None) -> Config:
    if run_dir:
        overrides = [*overrides, f"output.run_dir={json.dumps(str(run_dir))}"]
    cfg = config_module.load(config_path, overrides)
    check_against_model(cfg)
    return cfg


class Session:
    """A model with its method attached, ready to train or decode."""

    def __init__(self, cfg: Config) -> None:
        import torch

        from peftrun import models
        from peftrun.data.formats import Slots, text_format
        from peftrun.methods import METHODS

        self.cfg = cfg
        wanted = cfg.train.device
        self.device = torch.device(
            "cuda"
            if wanted == "auto" and torch.cuda.is_available()
            else ("cpu" if wanted == "auto" else wanted)
        )
        self.loaded = models.load(cfg.model.name, cfg.model.attention, seed=cfg.train.seed)
        self.loaded.model.to(self.device)
        self.method = METHODS[cfg.method.kind](self.loaded, cfg.method)
        self.format = text_format(self.loaded, cfg.data, getattr(self.method, "slots", Slots()))
        wrap = getattr(self.method, "wrap_format", None)
        if wrap is not None:
            self.format = wrap(self.format, cfg)

    @property
    def model(self):
        return self.loaded.model

    def log_notes(self) -> list[str]:
        """Log what the method has to say (an init fit's result, demonstrations used, ...)."""
        take = getattr(self.method, "take_notes", None)
        notes = take() if take is not None else []
        for note in notes:
            log(note)
        return notes

    def decode_and_score(self, run: Run, splits) -> dict[str, dict[str, Any]]:
        from peftrun import data
        from peftrun.decode import generate

        results = {}
        for split in splits:
            instances = data.load_instances(self.cfg.data, split)[: self.cfg.decode.limit]
            started = time.perf_counter()
            outputs = generate(
                self.model,
                self.method,
                self.format,
                [i.source for i in instances],
                self.cfg.decode,
                self.device,
            )
            log(f"decoded {len(instances)} {split} instances in {time.perf_counter() - started:.1f}s")
            self.log_notes()
            records = [
                {"id": inst.id, "source": inst.source, "output": out, "references": list(inst.references)}
                for inst, out in zip(instances, outputs, strict=True)
            ]
            run.write_predictions(split, records)
            results[split] = score_records(run, split, self.cfg.data.dataset, self.cfg.data.reference_style)
        return results


def train(
    config_path: str | Path,
    overrides: list[str],
    run_dir: str | None = None,
    overwrite: bool = False,
    on_update: Callable[[int], None] | None = None,
) -> tuple[Path, dict[str, dict[str, Any]] | None]:
    """Train, decode and score one config. Returns the run dir and the metrics (None if it
    had finished before)."""
    from peftrun import data

    cfg = resolve(config_path, overrides, run_dir)
    resolved = cfg.to_yaml()
    run, state = Run.prepare(cfg.run_dir(), resolved, overwrite)
    if state == "done":
        log(f"{run.path} is already finished (DONE); nothing to do. `peftrun eval {run.path}` re-scores it.")
        return run.path, None
    train_pairs = data.load_pairs(cfg.data, "train") if cfg.train.epochs else []
    dev_pairs = data.load_pairs(cfg.data, "dev") if cfg.train.epochs else []
    session = Session(cfg)
    counts = session.method.counts().as_dict()
    run.start(
        state,
        Path(config_path).read_text(encoding="utf-8"),
        resolved,
        {
            "overrides": overrides,
            "parameters": counts,
            "reference_style": cfg.data.reference_style,
            "train_pairs": len(train_pairs),
        },
    )
    log(f"run {run.path} ({'resuming' if state == 'resume' else 'new'})")
    log(
        f"parameters: base {counts['base']:,}; trainable {counts['trainable']:,} ({counts['trainable_pct']:.3f}%); "  # noqa: E501
        f"stored {counts['stored']:,} ({counts['stored_pct']:.3f}%)"
    )
    initialize = getattr(session.method, "initialize", None)
    if initialize is not None and not run.has_checkpoint:  # a resumed run has its state already
        initialize()
        notes = session.log_notes()
        if notes:
            run.update_meta(method_notes=notes)
    if session.method.trainable_parameters() and train_pairs:
        from peftrun.train import fit

        progress = fit(
            session.model,
            session.method,
            train_pairs,
            dev_pairs,
            session.format.training_batch,
            cfg.train,
            run,
            session.device,
            on_update,
        )
        if cfg.train.select == "best":
            best = run.load_best(session.device)
            if best is None:
                raise PeftrunError("train.select=best needs dev-loss evaluations; none ran (no dev data?)")
            session.method.load_training_state(best)
        run.update_meta(
            best_dev_loss=progress.best_dev_loss if progress.dev_losses else None,
            updates=progress.step,
            stopped_early=progress.stopped_early,
        )
    else:
        log(f"method {cfg.method.kind!r} trains nothing here: decoding and scoring only")
    save_adapter(session, run)
    session.method.load(run.adapter_dir)  # decode exactly what was stored
    results = session.decode_and_score(run, cfg.decode.splits)
    run.finish()
    return run.path, results


def save_adapter(session: Session, run: Run) -> None:
    from peftrun import __version__

    run.adapter_dir.mkdir(parents=True, exist_ok=True)
    session.method.save(run.adapter_dir)
    write_json(
        run.adapter_dir / "adapter.json",
        {
            "peftrun": __version__,
            "base_model": session.cfg.model.name,
            "method": session.cfg.method.model_dump(mode="json"),
            "parameters": session.method.counts().as_dict(),
        },
    )


def open_finished(run_dir: str | Path) -> tuple[Run, Config]:
    run = Run(Path(run_dir))
    resolved = run.path / "config.resolved.yaml"
    if not resolved.is_file():
        raise PeftrunError(f"{run.path} is not a peftrun run directory (no config.resolved.yaml)")
    cfg = config_module.load(resolved)
    return run, cfg


def decode(run_dir: str | Path, splits: list[str] | None) -> dict[str, dict[str, Any]]:
    """Decode a trained run's stored adapter again (e.g. another split)."""
    run, cfg = open_finished(run_dir)
    if not (run.adapter_dir / "adapter.json").is_file():
        raise PeftrunError(f"{run.path} has no trained adapter yet; finish it with `peftrun train`")
    session = Session(cfg)
    session.method.load(run.adapter_dir)
    return session.decode_and_score(run, splits or list(cfg.decode.splits))


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


def rescore(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    run, cfg = open_finished(run_dir)
    splits = run.prediction_splits()
    if not splits:
        raise PeftrunError(f"{run.path} has no predictions yet; run `peftrun decode {run.path}`")
    return {split: score_records(run, split, cfg.data.dataset, cfg.data.reference_style) for split in splits}


def summary(run_path: Path) -> dict[str, Any]:
    """One row of `peftrun ls`."""
    from peftrun.metrics import KEY_METRIC

    run = Run(run_path)
    meta = run.meta()
    resolved = run_path / "config.resolved.yaml"
    dataset = method = model = None
    if resolved.is_file():
        import yaml

        cfg = yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}
        dataset, method, model = (
            cfg.get("data", {}).get("dataset"),
            cfg.get("method", {}).get("kind"),
            cfg.get("model", {}).get("name"),
        )
    status = "done" if run.done else ("running" if (run_path / ".lock").exists() else "incomplete")
    metrics = {
        split: read_json(p)["scores"]
        for split, p in ((p.stem, p) for p in sorted((run_path / "metrics").glob("*.json")))
    }
    key = KEY_METRIC.get(dataset or "", "")
    return {
        "run": str(run_path),
        "status": status,
        "dataset": dataset,
        "model": model,
        "method": method,
        "key_metric": key,
        "scores": {split: scores.get(key) for split, scores in metrics.items()},
        "started": meta.get("started"),
    }


def read_outputs(path: Path) -> list[str]:
    """An outputs file: one output per line (.txt), or JSONL objects with an `output` field."""
    from peftrun.data.references import read_utf8

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


def parameter_counts(config_path: str | Path, overrides: list[str]) -> dict[str, Any]:
    """Trainable and stored parameters of the configured method, built without weights."""
    from peftrun import models
    from peftrun.methods import METHODS

    cfg = resolve(config_path, overrides, None)
    counts = METHODS[cfg.method.kind](models.skeleton(cfg.model.name), cfg.method).counts()
    return {"model": cfg.model.name, "method": cfg.method.kind, **counts.as_dict()}
