"""Interop with the real HF peft: runs trained here export to folders peft loads and runs with our
logits; peft adapters built with peft read back into peftrun's layouts with peft's logits; what peft
cannot express is refused in one line."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import write_config
from safetensors.torch import load_file
from typer.testing import CliRunner

from peftrun import experiment, models
from peftrun.cli import app
from peftrun.errors import PeftrunError
from peftrun.methods.inject import prefix_kv
from peftrun.methods.inject.soft_input import SoftInput
from peftrun.methods.lora import LoRALayer
from peftrun.scoring import open_run
from peftrun.serving.peft_interop import export, read_peft
from peftrun.session import Session

try:
    import peft
except ImportError:  # skip locally, fail under CI (where the dev extra installs it)
    if os.environ.get("CI"):
        raise
    pytest.skip("peft is not installed (pip install -e '.[dev]')", allow_module_level=True)
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM  # noqa: E402

TOLERANCE = 1e-5
CONFIG = """
model: {name: MODEL}
data: {dataset: e2e, train_size: 8, dev_loss_size: 1, max_target_tokens: 16}
method: METHOD
train: {lr: 1e-2, epochs: EPOCHS, max_steps: 1, batch_size: 4, seed: 7}
decode: {splits: []}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`trained(model, method, epochs=1)`: a run directory, trained once per module."""
    made = {}

    def make(model: str, method: str, epochs: int = 1):
        key = (model, method, epochs)
        if key not in made:
            folder = tmp_path_factory.mktemp("run")
            text = CONFIG.replace("MODEL", model).replace("METHOD", method).replace("EPOCHS", str(epochs))
            made[key], _ = experiment.train(write_config(folder, text), [], str(folder / "run"))
        return made[key]

    return make


def ids(rows: int = 2, length: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randint(6, 500, (rows, length), generator=torch.Generator().manual_seed(seed))


def ours(run_dir, input_ids, decoder_input_ids=None, lead: int = 0) -> torch.Tensor:
    """peftrun's own logits for the stored adapter (soft prompts: `lead` fillers before the ids)."""
    run, cfg = open_run(run_dir)
    session = Session(cfg)
    session.method.load(run.adapter_dir)
    session.method.set_training(False)
    fillers = torch.full((input_ids.shape[0], lead), 5)
    inputs = {"input_ids": torch.cat([fillers, input_ids], dim=1)}
    if decoder_input_ids is not None:
        inputs["decoder_input_ids"] = decoder_input_ids
    with torch.no_grad(), session.method.active(input_ids.shape[0]):
        return session.model(**inputs).logits


def peft_logits(model, input_ids, decoder_input_ids=None) -> torch.Tensor:
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if decoder_input_ids is not None:
        inputs["decoder_input_ids"] = decoder_input_ids
    with torch.no_grad():
        return model.eval()(**inputs).logits


def load_exported(out, seq2seq: bool = False):
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    return peft.PeftModel.from_pretrained(auto.from_pretrained(out / "base"), out)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


# ------------------------------------------------------------------------------------ export

PREFIX = "{kind: prefix, prefix_len: 3, mlp_hidden: 16}"


def test_gpt2_prefix_exports_as_prefix_tuning_with_our_logits(trained, tmp_path, monkeypatch):
    run = trained("tiny-gpt2", PREFIX)
    out = export(run, tmp_path / "peft")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "PREFIX_TUNING" and config["prefix_projection"] is False
    assert config["base_model_name_or_path"] == str((out / "base").resolve())
    x = ids()
    want = ours(run, x)
    model = load_exported(out)
    assert isinstance(model, peft.PeftModelForCausalLM)
    assert max_diff(peft_logits(model, x), want) < TOLERANCE
    monkeypatch.chdir(tmp_path)  # the base is found from anywhere: its path is absolute
    auto = peft.AutoPeftModelForCausalLM.from_pretrained(out)
    assert max_diff(peft_logits(auto, x), want) < TOLERANCE
    # and reading it back gives exactly what the run stored
    stored = load_file(str(run / "adapter" / "prefix.safetensors"))["self"]
    assert torch.equal(read_peft(out).tensors["self"], stored)


@pytest.mark.parametrize("targets", [["q", "v"], ["q", "v", "o"]])
def test_gpt2_lora_exports_as_a_block_structured_c_attn_lora(trained, tmp_path, targets):
    run = trained("tiny-gpt2", f"{{kind: lora, rank: 2, alpha: 6, targets: {targets}}}")
    out = export(run, tmp_path / "peft")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is True
    c_attn = config["rank_pattern"].get("attn.c_attn", config["r"])
    assert c_attn == 4 and config["alpha_pattern"].get("attn.c_attn", config["lora_alpha"]) / c_attn == 6 / 2
    weights = load_file(str(out / "adapter_model.safetensors"))
    b = weights["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"]
    assert b.shape == (3 * 256, 4) and not b[256:512].any()  # the k slice stays untouched
    assert not b[:256, 2:].any() and not b[512:, :2].any() and b[:256, :2].any() and b[512:, 2:].any()
    x = ids()
    model = load_exported(out)
    theirs = peft_logits(model, x)
    assert max_diff(theirs, ours(run, x)) < TOLERANCE
    with model.disable_adapter():  # and the update is not nothing
        assert max_diff(theirs, peft_logits(model, x)) > 1e-4


