"""The training loop: one visible loop for every method and model family.

AdamW, linear decay with optional warmup, gradient accumulation, clipping, fp32 or bf16
autocast, dev loss every N updates (or each epoch), a dev curve (greedy decoding of a fixed dev
subset, scored) every N updates, checkpoints that resume exactly (weights, optimizer, schedule,
RNG, data position), and `last` or `best` selection with optional early stopping, both by dev loss
or by a dev-curve metric. Method-specific behaviour comes only through the Method protocol.

A loss is a sum over target tokens divided by a denominator (`forward_losses`): the number of
sequences (`sequence_sum`, the paper's GPT-2 prefix runs) or of target tokens (`token_mean`).
Keeping the two apart is what lets data-parallel processes (peftrun.distributed) normalise by the
whole micro-batch's denominator, so their summed gradients equal one process's.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Generator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial

import torch
from torch.nn import functional as F
from tqdm import tqdm

from peftrun import interrupts
from peftrun.batch_order import epoch_batches, example_lengths, grouped_batches
from peftrun.compiled import compiled_forward
from peftrun.config import TrainConfig
from peftrun.data.formats import IGNORE
from peftrun.distributed import Processes
from peftrun.errors import PeftrunError
from peftrun.methods.base import Method
from peftrun.runs import Run


@dataclass
class TrainProgress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed
    step: int = 0  # optimizer updates done
    best_dev_loss: float = math.inf
    evals_without_gain: int = 0
    stopped_early: bool = False
    dev_losses: list[dict] = field(default_factory=list)
    train_tokens: int = 0  # real (unpadded) tokens trained on, over every session of the run
    train_seconds: float = 0.0  # time in training steps, over every session of the run
    log_lines: int = 0  # train_log.jsonl records written up to this point (a resume trims to it)
    best_dev_score: float = -math.inf  # best value of train.early_stopping_metric (a curve metric)
    best_step: int | None = None  # the update of the best evaluation of the watched value
    stopped_at: int | None = None  # the update early stopping stopped the run at


def sequence_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sum of target-token losses, and the number of target tokens per sequence.
    Logits below fp32 (bf16 autocast) are summed in fp32; fp64 stays fp64."""
    logits = logits if logits.dtype == torch.float64 else logits.float()
    token_loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
    return token_loss.sum(dim=1), (labels != IGNORE).sum(dim=1)


