"""The method contract, for every method × every model family's tiny model, through the real token formats,
loss and decoder: attach, counts equal the method's formula, a few training steps lower the loss on
a repeated batch (only the method's parameters change), save → fresh model → load gives identical
logits, decoding works (a batch decodes as each input alone). A method a model cannot take refuses
in one line."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch

from peftrun import models
from peftrun.config import DataConfig, DecodeConfig
from peftrun.data.examples import Pair
from peftrun.data.formats import text_format
from peftrun.decode import generate
from peftrun.errors import PeftrunError
from peftrun.methods import options_for
from peftrun.methods.base import attach as attach_method
from peftrun.methods.prefix_options import phrase_ids
from peftrun.train import batch_loss

PAIRS = [
    Pair("name : Aromi | Type : pub | area : city centre", "Aromi is a pub in the city centre."),
    Pair("name : The Punter | food : Thai", "The Punter serves Thai food."),
    Pair("name : Zizzi | price : cheap | near : The Bakers", "Zizzi is cheap and near The Bakers."),
]

# name → (kind, options); small sizes so every case runs in about a second.
CASES = {
    "full": ("full", {}),
    "top-k": ("top-k", {"k": 1}),
    "bitfit": ("bitfit", {}),
    "feature-extraction": ("feature-extraction", {}),
    "lora": ("lora", {"rank": 2}),
    "adapter": ("adapter", {"bottleneck": 8}),
    "prefix": ("prefix", {"prefix_len": 3, "mlp_hidden": 32}),
    "prefix-embedding-only": ("prefix", {"variant": "embedding-only", "prefix_len": 3, "mlp_hidden": 32}),
    "prefix-infix": ("prefix", {"variant": "infix", "prefix_len": 3, "mlp_hidden": 32}),
    "prefix-phrase": ("prefix", {"init_phrase": "table-to-text:", "mlp_hidden": 32, "init_steps": 20}),
    "prompt": ("prompt", {"prompt_len": 3}),
    "ptuning": ("ptuning", {"prompt_len": 3, "encoder_hidden": 16}),
    "icl": ("icl", {"k": 2}),
}
REFUSED = {("prefix-infix", "encoder-decoder"): "decoder-only"}  # (case, architecture) → the refusal
# One per family: a new family runs every case; and Qwen2, the Llama layout with q/k/v biases.
MODELS = models.tiny_models() + ("tiny-qwen2",)
RUN_CFG = SimpleNamespace(data=DataConfig(dataset="e2e"), decode=DecodeConfig(max_new_tokens=8))


def attach(model_name: str, case: str):
    kind, options = CASES[case]
    loaded = models.load(model_name, seed=0)
    method = attach_method(loaded, options_for(kind, **options))
    fmt = text_format(loaded, RUN_CFG.data, method.room)
    fmt = method.wrap_format(fmt, RUN_CFG.decode)
    return loaded, method, fmt


def base_count(loaded) -> int:
    """GPT-2 / BART / Llama sizes from their configs (tied LM head counted once)."""
    c, a = loaded.model.config, loaded.arch
    if (
        a.family == "llama"
    ):  # q, k, v, o (Qwen2: biases on q, k, v); gated MLP; two RMSNorms per layer + final
        d, f, kv = a.hidden, c.intermediate_size, a.n_kv_head * a.head_dim
        attention = 2 * d * a.n_head * a.head_dim + 2 * d * kv + qkv_biases(loaded)
        return c.vocab_size * d + a.n_layer * (attention + 3 * d * f + 2 * d) + d
    if loaded.arch.family == "gpt2":
        d, v = c.n_embd, c.vocab_size
        return v * d + c.n_positions * d + c.n_layer * (12 * d * d + 13 * d) + 2 * d
    d, f, v, p = c.d_model, c.encoder_ffn_dim, c.vocab_size, c.max_position_embeddings + 2
    attention, norm, ffn = 4 * (d * d + d), 2 * d, 2 * d * f + f + d
    encoder = p * d + norm + c.encoder_layers * (attention + norm + ffn + norm)
    decoder = p * d + norm + c.decoder_layers * (2 * attention + 3 * norm + ffn)
    return v * d + encoder + decoder


def qkv_biases(loaded) -> int:
    """A Llama-layout block's biases: none (Llama, Mistral); Qwen2's on q, k and v."""
    a = loaded.arch
    return (
        a.n_head * a.head_dim + 2 * a.n_kv_head * a.head_dim
        if loaded.model.config.model_type == "qwen2"
        else 0
    )


def expected_counts(case: str, loaded) -> tuple[int, int]:
    """(trainable, stored) from each method's definition."""
    kind, o = CASES[case]
    a, c = loaded.arch, loaded.model.config
    d, v, gpt2, llama = a.hidden, c.vocab_size, a.family == "gpt2", a.family == "llama"
    f = 4 * d if gpt2 else c.intermediate_size if llama else c.decoder_ffn_dim
    decoder_layer = 12 * d * d + 13 * d if gpt2 else 8 * (d * d + d) + 6 * d + 2 * d * f + f + d
    final_norm = 2 * d if gpt2 else d if llama else 0  # LayerNorm weight + bias; RMSNorm weight; none
    if llama:
        kv = a.n_kv_head * a.head_dim
        decoder_layer = 2 * d * a.n_head * a.head_dim + 2 * d * kv + qkv_biases(loaded) + 3 * d * f + 2 * d

    def mlp_table(length: int, width: int) -> int:
        m = o["mlp_hidden"]
        return length * d + d * m + m + m * width + width

    if kind == "full":
        return base_count(loaded), base_count(loaded)
    if kind == "top-k":
        n = o["k"] * decoder_layer + final_norm + v * d
        return n, n
    if kind == "bitfit":
        if llama:
            return a.n_layer * qkv_biases(loaded), a.n_layer * qkv_biases(loaded)
        n = (
            a.n_layer * 11 * d + d
            if gpt2
            else a.n_encoder_layer * (7 * d + f) + a.n_layer * (12 * d + f) + 2 * d
        )
        return n, n
    if kind == "feature-extraction":  # a new head + the final norm (BART: its embedding LayerNorm)
        n = v * d + (d if llama else 2 * d)
        return n, n
    family = models.FAMILIES[a.family]
    # Attention modules per kind, from the family table: a stack's layer count each.
    layers = [
        a.n_encoder_layer if stack == "encoder" else a.n_layer for stack, _ in family.attention.values()
    ]
    if kind == "lora":  # the paper's targets q and v: A (r × d) and B (width × r) each
        widths = {"q": a.n_head * a.head_dim, "v": a.n_kv_head * a.head_dim}
        n = sum(layers) * sum(o["rank"] * (d + width) for width in widths.values())
        return n, n
    if kind == "adapter":
        b, sites = o["bottleneck"], a.n_layer + a.n_encoder_layer
        n = sites * (2 * d * b + b + 3 * d)
        return n, n
    if kind == "prefix":
        length = o.get("prefix_len") or len(phrase_ids(loaded.tokenizer, o["init_phrase"]))
        if o.get("variant") == "embedding-only":
            inputs = 2 if a.is_encoder_decoder else 1  # GPT-2's stack; BART's encoder and decoder
            return inputs * mlp_table(length, d), inputs * length * d
        widths = [n * 2 * a.n_kv_head * a.head_dim for n in layers]  # keys and values per layer
        return sum(mlp_table(length, w) for w in widths), sum(length * w for w in widths)
    if kind == "prompt":
        return o["prompt_len"] * d, o["prompt_len"] * d
    if kind == "ptuning":
        h, length = o["encoder_hidden"], o["prompt_len"]
        half = h // 2
        lstm = 2 * 2 * (4 * half * h + 4 * half * half + 8 * half)  # 2 layers × 2 directions
        return length * h + lstm + h * h + h + h * d + d, length * d
    assert kind == "icl"
    return 0, 0


