"""Bottleneck adapters (lin and houlsby layouts) on the tiny models, plus pinned real-size counts."""

from __future__ import annotations

import pytest
import torch
from method_helpers import batch, logits_of
from torch.nn import functional as F

from peftrun import config, models
from peftrun.errors import PeftrunError
from peftrun.methods import BottleneckAdapterOptions
from peftrun.methods.adapter import BottleneckAdapter
from peftrun.methods.base import attach

MODELS = models.tiny_models()  # one per family: a new family runs every case
LAYOUTS = ("lin", "houlsby")


def build(model_name: str, layout: str, seed: int = 0):
    loaded = models.load(model_name, seed=seed)
    return loaded, attach(loaded, BottleneckAdapterOptions(layout=layout, bottleneck=4))


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_zero_up_is_identity_and_adapters_are_applied(layout, model_name):
    loaded = models.load(model_name, seed=0)
    inputs = batch(loaded)
    loaded.model.eval()
    with torch.no_grad():
        reference = loaded.model(**inputs).logits
    method = attach(loaded, BottleneckAdapterOptions(layout=layout, bottleneck=4))
    layers = loaded.arch.n_layer + loaded.arch.n_encoder_layer
    assert len(method.adapters) == layers * (1 if layout == "lin" else 2)
    assert torch.equal(logits_of(method, inputs), reference)  # up = 0: the pretrained model
    with torch.no_grad():
        for adapter in method.adapters:
            adapter.up.weight.normal_(0, 0.05)
    assert not torch.allclose(logits_of(method, inputs), reference, atol=1e-4)


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradients_freezing_loss_and_roundtrip(layout, model_name, tmp_path):
    loaded, method = build(model_name, layout)
    trainable = {id(p) for p in method.trainable_parameters()}
    before = {
        name: p.detach().clone() for name, p in method.model.named_parameters() if id(p) not in trainable
    }
    inputs = batch(loaded)

    # Only adapter parameters receive gradients; base stays in eval mode, adapters train.
    method.set_training(True)
    assert not method.model.training and all(a.training for a in method.adapters)
    method.model(**inputs).loss.backward()
    for name, p in method.model.named_parameters():
        if id(p) in trainable:
            assert name.startswith("peft_adapters."), name
        else:
            assert p.grad is None and not p.requires_grad, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.trainable_parameters())
    method.model.zero_grad(set_to_none=True)

    # Loss decreases over 10 AdamW steps on a repeated batch; frozen weights bit-identical.
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = method.model(**inputs).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
    for name, p in method.model.named_parameters():
        if id(p) not in trainable:
            assert torch.equal(p, before[name]), name

    # Only adapter tensors are saved; save -> fresh model + load -> identical logits.
    expected = logits_of(method, inputs)
    method.save(tmp_path)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "adapter.safetensors"))
    assert sum(t.numel() for t in saved.values()) == method.counts().stored
    _, fresh = build(model_name, layout, seed=0)
    fresh.load(tmp_path)
    assert torch.equal(logits_of(fresh, inputs), expected)


def blocks(model) -> list[torch.nn.Module]:
    """Every transformer block (GPT-2's h; BART's encoder then decoder layers; Llama's layers)."""
    if hasattr(model, "transformer"):
        return list(model.transformer.h)
    if hasattr(model.model, "layers"):
        return list(model.model.layers)
    return [*model.model.encoder.layers, *model.model.decoder.layers]


