"""How extra activations enter a frozen transformer: pure components that know nothing of
configs, data or training.

- `prefix_kv`: keys/values prepended inside every attention layer (prefix-tuning; per batch row);
- `infix_kv`: keys/values written at filler tokens between source and target (infix-tuning);
- `soft_input`: input embeddings written at filler tokens at the start of the input (prompt
  tuning, P-tuning);
- `positions`: real tokens' position ids shifted (a GPT-2 prefix's position offset).

Everything is **per batch row**: a mechanism holds R rows of values (R = 1 for the whole batch, or
one per row: rows with different adapters, or none, in one batch). generate()'s beam search
expands every row into its beams (`match_rows`), and keeps beams in their row's block when it
reorders its cache, so rows stay attached to their values.

Hooks decide what a forward call is from the tensors it brings (`reads_from_start`), never from
how a transformers release names its arguments.
"""

from __future__ import annotations

import torch


def match_rows(values: torch.Tensor, batch: int) -> torch.Tensor:
    """Match R rows of `values` (dim 0) to `batch` rows: R = 1 (broadcast), R = batch, or beam
    search's expansion (batch = R·k, each row repeated k times in place)."""
    count = values.shape[0]
    if count == batch:
        return values
    if count == 1:
        return values.expand(batch, *values.shape[1:])
    if batch % count == 0:
        return values.repeat_interleave(batch // count, dim=0)
    raise ValueError(f"{count} rows of values cannot serve a batch of {batch}")


def call_tokens(args: tuple, kwargs: dict):
    """The (B, T) ids or (B, T, d) embeddings a forward call brings, by name or positionally."""
    for name in ("input_ids", "inputs_embeds"):
        if kwargs.get(name) is not None:
            return kwargs[name]
    return args[0] if args else None


def reads_from_start(args: tuple, kwargs: dict) -> bool:
    """Whether a forward call of an input stack reads each sequence from its first token (training,
    or generate()'s first step) rather than only the new tokens after a KV cache.

    An attention mask covers the cached tokens as well as the new ones, so the call reads from the
    start exactly when it brings as many tokens as its mask covers. Without a mask, any cache-like
    argument that already holds tokens (whatever its name) says no."""
    tokens = call_tokens(args, kwargs)
    mask = kwargs.get("attention_mask")
    if tokens is not None and getattr(mask, "dim", lambda: 0)() == 2:
        return tokens.shape[1] == mask.shape[1]
    for value in kwargs.values():
        seen = getattr(value, "get_seq_length", None)
        if callable(seen) and seen() > 0:
            return False
    return True