def logits(loaded, method, inputs) -> torch.Tensor:
    method.set_training(False)
    with torch.no_grad(), method.active(inputs["input_ids"].shape[0]):
        return loaded.model(**inputs).logits


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("case", list(CASES))
def test_method_contract(case, model_name, tmp_path):
    kind, options = CASES[case]
    arch = models.arch_summary(models.hf_config(model_name))
    shape = "encoder-decoder" if arch.is_encoder_decoder else "decoder-only"
    if (case, shape) in REFUSED:
        with pytest.raises(PeftrunError, match=REFUSED[(case, shape)]) as err:
            options_for(kind, **options).check(arch)
        assert "\n" not in str(err.value)
        return
    options_for(kind, **options).check(arch)
    if kind == "bitfit" and model_name == "tiny-llama":  # no biases: a one-line refusal, not an empty run
        with pytest.raises(PeftrunError, match="has none") as err:
            attach(model_name, case)
        assert "\n" not in str(err.value)
        return
    loaded, method, fmt = attach(model_name, case)

    counts = method.counts()
    assert counts.base == base_count(loaded)
    assert (counts.trainable, counts.stored) == expected_counts(case, loaded)

    method.initialize(PAIRS)
    batch = fmt.training_batch(PAIRS)
    params = method.trainable_parameters()
    if kind == "icl":
        assert params == [] and method.training_state() == {}
    else:
        trainable = {id(p) for p in params}
        frozen = {n: p.detach().clone() for n, p in loaded.model.named_parameters() if id(p) not in trainable}
        optimizer = torch.optim.AdamW(params, lr=1e-3 if kind == "full" else 1e-2, weight_decay=0.0)
        method.set_training(True)
        losses = []
        for step in range(8):
            loss = batch_loss(loaded.model, method, batch, "token_mean", nullcontext())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if step == 0:
                assert all(
                    p.grad is None for n, p in loaded.model.named_parameters() if id(p) not in trainable
                )
                assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0] - 1e-3, losses
        for name, p in loaded.model.named_parameters():
            if name in frozen:
                assert torch.equal(p, frozen[name]), name

    expected = logits(loaded, method, batch["inputs"])
    method.save(tmp_path)
    fresh, reloaded, fresh_fmt = attach(model_name, case)
    reloaded.load(tmp_path)
    assert torch.equal(logits(fresh, reloaded, batch["inputs"]), expected)

    sources = [pair.source for pair in PAIRS]
    cfg = DecodeConfig(num_beams=2, max_new_tokens=6, batch_size=3)
    outputs = generate(fresh.model, reloaded, fresh_fmt, sources, cfg, torch.device("cpu"))
    assert len(outputs) == 3 and all(isinstance(o, str) for o in outputs)
    alone = [generate(fresh.model, reloaded, fresh_fmt, [s], cfg, torch.device("cpu"))[0] for s in sources]
    assert outputs == alone


def test_every_registered_method_has_a_contract_case_and_a_loadable_implementation():
    from peftrun.methods import REGISTRY
    from peftrun.methods.base import MethodBase

    assert {kind for kind, _ in CASES.values()} == set(REGISTRY)
    for kind, options in CASES.values():
        entry = REGISTRY[kind]
        assert entry.kind == kind and entry.options(**options).kind == kind
        assert issubclass(entry.load(), MethodBase), kind
