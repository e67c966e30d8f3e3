"""The prefix ablations and soft prompts mean what they say (Li & Liang Sec. 7; Lester et al.).

- A soft prompt holding the embeddings of real tokens t is the text t placed before the input
  (GPT-2: before the source; BART: before the encoder input), so the substitution is exact.
- Embedding-only prefix = prompt tuning on decoder-only models (GPT-2), where the two definitions
  coincide (prefix positions see only each other, real tokens numbered after them): same logits,
  same outputs.
- An infix holding the frozen model's own keys/values of tokens t (in context) is the text
  [x; t; y], in training and through generate()'s KV cache.
- A prefix set exactly to a phrase's activations is the phrase as text; the MLP fit of the
  real-phrase init gets within a stated MSE of them.
"""

from __future__ import annotations

import pytest
import torch

from peftrun import families, models
from peftrun.config import DataConfig, DecodeConfig
from peftrun.data.examples import Pair
from peftrun.data.formats import text_format
from peftrun.decode import generate
from peftrun.methods import PrefixOptions, PromptOptions
from peftrun.methods.base import attach as attach_method
from peftrun.methods.prefix_options import phrase_ids

PAIRS = [
    Pair("name : Aromi | Type : pub | area : city centre", "Aromi is a pub in the city centre."),
    Pair("name : The Punter | food : Thai", "The Punter serves Thai food."),
]
CPU = torch.device("cpu")


def attach(model_name: str, options):
    loaded = models.load(model_name, seed=0)
    method = attach_method(loaded, options)
    method.set_training(False)
    return loaded, method, text_format(loaded, DataConfig(), method.room)


def run(loaded, method, inputs) -> torch.Tensor:
    with torch.no_grad(), method.active(inputs["input_ids"].shape[0]):
        return loaded.model(**inputs).logits


def plain(loaded, inputs) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model(**inputs).logits


@pytest.mark.parametrize("model_name", models.tiny_models())
def test_soft_prompt_of_token_embeddings_is_the_text_before_the_input(model_name):
    loaded, method, fmt = attach(model_name, PromptOptions(prompt_len=4))
    t = torch.tensor([300, 301, 302, 303])
    with torch.no_grad():
        method.producer.prompt.copy_(loaded.model.get_input_embeddings()(t))
    batch = fmt.training_batch(PAIRS)["inputs"]
    fillers = batch["input_ids"][:, :4]
    assert (fillers == fmt.filler).all()  # right padding: the first 4 tokens of every row
    as_text = dict(batch, input_ids=torch.cat([t.expand(2, 4), batch["input_ids"][:, 4:]], dim=1))
    torch.testing.assert_close(run(loaded, method, batch), plain(loaded, as_text), atol=1e-5, rtol=1e-5)
    if loaded.arch.is_encoder_decoder:  # the decoder reads the target alone: no decoder rows spent
        plain_fmt = text_format(loaded, DataConfig())
        expected = plain_fmt.training_batch(PAIRS)["inputs"]["decoder_input_ids"]
        assert torch.equal(batch["decoder_input_ids"], expected)
    method.producer.prompt.data.zero_()  # control: another prompt changes the logits
    assert (run(loaded, method, batch) - plain(loaded, as_text)).abs().max() > 1e-3


@pytest.mark.parametrize("model_name", models.tiny_models(decoder_only=True))
def test_embedding_only_prefix_equals_prompt_tuning_on_decoders(model_name):
    p_loaded, prompt, p_fmt = attach(model_name, PromptOptions(prompt_len=4, init="random"))
    options = PrefixOptions(variant="embedding-only", prefix_len=4, reparametrize=False)
    e_loaded, emb, e_fmt = attach(model_name, options)
    (kind,) = emb.tables  # a decoder-only model's one input table
    with torch.no_grad():
        emb.tables[kind].embedding.copy_(prompt.producer.prompt)
    p_batch, e_batch = p_fmt.training_batch(PAIRS)["inputs"], e_fmt.training_batch(PAIRS)["inputs"]
    assert torch.equal(p_batch["input_ids"][:, 4:], e_batch["input_ids"])  # same text, 4 fillers apart
    prompt_logits = run(p_loaded, prompt, p_batch)[:, 4:]
    torch.testing.assert_close(run(e_loaded, emb, e_batch), prompt_logits, atol=1e-5, rtol=1e-5)
    cfg = DecodeConfig(num_beams=3, max_new_tokens=8)
    sources = [p.source for p in PAIRS]
    assert generate(p_loaded.model, prompt, p_fmt, sources, cfg, CPU) == generate(
        e_loaded.model, emb, e_fmt, sources, cfg, CPU
    )
    # Control: numbering real tokens from 0 (no offset) is a different model.
    u_loaded, unshifted, _ = attach(model_name, options.model_copy(update={"position_offset": False}))
    with torch.no_grad():
        unshifted.tables[kind].embedding.copy_(prompt.producer.prompt)
    assert (run(u_loaded, unshifted, e_batch) - prompt_logits).abs().max() > 1e-3


def projected_key_values(loaded, ids: torch.Tensor) -> torch.Tensor:
    """Row 0's keys/values as the k and v projections output them (before a rotary embedding
    turns keys by their position: an infix key sits at its filler's position and is turned there
    like any token's): (n_layer, 2, n_kv_head, T, head_dim)."""
    family, arch = families.family_of(loaded.model), loaded.arch
    slices, outputs = family.projection_slices(arch), {}
    handles = [
        getattr(attn, slices[target][0]).register_forward_hook(
            lambda _m, _i, out, key=(layer, target): outputs.__setitem__(key, out[0])
        )
        for layer, attn in enumerate(families.attention_sites(loaded.model)["self"])
        for target in ("k", "v")
    ]
    with torch.no_grad():
        loaded.model(ids)
    for handle in handles:
        handle.remove()
    per_layer = []
    for layer in range(arch.n_layer):
        pair = []
        for target in ("k", "v"):
            _, start, end = slices[target]
            columns = outputs[(layer, target)][:, start:end]  # (T, n_kv_head·head_dim)
            pair.append(columns.view(-1, arch.n_kv_head, arch.head_dim).transpose(0, 1))
        per_layer.append(torch.stack(pair))
    return torch.stack(per_layer)


