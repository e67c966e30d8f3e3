"""The prefix mechanism alone (no method, no config): keys/values prepended inside attention.

The oracle is the frozen model itself: the keys/values it computes for a real sequence t, used as
the prefix, must give the logits of running it on t + x (with x numbered from len(t))."""

from __future__ import annotations

import pytest
import torch

from peftrun import models
from peftrun.methods.inject.prefix_kv import install, key_values_of_inputs


@pytest.fixture(params=models.tiny_models(decoder_only=True))
def gpt2(request):
    """A decoder-only family's tiny model (GPT-2's, and any other's)."""
    loaded = models.load(request.param, seed=0)
    loaded.model.eval()
    return loaded.model


def recorded_key_values(model, prefix, tokens: torch.Tensor) -> torch.Tensor:
    """The model's own K/V for `tokens` (B, n_layer, 2, n_kv_head, T, head_dim), by recording them."""
    with torch.no_grad(), prefix.recording() as seen:
        model(tokens)
    layers = sorted(layer for _, layer in seen)
    return torch.stack([torch.stack(seen[("self", layer)], dim=1) for layer in layers], dim=1)


@pytest.mark.parametrize("name", models.tiny_models())
def test_installed_without_a_prefix_the_model_is_unchanged(name):
    loaded = models.load(name, seed=0)
    loaded.model.eval()
    x = torch.randint(6, 2000, (2, 7))
    extra = {"decoder_input_ids": x[:, :4]} if loaded.arch.is_encoder_decoder else {}
    with torch.no_grad():
        before = loaded.model(x, **extra).logits
        install(loaded.model)
        after = loaded.model(x, **extra).logits
    assert torch.equal(before, after)


def test_a_prefix_of_real_key_values_is_the_concatenated_text(gpt2):
    prefix = install(gpt2)
    torch.manual_seed(1)
    t, x = torch.randint(6, 2000, (2, 5)), torch.randint(6, 2000, (2, 6))
    kv = recorded_key_values(gpt2, prefix, t)
    positions = torch.arange(5, 11).expand(2, 6)
    with torch.no_grad():
        expected = gpt2(torch.cat([t, x], dim=1)).logits[:, 5:]
        with prefix.active({"self": kv}):
            got = gpt2(x, position_ids=positions).logits
            padded_mask = gpt2(x, position_ids=positions, attention_mask=torch.ones_like(x)).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded_mask, expected, atol=1e-5, rtol=1e-5)


def test_rows_with_different_prefixes_equal_each_row_alone_and_beams_keep_their_row(gpt2):
    prefix = install(gpt2)
    torch.manual_seed(3)
    a = models.arch_summary(gpt2.config)
    prefixes = torch.randn(
        3, a.n_layer, 2, a.n_kv_head, 5, a.head_dim
    )  # (rows, n_layer, 2, n_kv_head, L, hd)
    x = torch.randint(6, 2000, (3, 7))
    eos = gpt2.config.eos_token_id
    settings = dict(num_beams=3, max_new_tokens=5, do_sample=False, pad_token_id=eos, eos_token_id=eos)
    with torch.no_grad():
        with prefix.active({"self": prefixes}):
            mixed = gpt2(x).logits
            beams = gpt2.generate(x, attention_mask=torch.ones_like(x), **settings)
        for row in range(3):
            with prefix.active({"self": prefixes[row : row + 1]}):
                alone = gpt2(x[row : row + 1]).logits
                one = x[row : row + 1]
                alone_beams = gpt2.generate(one, attention_mask=torch.ones_like(one), **settings)
            torch.testing.assert_close(mixed[row : row + 1], alone, atol=1e-5, rtol=1e-5)
            assert beams[row, : alone_beams.shape[1]].tolist() == alone_beams[0].tolist()


def test_a_prefix_reaches_every_bart_attention_kind_and_inputs_give_their_own_key_values():
    loaded = models.load("tiny-bart", seed=0)
    model = loaded.model.eval()
    prefix = install(model)
    torch.manual_seed(5)
    inputs = {"encoder": torch.randn(3, 128), "decoder": torch.randn(3, 128)}
    with torch.no_grad():
        kv = key_values_of_inputs(model, prefix, inputs)
    shapes = {kind: tuple(v.shape) for kind, v in kv.items()}
    assert shapes == {kind: (2, 2, 4, 3, 32) for kind in ("encoder", "decoder", "cross")}
    ids, dec = torch.randint(6, 2000, (1, 6)), torch.randint(6, 2000, (1, 4))
    with torch.no_grad():
        plain = model(input_ids=ids, decoder_input_ids=dec).logits
        for kind in kv:
            with prefix.active({kind: kv[kind].unsqueeze(0)}):
                changed = model(input_ids=ids, decoder_input_ids=dec).logits
            assert (changed - plain).abs().max() > 1e-4, kind
