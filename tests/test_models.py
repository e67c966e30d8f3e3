"""Model families: one table says where each family keeps its parts and what shapes, positions,
layers and tokens it has; every fact must match the real models. Each test runs over every family
(its built-in tiny model), so a new `FAMILIES` entry is checked by all of them."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from peftrun import families, models
from peftrun.families import FAMILIES, LEARNED_TABLE, PATH_FACTS, POSITION_IDS
from peftrun.methods.inject.prefix_kv import install

TINY = models.tiny_models()
# Model types that share a family (its layout) get the same checks on their own tiny models.
SHARING = tuple(name for name in models.BUILTIN if name not in TINY and name.startswith("tiny-"))


@pytest.fixture(scope="module", params=TINY + SHARING)
def tiny(request):
    loaded = models.load(request.param, seed=0)
    loaded.model.eval()
    return loaded


def forward_inputs(loaded, length: int = 5) -> dict[str, torch.Tensor]:
    ids = torch.randint(6, 200, (2, length), generator=torch.Generator().manual_seed(0))
    extra = {"decoder_input_ids": ids[:, :3]} if loaded.arch.is_encoder_decoder else {}
    return {"input_ids": ids, **extra}


def test_every_family_has_a_tiny_model_and_every_tiny_model_a_family():
    assert sorted(models.BUILTIN[name]["model_type"] for name in TINY) == sorted(families.family_names())
    assert {spec["model_type"] for spec in models.BUILTIN.values()} <= set(FAMILIES)
    for model_type, family in FAMILIES.items():  # a model type shares a family only under its name
        assert FAMILIES[family.name] is family, model_type


def test_every_path_in_the_family_table_names_a_real_module(tiny):
    model, family = tiny.model, families.family_of(tiny.model)
    for stack in family.stacks:
        blocks = family.blocks(model, stack)
        assert len(blocks) > 0 and all(isinstance(b, torch.nn.Module) for b in blocks)
        for sublayer in family.sublayers.values():
            assert isinstance(getattr(blocks[0], sublayer), torch.nn.Module)
    for fact in PATH_FACTS:
        path = getattr(family, fact)
        if path is not None and fact not in family.optional:
            assert isinstance(family.get(model, path), torch.nn.Module), fact
    assert family.get(model, family.token_embedding) is model.get_input_embeddings()
    assert family.get(model, family.lm_head) is model.get_output_embeddings()
    assert (family.get(model, family.encoder_stack) is not None) == family.encoder_decoder
    assert family.get(model, family.final_norm) or family.get(model, family.embedding_norm)
    sites = families.attention_sites(model)
    assert set(sites) == set(family.attention)
    for modules in sites.values():
        for attn in modules:
            for projection in set(family.projections.values()):
                assert isinstance(getattr(attn, projection), torch.nn.Module)


def test_a_mistyped_path_raises_and_only_a_declared_optional_one_may_be_absent(tiny):
    model, family = tiny.model, families.family_of(tiny.model)
    with pytest.raises(AttributeError, match="no 'nope'"):
        family.get(model, "nope")
    with pytest.raises(AttributeError):
        family.get(model, family.token_embedding + "x")
    owner = family.decoder_stack
    absent = dataclasses.replace(family, final_norm=f"{owner}.no_such_norm", optional=("final_norm",))
    assert absent.get(model, absent.final_norm) is None  # declared optional, its owner exists
    mistyped = dataclasses.replace(family, final_norm=f"{owner}x.no_such_norm", optional=("final_norm",))
    with pytest.raises(AttributeError):
        mistyped.get(model, mistyped.final_norm)  # optional, but its owner is a typo
    with pytest.raises(AttributeError):
        dataclasses.replace(family, final_norm=f"{owner}.no_such_norm", optional=()).get(
            model, f"{owner}.no_such_norm"
        )


def test_projection_slices_are_what_attention_reads_as_keys_and_values(tiny):
    """Applied to a layer's input, the v slice of the projections is exactly the values attention
    gets (n_kv_head × head_dim), the k slice as wide as its keys, the q slice n_head × head_dim; a
    fused projection's slices tile its whole output."""
    model, arch, family = tiny.model, tiny.arch, families.family_of(tiny.model)
    kind = next(iter(family.attention))
    attn = families.attention_sites(model)[kind][0]
    inputs, seen = [], {}

    def record_input(_module, args, kwargs):
        inputs.append(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])

    attn.register_forward_pre_hook(record_input, with_kwargs=True)
    prefix = install(model)
    with torch.no_grad(), prefix.recording() as recorded:
        model(**forward_inputs(tiny))
        seen = recorded[(kind, 0)]
    key, value = seen  # (B, n_kv_head, T, head_dim)
    assert tuple(key.shape[1:2]) + tuple(key.shape[3:]) == (arch.n_kv_head, arch.head_dim)
    slices = family.projection_slices(arch)
    widths = {t: end - start for t, (_, start, end) in slices.items()}
    assert widths == {"q": arch.n_head * arch.head_dim, "k": arch.n_kv_head * arch.head_dim,
                      "v": arch.n_kv_head * arch.head_dim, "o": arch.hidden}  # fmt: skip
    x = inputs[0]
    with torch.no_grad():
        name, start, end = slices["v"]
        values = getattr(attn, name)(x)[..., start:end]
    batch, length = values.shape[:2]
    as_heads = values.view(batch, length, arch.n_kv_head, arch.head_dim).transpose(1, 2)
    torch.testing.assert_close(as_heads, value, atol=1e-6, rtol=1e-6)
    for name in set(family.projections.values()):
        ends = sorted((start, end) for n, start, end in slices.values() if n == name)
        with torch.no_grad():
            out = getattr(attn, name)(
                x if name != family.projections["o"] else torch.randn(1, 2, widths["q"])
            )
        assert ends[0][0] == 0 and ends[-1][1] == out.shape[-1], name
        assert all(a[1] == b[0] for a, b in zip(ends, ends[1:], strict=False)), name


