"""The training loss (docs/paper.md#loss): cross-entropy on target tokens only, reduced
either as `sequence_sum` (sum of each sequence's target-token losses, then the mean over the batch:
the paper's GPT-2 prefix runs) or `token_mean` (the mean over all target tokens of the batch: its
fine-tuning and BART runs). The sequences here have different numbers of target tokens, so the two
reductions differ."""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch

from peftrun import models
from peftrun.config import DataConfig
from peftrun.data.examples import Pair
from peftrun.data.formats import IGNORE, text_format
from peftrun.methods import FullOptions
from peftrun.methods.base import attach
from peftrun.train import batch_loss

LN2 = math.log(2)


class _NoMethod:
    """A method that changes nothing (batch_loss only enters its `active` context)."""

    def active(self, batch_size: int):
        return nullcontext()


def _fixed_logits_model(logits: torch.Tensor):
    return lambda **inputs: SimpleNamespace(logits=logits)


def _hand_made_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits = log-probabilities over 3 tokens, so each token's loss is -log p(label).

    Row 0 has two target tokens, each with p = 1/2 (loss ln 2 each: sum 2 ln 2).
    Row 1 has one target token with p = 1/8 (loss 3 ln 2)."""
    p = torch.tensor(
        [
            [[0.50, 0.25, 0.25], [0.25, 0.25, 0.50], [0.90, 0.05, 0.05]],
            [[0.10, 0.80, 0.10], [0.20, 0.60, 0.20], [0.125, 0.125, 0.75]],
        ]
    )
    labels = torch.tensor([[0, 2, IGNORE], [IGNORE, IGNORE, 0]])
    return p.log(), labels


@pytest.mark.parametrize(
    ("reduction", "expected"),
    [
        ("sequence_sum", (2 * LN2 + 3 * LN2) / 2),  # per-sequence sums 2 ln 2 and 3 ln 2, batch mean
        ("token_mean", (LN2 + LN2 + 3 * LN2) / 3),  # three target tokens
    ],
    ids=["sequence_sum", "token_mean"],
)
def test_reductions_on_hand_computed_losses(reduction, expected):
    logits, labels = _hand_made_batch()
    batch = {"inputs": {}, "labels": labels}
    loss = batch_loss(_fixed_logits_model(logits), _NoMethod(), batch, reduction, nullcontext())
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def _independent_losses(logits: torch.Tensor, labels: torch.Tensor) -> list[list[float]]:
    """Each target token's -log softmax(logits)[label], per sequence (no torch cross_entropy)."""
    log_probs = logits.double().log_softmax(dim=-1)
    return [
        [-log_probs[row, t, label].item() for t, label in enumerate(labels[row].tolist()) if label != IGNORE]
        for row in range(labels.shape[0])
    ]


PAIRS = [
    Pair("name : Aromi | area : city centre", "Aromi is a coffee shop in the city centre near the river."),
    Pair("name : Cocum", "Cocum."),
]


