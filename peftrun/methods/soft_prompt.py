"""What prompt tuning and P-tuning share: a frozen model and L soft input embeddings.

A subclass says only how the (L, d) embeddings are produced while training (`self.producer`, an
nn.Module); the mechanism that puts them into the input is `peftrun.methods.inject.soft_input`.
Only the produced embeddings are stored.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from peftrun.data.formats import Room
from peftrun.methods.base import MethodBase, ParamCounts, save_tensors
from peftrun.methods.inject import soft_input
from peftrun.methods.inject.rows import RowInputs, active_rows
from peftrun.models import LoadedModel, base_size, count_parameters

WEIGHTS = "prompt.safetensors"


class SoftPromptMethod(MethodBase):
    """Frozen model + L soft input embeddings produced by `self.producer` (an nn.Module)."""

    producer: nn.Module

    def __init__(self, loaded: LoadedModel, length: int) -> None:
        self.model = loaded.model
        self.model.requires_grad_(False)
        self.length = length
        self.hidden = loaded.arch.hidden
        soft_input.install(self.model)  # the shared mechanism the rows' prompts go through
        self.room = Room(leading=length)
        self.stored: torch.Tensor | None = None  # set by `load`

    def embeddings(self) -> torch.Tensor:
        return self.stored if self.stored is not None else self.producer()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.producer.parameters())

    def set_training(self, training: bool) -> None:
        self.model.eval()  # the frozen model never uses dropout
        self.producer.train(training)

    @contextmanager
    def active(self, batch_size: int):
        with active_rows(self.model, [self.row_inputs()]):  # one row serves the whole batch
            yield

    @classmethod
    def shares_base(cls, options) -> bool:
        return True

    @classmethod
    def trains_packed(cls, options) -> bool:
        return True  # a prompt table, or P-tuning's encoder (no dropout), over a frozen base

    def row_inputs(self) -> RowInputs:
        return RowInputs(prompt=self.embeddings())

    def training_state(self) -> dict[str, torch.Tensor]:
        return self.producer.state_dict()

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        self.producer.load_state_dict(state)

    def save(self, directory: Path) -> None:
        with torch.no_grad():
            save_tensors({"prompt": self.embeddings()}, directory / WEIGHTS)

    def load(self, directory: Path) -> None:
        prompt = load_file(str(directory / WEIGHTS), device=str(self.model.device))["prompt"]
        if tuple(prompt.shape) != (self.length, self.hidden):
            expected = (self.length, self.hidden)
            got = tuple(prompt.shape)
            raise ValueError(f"prompt in {directory} has shape {got}, this model needs {expected}")
        self.stored = prompt

    def counts(self) -> ParamCounts:
        return ParamCounts(
            base=base_size(self.model),
            trainable=count_parameters(self.producer.parameters()),
            stored=self.length * self.hidden,
        )
