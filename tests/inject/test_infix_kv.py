"""Infix keys/values at filler tokens before the separator: the model's own keys/values for real
tokens there give exactly the text with those tokens (training forward and generate())."""

from __future__ import annotations

import pytest
import torch

from peftrun import families, models
from peftrun.methods.inject.infix_kv import InfixKeyValues

FILLER = 220


def own_key_values(model, ids: torch.Tensor, columns: list[int], arch) -> torch.Tensor:
    """(n_layer, 2, n_kv_head, L, head_dim): what each layer's key and value projections output at
    `columns` (GPT-2: the k and v column blocks of the fused c_attn, [q | k | v])."""
    family = families.family_of(model)
    slices = family.projection_slices(arch)
    outputs: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    for layer, attn in enumerate(families.attention_sites(model)["self"]):
        for target in ("k", "v"):
            name, start, end = slices[target]

            def keep(_m, _i, out, layer=layer, target=target, start=start, end=end):
                outputs[(layer, target)] = out[0, columns, start:end]

            handles.append(getattr(attn, name).register_forward_hook(keep))
    with torch.no_grad():
        model(ids)
    for handle in handles:
        handle.remove()
    return torch.stack(
        [
            torch.stack(
                [outputs[(layer, t)].reshape(len(columns), arch.n_kv_head, -1).transpose(0, 1) for t in "kv"]
            )
            for layer in range(arch.n_layer)
        ]
    )


@pytest.mark.parametrize("name", models.tiny_models(decoder_only=True))
def test_real_key_values_at_the_fillers_are_the_text_in_training_and_decoding(name):
    loaded = models.load(name, seed=0)
    model, arch, eos = loaded.model.eval(), loaded.arch, loaded.tokenizer.eos_token_id
    source, target = [40, 41, 42], [60, 61]
    t = [300, 301]
    with_fillers = torch.tensor([source + [FILLER, FILLER, eos] + target])
    as_text = torch.tensor([source + t + [eos] + target])
    kv = own_key_values(model, as_text, [3, 4], arch)
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
