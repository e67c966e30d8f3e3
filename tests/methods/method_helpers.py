"""Helpers shared by the method tests: a small random batch and logits under a method."""

from __future__ import annotations

import torch


def batch(loaded, seed: int = 1) -> dict[str, torch.Tensor]:
    """Two random sequences; BART also gets decoder inputs, which are the labels."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, 200, (2, 8), generator=generator)
    inputs = {"input_ids": ids, "labels": ids.clone()}
    if loaded.arch.is_encoder_decoder:
        inputs["decoder_input_ids"] = torch.randint(6, 200, (2, 6), generator=generator)
        inputs["labels"] = inputs["decoder_input_ids"].clone()
    return inputs


def logits_of(method, inputs) -> torch.Tensor:
    method.set_training(False)
    with torch.no_grad(), method.active(inputs["input_ids"].shape[0]):
        return method.model(**inputs).logits
