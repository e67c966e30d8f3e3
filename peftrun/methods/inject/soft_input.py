"""Soft input: trained input embeddings in place of filler tokens at the start of the input.

Prompt tuning (Lester et al. 2021) and P-tuning (Liu et al. 2021) prepend L trained vectors to
the input embeddings: GPT-2 reads [P; x; y]; BART's encoder reads [P; x] and its decoder is
untouched (no decoder positions spent). The token format puts L filler tokens at the start of
every source (`Room.leading`), so masks, labels, padding and positions stay the format's own;
a pre-hook on the input stack (GPT-2's transformer, BART's encoder) swaps the fillers'
embeddings for the prompt's before the first layer. Fillers are each row's first L real tokens
(right padding in training, left padding when decoding). Later `generate()` steps feed only new
tokens (the prompt is then in the KV cache / encoder output) and pass through untouched.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from peftrun.data.formats import first_visible
from peftrun.families import family_of
from peftrun.methods.inject import call_tokens, match_rows, reads_from_start


class SoftInput:
    """Replaces the embeddings of each row's first L real tokens while a prompt is active: one
    (L, d) prompt for every row, or per row (R, L_max, d) with each row's length (R,) (0: none)."""

    def __init__(self, model) -> None:
        self.embed = model.get_input_embeddings()
        self.prompt: torch.Tensor | None = None  # (R, L_max, d)
        self.lengths: torch.Tensor | None = None  # (R,)
        family = family_of(model)
        family.get(model, family.input_stack).register_forward_pre_hook(self._substitute, with_kwargs=True)

    @contextmanager
    def active(self, prompt: torch.Tensor, lengths: torch.Tensor | None = None):
        """`prompt` (L, d) for every row, or (R, L_max, d) with `lengths` (R,)."""
        if prompt.dim() == 2:
            prompt, lengths = prompt[None], torch.tensor([prompt.shape[0]], device=prompt.device)
        previous = self.prompt, self.lengths
        self.prompt, self.lengths = prompt, lengths
        try:
            yield
        finally:
            self.prompt, self.lengths = previous

    def _substitute(self, _module, args, kwargs):
        ids = call_tokens(args, kwargs)
        mask = kwargs.get("attention_mask")
        if self.prompt is None or ids is None or ids.dim() != 2 or not reads_from_start(args, kwargs):
            return None
        embeddings = self.embed(ids)
        batch = ids.shape[0]
        prompt = match_rows(self.prompt, batch).to(embeddings.dtype)  # (B, L_max, d)
        lengths = match_rows(self.lengths.to(ids.device), batch)  # (B,)
        first = first_visible(mask, batch, ids.device)
        for j in range(prompt.shape[1]):  # position j of every prompt at least j+1 long
            rows = (lengths > j).nonzero()[:, 0]
            embeddings[rows, first[rows] + j] = prompt[rows, j]
        return args[1:], {**kwargs, "input_ids": None, "inputs_embeds": embeddings}


def install(model) -> SoftInput:
    """The model's soft input (created on first use, shared by every prompt attached to it)."""
    existing = getattr(model, "peftrun_soft_input", None)
    if existing is None:
        existing = model.peftrun_soft_input = SoftInput(model)
    return existing
