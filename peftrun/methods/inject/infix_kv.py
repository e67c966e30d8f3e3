"""Infix keys/values: trained keys/values at filler tokens between the source and the target.

Infix-tuning (Li & Liang 2021, Sec. 7.3) reads [x; INFIX; y] in one sequence (decoder-only): the
infix positions' activations are free parameters, so every later token sees x, the infix's
trained keys/values and its predecessors. The token format puts L filler tokens right before the
source/target separator (`Room.infix`; `peftrun.data.formats.infix_positions` finds them), and
while an infix is active, a hook on each layer's key and value projections (GPT-2: the k and v
column blocks of the fused `c_attn`) replaces the keys and values computed at those fillers.
Editing the projections' outputs, before attention and before the KV cache stores them, means
generate()'s later steps (which feed only new tokens) attend to the infix from the cache. The
fillers' own outputs are never read.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager

import torch

from peftrun.data.formats import infix_positions
from peftrun.families import ArchSummary, attention_sites, family_of
from peftrun.methods.inject import call_tokens, reads_from_start


class InfixKeyValues:
    """While active: layer l's keys/values at the fillers are infix[l] (2, n_kv_head, L, head_dim)."""

    def __init__(self, model, arch: ArchSummary) -> None:
        family = family_of(model)
        self.eos = model.config.eos_token_id
        self.key_values: torch.Tensor | None = None  # (n_layer, 2, n_kv_head, L, head_dim)
        self.columns: torch.Tensor | None = None  # (rows, L) filler positions of this forward
        family.get(model, family.input_stack).register_forward_pre_hook(self._find_fillers, with_kwargs=True)
        slices = family.projection_slices(arch)
        (attention,) = attention_sites(model).values()  # decoder-only: one kind of attention
        for layer, attn in enumerate(attention):
            by_module: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
            for index, target in enumerate(("k", "v")):  # index: 0 keys, 1 values
                name, start, end = slices[target]
                by_module[name].append((index, start, end))
            for name, writes in by_module.items():
                getattr(attn, name).register_forward_hook(self._replacer(layer, writes))

    @contextmanager
    def active(self, key_values: torch.Tensor):
        self.key_values = key_values
        try:
            yield
        finally:
            self.key_values = self.columns = None

    def _find_fillers(self, _module, args, kwargs) -> None:
        ids = call_tokens(args, kwargs)
        # Later decoding steps feed only new tokens: the infix is already in the cache.
        if self.key_values is None or ids is None or ids.dim() != 2 or not reads_from_start(args, kwargs):
            self.columns = None
            return
        self.columns = infix_positions(ids, kwargs.get("attention_mask"), self.eos, self.key_values.shape[3])

    def _replacer(self, layer: int, writes: list[tuple[int, int, int]]):
        def replace(_module, _inputs, output: torch.Tensor):
            if self.key_values is None or self.columns is None:
                return None
            length = self.key_values.shape[3]
            rows = torch.arange(output.shape[0], device=output.device)[:, None]
            output = output.clone()
            for index, start, end in writes:
                # (n_kv_head, L, head_dim) → (L, n_kv_head·head_dim): heads side by side, as the
                # projection lays them out.
                values = self.key_values[layer, index].transpose(0, 1).reshape(length, end - start)
                output[rows, self.columns, start:end] = values.to(output.dtype)
            return output

        return replace