@pytest.mark.parametrize("model_name", ["tiny-gpt2", "tiny-bart"])
def test_reductions_match_cross_entropy_computed_independently(model_name):
    loaded = models.load(model_name, seed=0)
    method = attach(loaded, FullOptions())
    method.set_training(False)
    batch = text_format(loaded, DataConfig(dataset="e2e")).training_batch(PAIRS)
    with torch.no_grad():
        logits = loaded.model(**batch["inputs"]).logits
        sequence_sum = batch_loss(loaded.model, method, batch, "sequence_sum", nullcontext()).item()
        token_mean = batch_loss(loaded.model, method, batch, "token_mean", nullcontext()).item()
    per_token = _independent_losses(logits, batch["labels"])
    lengths = [len(row) for row in per_token]
    assert lengths[0] > lengths[1] + 5  # different target lengths: the reductions differ
    expected_sequence_sum = sum(sum(row) for row in per_token) / len(per_token)
    expected_token_mean = sum(sum(row) for row in per_token) / sum(lengths)
    assert sequence_sum == pytest.approx(expected_sequence_sum, rel=1e-5)
    assert token_mean == pytest.approx(expected_token_mean, rel=1e-5)
    assert sequence_sum > 2 * token_mean


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_warmup_then_the_lr_schedule(tmp_path, monkeypatch, schedule):
    """`train.warmup_steps: W` over T updates (docs/configs.md#config-reference): the lr rises
    linearly over the first W updates to the peak (update k of them uses k/W of it), then
    (`train.lr_schedule`) falls linearly to 0 at the end: update k > W uses (T - k + 1)/(T - W) of
    it, and after the last update it is 0; or stays at the peak to the end (constant)."""
    from conftest import write_config

    from peftrun import experiment

    applied: list[float] = []
    real_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        applied.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    config = write_config(
        tmp_path,
        f"""
model: {{name: tiny-gpt2}}
data: {{dataset: e2e, train_size: 24, dev_loss_size: 4}}
method: {{kind: lora, rank: 2}}
train: {{lr: 1e-3, epochs: 2, batch_size: 4, warmup_steps: 4, log_every: 1, lr_schedule: {schedule}}}
decode: {{splits: []}}
""",
    )
    run_dir, _ = experiment.train(config, [], str(tmp_path / "run"))
    peak, warmup, total = 1e-3, 4, 12  # 24 pairs / 4 per update, 2 epochs
    after = (
        (lambda k: peak) if schedule == "constant" else (lambda k: peak * (total - k + 1) / (total - warmup))
    )
    expected = [peak * k / warmup if k <= warmup else after(k) for k in range(1, total + 1)]
    assert applied == pytest.approx(expected, rel=1e-12)
    logged = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in logged if "loss" in r]  # each update's record: the lr of the next update
    last = peak if schedule == "constant" else 0.0
    assert lrs == pytest.approx([*expected[1:], last], rel=1e-12, abs=1e-18)


def _bf16_trainee(device: torch.device):
    from peftrun.config import TrainConfig
    from peftrun.distributed import Processes
    from peftrun.methods import LoRAOptions
    from peftrun.train import Trainee

    loaded = models.load("tiny-gpt2", seed=0)
    method = attach(loaded, LoRAOptions(rank=2))
    fmt = text_format(loaded, DataConfig(dataset="e2e"), method.room)
    cfg = TrainConfig(precision="bf16", batch_size=2)
    trainee = Trainee(loaded.model, method, PAIRS, [], fmt.training_batch, cfg, None, device, Processes())
    return loaded, method, fmt, trainee


def test_bf16_autocasts_the_forward_pass_and_stays_close_to_fp32():
    """`train.precision: bf16` (docs/configs.md#config-reference: autocast the forward pass): the
    model's matrix products run in bfloat16 and the loss matches fp32's to bf16's precision. bf16
    keeps 8 significant bits (unit roundoff 2^-9 ~ 2e-3); through a few layers of sums the loss moves
    by a few of those, so within 3% of fp32's (a loss computed in fp32 would match to 1e-6, one in
    fp16/garbage not)."""
    loaded, method, fmt, trainee = _bf16_trainee(torch.device("cpu"))
    seen: list[torch.dtype] = []
    hook = loaded.model.lm_head.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    batch = fmt.training_batch(PAIRS)
    with torch.no_grad():
        bf16 = batch_loss(loaded.model, method, batch, "token_mean", trainee.autocast).item()
        assert seen == [torch.bfloat16]
        fp32 = batch_loss(loaded.model, method, batch, "token_mean", nullcontext()).item()
        assert seen[-1] == torch.float32
    hook.remove()
    assert bf16 == pytest.approx(fp32, rel=3e-2) and bf16 != fp32


def test_bf16_on_a_gpu_without_it_warns_and_trains_in_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    with pytest.warns(UserWarning, match="this GPU has no bf16; training in fp32"):
        _, _, _, trainee = _bf16_trainee(torch.device("cuda"))
    assert isinstance(trainee.autocast, nullcontext)
