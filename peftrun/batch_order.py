"""The order of an epoch's micro-batches: plain shuffled, or grouped by length (`data.group_by_length`).

Both are pure functions of (examples, batch size, seed, epoch), so a run killed mid-epoch resumes on
the same next batch (the checkpoint keeps only the epoch and the batch index). Grouping cuts the
epoch's shuffled order into mega-batches, sorts each by length and cuts it into batches, then
shuffles the batches: on E2E under SmolLM2's tokenizer, random batches of 8 are ~27% padding,
grouped ones ~1% (scripts/bench_padding.py). With a token-mean loss, grouping also reweighs the
pairs (a short batch's tokens weigh more): docs/methods.md#length-grouped-batches.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of one epoch, a pure function of (seed, epoch) for resuming."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


# Batches per mega-batch of `grouped_batches`: enough for ~1% padding on E2E, few enough that the
# epoch's order still mixes lengths (each mega-batch holds a random 1/K of the data).
MEGA_BATCHES = 50


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's micro-batches (example indices) in plain shuffled order: `epoch_order` cut
    into batches of `batch_size` (the last may be shorter)."""
    order = epoch_order(n, seed, epoch)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, mega: int = MEGA_BATCHES
) -> list[list[int]]:
    """One epoch's micro-batches of similar length (`data.group_by_length`), a pure function of
    (lengths, batch_size, seed, epoch) for resuming: the epoch's shuffled order (`epoch_order`)
    cut into mega-batches of `mega` batches, each sorted by length (ties keep the shuffled order)
    and cut into batches, then the batches shuffled (same seed stream). Every example once; as many
    batches as `epoch_batches` (only the last mega-batch's last batch can be short)."""
    n = len(lengths)
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(n))
    rng.shuffle(order)  # = epoch_order(n, seed, epoch)
    chunk = batch_size * mega
    batches = []
    for start in range(0, n, chunk):
        block = sorted(order[start : start + chunk], key=lengths.__getitem__)
        batches += [block[i : i + batch_size] for i in range(0, len(block), batch_size)]
    rng.shuffle(batches)
    return batches


def example_lengths(
    make_batch: Callable[[Sequence], dict], examples: Sequence, chunk: int = 512
) -> list[int]:
    """Each example's tokens as `make_batch` lays them out: the sum of every attention mask of its
    row (decoder-only: the sequence; encoder-decoder: source plus target)."""
    lengths: list[int] = []
    for start in range(0, len(examples), chunk):
        inputs = make_batch(list(examples[start : start + chunk]))["inputs"]
        masks = [value for key, value in inputs.items() if key.endswith("attention_mask")]
        lengths += sum(mask.long().sum(dim=1) for mask in masks).tolist()
    return lengths
