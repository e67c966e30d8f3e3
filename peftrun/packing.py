"""Several runs trained in one process on one frozen base, their rows in the same batches.

A low-data study is dozens of small runs of one frozen model; at the paper's batch sizes (5-10)
one run leaves an accelerator mostly idle, waiting on kernel launches. Runs whose method only adds
to a frozen base and draws no random numbers while training (prefix, prompt, P-tuning, LoRA:
`trains_packed`) can share the base: the model is loaded once, every run's method is attached to
it, and each packed step is one forward and one backward over the runs' micro-batches stacked
into one batch, every row with its own run's adapter (peftrun.methods.inject.rows).

Everything else stays each run's own (its `train.Trainee`): data order, subset and batch size,
gradient accumulation, optimizer, schedule, clipping, dev evaluation, early stopping,
checkpoints, run directory and lock. A run's parameters get gradients from its own rows only (its
prefix is visible to its rows alone, its LoRA applies to its rows alone), so each run trains as it
would alone, up to floating-point summation order (tests/test_packing.py checks adapters and
predictions). A run that diverges (NaN) stops alone; the others go on. After training, each run
is finished as a run alone is (selection, adapter, decoding, scoring), one after another.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from peftrun.errors import PeftrunError
from peftrun.run_states import RunState
from peftrun.scoring import log


def pack_key(cfg) -> str | None:
    """What runs must have in common to be packed together, or None if this run cannot be."""
    from peftrun.methods import REGISTRY
    from peftrun.models import base_identity

    if not cfg.train.epochs or cfg.output.trackers:
        return None
    if not REGISTRY[cfg.method.kind].load().trains_packed(cfg.method):
        return None
    shared = (base_identity(cfg), cfg.model.attention, cfg.train.device, cfg.train.precision)
    return json.dumps(shared)


def why_not_packable(cfg) -> str:
    if not cfg.train.epochs:
        return "it trains nothing (train.epochs=0)"
    if cfg.output.trackers:
        return "output.trackers are per process"
    return (
        f"method {cfg.method.kind!r} with these options changes the base model or draws random numbers "
        "while training (dropout)"
    )


# --------------------------------------------------------------------------- a pack of runs


@dataclass
class Member:
    """One run of a pack, as `peftrun train` would be given it."""

    config: Path
    overrides: list[str] = field(default_factory=list)
    run_dir: str | None = None


def read_pack_file(path: str | Path) -> list[Member]:
    """A pack file: {"runs": [{"config": PATH, "overrides": [...], "run_dir": DIR}, ...]}, paths
    relative to the file."""
    from peftrun.files import read_utf8

    path = Path(path)
    try:
        payload = json.loads(read_utf8(path, "pack file"))
    except json.JSONDecodeError as err:
        raise PeftrunError(f"pack file {path}: not JSON ({err.msg}, line {err.lineno})") from None
    runs = payload.get("runs") if isinstance(payload, dict) else None
    if not isinstance(runs, list) or not runs:
        raise PeftrunError(f'pack file {path}: expected {{"runs": [{{"config": ..., "run_dir": ...}}, ...]}}')
    members = []
    for k, item in enumerate(runs, 1):
        if not isinstance(item, dict) or not isinstance(item.get("config"), str):
            raise PeftrunError(f'pack file {path}: run {k} needs a "config" path')
        unknown = set(item) - {"config", "overrides", "run_dir"}
        if unknown:
            raise PeftrunError(f"pack file {path}: run {k} has unknown keys {sorted(unknown)}")
        overrides = item.get("overrides", [])
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise PeftrunError(f"pack file {path}: run {k}: overrides must be a list of key=value strings")
        run_dir = item.get("run_dir")
        members.append(
            Member(
                path.parent / item["config"],
                overrides,
                None if run_dir is None else str(path.parent / run_dir),
            )
        )
    return members


@dataclass
class PackedResult:
    """How one run of a pack ended in this invocation."""

    run_dir: Path
    state: str  # done, skipped (DONE before), failed, interrupted
    error: str | None = None
    results: dict | None = None


def train_pack(members: Sequence[Member]) -> list[PackedResult]:
    """Train, decode and score several runs packed on one base; each run's directory is what
    `peftrun train` would have made of it (the same `experiment.Attempt` lifecycle). Raises on a
    user error before anything is written, and `Interrupted` (after every run checkpointed) when
    a signal asked to stop."""
    from peftrun.experiment import Attempt
    from peftrun.validation import resolve

    configs = [resolve(m.config, m.overrides, m.run_dir) for m in members]
    keys = [pack_key(cfg) for cfg in configs]
    for member, cfg, key in zip(members, configs, keys, strict=True):
        if key is None:
            raise PeftrunError(f"{member.config} cannot be packed: {why_not_packable(cfg)}")
    if len(set(keys)) > 1:
        raise PeftrunError(
            "runs packed together need the same base model, attention, device and precision; these "
            "differ: " + "; ".join(sorted(set(keys)))
        )
    if len({cfg.run_dir().resolve() for cfg in configs}) < len(configs):
        raise PeftrunError("two runs of the pack have the same run directory")
    results, todo = [], []
    for member, cfg in zip(members, configs, strict=True):
        run, attempt = Attempt.open(cfg, member.config, member.overrides)
        if attempt is None:
            log(f"{run.path} is already finished (DONE); skipped")
            results.append(PackedResult(run.path, RunState.SKIPPED))
        else:
            todo.append(attempt)
            results.append(attempt)
    stop = _train_together(todo) if todo else None
    if stop is not None:
        raise stop
    return [
        r if isinstance(r, PackedResult) else PackedResult(r.run.path, r.ended, r.error, r.results)
        for r in results
    ]


def _train_together(todo: list):
    """Load the base once, attach every run's method, then each run's lifecycle (start, prepare,
    one packed fit, finish). Returns the `Interrupted` to raise when a signal stopped them (every
    run checkpointed), else None."""
    from peftrun.assembly import load_base
    from peftrun.interrupts import Interrupted
    from peftrun.session import Session
    from peftrun.train import fit

    first = todo[0].cfg
    base = load_base(first)
    sessions = [Session(attempt.cfg, base=base) for attempt in todo]
    for session in sessions:  # attaching a method freezes the whole model: every run's own part trains
        for parameter in session.method.trainable_parameters():
            parameter.requires_grad_(True)
    names = [attempt.run.path.name for attempt in todo]
    started = []
    try:
        for attempt, session in zip(todo, sessions, strict=True):
            attempt.start(session, packed_with=names)
            started.append(attempt)
    except BaseException:
        for attempt in started:
            attempt.stop(RunState.INTERRUPTED)
        raise
    trainees = {}
    for attempt in todo:
        try:
            with attempt.recording(release=False):
                trainees[id(attempt)] = attempt.prepare()
        except Exception:
            attempt.run.unlock()  # recorded (failed, with its error); the others go on
    live = [a for a in todo if a.ended is None and trainees.get(id(a)) is not None]
    log(f"training {len(live)} runs packed on one {first.model.name}: {', '.join(names)}")
    try:
        ended = fit([trainees[id(a)] for a in live]) if live else []
    except BaseException as err:  # the shared step failed (out of memory, ...) or a second Ctrl-C
        for attempt in todo:
            if attempt.ended is None:
                failed = isinstance(err, Exception)
                attempt.stop(RunState.FAILED if failed else RunState.INTERRUPTED, err if failed else None)
        raise
    interrupted = None
    for attempt, end in zip(live, ended, strict=True):
        if end.state == "failed":
            log(f"{attempt.run.path.name}: {end.error}")
            attempt.stop(RunState.FAILED, end.error)
        elif end.state == "interrupted":
            attempt.stop(RunState.INTERRUPTED)
            interrupted = end.error
    if interrupted is not None:  # the runs that had finished training are finished on the re-run
        for attempt in todo:
            if attempt.ended is None:
                attempt.stop(RunState.INTERRUPTED)
        return interrupted
    for attempt in todo:
        if attempt.ended is not None:
            continue
        trainee = trainees.get(id(attempt))
        try:
            with attempt.recording():
                attempt.finish(trainee.progress if trainee is not None else None)
        except Interrupted as stop:  # this run and those after it resume later
            for rest in todo:
                if rest.ended is None:
                    rest.stop(RunState.INTERRUPTED)
            return stop
        except Exception:
            pass  # recorded (failed, with its error); the others go on
    return None
