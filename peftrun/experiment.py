"""One run, start to finish (docs/design.md's flow), and nothing else:

    config → run dir (lock, meta, resume point) → model + method → data → fit → adapter
           → decode (one output per unique source) → metrics → DONE

Everything that can fail because of the user's input (config, model name, data files, an
existing run directory) is checked before the run directory is created (peftrun.validation).
Whatever ends the run (success, a user error, an exception), its lock is released. The locked
part (`Attempt`: start → prepare → fit → finish, and how it ended) is the same for a run alone
(`train`) and for runs packed on one base (peftrun.packing).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftrun.config import Config
from peftrun.errors import PeftrunError
from peftrun.interrupts import Interrupted
from peftrun.run_states import Opening, RunState
from peftrun.runs import Run
from peftrun.scoring import log, open_run
from peftrun.session import Session
from peftrun.validation import check_trackers, resolve


@dataclass
class Attempt:
    """One run's locked part in this invocation: its directory (and the state `Run.prepare` found
    it in), its data and its session, and how it ended ("done", "failed", "interrupted")."""

    cfg: Config
    run: Run
    state: str
    config_path: Path
    overrides: list[str]
    train_pairs: list
    dev_pairs: list
    session: Session | None = None
    ended: str | None = None
    error: str | None = None
    results: dict | None = None

    @classmethod
    def open(
        cls, cfg: Config, config_path, overrides: list[str], overwrite=False, writer=True, recover=False
    ):
        """The run directory as it is (nothing written yet); None when the run is DONE."""
        run, state = Run.prepare(cfg.run_dir(), cfg.to_yaml(), overwrite, writer, recover)
        if state == Opening.DONE:
            return run, None
        return run, cls(cfg, run, state, Path(config_path), overrides, *load_training_data(cfg))

    def start(self, session: Session, **meta) -> None:
        """Lock the directory; write the run's configs and meta.json (status running)."""
        self.session = session
        self.run.start(
            self.state,
            self.config_path.read_text(encoding="utf-8"),
            self.cfg.to_yaml(),
            {
                "overrides": self.overrides,
                "parameters": session.method.counts().as_dict(),
                "reference_style": self.cfg.data.reference_style,
                "train_pairs": len(self.train_pairs),
                "processes": session.processes.world,
                **meta,
            },
        )

    def prepare(self):
        """Say what runs; a run from scratch initialises its method (a resumed one has its state).
        Returns the run's `train.Trainee`, or None when the method trains nothing here."""
        session, run = self.session, self.run
        counts = session.method.counts().as_dict()
        log(f"run {run.path} ({'resuming' if self.state in ('resume', 'recover') else 'new'})")
        log(
            f"parameters: base {counts['base']:,}; trainable {counts['trainable']:,} "
            f"({counts['trainable_pct']:.3f}%); stored {counts['stored']:,} ({counts['stored_pct']:.3f}%)"
        )
        if not run.has_checkpoint:
            session.method.initialize(self.train_pairs)
            notes = session.log_notes()
            if notes:
                run.update_meta(method_notes=notes)
        if not (session.method.trainable_parameters() and self.train_pairs and self.cfg.train.epochs):
            log(f"method {self.cfg.method.kind!r} trains nothing here: decoding and scoring only")
            return None
        return session.trainee(run, self.train_pairs, self.dev_pairs)

    def finish(self, progress) -> dict[str, dict[str, Any]]:
        """After training (`progress`: the trainee's, or None): the selected weights, the adapter,
        decoding, scores, DONE."""
        session, run = self.session, self.run
        if progress is not None:
            if self.cfg.train.select == "best":
                best = run.load_best(session.device)
                if best is None:
                    raise PeftrunError(
                        "train.select=best needs dev-loss evaluations; none ran (no dev data?)"
                    )
                session.method.load_training_state(best)
            run.update_meta(
                best_dev_loss=progress.best_dev_loss if progress.dev_losses else None,
                updates=progress.step,
                stopped_early=progress.stopped_early,
                train_seconds=progress.train_seconds,
                train_tokens=progress.train_tokens,
                tokens_per_s=progress.train_tokens / max(progress.train_seconds, 1e-9),
            )
        session.save_adapter(run)
        session.processes.barrier()
        session.method.load(run.adapter_dir)  # decode exactly what was stored
        self.results = session.decode_and_score(run, self.cfg.decode.splits)
        run.finish()
        self.ended = RunState.DONE
        return self.results

    def stop(self, ended: str, err: BaseException | None = None, release: bool = True) -> None:
        """Record how the run ended without finishing ("failed" with its error, or
        "interrupted": re-running resumes) in meta.json; release the lock (`release`)."""
        self.ended, self.error = ended, None if err is None else one_line(err)
        self.run.update_meta(
            status=RunState.FAILED if ended == RunState.FAILED else RunState.INTERRUPTED, error=self.error
        )
        if isinstance(err, Interrupted):
            err.run_dir = self.run.path
        if release:
            self.run.unlock()

    @contextmanager
    def recording(self, release: bool = True):
        """Whatever ends what runs within is recorded (`stop`); the lock is released when it
        ends (`release`), whatever ends it."""
        try:
            yield
        except Interrupted as stop:  # Ctrl-C, SIGTERM: not a failure; re-running resumes
            self.stop(RunState.INTERRUPTED, stop, release=False)
            raise
        except Exception as err:
            self.stop(RunState.FAILED, err, release=False)
            raise
        finally:
            if release:
                self.run.unlock()