def reduce_losses(
    sums: torch.Tensor, counts: torch.Tensor, reduction: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(numerator, denominator) of the configured loss over these sequences: `sequence_sum` sums
    each sequence's token losses and averages over sequences; `token_mean` averages over tokens."""
    denominator = torch.tensor(float(sums.shape[0])) if reduction == "sequence_sum" else counts.sum()
    return sums.sum(), denominator.to(device=sums.device, dtype=sums.dtype)


def stack_batches(batches: Sequence[dict]) -> tuple[dict, list[slice]]:
    """Micro-batches of several runs as one batch: every tensor right-padded to the longest and
    the rows concatenated, and each run's rows. Right padding changes no real token's result: the
    pads are masked (encoder, attention mask) or come after every real token (causal decoders),
    and labels pad with IGNORE."""

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


def forward_losses(
    model, parts: Sequence[tuple[Method, dict, str]], autocast, forward: Callable | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One forward pass over one or several runs' batches ((method, batch, reduction) each): each
    run's loss as (numerator, denominator), the loss being their ratio. One run's batch runs in
    its method's own context; several share the frozen base, their rows stacked into one batch,
    every row with its own run's additions (peftrun.methods.inject.rows). `forward`: inputs →
    logits in place of the model's own (`compiled_forward`, train.compile)."""
    if len(parts) == 1:
        method, batch, _ = parts[0]
        spans, context = [slice(None)], method.active(batch["labels"].shape[0])
    else:
        from peftrun.methods.inject.rows import active_rows

        batch, spans = stack_batches([b for _, b, _ in parts])
        rows = []
        for (method, _, _), span in zip(parts, spans, strict=True):
            rows += [method.row_inputs()] * (span.stop - span.start)  # computed once per run
        context = active_rows(model, rows)
    with autocast, context:
        logits = model(**batch["inputs"]).logits if forward is None else forward(**batch["inputs"])
    return [
        reduce_losses(*sequence_losses(logits[span], batch["labels"][span]), reduction)
        for (_, _, reduction), span in zip(parts, spans, strict=True)
    ]


def batch_loss(model, method: Method, batch: dict, reduction: str, autocast) -> torch.Tensor:
    """The configured reduction: `sequence_sum` (sum per sequence, mean over the batch: the
    paper's GPT-2 prefix runs) or `token_mean` (mean over all target tokens)."""
    ((numerator, denominator),) = forward_losses(model, [(method, batch, reduction)], autocast)
    return numerator / denominator.clamp(min=1)


def lr_schedule(
    optimizer, warmup: int, total: int, after: str = "linear"
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `warmup` updates, then (`train.lr_schedule`) linear decay to 0 at
    `total`, or the full rate to the end (`constant`)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if after == "constant":
            return 1.0
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def total_updates(cfg: TrainConfig, n_examples: int) -> int:
    per_epoch = math.ceil(math.ceil(n_examples / cfg.batch_size) / cfg.grad_accum)
    total = per_epoch * cfg.epochs
    return min(total, cfg.max_steps) if cfg.max_steps else total


class Trainee:
    """One run being trained: its method, data order, optimizer, schedule, progress, and where
    its logs and checkpoints go. `fit` drives one; the pieces are apart so that what happens at an
    update (clip, step, log, evaluate, checkpoint) is written once."""

    def __init__(
        self,
        model,
        method: Method,
        train_examples: Sequence,
        dev_examples: Sequence,
        make_batch: Callable[[Sequence], dict],
        cfg: TrainConfig,
        run: Run,
        device: torch.device,
        processes: Processes,
        dev_curve=None,
        group_by_length: bool = False,
    ) -> None:
        """`dev_curve`: the run's `session.DevCurve` (train.decode_every), or None.
        `group_by_length`: micro-batches of similar length (`data.group_by_length`, `grouped_batches`)."""
        self.model, self.method, self.cfg, self.run, self.device = model, method, cfg, run, device
        self.dev_curve = dev_curve
        self.group_by_length = group_by_length
        self._lengths: list[int] | None = None  # the training examples' token counts, when grouping
        self._batches: tuple[int, list[list[int]]] | None = None  # (epoch, its micro-batches)
        self.train_examples, self.make_batch, self.processes = train_examples, make_batch, processes
        self.params = method.trainable_parameters()
        self.optimizer = torch.optim.AdamW(
            self.params, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay
        )
        self.total = total_updates(cfg, len(train_examples))
        self.scheduler = lr_schedule(self.optimizer, cfg.warmup_steps, self.total, cfg.lr_schedule)
        self.progress = TrainProgress()
        self.last_loss = math.nan  # the last micro-batch's loss (progress bars)
        self.on_update: Callable[[int], None] | None = None  # called after every update
        self.per_epoch = math.ceil(len(train_examples) / cfg.batch_size)
        bf16 = cfg.precision == "bf16"
        if bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            warnings.warn("train.precision=bf16: this GPU has no bf16; training in fp32", stacklevel=2)
            bf16 = False
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        # train.compile: the training forward (and so its backward) compiled; dev loss stays eager
        self.forward = compiled_forward(model) if cfg.compile else None
        self.dev_chunks = [
            processes.shard(list(dev_examples[i : i + cfg.batch_size]))
            for i in range(0, len(dev_examples), cfg.batch_size)
        ]

    # Resume and checkpoints ------------------------------------------------------------------

    def restore(self) -> None:
        """Continue from the run's last checkpoint, or start at the config's seed."""
        state = self.run.load_checkpoint(self.device)
        if state is None:
            torch.manual_seed(self.cfg.seed)
            # Every process starts from process 0's parameters (they agree already when the
            # initialisation is seeded; this makes it so whatever the method did).
            self.processes.broadcast_([p.data for p in self.params])
            return
        self.method.load_training_state(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.progress = TrainProgress(**state["progress"])
        _set_rng(state["rng"])
        self.run.trim_log(self.progress.log_lines)
        self.restore_hyperparameters()

    def checkpoint(self) -> None:
        self.run.save_checkpoint(
            {
                "method": self.method.training_state(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "progress": self.progress.__dict__,
                "rng": _get_rng(),
            }
        )

    # The data ------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        p = self.progress
        return p.step >= self.total or p.epoch >= self.cfg.epochs or p.stopped_early

    def next_examples(self) -> list | None:
        """The next micro-batch of this epoch (this process's share), or None at the epoch's end."""
        p = self.progress
        if p.batch_in_epoch >= self.per_epoch:
            return None
        batch = self.epoch_batches(p.epoch)[p.batch_in_epoch]
        p.batch_in_epoch += 1
        return self.processes.shard([self.train_examples[i] for i in batch])

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The micro-batches (example indices) of `epoch`: a pure function of the config, the
        examples and the epoch, so a resumed run continues at `batch_in_epoch` on the same batch."""
        if self._batches is None or self._batches[0] != epoch:
            n, cfg = len(self.train_examples), self.cfg
            if self.group_by_length:
                if self._lengths is None:
                    self._lengths = example_lengths(self.make_batch, self.train_examples)
                batches = grouped_batches(self._lengths, cfg.batch_size, cfg.seed, epoch)
            else:
                batches = epoch_batches(n, cfg.batch_size, cfg.seed, epoch)
            self._batches = (epoch, batches)
        return self._batches[1]

    def batch(self, examples: list) -> dict:
        return to_device(self.make_batch(examples), self.device)

    def account(
        self, numerator: torch.Tensor | None, denominator: torch.Tensor | None, tokens: int
    ) -> tuple[torch.Tensor | None, float]:
        """A micro-batch's (numerator, denominator) → the loss to backward and its value; counts
        its tokens. Every process takes part in the sums, also one that got no rows."""
        self.progress.train_tokens += int(self.processes.total(tokens, self.device))
        whole = max(
            self.processes.total(0.0 if denominator is None else denominator.item(), self.device), 1.0
        )
        value = self.processes.total(0.0 if numerator is None else numerator.item(), self.device) / whole
        return (None if numerator is None else numerator / whole), value

    def micro_batches(self) -> Generator[list, float, str]:
        """The run's training as a stream of micro-batches. Yields each micro-batch's examples;
        the driver (`fit`) computes their loss (alone, or packed with other runs' rows), calls
        backward on it divided by grad_accum, and sends back the micro-batch's loss value. Updates,
        epochs, evaluation and checkpoints happen in here, so a run alone (`fit`) and runs packed
        together (peftrun.packing) train alike. Returns "finished", or "interrupted" when a
        signal asked to stop (at an update boundary, after a checkpoint)."""
        p = self.progress
        while not self.finished:
            started, losses = time.perf_counter(), []
            for _ in range(self.cfg.grad_accum):
                examples = self.next_examples()
                if examples is None:
                    break
                losses.append((yield examples))
            if losses:
                self.last_loss = losses[-1]
                self.update(losses, time.perf_counter() - started)
                if self.on_update is not None:
                    self.on_update(p.step)
            if p.batch_in_epoch >= self.per_epoch:
                self.end_epoch()
            if interrupts.requested() is not None:
                self.checkpoint()
                return "interrupted"
        self.checkpoint()
        self.record_stop()
        return "finished"

    def tokens_per_s(self) -> float:
        return self.progress.train_tokens / max(self.progress.train_seconds, 1e-9)

    # An update ----------------------------------------------------------------------------

    def update(self, losses: list[float], seconds: float) -> None:
        """Clip, step, schedule; log, evaluate and checkpoint as configured."""
        cfg, p = self.cfg, self.progress
        self.processes.sum_gradients(self.params)
        norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm or math.inf)
        if not math.isfinite(sum(losses)) or not torch.isfinite(norm):
            what = "loss" if not math.isfinite(sum(losses)) else "gradient norm"
            raise self.diverged(what, sum(losses) / len(losses) if what == "loss" else float(norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        p.step += 1
        p.train_seconds += seconds
        if p.step % cfg.log_every == 0 or p.step == self.total:
            self.log(
                {
                    "step": p.step,
                    "epoch": p.epoch,
                    "loss": sum(losses) / len(losses),
                    "lr": self.scheduler.get_last_lr()[0],
                    "tokens_per_s": p.train_tokens / max(p.train_seconds, 1e-9),
                }
            )
        if cfg.eval_every and p.step % cfg.eval_every == 0:
            self.evaluate()
        if cfg.decode_every and p.step % cfg.decode_every == 0:
            self.decode_dev()
        if cfg.checkpoint_every and p.step % cfg.checkpoint_every == 0:
            self.checkpoint()

    def diverged(self, what: str, value: float) -> PeftrunError:
        """The error for a non-finite loss or gradient: nothing of this update is applied or saved."""
        kept = self.run.checkpoint_step()
        where = f"update {kept}" if kept is not None else "none yet"
        return PeftrunError(
            f"training diverged: the {what} is {value} at update {self.progress.step + 1}; the last good "
            f"checkpoint ({where}) is kept. Lower train.lr and re-run with --resume-from-last-good "
            "to continue from it"
        )

    def out_of_memory(self, examples: list) -> PeftrunError:
        cfg = self.cfg
        batch = self.make_batch(examples)
        longest = int(batch["inputs"]["attention_mask"].sum(dim=1).max())
        kept = self.run.checkpoint_step()
        return PeftrunError(
            f"out of GPU memory at update {self.progress.step + 1} with train.batch_size={cfg.batch_size} "
            f"(sequences up to {longest} tokens); lower memory with "
            f"train.batch_size={max(1, cfg.batch_size // 2)} "
            f"train.grad_accum={cfg.grad_accum * 2} (the same effective batch) or a smaller "
            f"data.max_source_tokens; the checkpoint (update {kept}) is valid: re-run to resume"
        )

    def restore_hyperparameters(self) -> None:
        """The config's optimiser settings over a checkpoint's (a resume with a changed lr, say):
        the checkpoint brings the state (moments, step), the config the hyperparameters."""
        cfg = self.cfg
        self.scheduler.base_lrs = [cfg.lr for _ in self.optimizer.param_groups]
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group in self.optimizer.param_groups:
            group.update(initial_lr=cfg.lr, lr=cfg.lr * factor, betas=cfg.adam_betas, eps=cfg.adam_eps)
            group["weight_decay"] = cfg.weight_decay

    def log(self, record: dict) -> None:
        self.run.log(record)
        self.progress.log_lines += 1

    def end_epoch(self) -> None:
        p = self.progress
        p.epoch += 1
        p.batch_in_epoch = 0
        if not self.cfg.eval_every:
            self.evaluate()
        if not self.cfg.checkpoint_every:
            self.checkpoint()

    def evaluate(self) -> None:
        if not self.dev_chunks:
            return
        loss = self.dev_loss()
        p = self.progress
        p.dev_losses.append({"step": p.step, "dev_loss": loss})
        self.log({"step": p.step, "epoch": p.epoch, "dev_loss": loss})
        gained = loss < p.best_dev_loss
        if gained:
            p.best_dev_loss = loss
        if self.cfg.early_stopping_metric == "dev_loss":
            self.judge(gained, p.best_dev_loss)

    def decode_dev(self) -> None:
        """One point of the dev curve (train.decode_every): the fixed dev subset decoded greedily
        with the current weights and scored; a train_log.jsonl line
        {"step", "epoch", "dev_scores": {metric: value}, "dev_decode_size"}. Training goes on as
        if it had not happened: the RNG state is restored and the method put back in training
        mode; a signal that asks to stop meanwhile stops the loop after this update, as always."""
        curve = self.dev_curve
        if curve is None:
            return
        p, state = self.progress, _get_rng()
        try:
            with _stop_requests_held():
                scores = curve.scores()
        finally:
            _set_rng(state)
            self.method.set_training(True)
        self.log({"step": p.step, "epoch": p.epoch, "dev_scores": scores, "dev_decode_size": len(curve)})
        metric = self.cfg.early_stopping_metric
        if metric in scores:  # a curve metric: higher is better
            gained = scores[metric] > p.best_dev_score
            if gained:
                p.best_dev_score = scores[metric]
            self.judge(gained, p.best_dev_score)

    def judge(self, gained: bool, best: float) -> None:
        """One evaluation of the watched value (train.early_stopping_metric: dev loss or a curve
        metric), `best` its best so far: a gain keeps the method's state as the best
        (checkpoints/best.pt, what select=best decodes); `early_stopping_patience` evaluations in a
        row without one stop the run (a train_log.jsonl line says so, at the update it stopped)."""
        cfg, p = self.cfg, self.progress
        if gained:
            p.evals_without_gain, p.best_step = 0, p.step
            self.run.save_best(self.method.training_state())
            return
        p.evals_without_gain += 1
        patience = cfg.early_stopping_patience
        if patience is not None and p.evals_without_gain >= patience:
            p.stopped_early, p.stopped_at = True, p.step
            self.log(
                {
                    "step": p.step,
                    "epoch": p.epoch,
                    "stopped_early": True,
                    "early_stopping_metric": cfg.early_stopping_metric,
                    "best": best,
                    "best_step": p.best_step,
                    "evaluations_without_gain": p.evals_without_gain,
                }
            )

    def record_stop(self) -> None:
        """meta.json: where early stopping stopped the run (`stopped_at`, None when it did not)
        and, when a curve metric was watched, its best value (`best_dev_score`)."""
        if self.run is None:
            return
        p, metric = self.progress, self.cfg.early_stopping_metric
        extra = {}
        if metric != "dev_loss":
            best = p.best_dev_score if math.isfinite(p.best_dev_score) else None
            extra["best_dev_score"] = {"metric": metric, "value": best, "step": p.best_step}
        self.run.update_meta(stopped_at=p.stopped_at, **extra)

    def dev_loss(self) -> float:
        """The configured loss over the whole dev set (its numerators over its denominators)."""
        self.method.set_training(False)
        numerator = denominator = 0.0
        with torch.no_grad():
            for examples in self.dev_chunks:
                if not examples:
                    continue
                parts = [(self.method, self.batch(examples), self.cfg.loss_reduction)]
                ((n, d),) = forward_losses(self.model, parts, self.autocast)
                numerator, denominator = numerator + n.item(), denominator + d.item()
        self.method.set_training(True)
        total = self.processes.total(denominator, self.device)
        return self.processes.total(numerator, self.device) / max(total, 1.0)


@dataclass
class FitEnd:
    """How one trainee's training ended: "finished", "interrupted" (at an update boundary, after
    a checkpoint), or "failed" (it diverged: nothing of its last update applied) with the error."""

    state: str
    error: BaseException | None = None


def fit(trainees: Sequence[Trainee], on_update: Callable[[int], None] | None = None) -> list[FitEnd]:
    """Train one run, or several packed on one frozen base (peftrun.packing): each stream of
    micro-batches (`Trainee.micro_batches`) is advanced by one forward and backward at a time,
    the waiting runs' rows in one batch, until every run has finished, was interrupted, or
    diverged (a run that diverges stops alone). `on_update(step)` is called after each update."""
    for trainee in trainees:
        trainee.restore()
        trainee.optimizer.zero_grad(set_to_none=True)  # whatever ran before (an init fit) left none
        trainee.method.set_training(True)
    alone = len(trainees) == 1
    bar = tqdm(
        total=sum(t.total for t in trainees),
        initial=sum(t.progress.step for t in trainees),
        desc="train" if alone else f"train {len(trainees)} packed",
        unit="update",
        dynamic_ncols=True,
        disable=None,
    )

    def updated(trainee: Trainee, step: int) -> None:
        bar.update(1)
        if alone:
            bar.set_postfix(loss=f"{trainee.last_loss:.3f}", tok_s=f"{trainee.tokens_per_s():.0f}")
        if on_update is not None:
            on_update(step)

    for trainee in trainees:
        trainee.on_update = partial(updated, trainee)
    streams = [trainee.micro_batches() for trainee in trainees]
    ended: dict[int, FitEnd] = {}
    waiting: dict[int, list] = {}

    def advance(i: int, value: float | None) -> None:
        try:
            waiting[i] = next(streams[i]) if value is None else streams[i].send(value)
        except StopIteration as end:
            ended[i] = FitEnd(end.value)
        except PeftrunError as err:  # this run diverged: nothing of its update applied; it stops alone
            trainees[i].optimizer.zero_grad(set_to_none=True)
            ended[i] = FitEnd("failed", err)

    try:
        for i in range(len(trainees)):
            advance(i, None)
        while waiting:
            parts, waiting = sorted(waiting.items()), {}
            values = step_together([(trainees[i], examples) for i, examples in parts])
            for (i, _), value in zip(parts, values, strict=True):
                advance(i, value)
    finally:
        bar.close()
    signum = interrupts.requested()
    for i, end in ended.items():
        if end.state == "interrupted" and signum is not None:
            where = f"after update {trainees[i].progress.step} (checkpoint written)"
            end.error = interrupts.Interrupted(signum, where)
    for trainee in trainees:
        trainee.method.set_training(False)
    return [ended[i] for i in range(len(trainees))]


def step_together(parts: Sequence[tuple[Trainee, list]]) -> list[float]:
    """One forward and backward over the runs' micro-batches ((trainee, examples) each); each
    run's micro-batch loss value. Each run's loss is divided by its own grad_accum."""
    model, autocast = parts[0][0].model, parts[0][0].autocast
    forward = parts[0][0].forward if len(parts) == 1 else None  # packed runs run eager
    try:
        members = [(t, t.batch(examples)) for t, examples in parts if examples]
        runs = [(t.method, batch, t.cfg.loss_reduction) for t, batch in members]
        losses = forward_losses(model, runs, autocast, forward) if members else []
        terms = {
            id(t): (n, d, int(batch["inputs"]["attention_mask"].sum()))
            for (t, batch), (n, d) in zip(members, losses, strict=True)
        }
        total, values = None, []
        for trainee, _ in parts:  # every process takes part in the sums, also one that got no rows
            loss, value = trainee.account(*terms.get(id(trainee), (None, None, 0)))
            values.append(value)
            if loss is not None:
                share = loss / trainee.cfg.grad_accum
                total = share if total is None else total + share
        if total is not None:
            total.backward()
    except torch.OutOfMemoryError:
        raise out_of_memory(parts) from None
    return values


def out_of_memory(parts: Sequence[tuple[Trainee, list]]) -> PeftrunError:
    """The one-line error for an out-of-memory step, with what to lower."""
    if len(parts) == 1:
        return parts[0][0].out_of_memory(parts[0][1])
    sizes = ", ".join(f"{t.run.path.name} {len(examples)}" for t, examples in parts)
    return PeftrunError(
        f"out of GPU memory on a packed batch of {sum(len(e) for _, e in parts)} rows ({sizes}); "
        "pack fewer runs (sweep --pack) or lower their train.batch_size; checkpoints are valid: "
        "re-run to resume"
    )


def to_device(batch: dict, device: torch.device) -> dict:
    return {
        key: to_device(value, device) if isinstance(value, dict) else value.to(device)
        for key, value in batch.items()
    }


@contextmanager
def _stop_requests_held():
    """Within: a signal's request to stop waits (peftrun.interrupts; `decode.decode_rows` checks
    for one after every batch). The dev curve is decoded inside an update, and an update is
    finished before the loop stops (after a checkpoint), so a stop never leaves half a curve point."""
    held = interrupts._requested
    interrupts._requested = None
    try:
        yield
    finally:
        if held is not None:
            interrupts._requested = held


def _get_rng() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