def test_conv1d_says_how_the_projection_weights_are_stored(tiny):
    """conv1d: y = x W + b with W (in, out), as GPT-2's Conv1D and peft's fan_in_fan_out; else an
    nn.Linear's y = x Wᵀ + b."""
    family = families.family_of(tiny.model)
    attn = families.attention_sites(tiny.model)[next(iter(family.attention))][0]
    layer = getattr(attn, family.projections["q"])
    x = torch.randn(3, tiny.arch.hidden)
    weight = layer.weight if family.conv1d else layer.weight.t()
    bias = layer.bias if layer.bias is not None else 0
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x @ weight + bias)


def test_norm_names_the_kind_of_every_norm_in_the_blocks(tiny):
    family = families.family_of(tiny.model)
    norms = [
        module
        for stack in family.stacks
        for block in family.blocks(tiny.model, stack)
        for module in block.modules()
        if "norm" in type(module).__name__.lower()
    ]
    assert norms
    for module in norms:
        if family.norm == "layernorm":
            assert isinstance(module, torch.nn.LayerNorm)
        else:
            assert "rmsnorm" in type(module).__name__.lower() and getattr(module, "bias", None) is None


def test_position_shift_is_what_the_model_has(tiny):
    """A learned-table family has an embedding table with at least max_positions rows; a
    position-ids family's decoder stack takes position_ids; a family without a shift says so."""
    family = families.family_of(tiny.model)
    if family.position_shift == LEARNED_TABLE:
        table = family.get(tiny.model, family.position_embedding)
        assert isinstance(table, torch.nn.Embedding) and table.num_embeddings >= tiny.arch.max_positions
    elif family.position_shift == POSITION_IDS:
        import inspect

        stack = family.get(tiny.model, family.decoder_stack)
        assert "position_ids" in inspect.signature(stack.forward).parameters
    assert tiny.arch.shifts_positions == (family.position_shift is not None)


def test_special_tokens_are_single_tokens_of_the_tokenizer_and_the_models_own_ids(tiny):
    family = families.family_of(tiny.model)
    tokenizer, config = tiny.tokenizer, tiny.model.config
    assert {"bos_token", "eos_token", "pad_token"} <= set(family.special_tokens)
    for role, token in family.special_tokens.items():
        assert getattr(tokenizer, role) == token
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1, role
    assert tokenizer.eos_token_id == config.eos_token_id and tokenizer.bos_token_id == config.bos_token_id
    if config.pad_token_id is not None:
        assert tokenizer.pad_token_id == config.pad_token_id


def test_arch_summary_reads_sizes_from_the_config_names_of_each_family():
    gpt2 = models.arch_summary(models.hf_config("gpt2-medium"))
    assert (gpt2.n_layer, gpt2.n_encoder_layer, gpt2.hidden, gpt2.n_head, gpt2.max_positions) == (
        24,
        0,
        1024,
        16,
        1024,
    )
    assert (gpt2.n_kv_head, gpt2.head_dim) == (16, 64)  # derived: as many key/value heads, d / heads
    bart = models.arch_summary(models.hf_config("facebook/bart-large"))
    assert (bart.n_layer, bart.n_encoder_layer, bart.hidden, bart.n_head) == (12, 12, 1024, 16)
    assert (bart.n_kv_head, bart.head_dim) == (16, 64)
    assert gpt2.shifts_positions and not bart.shifts_positions


def test_arch_summary_reads_key_value_heads_and_head_size_where_the_family_names_them():
    from types import SimpleNamespace

    family = dataclasses.replace(
        FAMILIES["gpt2"], sizes={**FAMILIES["gpt2"].sizes, "n_kv_head": "num_kv", "head_dim": "dim_per_head"}
    )
    config = SimpleNamespace(model_type="gpt2", n_layer=2, n_embd=96, n_head=6, n_positions=64)
    try:
        FAMILIES["gpt2"], saved = family, FAMILIES["gpt2"]
        gqa = models.arch_summary(SimpleNamespace(**vars(config), num_kv=2, dim_per_head=32))
        unset = models.arch_summary(SimpleNamespace(**vars(config), num_kv=None, dim_per_head=None))
    finally:
        FAMILIES["gpt2"] = saved
    assert (gqa.n_head, gqa.n_kv_head, gqa.head_dim) == (6, 2, 32)
    assert (unset.n_kv_head, unset.head_dim) == (6, 16)


def test_a_family_without_a_fact_is_refused():
    gpt2 = FAMILIES["gpt2"]
    fields = {f.name: getattr(gpt2, f.name) for f in dataclasses.fields(families.Family) if f.init}
    for required in ("conv1d", "norm", "position_shift", "special_tokens"):
        with pytest.raises(TypeError):
            families.Family(**{k: v for k, v in fields.items() if k != required})
    sizes = {k: v for k, v in gpt2.sizes.items() if k != "n_kv_head"}
    with pytest.raises(ValueError, match="sizes"):
        families.Family(**{**fields, "sizes": sizes})
    with pytest.raises(ValueError, match="position_embedding"):
        families.Family(**{**fields, "position_embedding": None})


def test_an_unloadable_model_is_one_line_naming_the_built_ins():
    from peftrun.errors import PeftrunError

    with pytest.raises(PeftrunError, match="tiny-gpt2") as err:
        models.hf_config("/no/such/model/folder")
    assert "\n" not in str(err.value)
