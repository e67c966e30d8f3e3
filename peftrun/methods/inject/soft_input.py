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
from peftrun.methods.inject import call_tokens, reads_from_start
from peftrun.models import family_of


class SoftInput:
    """Replaces the embeddings of each row's first L real tokens while a prompt is active."""

    def __init__(self, model) -> None:
        self.embed = model.get_input_embeddings()
        self.prompt: torch.Tensor | None = None  # (L, d)
        family = family_of(model)
        family.get(model, family.input_stack).register_forward_pre_hook(self._substitute, with_kwargs=True)

    @contextmanager
    def active(self, prompt: torch.Tensor):
        previous, self.prompt = self.prompt, prompt
        try:
            yield
        finally:
            self.prompt = previous

    def _substitute(self, _module, args, kwargs):
        ids = call_tokens(args, kwargs)
        mask = kwargs.get("attention_mask")
        if self.prompt is None or ids is None or ids.dim() != 2 or not reads_from_start(args, kwargs):
            return None
        embeddings = self.embed(ids)
        rows = torch.arange(ids.shape[0], device=ids.device)[:, None]
        columns = first_visible(mask, ids.shape[0], ids.device)[:, None] + torch.arange(
            self.prompt.shape[0], device=ids.device
        )
        embeddings[rows, columns] = self.prompt.to(embeddings.dtype)
        return args[1:], {**kwargs, "input_ids": None, "inputs_embeds": embeddings}