def hidden_of(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def capture_block_outputs(model, inputs) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each block's output hidden states (after every hook already on it) and the logits."""
    outputs, handles = [], []
    for block in blocks(model):
        handles.append(block.register_forward_hook(lambda _, __, out: outputs.append(hidden_of(out).clone())))
    with torch.no_grad():
        logits = model(**inputs).logits
    for handle in handles:
        handle.remove()
    return outputs, logits


@pytest.mark.parametrize("model_name", MODELS)
def test_lin_adapter_rewrites_each_blocks_output_after_the_ffn_residual(model_name):
    """Lin et al. 2020 (docs/paper.md#adapters): one adapter per block, on the block's output h
    (after the FFN residual): h + up(ReLU(down(LN(h)))). The reference is the plain model with
    that function, written out here, hooked on every block's output."""
    loaded, method = build(model_name, "lin")
    d, b = loaded.arch.hidden, 4
    generator = torch.Generator().manual_seed(0)
    weights = {
        "norm.weight": 1 + 0.3 * torch.randn(d, generator=generator),
        "norm.bias": 0.1 * torch.randn(d, generator=generator),
        "down.weight": 0.3 * torch.randn(b, d, generator=generator),
        "down.bias": 0.3 * torch.randn(b, generator=generator),
        "up.weight": 0.5 * torch.randn(d, b, generator=generator),
        "up.bias": 0.1 * torch.randn(d, generator=generator),
    }
    with torch.no_grad():  # every adapter the same known function
        for adapter in method.adapters:
            for name, parameter in adapter.named_parameters():
                parameter.copy_(weights[name])

    def lin_adapter(h: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(h, (d,), weights["norm.weight"], weights["norm.bias"], eps=1e-5)
        return h + F.linear(
            F.relu(F.linear(normed, weights["down.weight"], weights["down.bias"])),
            weights["up.weight"],
            weights["up.bias"],
        )

    reference = models.load(model_name, seed=0).model.eval()
    for block in blocks(reference):
        block.register_forward_hook(
            lambda _, __, out: (lin_adapter(out[0]), *out[1:]) if isinstance(out, tuple) else lin_adapter(out)
        )
    inputs = batch(loaded)
    method.set_training(False)
    got_blocks, got_logits = capture_block_outputs(method.model, inputs)
    expected_blocks, expected_logits = capture_block_outputs(reference, inputs)
    assert len(got_blocks) == len(expected_blocks) == loaded.arch.n_layer + loaded.arch.n_encoder_layer
    for layer, (got, expected) in enumerate(zip(got_blocks, expected_blocks, strict=True)):
        torch.testing.assert_close(
            got, expected, atol=1e-4, rtol=1e-4, msg=lambda m, layer=layer: f"block {layer}: {m}"
        )
    torch.testing.assert_close(got_logits, expected_logits, atol=1e-4, rtol=1e-4)


def counts(name: str, **options):
    method = BottleneckAdapter(models.skeleton(name), BottleneckAdapterOptions(**options))
    return method.bottleneck, method.counts()


def test_pinned_counts_gpt2_medium():
    d, layers = 1024, 24
    # lin: per block LayerNorm (2d) + down (d·b + b) + up (b·d + d).
    _, small = counts("gpt2-medium", bottleneck=6)
    assert small.trainable == small.stored == layers * (2 * d * 6 + 6 + 3 * d) == 368_784
    assert small.base == 354_823_168
    assert 0.0009 < small.trainable / small.base < 0.0011  # Lin et al.'s ~0.1%
    _, large = counts("gpt2-medium", bottleneck=215)
    assert large.trainable == layers * (2 * d * 215 + 215 + 3 * d) == 10_646_568
    assert 0.029 < large.trainable / large.base < 0.031  # ~3%
    # houlsby: two per block, no LayerNorm.
    assert counts("gpt2-medium", layout="houlsby", bottleneck=6)[1].trainable == 2 * layers * (
        2 * d * 6 + 6 + d
    )
    # target_fraction recovers the paper's bottlenecks.
    assert counts("gpt2-medium", target_fraction=0.001)[0] == 6
    assert counts("gpt2-medium", target_fraction=0.03)[0] == 215
    assert counts("gpt2-medium", layout="houlsby", target_fraction=0.03)[0] == 108


def test_pinned_counts_bart_large():
    d, layers = 1024, 24  # 12 encoder + 12 decoder layers
    assert counts("facebook/bart-large", bottleneck=6)[1].trainable == layers * (2 * d * 6 + 6 + 3 * d)
    assert counts("facebook/bart-large", layout="houlsby", bottleneck=215)[1].trainable == 21_194_832


@pytest.mark.parametrize("size", [{}, {"bottleneck": 6, "target_fraction": 0.01}])
def test_exactly_one_size_option(size):
    data = {
        "model": {"name": "gpt2-medium"},
        "data": {"dataset": "e2e"},
        "method": {"kind": "adapter", **size},
        "train": {"loss_reduction": "token_mean"},
    }
    with pytest.raises(
        PeftrunError, match="exactly one of method.bottleneck and method.target_fraction"
    ) as err:
        config.build(data)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [{"bottleneck": 0}, {"target_fraction": 1.5}, {"target_fraction": 0.0}])
def test_out_of_range_sizes_rejected(bad):
    data = {
        "model": {"name": "gpt2-medium"},
        "data": {"dataset": "e2e"},
        "method": {"kind": "adapter", **bad},
        "train": {"loss_reduction": "token_mean"},
    }
    with pytest.raises(PeftrunError, match="config error: method"):
        config.build(data)
