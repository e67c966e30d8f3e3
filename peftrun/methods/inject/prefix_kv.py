"""One prefix mechanism for every architecture: extra keys/values prepended inside attention.

Prefix-tuning (Li & Liang 2021, Sec. 4) gives every attention layer L extra positions whose
activations are free parameters. For attention that means, per layer and per head,

    softmax(q · [P_k ; K]ᵀ / √d) · [P_v ; V]          P_k, P_v: (L, head_dim)

(per key/value head: with grouped-query attention a prefix has n_kv_head heads, and the kernel
shares each among its query heads as it does the real keys)

so we wrap transformers' attention function (its `AttentionInterface`) and concatenate the
layer's prefix in front of the keys and values, with matching always-visible mask columns:

    keys:   [ P_k(layer) | K(real tokens, incl. KV cache) ]      mask: [ 1 … 1 | causal/padding ]

Every attention module of the model is tagged with its *site* (kind, layer): GPT-2 has one kind
(`self`); BART three (`encoder` self-attention, `decoder` self-attention, `cross` attention).
The prefix lives in a `PrefixAttention` shared by the model's sites and is set for the duration of
a forward pass or a whole `generate()` call. (transformers 5 passes extra forward kwargs down to
attention, but `generate()` rejects unknown kwargs, so this object is how decoding sees the prefix.)

Prefixes are looked up **per row**: a prefix tensor has R rows, R = 1 (one prefix for the batch) or
R = batch size (a different prefix per example: several tasks/users in one batch). Beam search
expands rows with `repeat_interleave`, so R rows serve R·beams queries.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from peftrun.families import attention_sites, family_of
from peftrun.methods.inject import match_rows


class PrefixAttention:
    """The prefix K/V visible to attention right now: kind → (R, n_layer, 2, n_kv_head, L, head_dim),
    and which of the L positions each row sees (R, L) (rows with shorter prefixes, or none, have
    their unused positions masked; None: all visible)."""

    def __init__(self) -> None:
        self.key_values: dict[str, torch.Tensor] = {}
        self.visible: dict[str, torch.Tensor] | None = None
        self.recorded: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] | None = None

    @contextmanager
    def active(self, key_values: dict[str, torch.Tensor], visible: dict[str, torch.Tensor] | None = None):
        previous = self.key_values, self.visible
        self.key_values, self.visible = key_values, visible
        try:
            yield
        finally:
            self.key_values, self.visible = previous

    @contextmanager
    def recording(self):
        """Record every attention call's keys/values, (kind, layer) → (key, value), with no prefix."""
        previous_kv, previous_rec = self.key_values, self.recorded
        self.key_values, self.recorded = {}, {}
        try:
            yield self.recorded
        finally:
            self.key_values, self.recorded = previous_kv, previous_rec


@dataclass(frozen=True)
class _Site:
    prefix: PrefixAttention
    kind: str
    layer: int
    inner: object  # the attention kernel doing the work: (module, query, key, value, mask, **kwargs)


def install(model) -> PrefixAttention:
    """Tag the model's attention modules and switch it to the prefix-aware attention function (once
    per model: every prefix attached to it shares this mechanism, row by row)."""
    existing = getattr(model, "peftrun_prefix_attention", None)
    if existing is not None:
        return existing
    inner = model.config._attn_implementation
    if inner not in ALL_MASK_ATTENTION_FUNCTIONS:
        raise ValueError(f"prefix attention cannot wrap {inner!r} attention (no mask format for it)")
    name = f"peftrun_prefix_{inner}"
    AttentionInterface.register(name, prefixed_attention)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[inner])
    prefix = PrefixAttention()
    for kind, modules in attention_sites(model).items():
        for layer, module in enumerate(modules):
            module.peftrun_prefix_site = _Site(prefix, kind, layer, _kernel(inner, module))
    model.set_attn_implementation(name)
    model.peftrun_prefix_attention = prefix
    return prefix


def _kernel(implementation: str, module):
    """The function `module` itself calls for `implementation`: the registered one, else (eager,
    which transformers keeps out of its registry) the default its modeling file passes to
    `AttentionInterface.get_interface`, that file's `eager_attention_forward`."""
    if implementation in ALL_ATTENTION_FUNCTIONS:
        return ALL_ATTENTION_FUNCTIONS[implementation]
    own = getattr(inspect.getmodule(type(module)), "eager_attention_forward", None)
    if implementation != "eager" or own is None:
        raise ValueError(
            f"prefix attention cannot find the {implementation!r} kernel of {type(module).__name__}"
        )
    return own


