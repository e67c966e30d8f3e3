"""Infix keys/values: trained keys/values at filler tokens between the source and the target.

Infix-tuning (Li & Liang 2021, Sec. 7.3) reads [x; INFIX; y] in one sequence (decoder-only): the
infix positions' activations are free parameters, so every later token sees x, the infix's
trained keys/values and its predecessors. The token format puts L filler tokens right before the
source/target separator (`Slots.infix`; `peftrun.data.formats.infix_positions` finds them), and
while an infix is active, a hook on each layer's fused q/k/v projection (GPT-2's `c_attn`)
replaces the keys and values computed at those fillers. Editing the projection's output, before
attention and before the KV cache stores it, means generate()'s later steps (which feed only new
tokens) attend to the infix from the cache. The fillers' own outputs are never read.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from peftrun.data.formats import infix_positions
from peftrun.models import reads_from_start


class InfixSlot:
    """While active: layer l's keys/values at the fillers are infix[l] (2, n_head, L, head_dim)."""

    def __init__(self, model, hidden: int) -> None:
        self.eos = model.config.eos_token_id
        self.hidden = hidden
        self.key_values: torch.Tensor | None = None  # (n_layer, 2, n_head, L, head_dim)
        self.columns: torch.Tensor | None = None  # (rows, L) filler positions of this forward
        model.transformer.register_forward_pre_hook(self._find_fillers, with_kwargs=True)
        for layer, block in enumerate(model.transformer.h):
            block.attn.c_attn.register_forward_hook(self._replacer(layer))

    @contextmanager
    def active(self, key_values: torch.Tensor):
        self.key_values = key_values
        try:
            yield
        finally:
            self.key_values = self.columns = None

    def _find_fillers(self, _module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        # Later decoding steps feed only new tokens: the infix is already in the cache.
        if self.key_values is None or ids is None or not reads_from_start(args, kwargs):
            self.columns = None
            return
        self.columns = infix_positions(ids, kwargs.get("attention_mask"), self.eos, self.key_values.shape[3])

    def _replacer(self, layer: int):
        def replace(_module, _inputs, output: torch.Tensor):
            if self.key_values is None or self.columns is None:
                return None
            d, length = self.hidden, self.key_values.shape[3]
            rows = torch.arange(output.shape[0], device=output.device)[:, None]
            # (n_head, L, head_dim) → (L, d): heads side by side, as c_attn lays them out.
            key, value = (self.key_values[layer, i].transpose(0, 1).reshape(length, d) for i in (0, 1))
            output = output.clone()  # output columns: [query | key | value]
            output[rows, self.columns, d : 2 * d] = key.to(output.dtype)
            output[rows, self.columns, 2 * d :] = value.to(output.dtype)
            return output

        return replace
