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
from typing import Any

from peftrun.errors import PeftrunError
from peftrun.experiment import one_line
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


# --------------------------------------------------------------------------- one packed step


def stack_batches(batches: Sequence[dict]) -> tuple[dict, list[slice]]:
    """Micro-batches of several runs as one batch: every tensor right-padded to the longest and
    the rows concatenated, and each run's rows. Right padding changes no real token's result: the
    pads are masked (encoder, attention mask) or come after every real token (causal decoders),
    and labels pad with IGNORE."""
    import torch
    from torch.nn import functional as F

    from peftrun.data.formats import IGNORE

    def stacked(tensors: list[torch.Tensor], fill: int) -> torch.Tensor:
        longest = max(t.shape[1] for t in tensors)
        return torch.cat([F.pad(t, (0, longest - t.shape[1]), value=fill) for t in tensors])

    inputs = {key: stacked([b["inputs"][key] for b in batches], 0) for key in batches[0]["inputs"]}
    labels = stacked([b["labels"] for b in batches], IGNORE)
    spans, start = [], 0
    for batch in batches:
        rows = batch["labels"].shape[0]
        spans.append(slice(start, start + rows))
        start += rows
    return {"inputs": inputs, "labels": labels}, spans


def packed_losses(model, parts: Sequence[tuple[Any, list]], autocast) -> list[tuple[Any, float]]:
    """One forward over several runs' micro-batches ((trainee, examples) each): each run's
    (loss to backward, loss value), as its `Trainee.micro_loss` would give alone."""
    from peftrun.methods.inject.rows import active_rows
    from peftrun.train import reduce_losses, sequence_losses, to_device

    batches = [to_device(trainee.make_batch(examples), trainee.device) for trainee, examples in parts]
    batch, spans = stack_batches(batches)
    rows = []
    for (trainee, _), span in zip(parts, spans, strict=True):
        rows += [trainee.method.row_inputs()] * (span.stop - span.start)  # computed once per run
    with autocast, active_rows(model, rows):
        logits = model(**batch["inputs"]).logits
    out = []
    for (trainee, _), own, span in zip(parts, batches, spans, strict=True):
        sums, counts = sequence_losses(logits[span], batch["labels"][span])
        numerator, denominator = reduce_losses(sums, counts, trainee.cfg.loss_reduction)
        out.append(trainee.account(numerator, denominator, int(own["inputs"]["attention_mask"].sum())))
    return out


@dataclass
class Ended:
    """How one packed run's training ended: "finished", "interrupted", or the error it stopped on."""

    state: str
    error: BaseException | None = None


def fit_packed(trainees: Sequence) -> list[Ended]:
    """Train several runs together; each stream of micro-batches (`Trainee.micro_batches`) is
    advanced by one packed forward and backward at a time, until every run has finished, was
    interrupted (at its next update boundary, after a checkpoint), or diverged."""
    import torch
    from tqdm import tqdm

    from peftrun.interrupts import Interrupted

    model = trainees[0].model
    for trainee in trainees:
        trainee.restore()
        trainee.optimizer.zero_grad(set_to_none=True)
        trainee.method.set_training(True)
    bar = tqdm(
        total=sum(t.total for t in trainees),
        initial=sum(t.progress.step for t in trainees),
        desc=f"train {len(trainees)} packed",
        unit="update",
        dynamic_ncols=True,
        disable=None,
    )
    for trainee in trainees:
        trainee.on_update = lambda step: bar.update(1)
    streams = [trainee.micro_batches() for trainee in trainees]
    ended: dict[int, Ended] = {}
    waiting: dict[int, list] = {}

    def advance(i: int, value: float | None) -> None:
        try:
            waiting[i] = next(streams[i]) if value is None else streams[i].send(value)
        except StopIteration as end:
            ended[i] = Ended(end.value)
        except PeftrunError as err:  # this run diverged: nothing of its update applied; it stops alone
            trainees[i].optimizer.zero_grad(set_to_none=True)
            ended[i] = Ended("failed", err)

    for i in range(len(trainees)):
        advance(i, None)
    while waiting:
        parts = sorted(waiting.items())
        waiting = {}
        try:
            members = [(trainees[i], examples) for i, examples in parts]
            losses = packed_losses(model, members, trainees[0].autocast)
            total = sum(loss / t.cfg.grad_accum for (t, _), (loss, _) in zip(members, losses, strict=True))
            total.backward()
        except torch.OutOfMemoryError:
            sizes = ", ".join(f"{trainees[i].run.path.name} {len(examples)}" for i, examples in parts)
            raise PeftrunError(
                f"out of GPU memory on a packed batch of {sum(len(e) for _, e in parts)} rows ({sizes}); "
                "pack fewer runs (sweep --pack) or lower their train.batch_size; checkpoints are valid: "
                "re-run to resume"
            ) from None
        for (i, _), (_, value) in zip(parts, losses, strict=True):
            advance(i, value)
    bar.close()
    for trainee in trainees:
        trainee.method.set_training(False)
    if any(e.state == "interrupted" for e in ended.values()):
        from peftrun import interrupts

        signum = interrupts.requested()
        if signum is not None:
            for i, e in ended.items():
                if e.state == "interrupted":
                    where = f"after update {trainees[i].progress.step} (checkpoint written)"
                    e.error = Interrupted(signum, where)
    return [ended[i] for i in range(len(trainees))]


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
class Outcome:
    """How one run of a pack ended in this invocation."""

    run_dir: Path
    state: str  # done, skipped (DONE before), failed, interrupted
    error: str | None = None
    results: dict | None = None


