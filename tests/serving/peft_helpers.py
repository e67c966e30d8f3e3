"""What the peft interop tests share: peft itself (skipped when absent locally), token ids, and
logits of a peft model."""

from __future__ import annotations

import os

import pytest
import torch

TOLERANCE = 1e-5


def require_peft():
    """The peft module; skips the calling test module locally, fails under CI (where the dev extra
    installs it)."""
    try:
        import peft
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("peft is not installed (pip install -e '.[dev]')", allow_module_level=True)
    return peft


def ids(rows: int = 2, length: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randint(6, 500, (rows, length), generator=torch.Generator().manual_seed(seed))


def peft_logits(model, input_ids, decoder_input_ids=None) -> torch.Tensor:
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if decoder_input_ids is not None:
        inputs["decoder_input_ids"] = decoder_input_ids
    with torch.no_grad():
        return model.eval()(**inputs).logits


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()
