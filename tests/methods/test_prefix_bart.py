"""Prefix-tuning on BART: three independent prefixes (encoder self-attention, decoder
self-attention, decoder cross-attention), each exactly "attending to real activations".

BART adds learned position embeddings, and the original BART prefix code did not shift real
tokens' positions; to test the attention mechanism itself, exactly, these tests zero the tiny
model's position embeddings (so a token's state does not depend on where it sits).
"""

from __future__ import annotations

import pytest
import torch

from peftrun import models
from peftrun.methods import PrefixOptions
from peftrun.methods.base import attach as attach_method


@pytest.fixture
def bart():
    loaded = models.load("tiny-bart", seed=0)
    core = loaded.model.model
    with torch.no_grad():
        core.encoder.embed_positions.weight.zero_()
        core.decoder.embed_positions.weight.zero_()
    loaded.model.eval()
    return loaded


def capture_key_values(modules, run) -> torch.Tensor:
    """Run `run()` and return each module's keys/values: (B, n_layer, 2, H, T, head_dim)."""
    captured: dict[tuple[int, str], torch.Tensor] = {}
    hooks = []
    for layer, attn in enumerate(modules):
        for name in ("k_proj", "v_proj"):

            def hook(_, __, out, key=(layer, name), heads=attn.num_heads):
                captured[key] = out.view(out.shape[0], out.shape[1], heads, -1).transpose(1, 2)

            hooks.append(getattr(attn, name).register_forward_hook(hook))
    run()
    for h in hooks:
        h.remove()
    layers = [
        torch.stack([captured[(i, "k_proj")], captured[(i, "v_proj")]], dim=1) for i in range(len(modules))
    ]
    return torch.stack(layers, dim=1)


def attach(loaded, prefix_len):
    method = attach_method(loaded, PrefixOptions(prefix_len=prefix_len, mlp_hidden=32))
    method.set_training(False)
    return method


def test_decoder_self_attention_prefix_equals_running_the_decoder_on_the_sequence_first(bart):
    torch.manual_seed(0)
    src, d0, d1 = (
        torch.randint(6, 2000, (2, 7)),
        torch.randint(6, 2000, (2, 4)),
        torch.randint(6, 2000, (2, 5)),
    )
    model, core = bart.model, bart.model.model
    with torch.no_grad():
        expected = model(input_ids=src, decoder_input_ids=torch.cat([d0, d1], 1)).logits[:, 4:]
        self_attn = [layer.self_attn for layer in core.decoder.layers]
        kv = capture_key_values(self_attn, lambda: model(input_ids=src, decoder_input_ids=d0))
        method = attach(bart, prefix_len=4)
        with method.prefix_attention.active({"decoder": kv}):
            got = model(input_ids=src, decoder_input_ids=d1).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_encoder_prefix_from_real_activations_equals_encoding_the_concatenation(bart):
    torch.manual_seed(1)
    s0, s1 = torch.randint(6, 2000, (2, 3)), torch.randint(6, 2000, (2, 6))
    encoder = bart.model.model.encoder
    with torch.no_grad():
        self_attn = [layer.self_attn for layer in encoder.layers]
        full = {}
        kv = capture_key_values(
            self_attn, lambda: full.setdefault("out", encoder(torch.cat([s0, s1], 1)).last_hidden_state)
        )
        method = attach(bart, prefix_len=3)
        with method.prefix_attention.active({"encoder": kv[:, :, :, :, :3]}):
            got = encoder(s1).last_hidden_state
        alone = encoder(s1).last_hidden_state
    torch.testing.assert_close(got, full["out"][:, 3:], atol=1e-5, rtol=1e-5)
    assert (alone - full["out"][:, 3:]).abs().max() > 1e-3


def capture_outputs(modules, run) -> list[torch.Tensor]:
    """Run `run()` and return each module's output (an attention module's first output)."""
    captured: dict[int, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(
            lambda _, __, out, i=i: captured.setdefault(i, out[0] if isinstance(out, tuple) else out)
        )
        for i, module in enumerate(modules)
    ]
    run()
    for h in hooks:
        h.remove()
    return [captured[i] for i in range(len(modules))]


