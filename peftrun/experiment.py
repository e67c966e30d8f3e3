"""One run, start to finish (DESIGN.md's flow), and nothing else:

    config → run dir (lock, meta, resume point) → model + method → data → fit → adapter
           → decode (one output per unique source) → metrics → DONE

Everything that can fail because of the user's input (config, model name, data files, an
existing run directory) is checked before the run directory is created. Whatever ends the run
(success, a user error, an exception), its lock is released.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from peftrun import config as config_module
from peftrun.config import Config
from peftrun.distributed import Processes
from peftrun.errors import PeftrunError
from peftrun.interrupts import Interrupted
from peftrun.runs import Run
from peftrun.scoring import log, open_run, score_records


def check_against_model(cfg: Config):
    """Phase two of validation: the config against the model's architecture (no weights)."""
    from peftrun import models

    arch = models.arch_summary(models.hf_config(cfg.model.name))
    cfg.method.check(arch)
    if cfg.method.needs_tokenizer_check():
        try:
            tokenizer = models.cached_tokenizer(cfg.model.name)
        except PeftrunError:
            tokenizer = None  # not available here (a hub model offline): the run checks it later
        if tokenizer is not None:
            cfg.method.check_tokens(tokenizer)
    return arch


def resolve(config_path: str | Path, overrides: list[str], run_dir: str | None) -> Config:
    if run_dir:
        overrides = [*overrides, f"output.run_dir={json.dumps(str(run_dir))}"]
    cfg = config_module.load(config_path, overrides)
    check_against_model(cfg)
    return cfg


def pick_device(wanted: str):
    import torch

    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(wanted)


def check_trackers(trackers: tuple[str, ...]) -> None:
    """Each configured tracker's package must be installed (one line saying which to install)."""
    if not trackers:
        return
    from accelerate import utils

    for tracker in trackers:
        if not getattr(utils, f"is_{tracker}_available")():
            raise PeftrunError(
                f"output.trackers: {tracker} needs the {tracker} package: pip install {tracker} "
                "(or remove it from output.trackers)"
            )