@pytest.mark.parametrize("model_name", models.tiny_models(decoder_only=True))
def test_infix_of_real_key_values_is_the_text_with_those_tokens(model_name):
    loaded, method, fmt = attach(model_name, PrefixOptions(variant="infix", prefix_len=3))
    batch = fmt.training_batch(PAIRS[:1])["inputs"]
    ids = batch["input_ids"]
    separator = int((ids[0] == fmt.eos).nonzero()[0])
    columns = list(range(separator - 3, separator))
    assert (ids[0, columns] == fmt.filler).all()
    t = torch.tensor([400, 401, 402])
    text = ids.clone()
    text[0, columns] = t
    own = projected_key_values(loaded, text)
    method.stored = {"self": own[:, :, :, columns]}  # (n_layer, 2, n_kv_head, 3, head_dim)
    expected, got = plain(loaded, {"input_ids": text}), run(loaded, method, {"input_ids": ids})
    real = [i for i in range(ids.shape[1]) if i not in columns]  # fillers' own outputs don't matter
    torch.testing.assert_close(got[:, real], expected[:, real], atol=1e-5, rtol=1e-5)
    # Through generate() (beam search, KV cache): the same outputs as the text itself.
    cfg = DecodeConfig(num_beams=3, max_new_tokens=8)
    prompt = fmt.prompt_batch([PAIRS[0].source])
    with_text = prompt["input_ids"].clone()
    with_text[0, -4:-1] = t
    from peftrun.decode import generation_config

    with torch.no_grad():
        reference = loaded.model.generate(
            input_ids=with_text,
            attention_mask=prompt["attention_mask"],
            generation_config=generation_config(cfg, fmt.tokenizer, loaded.model.config),
        )
    reference_text = fmt.tokenizer.decode(
        fmt.generated_ids(reference, prompt)[0], skip_special_tokens=True
    ).strip()
    assert generate(loaded.model, method, fmt, [PAIRS[0].source], cfg, CPU) == [reference_text]
    method.stored = {"self": torch.zeros_like(own[:, :, :, columns])}  # control
    assert (run(loaded, method, {"input_ids": ids})[:, real] - expected[:, real]).abs().max() > 1e-3


@pytest.mark.parametrize("model_name", models.tiny_models(decoder_only=True))
@pytest.mark.parametrize("variant", ["every-layer", "embedding-only"])
def test_prefix_set_to_a_phrase_is_the_phrase_as_text_on_decoders(variant, model_name):
    options = PrefixOptions(variant=variant, init_phrase="table-to-text:", reparametrize=False)
    loaded, method, _ = attach(model_name, options)
    method.initialize([])  # without the MLP: P_θ is set to the phrase's activations exactly
    phrase = torch.tensor(phrase_ids(loaded.tokenizer, "table-to-text:"))
    assert method.length == len(phrase)
    x = torch.randint(6, 2000, (2, 7), generator=torch.Generator().manual_seed(0))
    reference = models.load(model_name, seed=0)  # the same weights, without the method's hooks
    reference.model.eval()
    expected = plain(reference, {"input_ids": torch.cat([phrase.expand(2, -1), x], dim=1)})[:, len(phrase) :]
    torch.testing.assert_close(run(loaded, method, {"input_ids": x}), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("model_name", "phrase", "mlp_hidden", "tolerance"),
    # Measured: tiny-gpt2 MSE 0.104 → 3.0e-4; tiny-bart 0.054 → 1.8e-5 (paper sizes 512 / 800).
    [("tiny-gpt2", "table-to-text:", 512, 1e-3), ("tiny-bart", "summarize", 800, 1e-4)],
)
def test_phrase_init_fits_the_phrase_within_tolerance(model_name, phrase, mlp_hidden, tolerance):
    loaded, method, _ = attach(model_name, PrefixOptions(init_phrase=phrase, mlp_hidden=mlp_hidden))
    targets = method.phrase_targets()
    with torch.no_grad():
        before = method.phrase_mse(targets).item()
    method.initialize([])  # 500 Adam steps at lr 1e-4 on the MLP only
    assert method.init_mse < tolerance < before
    note = method.take_notes()
    assert len(note) == 1 and f"{method.init_mse:.4g}" in note[0] and "500 Adam steps" in note[0]
    if model_name == "tiny-bart":  # BART's own module names: an independent computation
        # Cross-attention prefix = each decoder layer's key/value projections of the encoder's
        # states for the phrase (computed here without the recording mechanism).
        ids = torch.tensor([phrase_ids(loaded.tokenizer, phrase)])
        with torch.no_grad():
            encoded = loaded.model.model.encoder(input_ids=ids).last_hidden_state[0]
            heads_kv, head_dim = loaded.arch.n_kv_head, loaded.arch.head_dim
            for layer, block in enumerate(loaded.model.model.decoder.layers):
                for i, projection in enumerate((block.encoder_attn.k_proj, block.encoder_attn.v_proj)):
                    heads = projection(encoded).view(len(encoded), heads_kv, head_dim).transpose(0, 1)
                    torch.testing.assert_close(targets["cross"][layer, i], heads, atol=1e-5, rtol=1e-5)
