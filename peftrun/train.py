"""The training loop: one visible loop for every method and model family.

AdamW, linear decay with optional warmup, gradient accumulation, clipping, fp32 or bf16
autocast, dev loss every N updates (or each epoch), checkpoints that resume exactly (weights,
optimizer, schedule, RNG, data position), and `last` or `best`-by-dev-loss selection with
optional early stopping. Method-specific behaviour comes only through the Method protocol.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F
from tqdm import tqdm

from peftrun.config import TrainConfig
from peftrun.data.formats import IGNORE
from peftrun.methods.base import Method
from peftrun.runs import Run


@dataclass
class Progress:
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


def sequence_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sum of target-token losses, and the number of target tokens per sequence."""
    token_loss = F.cross_entropy(
        logits.float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none"
    )
    return token_loss.sum(dim=1), (labels != IGNORE).sum(dim=1)


def batch_loss(model, method: Method, batch: dict, reduction: str, autocast) -> torch.Tensor:
    """The configured reduction: `sequence_sum` (sum per sequence, mean over the batch: the
    paper's GPT-2 prefix runs) or `token_mean` (mean over all target tokens)."""
    labels = batch["labels"]
    with autocast, method.active(labels.shape[0]):
        logits = model(**batch["inputs"]).logits
    sums, counts = sequence_losses(logits, labels)
    if reduction == "sequence_sum":
        return sums.mean()
    return sums.sum() / counts.sum().clamp(min=1)


def linear_schedule(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of one epoch, a pure function of (seed, epoch) for resuming."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def total_updates(cfg: TrainConfig, n_examples: int) -> int:
    per_epoch = math.ceil(math.ceil(n_examples / cfg.batch_size) / cfg.grad_accum)
    total = per_epoch * cfg.epochs
    return min(total, cfg.max_steps) if cfg.max_steps else total


def dev_loss(model, method: Method, batches: Sequence[dict], cfg: TrainConfig, autocast) -> float:
    method.set_training(False)
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            total += batch_loss(model, method, batch, cfg.loss_reduction, autocast).item() * len(
                batch["labels"]
            )
            count += len(batch["labels"])
    method.set_training(True)
    return total / max(1, count)


def fit(
    model,
    method: Method,
    train_examples: Sequence,
    dev_examples: Sequence,
    make_batch: Callable[[Sequence], dict],
    cfg: TrainConfig,
    run: Run,
    device: torch.device,
    on_update: Callable[[int], None] | None = None,
) -> Progress:
    """Train `method` on `train_examples`; checkpoints and logs go to `run`."""
    params = method.trainable_parameters()
    optimizer = torch.optim.AdamW(
        params, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay
    )
    total = total_updates(cfg, len(train_examples))
    scheduler = linear_schedule(optimizer, cfg.warmup_steps, total)
    progress = Progress()
    state = run.load_checkpoint(device)
    if state is not None:
        method.load_training_state(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        progress = Progress(**state["progress"])
        _set_rng(state["rng"])
    else:
        torch.manual_seed(cfg.seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" else nullcontext()
    dev_batches = [
        to_device(make_batch(dev_examples[i : i + cfg.batch_size]), device)
        for i in range(0, len(dev_examples), cfg.batch_size)
    ]
    per_epoch = math.ceil(len(train_examples) / cfg.batch_size)

    def checkpoint() -> None:
        run.save_checkpoint(
            {
                "method": method.training_state(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "progress": progress.__dict__,
                "rng": _get_rng(),
            }
        )

    def evaluate() -> None:
        if not dev_batches:
            return
        loss = dev_loss(model, method, dev_batches, cfg, autocast)
        progress.dev_losses.append({"step": progress.step, "dev_loss": loss})
        run.log({"step": progress.step, "epoch": progress.epoch, "dev_loss": loss})
        if loss < progress.best_dev_loss:
            progress.best_dev_loss, progress.evals_without_gain = loss, 0
            run.save_best(method.training_state())
        else:
            progress.evals_without_gain += 1
            patience = cfg.early_stopping_patience
            progress.stopped_early = patience is not None and progress.evals_without_gain >= patience

    optimizer.zero_grad(set_to_none=True)  # whatever ran before (an init fit) left no gradients in
    method.set_training(True)
    bar = tqdm(
        total=total, initial=progress.step, desc="train", unit="step", dynamic_ncols=True, disable=None
    )
    seconds_before, started = progress.train_seconds, time.perf_counter()
    while progress.step < total and progress.epoch < cfg.epochs and not progress.stopped_early:
        order = epoch_order(len(train_examples), cfg.seed, progress.epoch)
        while progress.batch_in_epoch < per_epoch and progress.step < total and not progress.stopped_early:
            losses = []
            for _ in range(cfg.grad_accum):
                if progress.batch_in_epoch >= per_epoch:
                    break
                start = progress.batch_in_epoch * cfg.batch_size
                batch = to_device(
                    make_batch([train_examples[i] for i in order[start : start + cfg.batch_size]]), device
                )
                loss = batch_loss(model, method, batch, cfg.loss_reduction, autocast)
                (loss / cfg.grad_accum).backward()
                losses.append(loss.item())
                progress.train_tokens += int(batch["inputs"]["attention_mask"].sum())
                progress.batch_in_epoch += 1
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            progress.step += 1
            progress.train_seconds = seconds_before + time.perf_counter() - started
            tokens_per_s = progress.train_tokens / max(progress.train_seconds, 1e-9)
            mean_loss = sum(losses) / len(losses)
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tokens_per_s:.0f}")
            if progress.step % cfg.log_every == 0 or progress.step == total:
                lr = scheduler.get_last_lr()[0]
                run.log(
                    {
                        "step": progress.step,
                        "epoch": progress.epoch,
                        "loss": mean_loss,
                        "lr": lr,
                        "tokens_per_s": tokens_per_s,
                    }
                )
            if cfg.eval_every and progress.step % cfg.eval_every == 0:
                evaluate()
            if cfg.checkpoint_every and progress.step % cfg.checkpoint_every == 0:
                checkpoint()
            if on_update is not None:
                on_update(progress.step)
        if progress.batch_in_epoch >= per_epoch:
            progress.epoch += 1
            progress.batch_in_epoch = 0
            if not cfg.eval_every:
                evaluate()
            if not cfg.checkpoint_every:
                checkpoint()
    bar.close()
    checkpoint()
    method.set_training(False)
    return progress


def to_device(batch: dict, device: torch.device) -> dict:
    return {
        key: to_device(value, device) if isinstance(value, dict) else value.to(device)
        for key, value in batch.items()
    }


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
