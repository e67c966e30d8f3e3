"""Import from the real HF peft: adapters built with peft read back into what peftrun serves,
with peft's logits; other peft types are refused in one line."""

from __future__ import annotations

import pytest
import torch
from peft_helpers import TOLERANCE, ids, max_diff, peft_logits, require_peft

from peftrun import models
from peftrun.errors import PeftrunError
from peftrun.methods.inject import prefix_kv
from peftrun.methods.inject.soft_input import SoftInput
from peftrun.methods.lora import LoRALayer
from peftrun.serving.peft_import import read_peft

peft = require_peft()


def peft_adapter(tmp_path, config, seq2seq: bool = False, seed: int = 0, name: str | None = None):
    """A peft adapter made from scratch with peft on the tiny base, random weights, saved; and the
    base (fresh, same weights) with it loaded by peft."""
    name = name or ("tiny-bart" if seq2seq else "tiny-gpt2")
    model = peft.get_peft_model(models.load(name).model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    model.save_pretrained(tmp_path / "adapter")
    loaded = peft.PeftModel.from_pretrained(models.load(name).model, tmp_path / "adapter")
    return tmp_path / "adapter", loaded


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
@pytest.mark.parametrize("projection", [False, True])
def test_a_peft_prefix_reads_as_our_prefix_keys_values(tmp_path, projection, name):
    """peft sizes a prefix by the key/value heads (Llama: num_key_value_heads, fewer than heads)."""
    config = peft.PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=3, prefix_projection=projection, encoder_hidden_size=16
    )
    folder, loaded = peft_adapter(tmp_path, config, name=name)
    adapter = read_peft(folder)
    kv = adapter.rows.key_values["self"]
    a = models.arch_summary(models.hf_config(name))
    assert kv.shape == (a.n_layer, 2, a.n_kv_head, 3, a.head_dim)
    assert adapter.rows.position_offset == 3 and not adapter.lora
    x = ids()
    model = models.load(name).model.eval()
    prefix = prefix_kv.install(model)
    positions = torch.arange(3, 3 + x.shape[1]).expand_as(x)  # real tokens numbered from L
    with torch.no_grad(), prefix.active({"self": kv[None]}):
        mine = model(input_ids=x, position_ids=positions).logits
    assert max_diff(mine, peft_logits(loaded, x)) < TOLERANCE


@pytest.mark.parametrize(
    "peft_type, seq2seq", [("PROMPT_TUNING", False), ("PROMPT_TUNING", True), ("P_TUNING", False)]
)
def test_a_peft_prompt_reads_as_our_soft_input(tmp_path, peft_type, seq2seq):
    task = "SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM"
    if peft_type == "PROMPT_TUNING":
        config = peft.PromptTuningConfig(task_type=task, num_virtual_tokens=3)
    else:
        config = peft.PromptEncoderConfig(task_type=task, num_virtual_tokens=3, encoder_hidden_size=16)
    folder, loaded = peft_adapter(tmp_path, config, seq2seq)
    adapter = read_peft(folder)
    width = 128 if seq2seq else 256
    prompt = adapter.rows.prompt
    assert prompt.shape == (3, width) and adapter.room.leading == 3  # seq2seq stores 2L rows, reads L
    x, y = ids(), (ids(length=5, seed=1) if seq2seq else None)
    model = models.load("tiny-bart" if seq2seq else "tiny-gpt2").model.eval()
    soft = SoftInput(model)
    inputs = {"input_ids": torch.cat([torch.full((2, 3), 5), x], dim=1)}
    if seq2seq:
        inputs["decoder_input_ids"] = y
    with torch.no_grad(), soft.active(prompt):
        mine = model(**inputs).logits
    theirs = peft_logits(loaded, x, y)
    assert max_diff(mine, theirs) < TOLERANCE if seq2seq else max_diff(mine[:, 3:], theirs[:, 3:]) < TOLERANCE


def with_lora(model, updates):
    """The model with each update wrapped around its module by our LoRALayer."""
    for update in updates:
        parent, _, attribute = update.module.rpartition(".")
        owner = model.get_submodule(parent)
        rank = update.A.shape[0]
        layer = LoRALayer(getattr(owner, attribute), {"peft": (update.start, update.end)}, rank, 1.0, 0.0)
        with torch.no_grad():
            layer.lora_A["peft"].copy_(update.A)
            layer.lora_B["peft"].copy_(update.B)
        layer.scale = update.scale
        setattr(owner, attribute, layer)
    return model


