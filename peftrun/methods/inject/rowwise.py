"""Row-wise shapes: while `fixed_shapes()` is active, a decoding step computes each row with shapes
of its own, so that its output is the same whatever else shares its batch (batch invariance).

CPU kernels (and GPU ones) pick their blocking, and so their summation order, from the shapes they
get: a row's logits change in the last bits with the batch's row count (a matrix product's M) and
with its padding (the keys' width). Under `fixed_shapes()`:

- attention of a one-token step runs row by row, each row over its own visible keys only (its
  prefix's positions and its real tokens: no padding, no other row's prefix width), through the
  model's own kernel; prefix attention (prefix_kv) wraps this one, so the prefix is in the keys;
- a LoRA layer computes its update for every row of the batch and keeps its own rows' (a matrix
  product over the whole batch, rather than over the rows its adapter has);

and the caller runs every step with the same number of rows (peftrun.serving.live keeps a fixed
number of slots). Everything else a row goes through is row by row already (norms, activations,
rotary embeddings). Installed once per model (`install`), before any prefix wraps attention.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface


class _State:
    on = False


STATE = _State()


@contextmanager
def fixed_shapes():
    previous, STATE.on = STATE.on, True
    try:
        yield
    finally:
        STATE.on = previous


def install(model) -> None:
    """Switch `model` to the row-wise wrapper of its attention (once; call before any prefix
    mechanism is installed on it, so that prefixes wrap this)."""
    if getattr(model, "peftrun_rowwise", None) is not None:
        return
    if getattr(model, "peftrun_prefix_attention", None) is not None:
        raise ValueError("install row-wise attention before prefix attention")
    inner = model.config._attn_implementation
    if inner not in ALL_MASK_ATTENTION_FUNCTIONS:
        raise ValueError(f"row-wise attention cannot wrap {inner!r} attention (no mask format for it)")
    name = f"peftrun_rowwise_{inner}"
    AttentionInterface.register(name, _rowwise(inner))
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[inner])
    model.peftrun_rowwise = inner
    model.set_attn_implementation(name)


def _rowwise(inner: str):
    def attention(module, query, key, value, attention_mask, **kwargs):
        return rowwise_attention(inner, module, query, key, value, attention_mask, **kwargs)

    return attention


def _kernel(inner: str, module):
    from peftrun.methods.inject.prefix_kv import _kernel as kernel_of

    found = getattr(module, "peftrun_rowwise_kernel", None)
    if found is None:
        found = module.peftrun_rowwise_kernel = kernel_of(inner, module)
    return found


def rowwise_attention(inner, module, query, key, value, attention_mask, **kwargs):
    """The model's kernel (`inner`), row by row over each row's visible keys while a one-token
    step runs under `fixed_shapes()`; as it is otherwise."""
    kernel = _kernel(inner, module)
    if not STATE.on or query.shape[2] != 1:
        return kernel(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    outputs, weights = [], []
    for b in range(query.shape[0]):
        k, v = key[b : b + 1], value[b : b + 1]
        if attention_mask is not None:
            seen = attention_mask[b if attention_mask.shape[0] > 1 else 0, 0, -1]
            seen = seen if seen.dtype == torch.bool else seen == 0
            columns = seen.nonzero()[:, 0]
            k, v = k.index_select(2, columns), v.index_select(2, columns)
        out, weight = kernel(module, query[b : b + 1], k, v, None, is_causal=False, **kwargs)
        outputs.append(out)
        weights.append(weight)
    return torch.cat(outputs), None
