"""top-k, bitfit, feature-extraction and LoRA on the tiny models, plus pinned counts at real sizes."""

from __future__ import annotations

import pytest
import torch
from method_helpers import batch, logits_of

from peftrun import models
from peftrun.errors import PeftrunError
from peftrun.methods import LoRAOptions, TopKOptions, options_for
from peftrun.methods.base import attach

CASES = {
    "top-k": {"k": 1},
    "bitfit": {},
    "feature-extraction": {},
    "lora": {"rank": 2},
}
MODELS = models.tiny_models()  # one per family: a new family runs every case


def build(model_name: str, kind: str, seed: int = 0, **overrides):
    loaded = models.load(model_name, seed=seed)
    options = options_for(kind, **{**CASES[kind], **overrides})
    return loaded, attach(loaded, options)


def loss_of(method, inputs) -> torch.Tensor:
    with method.active(inputs["input_ids"].shape[0]):
        return method.model(**inputs).loss


def train(method, inputs, steps: int, lr: float = 1e-2) -> list[float]:
    method.set_training(True)
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_of(method, inputs)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def has_biases(model_name: str) -> bool:
    return any(name.endswith("bias") for name, _ in models.load(model_name).model.named_parameters())


# A family whose tiny model has no biases (Llama) runs BitFit on its relative with some (Qwen2: q/k/v).
WITH_BIASES = ("tiny-qwen2",)


@pytest.mark.parametrize("model_name", MODELS + WITH_BIASES)
@pytest.mark.parametrize("kind", list(CASES))
def test_gradients_freezing_loss_and_roundtrip(kind, model_name, tmp_path):
    if model_name in WITH_BIASES and kind != "bitfit":
        pytest.skip("the family's own tiny model runs this case")
    if kind == "bitfit" and not has_biases(model_name):
        with pytest.raises(PeftrunError, match="bias terms and .* has none") as err:
            build(model_name, kind)
        assert "\n" not in str(err.value) and models.arch_summary(models.hf_config(model_name)).family in str(
            err.value
        )
        return
    loaded, method = build(model_name, kind)
    trainable = {id(p) for p in method.trainable_parameters()}
    assert trainable
    before = {
        name: p.detach().clone() for name, p in method.model.named_parameters() if id(p) not in trainable
    }

    # Only the method's parameters receive gradients.
    inputs = batch(loaded)
    method.set_training(True)
    loss_of(method, inputs).backward()
    for name, p in method.model.named_parameters():
        if id(p) in trainable:
            assert p.requires_grad, name
        else:
            assert p.grad is None and not p.requires_grad, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.trainable_parameters())
    method.model.zero_grad(set_to_none=True)

    # Loss decreases on a repeated batch; frozen weights stay bit-identical.
    losses = train(method, inputs, steps=10)
    assert losses[-1] < losses[0] - 0.1, losses
    for name, p in method.model.named_parameters():
        if id(p) not in trainable:
            assert torch.equal(p, before[name]), name

    # save -> fresh model + load -> identical logits.
    expected = logits_of(method, inputs)
    method.save(tmp_path)
    _, fresh = build(model_name, kind, seed=0)
    fresh.load(tmp_path)
    assert torch.equal(logits_of(fresh, inputs), expected)


@pytest.mark.parametrize("model_name", MODELS)
def test_feature_extraction_head_is_untied_copy(model_name):
    loaded = models.load(model_name, seed=0)
    original = loaded.model.lm_head.weight.detach().clone()
    inputs = batch(loaded)
    loaded.model.eval()
    with torch.no_grad():
        reference = loaded.model(**inputs).logits
    method = attach(loaded, options_for("feature-extraction"))
    head = method.model.lm_head.weight
    assert torch.equal(head, original)
    assert head.data_ptr() != method.model.get_input_embeddings().weight.data_ptr()
    assert torch.equal(logits_of(method, inputs), reference)
    train(method, inputs, steps=2)
    assert not torch.equal(head, original)
    assert torch.equal(method.model.get_input_embeddings().weight, original)  # embedding untouched


