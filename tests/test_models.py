"""Model families: one table says where each family keeps its parts; it must match the real models."""

from __future__ import annotations

import pytest
import torch

from peftrun import models
from peftrun.models import FAMILIES


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-bart"])
def test_every_path_in_the_family_table_names_a_real_module(name):
    loaded = models.load(name, seed=0)
    model, family = loaded.model, models.family_of(loaded.model)
    for stack in family.stacks:
        blocks = family.blocks(model, stack)
        assert len(blocks) > 0 and all(isinstance(b, torch.nn.Module) for b in blocks)
        for sublayer in family.sublayers.values():
            assert isinstance(getattr(blocks[0], sublayer), torch.nn.Module)
    for path in (family.input_stack, family.decoder_stack, family.token_embedding, family.lm_head):
        assert isinstance(family.get(model, path), torch.nn.Module), path
    assert family.get(model, family.token_embedding) is model.get_input_embeddings()
    assert family.get(model, family.lm_head) is model.get_output_embeddings()
    assert (family.get(model, family.encoder_stack) is not None) == family.encoder_decoder
    sites = models.attention_sites(model)
    assert set(sites) == set(family.attention)
    for modules in sites.values():
        for attn in modules:
            for projection in set(family.projections.values()):
                assert isinstance(getattr(attn, projection), torch.nn.Module)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-bart"])
def test_projection_slices_pick_the_q_k_v_outputs(name):
    """The q slice of the projections, applied to hidden states, is what attention uses as queries:
    checked against the module's own output widths (GPT-2: one fused [q | k | v] layer)."""
    loaded = models.load(name, seed=0)
    family, hidden = models.family_of(loaded.model), loaded.arch.hidden
    slices = family.projection_slices(hidden)
    attn = models.attention_sites(loaded.model)[next(iter(family.attention))][0]
    x = torch.randn(1, 3, hidden)
    for target, (attribute, start, end) in slices.items():
        out = getattr(attn, attribute)(x)
        assert end - start == hidden and out.shape[-1] >= end, target
    if family.name == "gpt2":
        assert {slices[t][0] for t in "qkv"} == {"c_attn"} and [slices[t][1] for t in "qkv"] == [
            0,
            hidden,
            2 * hidden,
        ]


def test_arch_summary_reads_sizes_from_the_config_names_of_each_family():
    gpt2 = models.summarize(models.hf_config("gpt2-medium"))
    assert (gpt2.n_layer, gpt2.n_encoder_layer, gpt2.hidden, gpt2.n_head, gpt2.max_positions) == (
        24,
        0,
        1024,
        16,
        1024,
    )
    bart = models.summarize(models.hf_config("facebook/bart-large"))
    assert (bart.n_layer, bart.n_encoder_layer, bart.hidden, bart.n_head) == (12, 12, 1024, 16)
    assert gpt2.shifts_positions and not bart.shifts_positions
    assert set(FAMILIES) == {"gpt2", "bart"}


def test_an_unloadable_model_is_one_line_naming_the_built_ins():
    from peftrun.errors import PeftrunError

    with pytest.raises(PeftrunError, match="tiny-gpt2") as err:
        models.hf_config("/no/such/model/folder")
    assert "\n" not in str(err.value)
