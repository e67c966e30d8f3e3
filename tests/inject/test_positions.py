"""Shifted positions: while a shift of L is active, real tokens are numbered L … L+T−1, exactly
as if the model were given those position ids (the original prefix code's numbering), whichever
way the family shifts them: its learned position table, or the position_ids its decoder stack
reads (rotary models). The position-ids route runs on every decoder-only family too (a variant of
its table entry), since GPT-2's stack reads position_ids as well."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from peftrun import models
from peftrun.families import FAMILIES, POSITION_IDS
from peftrun.methods.inject import positions

OWN = [name for name in models.tiny_models() if models.arch_summary(models.hf_config(name)).shifts_positions]
DECODERS = models.tiny_models(decoder_only=True)
CASES = [(name, "own") for name in OWN] + [(name, POSITION_IDS) for name in DECODERS]


@pytest.fixture(params=CASES, ids=lambda case: f"{case[0]}-{case[1]}")
def shifted(request, monkeypatch):
    name, route = request.param
    loaded = models.load(name, seed=0)
    if route != "own":
        family = FAMILIES[loaded.arch.family]
        variant = dataclasses.replace(family, position_shift=POSITION_IDS, position_embedding=None)
        monkeypatch.setitem(FAMILIES, family.name, variant)
    model = loaded.model.eval()
    return model, positions.install(model)


def test_a_shift_numbers_real_tokens_from_the_offset(shifted):
    model, shift = shifted
    x = torch.randint(6, 2000, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x, position_ids=torch.arange(4, 11).expand(2, 7)).logits
        plain = model(x).logits
        with shift.active(4):
            got = model(x).logits
            masked = model(x, attention_mask=torch.ones_like(x)).logits
        with shift.active(3):  # ids the caller gives are shifted too: 1 … 7 become 4 … 10
            given = model(x, position_ids=torch.arange(1, 8).expand(2, 7)).logits
        after = model(x).logits
    for value in (got, masked, given):
        torch.testing.assert_close(value, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, plain)
    # Rotary attention is relative: a shift of every token is invisible until some keys sit at
    # other positions (a cache, next test; a prefix). Absolute positions show it at once.
    if getattr(model.config, "rope_parameters", None) is None:
        assert (plain - expected).abs().max() > 1e-3


def test_each_row_gets_its_own_offset_and_cached_steps_continue_from_it(shifted):
    model, shift = shifted
    x = torch.randint(6, 2000, (2, 7), generator=torch.Generator().manual_seed(1))
    offsets = torch.tensor([3, 0])
    with torch.no_grad():
        expected = torch.cat(
            [
                model(x[r : r + 1], position_ids=torch.arange(o, o + 7)[None]).logits
                for r, o in enumerate([3, 0])
            ]
        )
        with shift.active(offsets):
            got = model(x).logits
            first = model(x[:, :6], use_cache=True)
            step = model(x[:, 6:], past_key_values=first.past_key_values).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[:, -1], expected[:, -1], atol=1e-5, rtol=1e-5)


def test_a_family_that_does_not_shift_positions_refuses_a_shift(monkeypatch):
    loaded = models.load(DECODERS[0], seed=0)
    family = FAMILIES[loaded.arch.family]
    monkeypatch.setitem(
        FAMILIES, family.name, dataclasses.replace(family, position_shift=None, position_embedding=None)
    )
    with pytest.raises(ValueError, match="do not shift positions"):
        positions.install(loaded.model)