def test_bart_lora_exports_on_every_attention_module(trained, tmp_path):
    run = trained("tiny-bart", "{kind: lora, rank: 2, alpha: 6}")
    out = export(run, tmp_path / "peft")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["target_modules"] == [
        "encoder_attn.q_proj",
        "encoder_attn.v_proj",
        "self_attn.q_proj",
        "self_attn.v_proj",
    ]
    x, y = ids(), ids(length=5, seed=1)
    model = load_exported(out, seq2seq=True)
    assert isinstance(model, peft.PeftModelForSeq2SeqLM)
    theirs = peft_logits(model, x, y)
    assert max_diff(theirs, ours(run, x, y)) < TOLERANCE
    with model.disable_adapter():
        assert max_diff(theirs, peft_logits(model, x, y)) > 1e-4


@pytest.mark.parametrize(
    "model_name, method",
    [
        ("tiny-gpt2", "{kind: prompt, prompt_len: 3}"),
        ("tiny-bart", "{kind: prompt, prompt_len: 3}"),
        ("tiny-gpt2", "{kind: ptuning, prompt_len: 3, encoder_hidden: 16, lstm_layers: 1}"),
        ("tiny-gpt2", "{kind: prefix, variant: embedding-only, prefix_len: 3, mlp_hidden: 16}"),
    ],
    ids=["gpt2-prompt", "bart-prompt", "gpt2-ptuning", "gpt2-embedding-only-prefix"],
)
def test_input_embeddings_export_as_prompt_tuning(trained, tmp_path, model_name, method):
    run = trained(model_name, method)
    out = export(run, tmp_path / "peft")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_transformer_submodules"] == 1
    seq2seq = model_name == "tiny-bart"
    x, y = ids(), (ids(length=5, seed=1) if seq2seq else None)
    theirs = peft_logits(load_exported(out, seq2seq), x, y)
    if seq2seq:  # the prompt is in the encoder input; the decoder's logits are the output
        assert max_diff(theirs, ours(run, x, y, lead=3)) < TOLERANCE
    elif "prefix" in method:  # the prefix holds no input positions of its own; peft's prompt does
        assert max_diff(theirs[:, 3:], ours(run, x)) < TOLERANCE
    else:  # both read L prompt positions, then the ids
        assert max_diff(theirs[:, 3:], ours(run, x, lead=3)[:, 3:]) < TOLERANCE


