"""Infix keys/values at filler tokens before the separator: the model's own keys/values for real
tokens there give exactly the text with those tokens (training forward and generate())."""

from __future__ import annotations

import torch

from peftrun import models
from peftrun.methods.inject.infix_kv import InfixKeyValues

FILLER = 220


def own_key_values(model, ids: torch.Tensor, columns: list[int], hidden: int, n_head: int) -> torch.Tensor:
    """(n_layer, 2, n_head, L, head_dim): what each layer's fused q/k/v projection outputs at `columns`."""
    outputs = []
    handles = [
        block.attn.c_attn.register_forward_hook(lambda _m, _i, out: outputs.append(out))
        for block in model.transformer.h
    ]
    with torch.no_grad():
        model(ids)
    for handle in handles:
        handle.remove()
    per_layer = []
    for out in outputs:  # (1, T, 3d): [q | k | v]
        key, value = out[0, columns, hidden : 2 * hidden], out[0, columns, 2 * hidden :]
        heads = [v.reshape(len(columns), n_head, -1).transpose(0, 1) for v in (key, value)]
        per_layer.append(torch.stack(heads))
    return torch.stack(per_layer)


def test_real_key_values_at_the_fillers_are_the_text_in_training_and_decoding():
    loaded = models.load("tiny-gpt2", seed=0)
    model, arch, eos = loaded.model.eval(), loaded.arch, 0
    source, target = [40, 41, 42], [60, 61]
    t = [300, 301]
    with_fillers = torch.tensor([source + [FILLER, FILLER, eos] + target])
    as_text = torch.tensor([source + t + [eos] + target])
    kv = own_key_values(model, as_text, [3, 4], arch.hidden, arch.n_head)
    infix = InfixKeyValues(model, arch)
    real = [0, 1, 2, 5, 6, 7]  # the fillers' own outputs are never read
    settings = dict(num_beams=2, max_new_tokens=5, do_sample=False, pad_token_id=eos, eos_token_id=eos)
    prompt_mask = torch.ones(1, 6, dtype=torch.long)
    with torch.no_grad():
        expected = model(as_text).logits
        expected_out = model.generate(as_text[:, :6], attention_mask=prompt_mask, **settings)
        with infix.active(kv):
            got = model(with_fillers).logits
            got_out = model.generate(with_fillers[:, :6], attention_mask=prompt_mask, **settings)
        plain = model(with_fillers).logits
    torch.testing.assert_close(got[:, real], expected[:, real], atol=1e-5, rtol=1e-5)
    assert got_out[0, 6:].tolist() == expected_out[0, 6:].tolist()
    assert (plain[:, real] - expected[:, real]).abs().max() > 1e-3
