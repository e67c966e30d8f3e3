"""Shifted positions: real tokens numbered from an offset, per row.

The original prefix-tuning code passed the prefix to GPT-2 as past keys/values, so real tokens
got positions L … L+T−1 (PAPER.md); a prefix of length L therefore shifts its rows' positions by
L. A forward pre-hook on the model's learned position embedding (the family table names it) adds
each row's offset to the position ids it is given. Installed once per model; rows without a
prefix get offset 0.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from peftrun.methods.inject import match_rows
from peftrun.models import family_of


class PositionShift:
    """While active: the position ids of row r are increased by offsets[r]."""

    def __init__(self, model) -> None:
        family = family_of(model)
        embedding = family.get(model, family.position_embedding)
        if embedding is None:
            raise ValueError(f"{family.name} has no learned position embedding to shift")
        self.offsets: torch.Tensor | int = 0  # (R,) or one number for every row
        embedding.register_forward_pre_hook(self._shift)

    def _shift(self, _module, args):
        positions = args[0]
        if isinstance(self.offsets, int):
            return (positions + self.offsets,) if self.offsets else None
        offsets = self.offsets.to(positions.device)
        rows = positions.expand(offsets.shape[0], -1) if positions.shape[0] == 1 else positions
        return (rows + match_rows(offsets, rows.shape[0])[:, None],)

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


def install(model) -> PositionShift:
    """The model's position shift (created on first use, shared by everything attached)."""
    existing = getattr(model, "peftrun_position_shift", None)
    if existing is None:
        existing = model.peftrun_position_shift = PositionShift(model)
    return existing
