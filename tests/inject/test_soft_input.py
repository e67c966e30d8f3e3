"""Soft input embeddings at filler tokens: embeddings of real tokens there are those tokens,
in one forward pass and through generate() (beam search, KV cache)."""

from __future__ import annotations

import pytest
import torch

from peftrun import models
from peftrun.methods.inject.soft_input import SoftInput

FILLER = 220


@pytest.mark.parametrize("name", models.tiny_models())
def test_embeddings_of_real_tokens_at_the_fillers_are_those_tokens(name):
    loaded = models.load(name, seed=0)
    model = loaded.model.eval()
    soft = SoftInput(model)
    t = torch.tensor([300, 301, 302])
    x = torch.randint(6, 2000, (2, 6))
    with_fillers = torch.cat([torch.full((2, 3), FILLER), x], dim=1)
    as_text = torch.cat([t.expand(2, 3), x], dim=1)
    extra = {"decoder_input_ids": torch.randint(6, 2000, (2, 4))} if loaded.arch.is_encoder_decoder else {}
    with torch.no_grad():
        expected = model(as_text, **extra).logits
        with soft.active(model.get_input_embeddings()(t)):
            got = model(with_fillers, **extra).logits
        untouched = model(with_fillers, **extra).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (untouched - expected).abs().max() > 1e-3


@pytest.mark.parametrize("name", models.tiny_models())
def test_generate_with_a_soft_prompt_equals_generate_on_the_text_with_left_padding(name):
    loaded = models.load(name, seed=0)
    model = loaded.model.eval()
    soft = SoftInput(model)
    t = torch.tensor([300, 301])
    pad = loaded.tokenizer.pad_token_id
    left = not loaded.arch.is_encoder_decoder  # decoder-only prompts are left-padded
    rows = [[FILLER, FILLER, 40, 41, 42, 43], [FILLER, FILLER, 50, 51]]
    text = [[300, 301, *row[2:]] for row in rows]

    def padded(batch):
        width = max(map(len, batch))

        def pad_row(row, value):
            room = [value] * (width - len(row))
            return room + row if left else row + room

        ids = [pad_row(r, pad) for r in batch]
        mask = [pad_row([1] * len(r), 0) for r in batch]
        return torch.tensor(ids), torch.tensor(mask)

    settings = dict(num_beams=2, max_new_tokens=5, do_sample=False, pad_token_id=pad)
    with torch.no_grad():
        ids, mask = padded(text)
        expected = model.generate(input_ids=ids, attention_mask=mask, **settings)
        ids, mask = padded(rows)
        with soft.active(model.get_input_embeddings()(t)):
            got = model.generate(input_ids=ids, attention_mask=mask, **settings)
    generated = expected.shape[1] - (ids.shape[1] if left else 0)
    assert got[:, -generated:].tolist() == expected[:, -generated:].tolist()
