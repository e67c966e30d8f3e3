"""Soft prompts: trained input embeddings in place of filler tokens at the start of the input.

Prompt tuning (Lester et al. 2021) and P-tuning (Liu et al. 2021) prepend L trained vectors to
the input embeddings: GPT-2 reads [P; x; y]; BART's encoder reads [P; x] and its decoder is
untouched (no decoder positions spent). The token format puts L filler tokens at the start of
every source (`Slots.leading`), so masks, labels, padding and positions stay the format's own;
a pre-hook on the input stack (GPT-2's transformer, BART's encoder) swaps the fillers'
embeddings for the prompt's before the first layer. Fillers are each row's first L real tokens
(right padding in training, left padding when decoding). Later `generate()` steps feed only new
tokens (the prompt is then in the KV cache / encoder output) and pass through untouched.

`SoftPromptMethod` is everything prompt tuning and P-tuning share; a subclass says only how the
(L, d) embeddings are produced while training. Only those embeddings are stored.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from peftrun.data.formats import Slots, first_visible
from peftrun.methods.base import ParamCounts, save_tensors
from peftrun.models import LoadedModel, count_parameters, input_stack, reads_from_start

WEIGHTS = "prompt.safetensors"


class SoftInput:
    """Replaces the embeddings of each row's first L real tokens while a prompt is active."""

    def __init__(self, model) -> None:
        self.embed = model.get_input_embeddings()
        self.prompt: torch.Tensor | None = None  # (L, d)
        input_stack(model).register_forward_pre_hook(self._substitute, with_kwargs=True)

    @contextmanager
    def active(self, prompt: torch.Tensor):
        previous, self.prompt = self.prompt, prompt
        try:
            yield
        finally:
            self.prompt = previous

    def _substitute(self, _module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if self.prompt is None or ids is None or not reads_from_start(args, kwargs):
            return None
        embeddings = self.embed(ids)
        rows = torch.arange(ids.shape[0], device=ids.device)[:, None]
        columns = first_visible(mask, ids.shape[0], ids.device)[:, None] + torch.arange(
            self.prompt.shape[0], device=ids.device
        )
        embeddings[rows, columns] = self.prompt.to(embeddings.dtype)
        return args[1:], {**kwargs, "input_ids": None, "inputs_embeds": embeddings}


class SoftPromptMethod:
    """Frozen model + L soft input embeddings produced by `self.producer` (an nn.Module)."""

    producer: nn.Module

    def __init__(self, loaded: LoadedModel, length: int) -> None:
        self.model = loaded.model
        self.model.requires_grad_(False)
        self.length = length
        self.hidden = loaded.arch.hidden
        self.soft = SoftInput(self.model)
        self.slots = Slots(leading=length)
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
        with self.soft.active(self.embeddings()):
            yield

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
            base=count_parameters(self.model.parameters()),
            trainable=count_parameters(self.producer.parameters()),
            stored=self.length * self.hidden,
        )
