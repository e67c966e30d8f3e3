"""Prefix-tuning on decoder-only models (GPT-2, and every decoder-only family: each test runs over
their tiny models): the prefix is exactly "attending to real activations" (Li & Liang Sec. 4).

If the prefix holds the keys/values the frozen model computes for a real token sequence t, the
model run on x with that prefix must give the logits of the model run on t + x (on x's positions).
This holds only if keys/values enter every layer, the mask exposes them, and real tokens are
numbered from len(t) (the position offset), so each of those mechanisms is under test.
"""

from __future__ import annotations

import pytest
import torch

from peftrun import models
from peftrun.methods import PrefixOptions
from peftrun.methods.base import attach as attach_method
from peftrun.methods.inject.rows import RowInputs, active_rows


def real_key_values(model, tokens: torch.Tensor) -> torch.Tensor:
    """The frozen model's own K/V for `tokens`: (B, n_layer, 2, n_kv_head, T, head_dim)."""
    cache = model(tokens, use_cache=True).past_key_values
    per_layer = [torch.stack([layer.keys, layer.values], dim=1) for layer in cache.layers]
    return torch.stack(per_layer, dim=1)


# Every decoder-only family, and the model types that share the Llama layout (Qwen2's q/k/v
# biases, Mistral's sliding window) on their own tiny models.
@pytest.fixture(params=models.tiny_models(decoder_only=True) + ("tiny-qwen2", "tiny-mistral"))
def tiny(request):
    loaded = models.load(request.param, seed=0)
    loaded.model.eval()
    return loaded


def attach(loaded, prefix_len, **options):
    return attach_method(loaded, PrefixOptions(prefix_len=prefix_len, **options))


def test_prefix_from_real_activations_equals_running_on_the_concatenation(tiny):
    torch.manual_seed(1)
    t, x = torch.randint(6, 2000, (3, 6)), torch.randint(6, 2000, (3, 9))
    with torch.no_grad():
        expected = tiny.model(torch.cat([t, x], dim=1)).logits[:, 6:]
        kv = real_key_values(tiny.model, t)
        method = attach(tiny, prefix_len=6)
        method.set_training(False)
        assert method.position_offset == 6
        # Each row its own real prefix, with the method's own position offset.
        rows = [RowInputs({"self": kv[r]}, method.position_offset) for r in range(3)]
        with active_rows(tiny.model, rows):
            got = tiny.model(x).logits
            padded = tiny.model(x, attention_mask=torch.ones_like(x)).logits
        plain = tiny.model(x).logits  # no prefix active again
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded, expected, atol=1e-5, rtol=1e-5)
    assert (plain - expected).abs().max() > 1e-2  # the prefix really changed something


def test_prefix_of_real_key_values_is_the_concatenation_in_float64_whatever_mask_is_given(tiny):
    """Exact in float64: x with the prefix = t + x on x's positions, with no mask, with a mask over
    x's T tokens only (the caller's view: the prefix columns are the mechanism's to add; a mask
    that leaves them out runs without error and gives wrong logits) and with right padding. GQA:
    the prefix holds n_kv_head heads and attention shares them among the query heads."""
    model = tiny.model.double()
    torch.manual_seed(5)
    t, x = torch.randint(6, 2000, (2, 5)), torch.randint(6, 2000, (2, 8))
    pad = torch.full((2, 3), tiny.tokenizer.pad_token_id)
    with torch.no_grad():
        expected = model(torch.cat([t, x], dim=1)).logits[:, 5:]
        kv = real_key_values(model, t)
        assert kv.shape[3] == tiny.arch.n_kv_head
        method = attach(tiny, prefix_len=5)
        rows = [RowInputs({"self": kv[r]}, method.position_offset) for r in range(2)]
        with active_rows(model, rows):
            bare = model(x).logits
            masked = model(x, attention_mask=torch.ones_like(x)).logits
            padded = model(torch.cat([x, pad], 1), attention_mask=torch.cat([torch.ones_like(x), 0 * pad], 1))
    for got in (bare, masked, padded.logits[:, :8]):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


def test_without_position_offset_it_no_longer_matches(tiny):
    torch.manual_seed(1)
    t, x = torch.randint(6, 2000, (2, 6)), torch.randint(6, 2000, (2, 9))
    with torch.no_grad():
        expected = tiny.model(torch.cat([t, x], dim=1)).logits[:, 6:]
        kv = real_key_values(tiny.model, t)
        method = attach(tiny, prefix_len=6, position_offset=False)
        rows = [RowInputs({"self": kv[r]}, method.position_offset) for r in range(2)]
        with active_rows(tiny.model, rows):
            got = tiny.model(x).logits
    assert (got - expected).abs().max() > 1e-3


def test_right_padding_does_not_change_real_positions(tiny):
    torch.manual_seed(2)
    method = attach(tiny, prefix_len=4)
    method.set_training(False)
    short, long = torch.randint(6, 2000, (1, 5)), torch.randint(6, 2000, (1, 8))
    pad = torch.full((1, 3), tiny.tokenizer.pad_token_id)
    batch = torch.cat([torch.cat([short, pad], dim=1), long])
    mask = torch.tensor([[1] * 5 + [0] * 3, [1] * 8])
    with torch.no_grad(), method.active(2):
        together = tiny.model(batch, attention_mask=mask).logits
        alone = tiny.model(short).logits
    torch.testing.assert_close(together[0, :5], alone[0], atol=1e-5, rtol=1e-5)


