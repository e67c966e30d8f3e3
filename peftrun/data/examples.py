"""Text-level examples every dataset module produces; token batches are built from these elsewhere."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pair:
    """One training example: a source text (linearised table, article) and one target text."""

    source: str
    target: str


@dataclass(frozen=True)
class Instance:
    """One evaluation instance: decoded once, scored against all of its references (official order)."""

    source: str
    references: tuple[str, ...]
    id: str = ""
