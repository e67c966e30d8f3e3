"""Fine-tuning baselines: the base model's own weights are trained.

`Full` trains every weight (standard fine-tuning; Li & Liang Table 1's "FT").
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from safetensors.torch import load_file

from peftrun.method_options import FullOptions
from peftrun.methods.base import ParamCounts
from peftrun.models import LoadedModel, count_parameters

WEIGHTS = "model.safetensors"


class Full:
    """Every weight trains; the stored adapter is the whole model."""

    def __init__(self, loaded: LoadedModel, options: FullOptions) -> None:
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.options = options
        self.model.requires_grad_(True)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list({id(p): p for p in self.model.parameters()}.values())

    def set_training(self, training: bool) -> None:
        self.model.train(training)

    def active(self, batch_size: int):
        return nullcontext()

    def training_state(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def save(self, directory: Path) -> None:
        # A standard HF model folder: later runs can name it as their `model.name`.
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)

    def load(self, directory: Path) -> None:
        # save_pretrained leaves tied weights (GPT-2's LM head) out of the file; re-tie them.
        self.model.load_state_dict(load_file(str(directory / WEIGHTS)), strict=False)
        self.model.tie_weights()

    def counts(self) -> ParamCounts:
        base = count_parameters(self.model.parameters())
        return ParamCounts(base=base, trainable=base, stored=base)
