"""Export to the real HF peft: runs trained here export to folders peft loads and runs with our
logits; what peft cannot express is refused in one line."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_config
from peft_helpers import TOLERANCE, ids, max_diff, peft_logits, require_peft
from safetensors.torch import load_file
from typer.testing import CliRunner

from peftrun import experiment
from peftrun.cli import app
from peftrun.errors import PeftrunError
from peftrun.scoring import open_run
from peftrun.serving.peft_export import export
from peftrun.serving.peft_import import read_peft
from peftrun.session import Session

peft = require_peft()
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM  # noqa: E402

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


def load_exported(out, seq2seq: bool = False):
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    return peft.PeftModel.from_pretrained(auto.from_pretrained(out / "base"), out)


PREFIX = "{kind: prefix, prefix_len: 3, mlp_hidden: 16}"


@pytest.mark.parametrize("model_name", ["tiny-gpt2", "tiny-llama"])
def test_decoder_prefix_exports_as_prefix_tuning_with_our_logits(trained, tmp_path, monkeypatch, model_name):
    """peft hands the prefix to the model as its cache (Llama: n_kv_head heads, real tokens numbered
    from L, the mask covering L + T columns): the same logits as ours."""
    run = trained(model_name, PREFIX)
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
    assert torch.equal(read_peft(out).rows.key_values["self"], stored)


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


@pytest.mark.parametrize("targets", [["q", "v"], ["all-linear"]])
def test_llama_lora_exports_on_each_projection_at_its_own_width(trained, tmp_path, targets):
    run = trained("tiny-llama", f"{{kind: lora, rank: 2, alpha: 6, targets: {targets}}}")
    out = export(run, tmp_path / "peft")
    config = json.loads((out / "adapter_config.json").read_text())
    names = ["q_proj", "v_proj"] if targets == ["q", "v"] else ["q_proj", "k_proj", "v_proj", "o_proj"]
    mlp = [] if targets == ["q", "v"] else ["mlp.down_proj", "mlp.gate_proj", "mlp.up_proj"]
    assert config["target_modules"] == mlp + sorted(f"self_attn.{n}" for n in names)
    assert config["fan_in_fan_out"] is False and config["r"] == 2 and not config["rank_pattern"]
    weights = load_file(str(out / "adapter_model.safetensors"))
    b = weights["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"]
    assert b.shape == (2 * 16, 2)  # v: n_kv_head·head_dim wide (GQA)
    x = ids()
    model = load_exported(out)
    theirs = peft_logits(model, x)
    assert max_diff(theirs, ours(run, x)) < TOLERANCE
    with model.disable_adapter():
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
        ("tiny-llama", "{kind: prompt, prompt_len: 3}"),
        ("tiny-llama", "{kind: ptuning, prompt_len: 3, encoder_hidden: 16, lstm_layers: 1}"),
        ("tiny-llama", "{kind: prefix, variant: embedding-only, prefix_len: 3, mlp_hidden: 16}"),
    ],
    ids=[
        "gpt2-prompt",
        "bart-prompt",
        "gpt2-ptuning",
        "gpt2-embedding-only-prefix",
        "llama-prompt",
        "llama-ptuning",
        "llama-embedding-only-prefix",
    ],  # fmt: skip
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