def test_cross_attention_prefix_equals_extra_encoder_states_and_changes_cross_attention_only(bart):
    torch.manual_seed(2)
    s0, s1, dec = (
        torch.randint(6, 2000, (2, 4)),
        torch.randint(6, 2000, (2, 5)),
        torch.randint(6, 2000, (2, 6)),
    )
    model, core = bart.model, bart.model.model
    first = core.decoder.layers[0]
    with torch.no_grad():
        states = core.encoder(torch.cat([s0, s1], 1)).last_hidden_state
        expected = model(encoder_outputs=(states,), decoder_input_ids=dec).logits
        cross = [layer.encoder_attn for layer in core.decoder.layers]
        kv = capture_key_values(cross, lambda: model(encoder_outputs=(states,), decoder_input_ids=dec))
        method = attach(bart, prefix_len=4)

        def first_layer_attention():
            """Decoder layer 0's self-attention and cross-attention outputs."""
            return capture_outputs(
                [first.self_attn, first.encoder_attn],
                lambda: model(encoder_outputs=(states[:, 4:],), decoder_input_ids=dec),
            )

        plain_self, plain_cross = first_layer_attention()
        with method.prefix_attention.active({"cross": kv[:, :, :, :, :4]}):
            got = model(encoder_outputs=(states[:, 4:],), decoder_input_ids=dec).logits
            encoded_with_cross_prefix = core.encoder(s1).last_hidden_state
            prefixed_self, prefixed_cross = first_layer_attention()
    # The cross prefix reaches cross-attention only: not the encoder, not decoder self-attention
    # (layer 0's self-attention sees only the decoder inputs), and it does change cross-attention.
    torch.testing.assert_close(encoded_with_cross_prefix, core.encoder(s1).last_hidden_state)
    torch.testing.assert_close(prefixed_self, plain_self)
    assert (prefixed_cross - plain_cross).abs().max() > 1e-3
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_three_prefixes_are_independent_and_every_layer_gets_gradients(bart):
    method = attach_method(bart, PrefixOptions(prefix_len=3, mlp_hidden=16))
    method.set_training(True)
    assert set(method.tables) == {"encoder", "decoder", "cross"}
    ids = {id(p) for p in method.trainable_parameters()}
    assert (
        len(ids) == len(method.trainable_parameters()) == 3 * 5
    )  # embedding + 2 linear layers (w, b) each, unshared
    src, dec = torch.randint(6, 2000, (2, 6)), torch.randint(6, 2000, (2, 5))
    with method.active(2):
        kv = method.key_values()
        kv_sum = sum((v * torch.randn_like(v)).sum() for v in kv.values())
        loss = bart.model(input_ids=src, decoder_input_ids=dec, labels=dec).loss
    (loss + 0 * kv_sum).backward()
    for kind, table in method.tables.items():
        for p in table.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, kind
    # Every layer of every kind influences the loss: its prefix K/V slice gets gradient.
    with method.active(2):
        kv = {kind: v.detach().requires_grad_(True) for kind, v in method.key_values().items()}
        with method.prefix_attention.active({kind: v.unsqueeze(0) for kind, v in kv.items()}):
            bart.model(input_ids=src, decoder_input_ids=dec, labels=dec).loss.backward()
    for kind, v in kv.items():
        per_layer = v.grad.abs().flatten(1).sum(1)
        assert (per_layer > 0).all(), kind


def test_bart_large_prefix_counts():
    from transformers import AutoModelForSeq2SeqLM

    config = models.hf_config("facebook/bart-large")
    with torch.device("meta"):
        model = AutoModelForSeq2SeqLM.from_config(config)
    loaded = models.LoadedModel(model, None, models.arch_summary(config), "facebook/bart-large")
    counts = attach_method(loaded, PrefixOptions(prefix_len=100, mlp_hidden=800)).counts()
    assert (counts.base, counts.trainable, counts.stored) == (406_291_456, 61_823_328, 7_372_800)
    assert round(counts.as_dict()["stored_pct"], 2) == 1.81


def test_beam_search_with_a_prefix_batch_equals_each_source_alone(bart):
    from peftrun.config import DataConfig, DecodeConfig
    from peftrun.data.formats import text_format
    from peftrun.decode import generate

    torch.manual_seed(3)
    method = attach_method(bart, PrefixOptions(prefix_len=4, mlp_hidden=16))
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.mul_(50)
    fmt = text_format(bart, DataConfig(dataset="xsum"))
    cfg = DecodeConfig(
        num_beams=3,
        max_new_tokens=None,
        max_length=12,
        min_length=4,
        no_repeat_ngram_size=3,
        length_penalty=0.8,
        early_stopping=True,
        forced_bos=True,
        batch_size=4,
        banned_strings=(),
    )
    sources = [
        "The council said the road would close.",
        "A short one.",
        "Rain fell across the north on Sunday night.",
        "Scores of fans",
    ]
    together = generate(bart.model, method, fmt, sources, cfg, torch.device("cpu"))
    alone = [
        generate(bart.model, method, fmt, [s], cfg.model_copy(update={"batch_size": 1}), torch.device("cpu"))[
            0
        ]
        for s in sources
    ]
    assert together == alone