@pytest.mark.parametrize("model_name", MODELS)
def test_lora_zero_b_is_identity_and_merge_matches(model_name, tmp_path):
    loaded = models.load(model_name, seed=0)
    inputs = batch(loaded)
    loaded.model.eval()
    with torch.no_grad():
        reference = loaded.model(**inputs).logits
    method = attach(loaded, LoRAOptions(rank=2))
    assert torch.equal(logits_of(method, inputs), reference)  # B = 0: the pretrained model

    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in method.model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.05)
    unmerged = logits_of(method, inputs)
    assert not torch.allclose(unmerged, reference, atol=1e-4)
    method.save(tmp_path)
    merged_loaded = models.load(model_name, seed=0)
    merged = attach(merged_loaded, LoRAOptions(rank=2, merge=True))
    merged.load(tmp_path)
    assert merged.merged
    torch.testing.assert_close(logits_of(merged, inputs), unmerged, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_name", MODELS)
def test_a_lora_on_a_bf16_base_gives_bf16_outputs_outside_active_too(model_name):
    """A and B are fp32 beside a bf16 frozen base (`train.precision: bf16-frozen`): the update is
    cast back to the layer's output dtype both inside `active()` (its rows only) and outside it
    (every row: a plain forward of the model), which then give the same logits."""
    loaded = models.load(model_name, seed=0)
    loaded.model.to(torch.bfloat16).eval()
    inputs = batch(loaded)
    with torch.no_grad():
        base = loaded.model(**inputs).logits
    method = attach(loaded, LoRAOptions(rank=2))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in method.model.named_parameters():
            if ".lora_B." in name:
                assert p.dtype == torch.float32
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    inside = logits_of(method, inputs)
    with torch.no_grad():
        outside = method.model(**inputs).logits
    assert outside.dtype == inside.dtype == torch.bfloat16
    torch.testing.assert_close(outside, inside)
    assert not torch.equal(outside, base)  # the LoRA applied


def test_gpt2_lora_leaves_k_slice_unchanged():
    loaded = models.load("tiny-gpt2", seed=0)
    d = loaded.arch.hidden
    c_attn = loaded.model.transformer.h[0].attn.c_attn
    x = torch.randn(2, 5, d)
    with torch.no_grad():
        before = c_attn(x)
    method = attach(loaded, LoRAOptions(rank=2))
    layer = method.model.transformer.h[0].attn.c_attn
    with torch.no_grad():
        for p in layer.lora_B.values():
            p.normal_()
        after = layer(x)
    assert torch.equal(after[..., d : 2 * d], before[..., d : 2 * d])  # k untouched
    assert not torch.allclose(after[..., :d], before[..., :d])  # q adapted
    assert not torch.allclose(after[..., 2 * d :], before[..., 2 * d :])  # v adapted


def known_low_rank(rank: int, d: int, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Fixed non-zero A (r x d_in) and B (d_out x r) for q and v."""
    generator = torch.Generator().manual_seed(seed)
    return {
        t: (torch.randn(rank, d, generator=generator), torch.randn(d, rank, generator=generator))
        for t in "qv"
    }


RANK, ALPHA = 4, 8.0  # alpha / r = 2, so scaling by alpha (8) or not at all (1) gives other outputs


def test_lora_gpt2_fused_qkv_output_is_wx_plus_alpha_over_r_times_bax():
    """Hu et al. 2021, eq. (3) with Sec. 4.1's scaling: h = W x + (alpha / r) B A x on W_q and W_v.
    GPT-2's c_attn is one Conv1D, y = x W + b with W (d, 3d): q, k, v are columns [0:d], [d:2d],
    [2d:3d]; only q's and v's columns get their update."""
    loaded = models.load("tiny-gpt2", seed=0)
    d = loaded.arch.hidden
    original = loaded.model.transformer.h[1].attn.c_attn
    W, b = original.weight.detach().clone(), original.bias.detach().clone()
    method = attach(loaded, LoRAOptions(rank=RANK, alpha=ALPHA))
    method.set_training(False)
    layer = loaded.model.transformer.h[1].attn.c_attn  # now wrapped
    low_rank = known_low_rank(RANK, d)
    with torch.no_grad():
        for target, (A, B) in low_rank.items():
            layer.lora_A[target].copy_(A)
            layer.lora_B[target].copy_(B)
        x = torch.randn(2, 5, d, generator=torch.Generator().manual_seed(1))
        got = layer(x)
    expected = x @ W + b
    for target, columns in (("q", slice(0, d)), ("v", slice(2 * d, 3 * d))):
        A, B = low_rank[target]
        expected[..., columns] += (ALPHA / RANK) * (x @ A.T) @ B.T
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_lora_bart_projection_output_is_wx_plus_alpha_over_r_times_bax():
    """As above for BART's nn.Linear projections (y = x W^T + b), here in cross-attention; k stays W x."""
    loaded = models.load("tiny-bart", seed=0)
    d = loaded.arch.hidden
    attn = loaded.model.model.decoder.layers[1].encoder_attn
    plain = {
        t: (
            getattr(attn, f"{t}_proj").weight.detach().clone(),
            getattr(attn, f"{t}_proj").bias.detach().clone(),
        )
        for t in "qkv"
    }
    method = attach(loaded, LoRAOptions(rank=RANK, alpha=ALPHA))
    method.set_training(False)
    low_rank = known_low_rank(RANK, d)
    x = torch.randn(2, 5, d, generator=torch.Generator().manual_seed(1))
    for target, (A, B) in low_rank.items():
        layer = getattr(attn, f"{target}_proj")
        with torch.no_grad():
            layer.lora_A[target].copy_(A)
            layer.lora_B[target].copy_(B)
            got = layer(x)
        W, b = plain[target]
        torch.testing.assert_close(got, x @ W.T + b + (ALPHA / RANK) * (x @ A.T) @ B.T, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        W, b = plain["k"]
        torch.testing.assert_close(attn.k_proj(x), x @ W.T + b)


def counts(name: str, kind: str, **options):
    return attach(models.skeleton(name), options_for(kind, **options)).counts()


def test_pinned_counts_gpt2_medium():
    d, layers = 1024, 24
    # BitFit: per block ln_1 (d) + c_attn (3d) + attn.c_proj (d) + ln_2 (d) + c_fc (4d) + mlp.c_proj (d)
    # = 11d = 11,264 biases; 24 blocks + ln_f.bias (d): 24·11,264 + 1,024 = 271,360.
    assert counts("gpt2-medium", "bitfit").trainable == layers * 11 * d + d == 271_360
    # LoRA rank 4 on q, v: 24 layers × 2 × (A: 4·1024 + B: 1024·4) = 393,216.
    lora = counts("gpt2-medium", "lora", rank=4)
    assert lora.trainable == lora.stored == layers * 2 * (d * 4 + 4 * d) == 393_216
    assert lora.base == 354_823_168
    # top-2 without the embedding: two blocks (12·d² + 13·d each) + ln_f (2d).
    top2 = counts("gpt2-medium", "top-k", k=2, train_embeddings=False)
    assert top2.trainable == 2 * (12 * d * d + 13 * d) + 2 * d
    # ... and with the (tied) token embedding / LM head: + 50257·d.
    assert counts("gpt2-medium", "top-k", k=2).trainable == top2.trainable + 50257 * d
    # feature extraction: new head (50257·d, no bias) + ln_f (2d); base counted before the new head.
    feature = counts("gpt2-medium", "feature-extraction")
    assert feature.trainable == 50257 * d + 2 * d
    assert feature.base == 354_823_168


def test_pinned_counts_smollm2_135m():
    """SmolLM2-135M at its real sizes, offline: 30 layers, d = 576, 9 query and 3 key/value heads of
    64 (k, v 192 wide), MLP 1536, vocabulary 49,152, tied embeddings."""
    name, d, layers, kv, f = "HuggingFaceTB/SmolLM2-135M-Instruct", 576, 30, 192, 1536
    lora = counts(name, "lora", rank=4)  # q (A 4·576, B 576·4) and v (A 4·576, B 192·4)
    assert lora.base == 134_515_008 and lora.trainable == layers * 4 * (2 * d + d + kv) == 230_400
    every = counts(name, "lora", rank=8, targets=["all-linear"])
    per_layer = 8 * ((d + d) * 2 + (d + kv) * 2 + (d + f) * 3)  # q, o; k, v; gate, up, down
    assert every.trainable == layers * per_layer == 2_442_240
    prefix = counts(name, "prefix", prefix_len=12)  # keys and values of the 3 key/value heads
    assert prefix.stored == 12 * layers * 2 * kv == 138_240


def test_top_k_beyond_layer_count_is_rejected():
    arch = models.load("tiny-gpt2", seed=0).arch
    with pytest.raises(PeftrunError, match="4 \\(decoder\\) layers"):
        TopKOptions(k=5).check(arch)


def test_unknown_lora_target_lists_valid_ones():
    arch = models.arch_summary(models.hf_config("tiny-bart"))
    with pytest.raises(PeftrunError, match="valid ones: q, k, v, o") as err:
        LoRAOptions(targets=("q", "x")).check(arch)
    assert "\n" not in str(err.value)


def test_a_lora_target_the_family_lacks_names_the_familys_targets():
    gpt2, llama = (models.arch_summary(models.hf_config(name)) for name in ("tiny-gpt2", "tiny-llama"))
    with pytest.raises(PeftrunError, match="of family gpt2; valid ones: q, k, v, o \\(or all-linear\\)"):
        LoRAOptions(targets=("q", "gate")).check(gpt2)
    LoRAOptions(targets=("q", "gate")).check(llama)
    assert LoRAOptions(targets=("all-linear",)).resolved_targets(llama) == (
        "q", "k", "v", "o", "gate", "up", "down",
    )  # fmt: skip
    assert LoRAOptions(targets=("all-linear",)).resolved_targets(gpt2) == ("q", "k", "v", "o")


@pytest.mark.parametrize("model_name", ["tiny-llama", "tiny-qwen2", "tiny-mistral"])
def test_all_linear_lora_on_a_llama_layout_is_w_plus_alpha_over_r_times_ba_on_every_projection(model_name):
    """Hu et al. eq. (3) on every linear layer of the blocks (q, k, v, o; gate, up, down), each
    with its own width (GQA: k and v are n_kv_head·head_dim wide): the model with LoRA gives the
    logits of a copy whose weights are W + (alpha/r)·B A, written out here (float64)."""
    loaded = models.load(model_name, seed=0)
    loaded.model.double()
    reference = models.load(model_name, seed=0).model.double().eval()
    method = attach(loaded, LoRAOptions(rank=RANK, alpha=ALPHA, targets=("all-linear",)))
    a, generator = loaded.arch, torch.Generator().manual_seed(0)
    widths = {"q": a.n_head * a.head_dim, "k": a.n_kv_head * a.head_dim, "v": a.n_kv_head * a.head_dim,
              "o": a.hidden, "gate": loaded.model.config.intermediate_size,
              "up": loaded.model.config.intermediate_size, "down": a.hidden}  # fmt: skip
    projections = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                   "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
                   "down": "mlp.down_proj"}  # fmt: skip
    names = {name for name, _ in method.model.named_parameters() if ".lora_" in name}
    assert len(names) == 2 * len(projections) * a.n_layer
    with torch.no_grad():
        for layer in range(a.n_layer):
            for target, path in projections.items():
                prefix = f"model.layers.{layer}.{path}"
                weight = reference.get_submodule(prefix).weight
                lora_a = torch.randn(RANK, weight.shape[1], generator=generator, dtype=torch.float64)
                lora_b = torch.randn(widths[target], RANK, generator=generator, dtype=torch.float64) * 0.1
                wrapped = method.model.get_submodule(prefix)
                wrapped.lora_A[target].copy_(lora_a)
                wrapped.lora_B[target].copy_(lora_b)  # shape-checked: B is the projection's own width
                weight += (ALPHA / RANK) * lora_b @ lora_a
    inputs = batch(loaded)
    with torch.no_grad():
        expected = reference(**inputs).logits
    got = logits_of(method, inputs)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    assert (got - models.load(model_name, seed=0).model.double()(**inputs).logits).abs().max() > 1e-3
