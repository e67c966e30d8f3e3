"""Rows of one batch, each with its own adapter (or none), through one forward pass.

A method that only adds activations to a frozen base says what it adds for a row (`RowInputs`):
prefix keys/values per attention kind, a position offset, a soft prompt, or its LoRA layers.
`active_rows` sets every mechanism for R rows at once:

    prefix K/V   per kind, padded to the longest prefix: (R, n_layer, 2, n_head, L_max, head_dim),
                 with (R, L_max) visibility, so a row attends to its own L positions only
    positions    (R,) offsets (a GPT-2 prefix numbers its row's real tokens from L)
    soft input   (R, L_max, d) prompts and (R,) lengths; each row's token format left room for it
    LoRA         every LoRA layer of the model applies to the rows whose adapter it belongs to

Rows with `None` get nothing: exactly the base model. One method alone is R = 1 (broadcast to the
batch), which is how training and single-adapter decoding use the same code.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F


@dataclass
class RowInputs:
    """What one adapter adds to a frozen base for its rows."""

    key_values: dict[str, torch.Tensor] = field(default_factory=dict)  # kind → (n_layer, 2, H, L, hd)
    position_offset: int = 0
    prompt: torch.Tensor | None = None  # (L, d)
    lora: object | None = None  # the LoRA method whose layers apply (their `owner`)


def _padded(tensors: list[torch.Tensor | None], dim: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack per-row tensors padded with zeros along `dim` (a missing one: length 0), and the
    (R, L_max) mask of real positions (None when every row is full)."""
    template = next(t for t in tensors if t is not None)
    lengths = [0 if t is None else t.shape[dim] for t in tensors]
    longest = max(lengths)
    rows = []
    for t in tensors:
        if t is None:
            shape = list(template.shape)
            shape[dim] = longest
            rows.append(template.new_zeros(shape))
            continue
        pad = [0, 0] * (t.dim() - dim - 1) + [0, longest - t.shape[dim]]
        rows.append(F.pad(t, pad) if longest > t.shape[dim] else t)
    stacked = torch.stack(rows)
    if all(length == longest for length in lengths):
        return stacked, None
    lengths_t = torch.tensor(lengths, device=template.device)
    return stacked, torch.arange(longest, device=template.device)[None] < lengths_t[:, None]


@contextmanager
def active_rows(model, rows: list[RowInputs | None]):
    """Within: row r of every batch (or of its beams) runs with `rows[r]`'s additions."""
    from peftrun.methods.inject import positions, prefix_kv, soft_input

    with ExitStack() as stack:
        kinds = sorted({kind for row in rows if row is not None for kind in row.key_values})
        if kinds:
            key_values, visible = {}, {}
            for kind in kinds:
                per_row = [row.key_values.get(kind) if row is not None else None for row in rows]
                key_values[kind], mask = _padded(per_row, dim=3)
                if mask is not None:
                    visible[kind] = mask
            stack.enter_context(prefix_kv.install(model).active(key_values, visible or None))
        offsets = [row.position_offset if row is not None else 0 for row in rows]
        if any(offsets):
            shift = offsets[0] if len(set(offsets)) == 1 else torch.tensor(offsets)
            stack.enter_context(positions.install(model).active(shift))
        prompts = [row.prompt if row is not None else None for row in rows]
        if any(p is not None for p in prompts):
            prompt, mask = _padded(prompts, dim=0)
            lengths = torch.tensor([0 if p is None else p.shape[0] for p in prompts], device=prompt.device)
            stack.enter_context(soft_input.install(model).active(prompt, lengths))
        layers = getattr(model, "peftrun_lora_layers", [])
        previous = [layer.gate for layer in layers]
        for layer in layers:
            applies = [row is not None and row.lora is layer.owner for row in rows]
            # Every row: the dense path (gate None), which also keeps a compiled step free of the
            # data-dependent row selection (train.compile); else only the chosen rows get the delta.
            layer.gate = None if all(applies) else torch.tensor(applies)
        try:
            yield
        finally:
            for layer, gate in zip(layers, previous, strict=True):
                layer.gate = gate