def fit_alone(trainee, on_update=None):
    """Train one run (a pack of one, train.fit): its progress, or the error it stopped on raised."""
    from peftrun.train import fit

    (end,) = fit([trainee], on_update)
    if end.error is not None:
        raise end.error
    return trainee.progress


def train(
    config_path: str | Path,
    overrides: list[str],
    run_dir: str | None = None,
    overwrite: bool = False,
    on_update: Callable[[int], None] | None = None,
    resume_from_last_good: bool = False,
) -> tuple[Path, dict[str, dict[str, Any]] | None]:
    """Train, decode and score one config. Returns the run dir and the metrics (None if it
    had finished before)."""
    from peftrun import distributed

    cfg = resolve(config_path, overrides, run_dir)
    check_trackers(cfg.output.trackers)
    processes = distributed.current(
        cfg.output.trackers, str(cfg.run_dir() / "trackers"), cpu=cfg.train.device == "cpu"
    )
    run, attempt = Attempt.open(cfg, config_path, overrides, overwrite, processes.main, resume_from_last_good)
    processes.barrier()  # every process has seen the directory as it was before anyone writes
    if attempt is None:
        log(f"{run.path} is already finished (DONE); nothing to do. `peftrun eval {run.path}` re-scores it.")
        return run.path, None
    attempt.start(Session(cfg, processes))
    processes.barrier()
    if cfg.output.trackers and processes.main:
        processes.accelerator.init_trackers(run.path.name, config=_flatten(cfg.model_dump(mode="json")))
        run.on_log = lambda record: processes.accelerator.log(record, step=record.get("step"))
    try:
        with attempt.recording():
            trainee = attempt.prepare()
            progress = None if trainee is None else fit_alone(trainee, on_update)
            processes.barrier()  # the checkpoints process 0 wrote are there for every process
            results = attempt.finish(progress)
    finally:
        if cfg.output.trackers:
            processes.accelerator.end_training()
    return run.path, results


def load_training_data(cfg: Config) -> tuple[list, list]:
    """The train and dev pairs the run needs; the decode splits are read too, so that a bad test
    file fails now, not after hours of training."""
    from peftrun import data
    from peftrun.methods import REGISTRY

    reads_train = cfg.train.epochs > 0 or REGISTRY[cfg.method.kind].load().reads_train_pairs
    train_pairs = data.load_pairs(cfg.data, "train") if reads_train else []
    dev_pairs = data.load_pairs(cfg.data, "dev", cfg.decode) if cfg.train.epochs else []
    for split in cfg.decode.splits:
        data.load_instances(cfg.data, split)
    return train_pairs, dev_pairs