@dataclass
class _Packed:
    """A run of the pack that is not DONE: where it is, its data, its session on the shared base."""

    member: Member
    cfg: Any
    run: Any
    state: str
    train_pairs: list
    dev_pairs: list
    session: Any = None
    trainee: Any = None
    outcome: Outcome | None = None

    def stop(self, state: str, err: BaseException | None = None) -> None:
        """Record how the run ended (meta.json), release its lock."""
        error = None if err is None else one_line(err)
        self.run.update_meta(status="failed" if state == "failed" else "interrupted", error=error)
        self.run.unlock()
        self.outcome = Outcome(self.run.path, state, error)


def train_pack(members: Sequence[Member]) -> list[Outcome]:
    """Train, decode and score several runs packed on one base; each run's directory is what
    `peftrun train` would have made of it. Raises on a user error before anything is written, and
    `Interrupted` (after every run checkpointed) when a signal asked to stop."""
    from peftrun import experiment
    from peftrun.runs import Run

    configs = [experiment.resolve(m.config, m.overrides, m.run_dir) for m in members]
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
    skipped, todo = {}, []
    for member, cfg in zip(members, configs, strict=True):
        run, state = Run.prepare(cfg.run_dir(), cfg.to_yaml(), overwrite=False)
        if state == "done":
            log(f"{run.path} is already finished (DONE); skipped")
            skipped[id(member)] = Outcome(run.path, "skipped")
        else:
            todo.append(_Packed(member, cfg, run, state, *experiment.load_training_data(cfg)))
    stop = _train_together(todo) if todo else None
    if stop is not None:
        raise stop
    by_member = {id(p.member): p.outcome for p in todo}
    return [skipped.get(id(m)) or by_member[id(m)] for m in members]


def _train_together(todo: list[_Packed]):
    """Load the base once, attach every run's method, start, train packed, finish each. Returns
    the `Interrupted` to raise when a signal stopped them (every run checkpointed), else None."""
    from peftrun import experiment, models
    from peftrun.interrupts import Interrupted

    first = todo[0].cfg
    base = models.load(first.model.name, first.model.attention, seed=first.base_seed())
    base.model.to(experiment.pick_device(first.train.device))
    for packed in todo:
        packed.session = experiment.Session(packed.cfg, base=base)
    for packed in todo:  # attaching a method freezes the whole model: every run's own part trains
        for parameter in packed.session.method.trainable_parameters():
            parameter.requires_grad_(True)
    names = [p.run.path.name for p in todo]
    started = []
    try:
        for p in todo:
            member = p.member
            p.session.start(p.run, p.state, member.config, member.overrides, p.train_pairs, packed_with=names)
            started.append(p)
    except BaseException:
        for p in started:
            p.stop("interrupted")
        raise
    for p in todo:
        try:
            with experiment.recording_outcome(p.run, release=False):
                p.session.prepare(p.run, p.train_pairs)
        except Exception as err:
            p.stop("failed", err)
            continue
        if p.session.trains(p.train_pairs):
            p.trainee = p.session.trainee(p.run, p.train_pairs, p.dev_pairs)
    live = [p for p in todo if p.outcome is None and p.trainee is not None]
    log(f"training {len(live)} runs packed on one {first.model.name}: {', '.join(names)}")
    try:
        ended = fit_packed([p.trainee for p in live]) if live else []
    except Exception as err:  # the shared forward failed (out of memory, ...): every run stops on it
        for p in todo:
            if p.outcome is None:
                p.stop("failed", err)
        raise
    except BaseException:  # a second Ctrl-C: stopped at once, the last checkpoints are kept
        for p in todo:
            if p.outcome is None:
                p.stop("interrupted")
        raise
    interrupted = None
    for p, end in zip(live, ended, strict=True):
        if end.state == "failed":
            log(f"{p.run.path.name}: {end.error}")
            p.stop("failed", end.error)
        elif end.state == "interrupted":
            p.stop("interrupted")
            interrupted = end.error
    if interrupted is not None:  # the runs that had finished training are finished on the re-run
        for p in todo:
            if p.outcome is None:
                p.stop("interrupted")
        return interrupted
    for p in todo:
        if p.outcome is not None:
            continue
        try:
            with experiment.recording_outcome(p.run):
                results = p.session.finish(p.run, p.trainee.progress if p.trainee else None)
            p.outcome = Outcome(p.run.path, "done", results=results)
        except Interrupted as stop:  # this run and those after it resume later
            p.outcome = Outcome(p.run.path, "interrupted")
            for rest in todo:
                if rest.outcome is None:
                    rest.stop("interrupted")
            return stop
        except Exception as err:
            p.outcome = Outcome(p.run.path, "failed", one_line(err))
    return None