REFUSED = {
    "bart-prefix": ("tiny-bart", PREFIX, "cross-attention parts would be lost"),
    "bart-embedding-only": (
        "tiny-bart",
        "{kind: prefix, variant: embedding-only, prefix_len: 3, mlp_hidden: 16}",
        "the decoder table would be lost",
    ),
    "infix": ("tiny-gpt2", "{kind: prefix, variant: infix, prefix_len: 3, mlp_hidden: 16}", "where it sits"),
    "no-position-offset": (
        "tiny-gpt2",
        "{kind: prefix, prefix_len: 3, mlp_hidden: 16, position_offset: false}",
        "every position would change",
    ),
    "adapter": ("tiny-gpt2", "{kind: adapter, bottleneck: 4}", "no bottleneck adapter"),
    "full": ("tiny-gpt2", "{kind: full}", "already is an HF model folder"),
    "top-k": ("tiny-gpt2", "{kind: top-k, k: 1}", "already holds the trained weights"),
    "bitfit": ("tiny-bart", "{kind: bitfit}", "already holds the trained weights"),
    "feature-extraction": ("tiny-gpt2", "{kind: feature-extraction}", "already holds the trained weights"),
    "icl": ("tiny-gpt2", "{kind: icl, k: 1}", "nothing to export"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_peft_cannot_express_is_refused_in_one_line(trained, tmp_path, case):
    model_name, method, says = REFUSED[case]
    run = trained(model_name, method, epochs=0)
    out = tmp_path / "peft"
    result = CliRunner().invoke(app, ["export", str(run), "--to", "peft", "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("peftrun: error: cannot export") and says in lines[0]
    assert not out.exists()


def test_export_checks_its_target_and_its_out_folder(trained, tmp_path):
    run = trained("tiny-gpt2", PREFIX)
    result = CliRunner().invoke(app, ["export", str(run), "--to", "onnx", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "the only export target is peft" in result.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(PeftrunError, match="not an empty folder"):
        export(run, tmp_path / "full")
    (tmp_path / "empty").mkdir()  # an empty folder will do
    result = CliRunner().invoke(app, ["export", str(run), "--to", "peft", "--out", str(tmp_path / "empty")])
    assert result.exit_code == 0 and (tmp_path / "empty" / "adapter_config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "full"]  # no partial folder left


# ------------------------------------------------------------------------------------ import


def peft_adapter(tmp_path, config, seq2seq: bool = False, seed: int = 0):
    """A peft adapter made from scratch with peft on the tiny base, random weights, saved; and the
    base (fresh, same weights) with it loaded by peft."""
    name = "tiny-bart" if seq2seq else "tiny-gpt2"
    model = peft.get_peft_model(models.load(name).model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    model.save_pretrained(tmp_path / "adapter")
    loaded = peft.PeftModel.from_pretrained(models.load(name).model, tmp_path / "adapter")
    return tmp_path / "adapter", loaded


@pytest.mark.parametrize("projection", [False, True])
def test_a_peft_prefix_reads_as_our_prefix_keys_values(tmp_path, projection):
    config = peft.PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=3, prefix_projection=projection, encoder_hidden_size=16
    )
    folder, loaded = peft_adapter(tmp_path, config)
    adapter = read_peft(folder)
    assert adapter.kind == "prefix" and adapter.tensors["self"].shape == (4, 2, 4, 3, 64)
    x = ids()
    model = models.load("tiny-gpt2").model.eval()
    prefix = prefix_kv.install(model)
    positions = torch.arange(3, 3 + x.shape[1]).expand_as(x)  # real tokens numbered from L
    with torch.no_grad(), prefix.active({"self": adapter.tensors["self"][None]}):
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
    assert adapter.kind == "prompt" and adapter.tensors.shape == (3, width)  # seq2seq stores 2L rows
    x, y = ids(), (ids(length=5, seed=1) if seq2seq else None)
    model = models.load("tiny-bart" if seq2seq else "tiny-gpt2").model.eval()
    soft = SoftInput(model)
    inputs = {"input_ids": torch.cat([torch.full((2, 3), 5), x], dim=1)}
    if seq2seq:
        inputs["decoder_input_ids"] = y
    with torch.no_grad(), soft.active(adapter.tensors):
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
    ],
    ids=["gpt2-c_attn", "bart-q-v", "bart-qkvo-rslora-patterns"],
)
def test_a_peft_lora_reads_as_our_lora_updates(tmp_path, seq2seq, options):
    task = "SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM"
    folder, loaded = peft_adapter(tmp_path, peft.LoraConfig(task_type=task, **options), seq2seq)
    adapter = read_peft(folder)
    assert adapter.kind == "lora"
    if not seq2seq:  # the whole fused layer: one A (r, d), B (3d, r)
        first = adapter.tensors[0]
        assert first.module == "transformer.h.0.attn.c_attn" and (first.start, first.end) == (0, 768)
        assert first.A.shape == (2, 256) and first.B.shape == (768, 2) and first.scale == 4.0
    x, y = ids(), (ids(length=5, seed=1) if seq2seq else None)
    model = with_lora(models.load("tiny-bart" if seq2seq else "tiny-gpt2").model.eval(), adapter.tensors)
    inputs = {"input_ids": x, **({"decoder_input_ids": y} if seq2seq else {})}
    with torch.no_grad():
        mine = model(**inputs).logits
    assert max_diff(mine, peft_logits(loaded, x, y)) < TOLERANCE


def test_other_peft_types_are_refused_by_name(tmp_path):
    folder, _ = peft_adapter(tmp_path, peft.IA3Config(task_type="CAUSAL_LM"))
    with pytest.raises(PeftrunError, match="peft adapter type IA3 .* has no peftrun layout"):
        read_peft(folder)


def test_peft_adapters_serve_through_peftrun_load_beside_the_base(tmp_path):
    """peft folders load with `peftrun.load` (one base, by its folder) and give peft's logits."""
    import peftrun

    base = tmp_path / "base"
    models.load("tiny-gpt2").model.save_pretrained(base)  # the weights peft_adapter's models use
    models.load_tokenizer("tiny-gpt2").save_pretrained(base)
    (tmp_path / "l").mkdir()
    (tmp_path / "p").mkdir()
    lora = peft.LoraConfig(
        task_type="CAUSAL_LM", target_modules=["c_attn"], r=2, lora_alpha=8, fan_in_fan_out=True
    )
    lora_folder, lora_peft = peft_adapter(tmp_path / "l", lora, seed=1)
    prompt = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)
    prompt_folder, prompt_peft = peft_adapter(tmp_path / "p", prompt, seed=2)
    lm = peftrun.load(f"lora={lora_folder}", f"prompt={prompt_folder}", base=str(base))
    x = ids()
    assert lm.names == ["lora", "prompt"]
    assert max_diff(lm.logits(x), peft_logits(lora_peft, x)) < TOLERANCE  # the first adapter by default
    with_fillers = torch.cat([torch.full((2, 3), 5), x], dim=1)
    mine = lm.logits(with_fillers, adapter="prompt")[:, 3:]
    assert max_diff(mine, peft_logits(prompt_peft, x)[:, 3:]) < TOLERANCE
    plain = models.load("tiny-gpt2").model.eval()
    with torch.no_grad():
        assert max_diff(lm.logits(x, adapter=None), plain(x).logits) < TOLERANCE