def _flatten(values: dict, prefix: str = "") -> dict:
    """Dotted keys with scalar values (what trackers take as hyperparameters)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def one_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}".strip()


def decode(
    run_dir: str | Path,
    splits: list[str] | None,
    overrides: list[str] | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> dict[str, dict[str, Any]]:
    """Decode a trained run's stored adapter again and score the outputs; the metrics per split.

    - Plain (no `name`, no overrides but decode.splits): with the run's own settings into its own
      predictions/ and metrics/ (e.g. a split it has not decoded yet). A split it has decoded and
      scored already is refused unless `overwrite`; one decoded but never scored is scored.
    - With decode.* `overrides` (or a `name`): into RUN/decodes/NAME (NAME default: from the
      overrides, e.g. num_beams=5), kept apart from the run's own outputs, which are never
      touched; decode.yaml there holds the overrides and the resulting decode config. Splits
      decoded and scored there already are skipped (re-running resumes); a NAME holding other
      settings is refused. Any override outside decode.* is refused (the adapter was trained
      with the rest)."""
    from peftrun import config as config_module

    run, cfg = open_run(run_dir)
    overrides = list(overrides or [])
    keys = [item.partition("=")[0] for item in overrides]
    for item, key in zip(overrides, keys, strict=True):
        if not key.startswith("decode."):
            raise PeftrunError(
                f"override {item!r}: only decode.* settings can change when decoding a trained run "
                "(the adapter was trained with the rest; train another run for that)"
            )
    wanted = config_module.build(config_module.apply_overrides(cfg.dump(), overrides))
    splits = list(splits or wanted.decode.splits)
    shaping = [item for item, key in zip(overrides, keys, strict=True) if key != "decode.splits"]
    if not run.has_adapter:
        raise PeftrunError(f"{run.path} has no trained adapter yet; finish it with `peftrun train`")
    if name is None and not shaping:
        return _decode_own(run, cfg, splits, overwrite)
    return _decode_apart(run, wanted, splits, shaping, name or decode_name(shaping))


def _decode_own(run: Run, cfg: Config, splits: list[str], overwrite: bool) -> dict[str, dict[str, Any]]:
    """Decode into the run's own directory, with its own settings."""
    from peftrun.scoring import score_records

    scored = [split for split in splits if run.has_metrics(split)]
    if scored and not overwrite:
        raise PeftrunError(
            f"{run.path} has decoded and scored {scored[0]} already; pass --overwrite to decode it again "
            f"into the run's own files, or decode with other settings apart (decode.num_beams=...)"
        )
    unscored = [s for s in splits if not overwrite and run.has_predictions(s)]  # killed while scoring
    results = {s: score_records(run, s, cfg.data.dataset, cfg.data.reference_style) for s in unscored}
    todo = [s for s in splits if s not in unscored]
    if todo:
        session = Session(cfg)
        session.method.load(run.adapter_dir)
        results.update(session.decode_and_score(run, todo))
    return {split: results[split] for split in splits}


def decode_name(overrides: list[str]) -> str:
    """A decode folder's default name, from its overrides: decode.num_beams=5 decode.top_p=0.9 →
    num_beams=5-top_p=0.9 (characters a folder name should not hold become _)."""
    import re

    parts = []
    for item in overrides:
        key, _, value = item.partition("=")
        parts.append(f"{key.removeprefix('decode.')}={re.sub(r'[^A-Za-z0-9._+-]+', '_', value) or '_'}")
    return "-".join(parts)


def _decode_apart(run: Run, cfg: Config, splits: list[str], overrides: list[str], name: str):
    """Decode into RUN/decodes/NAME with `cfg.decode` (the run's settings with `overrides`)."""
    from peftrun.scoring import score_records

    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise PeftrunError(f"--name {name!r}: give a plain folder name (no slashes)")
    settings = {k: v for k, v in cfg.dump()["decode"].items() if k != "splits"}
    decoded = run.decoded(name)
    decoded.lock()
    try:
        held = decoded.settings().get("decode")
        if held is None:
            decoded.write_settings(overrides, settings)
        elif json.loads(json.dumps(held)) != json.loads(json.dumps(settings)):
            differ = sorted(k for k in set(held) | set(settings) if held.get(k) != settings.get(k))
            shown = ", ".join(f"{k}: {held.get(k)!r} there, {settings.get(k)!r} here" for k in differ)
            raise PeftrunError(
                f"{decoded.path} holds a decode with other settings ({shown}); choose another --name"
            )
        results = {}
        for split in splits:
            if decoded.has_metrics(split):
                log(f"{decoded.path}: {split} is decoded and scored already; skipped")
                results[split] = decoded.read_metrics()[split]
            elif decoded.has_predictions(split):  # killed while scoring
                results[split] = score_records(decoded, split, cfg.data.dataset, cfg.data.reference_style)
        todo = [split for split in splits if split not in results]
        if todo:
            session = Session(cfg)
            session.method.load(run.adapter_dir)
            log(f"decoding {', '.join(todo)} into {decoded.path} ({' '.join(overrides) or 'own settings'})")
            results.update(session.decode_and_score(decoded, todo))
    finally:
        decoded.unlock()
    return {split: results[split] for split in splits}


def parameter_counts(config_path: str | Path, overrides: list[str]) -> dict[str, Any]:
    """Trainable and stored parameters of the configured method, built without weights."""
    from peftrun import models
    from peftrun.methods.base import attach

    cfg = resolve(config_path, overrides, None)
    counts = attach(models.skeleton(cfg.model.name), cfg.method).counts()
    return {"model": cfg.model.name, "method": cfg.method.kind, **counts.as_dict()}