def test_mixed_prefix_batch_equals_each_row_alone(tiny):
    """Rows of one batch may carry different prefixes (several tasks/users): same as separate runs."""
    torch.manual_seed(3)
    method = attach(tiny, prefix_len=5)
    method.set_training(False)
    a = tiny.arch
    prefixes = torch.randn(
        3, a.n_layer, 2, a.n_kv_head, 5, a.head_dim
    )  # (rows, n_layer, 2, n_kv_head, L, hd)
    x = torch.randint(6, 2000, (3, 7))
    with torch.no_grad():
        with method.prefix_attention.active({"self": prefixes}):
            mixed = tiny.model(x).logits
        for row in range(3):
            with method.prefix_attention.active({"self": prefixes[row : row + 1]}):
                alone = tiny.model(x[row : row + 1]).logits
            torch.testing.assert_close(mixed[row : row + 1], alone, atol=1e-5, rtol=1e-5)


def test_mixed_prefix_beam_search_equals_each_row_alone(tiny):
    torch.manual_seed(4)
    method = attach(tiny, prefix_len=3)
    method.set_training(False)
    a, eos = tiny.arch, tiny.tokenizer.eos_token_id
    prefixes = torch.randn(2, a.n_layer, 2, a.n_kv_head, 3, a.head_dim) * 3
    prompt = torch.randint(6, 2000, (2, 4))
    settings = dict(num_beams=3, max_new_tokens=6, do_sample=False, pad_token_id=eos, eos_token_id=eos)
    with torch.no_grad():
        with method.prefix_attention.active({"self": prefixes}):
            mixed = tiny.model.generate(prompt, attention_mask=torch.ones_like(prompt), **settings)
        for row in range(2):
            with method.prefix_attention.active({"self": prefixes[row : row + 1]}):
                alone = tiny.model.generate(
                    prompt[row : row + 1], attention_mask=torch.ones_like(prompt[row : row + 1]), **settings
                )
            assert mixed[row, : alone.shape[1]].tolist() == alone[0].tolist()


def test_only_prefix_parameters_train_and_the_model_stays_bit_identical(tiny):
    method = attach(tiny, prefix_len=4)
    frozen = {name: p.detach().clone() for name, p in tiny.model.named_parameters()}
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-2)
    method.set_training(True)
    assert not tiny.model.training, "the frozen LM stays in eval mode (no dropout)"
    x = torch.randint(6, 2000, (2, 8))
    for _ in range(3):
        with method.active(2):
            loss = tiny.model(x, labels=x).loss
        loss.backward()
        assert all(p.grad is None for p in tiny.model.parameters())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.trainable_parameters())
        optimizer.step()
        optimizer.zero_grad()
    for name, p in tiny.model.named_parameters():
        assert torch.equal(p, frozen[name]), name


def test_saved_prefix_drops_the_mlp_and_reproduces_the_logits(tiny, tmp_path):
    method = attach(tiny, prefix_len=5)
    method.set_training(False)
    x = torch.randint(6, 2000, (2, 6))
    with torch.no_grad(), method.active(2):
        before = tiny.model(x).logits
    method.save(tmp_path)
    fresh = models.load(tiny.name, seed=0)
    reloaded = attach(fresh, prefix_len=5)
    reloaded.load(tmp_path)
    reloaded.set_training(False)
    with torch.no_grad(), reloaded.active(2):
        after = fresh.model(x).logits
    torch.testing.assert_close(after, before)
    from safetensors.torch import load_file

    a = tiny.arch  # keys/values for the key/value heads: n_kv_head of them (GQA: fewer than n_head)
    assert {k: tuple(v.shape) for k, v in load_file(tmp_path / "prefix.safetensors").items()} == {
        "self": (a.n_layer, 2, a.n_kv_head, 5, a.head_dim)
    }


@pytest.mark.parametrize(
    ("prefix_len", "trainable", "stored"),
    [(5, 25_744_896, 245_760), (10, 25_750_016, 491_520)],
)
def test_parameter_counts_on_a_gpt2_medium_sized_config(prefix_len, trainable, stored):
    from transformers import AutoModelForCausalLM

    config = models.hf_config("gpt2-medium")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    loaded = models.LoadedModel(model, None, models.arch_summary(config), "gpt2-medium")
    counts = attach(loaded, prefix_len=prefix_len, mlp_hidden=512).counts()
    assert (counts.base, counts.trainable, counts.stored) == (354_823_168, trainable, stored)
    assert round(counts.as_dict()["stored_pct"], 3) == {5: 0.069, 10: 0.139}[prefix_len]


def test_position_offset_reserves_positions_so_long_inputs_never_overflow(tiny):
    from peftrun.config import DataConfig
    from peftrun.data.examples import Pair
    from peftrun.data.formats import text_format

    method = attach(tiny, prefix_len=20)
    method.set_training(False)
    fmt = text_format(tiny, DataConfig(), method.room)
    long = "the food is good " * 400
    batch = fmt.training_batch([Pair(long, long)])
    assert batch["inputs"]["input_ids"].shape[1] == tiny.arch.max_positions - 20
    with torch.no_grad(), method.active(1):
        tiny.model(**batch["inputs"])  # positions 20 … max_positions − 1: inside the model's positions