@pytest.mark.parametrize(
    "seq2seq, options",
    [
        (False, dict(target_modules=["c_attn"], r=2, lora_alpha=8, fan_in_fan_out=True)),
        (True, dict(target_modules=["q_proj", "v_proj"], r=2, lora_alpha=8)),
        (
            True,
            dict(
                target_modules=["q_proj", "k_proj", "v_proj", "out_proj"],
                r=2,
                lora_alpha=8,
                use_rslora=True,
                rank_pattern={"k_proj": 3},
                alpha_pattern={"v_proj": 2},
            ),
        ),
        # Plain LoRA (scale alpha / r) where a module's r is rank_pattern's, not the config's r.
        (
            False,
            dict(
                target_modules=["c_attn", "c_proj"],
                r=2,
                lora_alpha=8,
                fan_in_fan_out=True,
                rank_pattern={"attn.c_proj": 5},
            ),
        ),
        (True, dict(target_modules=["q_proj", "v_proj"], r=2, lora_alpha=8, rank_pattern={"v_proj": 4})),
    ],
    ids=["gpt2-c_attn", "bart-q-v", "bart-qkvo-rslora-patterns", "gpt2-rank-pattern", "bart-rank-pattern"],
)
def test_a_peft_lora_reads_as_our_lora_updates(tmp_path, seq2seq, options):
    check_lora_reads_as_ours(tmp_path, seq2seq, options)


def test_a_peft_all_linear_lora_on_a_llama_reads_as_our_lora_updates(tmp_path):
    options = dict(target_modules="all-linear", r=2, lora_alpha=8, rank_pattern={"k_proj": 3})
    check_lora_reads_as_ours(tmp_path, False, options, "tiny-llama")


def check_lora_reads_as_ours(tmp_path, seq2seq: bool, options: dict, name: str | None = None):
    task = "SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM"
    folder, loaded = peft_adapter(tmp_path, peft.LoraConfig(task_type=task, **options), seq2seq, name=name)
    adapter = read_peft(folder)
    assert adapter.lora and adapter.rows.key_values == {} and adapter.rows.prompt is None
    if name == "tiny-llama":  # every linear layer of the blocks, each at its own width
        assert len(adapter.lora) == 2 * 7
        assert {u.module.rsplit(".", 1)[-1]: u.B.shape for u in adapter.lora[:7]}["k_proj"] == (32, 3)
    elif not seq2seq:  # the whole fused layer: one A (r, d), B (3d, r)
        first = adapter.lora[0]
        assert first.module == "transformer.h.0.attn.c_attn" and (first.start, first.end) == (0, 768)
        assert first.A.shape == (2, 256) and first.B.shape == (768, 2) and first.scale == 4.0
    x, y = ids(), (ids(length=5, seed=1) if seq2seq else None)
    base = models.load(name or ("tiny-bart" if seq2seq else "tiny-gpt2")).model.eval()
    model = with_lora(base, adapter.lora)
    inputs = {"input_ids": x, **({"decoder_input_ids": y} if seq2seq else {})}
    with torch.no_grad():
        mine = model(**inputs).logits
    assert max_diff(mine, peft_logits(loaded, x, y)) < TOLERANCE


def test_other_peft_types_are_refused_by_name(tmp_path):
    folder, _ = peft_adapter(tmp_path, peft.IA3Config(task_type="CAUSAL_LM"))
    with pytest.raises(PeftrunError, match="peft adapter type IA3 .* has no peftrun layout"):
        read_peft(folder)


def test_peft_adapters_serve_through_peftrun_load_beside_the_base(tmp_path):
    """peft folders (LoRA, prompt, prefix) load with `peftrun.load` (one base, by its folder) and
    give peft's logits."""
    import peftrun

    base = tmp_path / "base"
    models.load("tiny-gpt2").model.save_pretrained(base)  # the weights peft_adapter's models use
    models.load_tokenizer("tiny-gpt2").save_pretrained(base)
    for sub in ("l", "p", "x"):
        (tmp_path / sub).mkdir()
    lora = peft.LoraConfig(
        task_type="CAUSAL_LM", target_modules=["c_attn"], r=2, lora_alpha=8, fan_in_fan_out=True
    )
    lora_folder, lora_peft = peft_adapter(tmp_path / "l", lora, seed=1)
    prompt = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)
    prompt_folder, prompt_peft = peft_adapter(tmp_path / "p", prompt, seed=2)
    prefix = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)
    prefix_folder, prefix_peft = peft_adapter(tmp_path / "x", prefix, seed=3)
    lm = peftrun.load(
        f"lora={lora_folder}", f"prompt={prompt_folder}", f"prefix={prefix_folder}", base=str(base)
    )
    x = ids()
    assert lm.names == ["lora", "prompt", "prefix"]
    # peft passes the prefix as past keys/values: real tokens at positions L…, as our offset
    assert max_diff(lm.logits(x, adapter="prefix"), peft_logits(prefix_peft, x)) < TOLERANCE
    assert max_diff(lm.logits(x), peft_logits(lora_peft, x)) < TOLERANCE  # the first adapter by default
    with_fillers = torch.cat([torch.full((2, 3), 5), x], dim=1)
    mine = lm.logits(with_fillers, adapter="prompt")[:, 3:]
    assert max_diff(mine, peft_logits(prompt_peft, x)[:, 3:]) < TOLERANCE
    plain = models.load("tiny-gpt2").model.eval()
    with torch.no_grad():
        assert max_diff(lm.logits(x, adapter=None), plain(x).logits) < TOLERANCE
