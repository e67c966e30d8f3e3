"""Shifted positions: real tokens numbered from an offset, per row.

The original prefix-tuning code passed the prefix to GPT-2 as past keys/values, so real tokens
got positions L … L+T−1 (docs/paper.md); a prefix of length L therefore shifts its rows' positions
by L. How depends on the family (`Family.position_shift`), one hook each, installed once per model:

- learned table (GPT-2): a forward pre-hook on the learned position embedding adds each row's
  offset to the position ids it is given;
- position ids (rotary models): a forward pre-hook on the decoder stack adds the offset to the
  `position_ids` it is called with, or, when it gets none, to the ones the model would number
  itself (the cache's length onward), before any rotary embedding reads them. A prefix's keys
  are stored already rotated (they come from the cache side of attention), so only real tokens move.

Rows without a prefix get offset 0.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from peftrun.families import LEARNED_TABLE, POSITION_IDS, family_of
from peftrun.methods.inject import call_tokens, match_rows


class PositionShift:
    """While active: the position ids of row r are increased by offsets[r]."""

    def __init__(self, model) -> None:
        family = family_of(model)
        self.offsets: torch.Tensor | int = 0  # (R,) or one number for every row
        if family.position_shift == LEARNED_TABLE:
            family.get(model, family.position_embedding).register_forward_pre_hook(self._shift_table)
        elif family.position_shift == POSITION_IDS:
            stack = family.get(model, family.decoder_stack)
            stack.register_forward_pre_hook(self._shift_position_ids, with_kwargs=True)
        else:
            raise ValueError(f"{family.name} prefixes do not shift positions (Family.position_shift)")

    def shifted(self, positions: torch.Tensor) -> torch.Tensor | None:
        """(B or 1, T) position ids plus each row's offset (None: no shift now)."""
        if isinstance(self.offsets, int):
            return positions + self.offsets if self.offsets else None
        offsets = self.offsets.to(positions.device)
        rows = positions.expand(offsets.shape[0], -1) if positions.shape[0] == 1 else positions
        return rows + match_rows(offsets, rows.shape[0])[:, None]

    def _shift_table(self, _module, args):
        shifted = self.shifted(args[0])
        return None if shifted is None else (shifted, *args[1:])

    def _shift_position_ids(self, _module, args, kwargs):
        if isinstance(self.offsets, int) and not self.offsets:
            return None
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = _own_positions(args, kwargs)
        return args, {**kwargs, "position_ids": self.shifted(positions)}

    @contextmanager
    def active(self, offsets: torch.Tensor | int):
        previous, self.offsets = self.offsets, offsets
        try:
            yield
        finally:
            self.offsets = previous

    @contextmanager
    def suspended(self):
        """No shift (while the frozen model computes a prefix's own activations, at 0 … L−1)."""
        with self.active(0):
            yield


def _own_positions(args: tuple, kwargs: dict) -> torch.Tensor:
    """The (1, T) position ids a decoder stack numbers its new tokens with when given none: its
    cache positions, else the cache's length onward (as HF decoders do)."""
    if kwargs.get("cache_position") is not None:
        return kwargs["cache_position"][None]
    tokens = call_tokens(args, kwargs)
    seen = 0
    for value in kwargs.values():
        length = getattr(value, "get_seq_length", None)
        if callable(length):
            seen = length()
            break
    return torch.arange(seen, seen + tokens.shape[1], device=tokens.device)[None]


def install(model) -> PositionShift:
    """The model's position shift (created on first use, shared by everything attached)."""
    existing = getattr(model, "peftrun_position_shift", None)
    if existing is None:
        existing = model.peftrun_position_shift = PositionShift(model)
    return existing