class Session:
    """A model with its method attached, ready to train or decode (in this process's share of the
    data-parallel processes, if several)."""

    def __init__(self, cfg: Config, processes: Processes | None = None, base=None) -> None:
        """`base`: a loaded model to attach to (runs packed on one frozen base), else one is loaded."""
        import torch

        from peftrun import models
        from peftrun.data.formats import text_format
        from peftrun.methods.base import attach

        self.cfg = cfg
        self.processes = processes or Processes()
        accelerator = self.processes.accelerator
        if base is not None:
            self.device = base.model.device
            self.loaded = base
        else:
            self.device = accelerator.device if self.processes.world > 1 else pick_device(cfg.train.device)
            self.loaded = models.load(cfg.model.name, cfg.model.attention, seed=cfg.base_seed())
            self.loaded.model.to(self.device)
        # The method's initialisation comes from train.seed, whatever the base model is (a hub
        # model draws nothing; a built-in one drew its weights from model.seed).
        torch.manual_seed(cfg.train.seed)
        self.method = attach(self.loaded, cfg.method)
        plain = text_format(self.loaded, cfg.data, self.method.room)
        self.format = self.method.wrap_format(plain, cfg.decode)

    @property
    def model(self):
        return self.loaded.model

    def log_notes(self) -> list[str]:
        """Log what the method has to say (an init fit's result, demonstrations used, ...)."""
        notes = self.method.take_notes()
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
            sources = [i.source for i in instances]
            if self.processes.world == 1:  # outputs are saved per batch: a resumed decode skips them
                done = run.partial_predictions(split, sources)
                save = partial(run.add_partial_predictions, split, sources=sources)
                outputs = generate(
                    self.model, self.method, self.format, sources, self.cfg.decode, self.device, done, save
                )
            else:
                share = self.processes.shard(sources)
                outputs = generate(self.model, self.method, self.format, share, self.cfg.decode, self.device)
                outputs = self.processes.unshard(outputs)
            if not run.writer:
                continue
            log(f"decoded {len(instances)} {split} instances in {time.perf_counter() - started:.1f}s")
            self.log_notes()
            records = [
                {"id": inst.id, "source": inst.source, "output": out, "references": list(inst.references)}
                for inst, out in zip(instances, outputs, strict=True)
            ]
            run.write_predictions(split, records)
            results[split] = score_records(run, split, self.cfg.data.dataset, self.cfg.data.reference_style)
        return results

    # A run's locked part: start → prepare → fit → finish ------------------------------------

    def start(self, run: Run, state: str, config_path, overrides: list[str], train_pairs, **meta) -> None:
        """Write the run's configs and meta.json (status running)."""
        self.state = state
        run.start(
            state,
            Path(config_path).read_text(encoding="utf-8"),
            self.cfg.to_yaml(),
            {
                "overrides": overrides,
                "parameters": self.method.counts().as_dict(),
                "reference_style": self.cfg.data.reference_style,
                "train_pairs": len(train_pairs),
                "processes": self.processes.world,
                **meta,
            },
        )

    def prepare(self, run: Run, train_pairs) -> None:
        """Say what runs; a run from scratch initialises its method (a resumed one has its state)."""
        counts = self.method.counts().as_dict()
        log(f"run {run.path} ({'resuming' if self.state in ('resume', 'recover') else 'new'})")
        log(
            f"parameters: base {counts['base']:,}; trainable {counts['trainable']:,} "
            f"({counts['trainable_pct']:.3f}%); stored {counts['stored']:,} ({counts['stored_pct']:.3f}%)"
        )
        if not run.has_checkpoint:
            self.method.initialize(train_pairs)
            notes = self.log_notes()
            if notes:
                run.update_meta(method_notes=notes)

    def trains(self, train_pairs) -> bool:
        return bool(self.method.trainable_parameters() and train_pairs and self.cfg.train.epochs)

    def trainee(self, run: Run, train_pairs, dev_pairs):
        from peftrun.train import Trainee

        return Trainee(
            self.model,
            self.method,
            train_pairs,
            dev_pairs,
            self.format.training_batch,
            self.cfg.train,
            run,
            self.device,
            self.processes,
        )

    def fit(self, run: Run, train_pairs, dev_pairs, on_update=None):
        """Train (the Progress), or None when the method trains nothing here."""
        from peftrun.train import fit

        if not self.trains(train_pairs):
            log(f"method {self.cfg.method.kind!r} trains nothing here: decoding and scoring only")
            return None
        progress = fit(self.trainee(run, train_pairs, dev_pairs), on_update)
        self.processes.barrier()  # the checkpoints process 0 wrote are there for every process
        return progress

    def finish(self, run: Run, progress) -> dict[str, dict[str, Any]]:
        """After training: the selected weights, the adapter, decoding, scores, DONE."""
        if progress is not None:
            if self.cfg.train.select == "best":
                best = run.load_best(self.device)
                if best is None:
                    raise PeftrunError(
                        "train.select=best needs dev-loss evaluations; none ran (no dev data?)"
                    )
                self.method.load_training_state(best)
            run.update_meta(
                best_dev_loss=progress.best_dev_loss if progress.dev_losses else None,
                updates=progress.step,
                stopped_early=progress.stopped_early,
                train_seconds=progress.train_seconds,
                train_tokens=progress.train_tokens,
                tokens_per_s=progress.train_tokens / max(progress.train_seconds, 1e-9),
            )
        self.save_adapter(run)
        self.processes.barrier()
        self.method.load(run.adapter_dir)  # decode exactly what was stored
        results = self.decode_and_score(run, self.cfg.decode.splits)
        run.finish()
        return results

    def save_adapter(self, run: Run) -> None:
        from peftrun import __version__

        if not run.writer:
            return
        with run.new_adapter_dir() as folder:  # the folder appears whole, or not at all
            self.method.save(folder)
            run.write_adapter_meta(
                folder,
                {
                    "peftrun": __version__,
                    "base_model": self.cfg.model.name,
                    "method": self.cfg.method.model_dump(mode="json"),
                    "parameters": self.method.counts().as_dict(),
                },
            )


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
    run, state = Run.prepare(cfg.run_dir(), cfg.to_yaml(), overwrite, processes.main, resume_from_last_good)
    processes.barrier()  # every process has seen the directory as it was before anyone writes
    if state == "done":
        log(f"{run.path} is already finished (DONE); nothing to do. `peftrun eval {run.path}` re-scores it.")
        return run.path, None
    train_pairs, dev_pairs = load_training_data(cfg)
    session = Session(cfg, processes)
    session.start(run, state, config_path, overrides, train_pairs)
    processes.barrier()
    if cfg.output.trackers and processes.main:
        processes.accelerator.init_trackers(run.path.name, config=_flatten(cfg.model_dump(mode="json")))
        run.on_log = lambda record: processes.accelerator.log(record, step=record.get("step"))
    try:
        with recording_outcome(run):
            session.prepare(run, train_pairs)
            progress = session.fit(run, train_pairs, dev_pairs, on_update)
            results = session.finish(run, progress)
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
    dev_pairs = data.load_pairs(cfg.data, "dev") if cfg.train.epochs else []
    for split in cfg.decode.splits:
        data.load_instances(cfg.data, split)
    return train_pairs, dev_pairs


@contextmanager
def recording_outcome(run: Run, release: bool = True):
    """Whatever ends the run's locked part is written to its meta.json, and the lock released
    (`release`: when the part ends, whatever ends it)."""
    try:
        yield
    except Interrupted as stop:  # Ctrl-C, SIGTERM: not a failure; re-running resumes
        run.update_meta(status="interrupted", error=None)
        stop.run_dir = run.path
        raise
    except Exception as err:
        run.update_meta(status="failed", error=one_line(err))
        raise
    finally:
        if release:
            run.unlock()


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


def decode(run_dir: str | Path, splits: list[str] | None) -> dict[str, dict[str, Any]]:
    """Decode a trained run's stored adapter again (e.g. another split)."""
    run, cfg = open_run(run_dir)
    if not run.has_adapter:
        raise PeftrunError(f"{run.path} has no trained adapter yet; finish it with `peftrun train`")
    session = Session(cfg)
    session.method.load(run.adapter_dir)
    return session.decode_and_score(run, splits or list(cfg.decode.splits))


def parameter_counts(config_path: str | Path, overrides: list[str]) -> dict[str, Any]:
    """Trainable and stored parameters of the configured method, built without weights."""
    from peftrun import models
    from peftrun.methods.base import attach

    cfg = resolve(config_path, overrides, None)
    counts = attach(models.skeleton(cfg.model.name), cfg.method).counts()
    return {"model": cfg.model.name, "method": cfg.method.kind, **counts.as_dict()}