def prefixed_attention(module, query, key, value, attention_mask, **kwargs):
    """Attention over [prefix ; real] keys/values. query/key/value: (B, H, T, head_dim)."""
    site: _Site = module.peftrun_prefix_site
    inner = site.inner
    if site.prefix.recorded is not None:
        site.prefix.recorded[(site.kind, site.layer)] = (key, value)
    prefix = site.prefix.key_values.get(site.kind)
    if prefix is None:
        return inner(module, query, key, value, attention_mask, **kwargs)
    rows = match_rows(prefix[:, site.layer], query.shape[0]).to(key.dtype)  # (B, 2, H, L, hd)
    visible = site.prefix.visible.get(site.kind) if site.prefix.visible else None
    if visible is not None:
        visible = match_rows(visible, query.shape[0])  # (B, L)
    causal = kwargs.pop("is_causal", None)
    causal = getattr(module, "is_causal", False) if causal is None else causal
    attention_mask = _extend_mask(attention_mask, rows.shape[-2], query, key, causal, visible)
    key = torch.cat([rows[:, 0], key], dim=2)
    value = torch.cat([rows[:, 1], value], dim=2)
    return inner(module, query, key, value, attention_mask, is_causal=False, **kwargs)


def _extend_mask(mask, prefix_len: int, query, key, causal: bool, visible: torch.Tensor | None = None):
    """Add `prefix_len` columns in front of the attention mask: visible to every query, or per row
    as `visible` (B, L) says."""
    q_len, k_len = query.shape[2], key.shape[2]
    if mask is None:
        if (not causal or q_len == 1) and visible is None:
            return None  # every real key visible, and so is every prefix position
        # The kernels' implicit causal mask would misalign once keys outnumber queries: build it.
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device)
        mask = (mask.tril(k_len - q_len) if causal else mask)[None, None]
    if visible is None:
        fill = torch.ones if mask.dtype == torch.bool else torch.zeros
        columns = fill(*mask.shape[:-1], prefix_len, dtype=mask.dtype, device=mask.device)
    else:
        seen = visible[:, None, None, :].expand(query.shape[0], mask.shape[1], q_len, prefix_len)
        if mask.dtype == torch.bool:
            columns = seen
        else:  # additive float mask: 0 where visible, the most negative value where not
            hidden = torch.finfo(mask.dtype).min
            columns = torch.zeros(seen.shape, dtype=mask.dtype, device=mask.device).masked_fill(~seen, hidden)
        mask = mask.expand(query.shape[0], *mask.shape[1:])
    return torch.cat([columns, mask], dim=-1)


def key_values_of_inputs(
    model, prefix: PrefixAttention, inputs: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The frozen model's own keys/values for input-layer activations (L, d), at positions 0 … L−1,
    per attention kind (n_layer, 2, n_kv_head, L, head_dim): what a prefix made of these inputs is.

    Decoder-only (GPT-2): `inputs["self"]` (its one attention kind) runs through the model
    (causal). Encoder-decoder (BART):
    `inputs["encoder"]` runs through the encoder alone, `inputs["decoder"]` through the decoder
    cross-attending to those encoder states; the cross-attention keys/values are the decoder
    layers' projections of them. The prefix positions see only each other, as a prefix passed as
    past keys/values does.
    """
    family = family_of(model)
    decoder = family.get(model, family.decoder_stack)
    dtype = model.get_input_embeddings().weight.dtype  # a bf16 frozen base reads bf16 inputs
    inputs = {kind: value.to(dtype) for kind, value in inputs.items()}
    with prefix.recording() as recorded:
        if not family.encoder_decoder:
            (kind,) = family.input_kinds
            decoder(inputs_embeds=inputs[kind][None], use_cache=False)
        else:
            encoder = family.get(model, family.encoder_stack)
            encoded = encoder(inputs_embeds=inputs["encoder"][None]).last_hidden_state
            decoder(inputs_embeds=inputs["decoder"][None], encoder_hidden_states=encoded, use_cache=False)
    kinds = sorted({kind for kind, _ in recorded})
    return {
        kind: torch.stack(
            [
                torch.stack([recorded[(kind, layer)][0][0], recorded[(kind, layer)][1][0]])
                for layer in range(sum(1 for k, _ in recorded if k == kind))
            ]
        )
        for kind in kinds
    }
