"""The training loss (PAPER.md, Prefix-tuning "Loss"): cross-entropy on target tokens only, reduced
either as `sequence_sum` (sum of each sequence's target-token losses, then the mean over the batch:
the paper's GPT-2 prefix runs) or `token_mean` (the mean over all target tokens of the batch: its
fine-tuning and BART runs). The sequences here have different numbers of target tokens, so the two
reductions differ."""

from __future__ import annotations

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
