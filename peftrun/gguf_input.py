"""A GGUF file as `model.name`: converted once into a plain, trainable HF folder in peftrun's
per-user cache, keyed by the file's content hash, and reused afterwards.

`model.name` may name a `.gguf` file or a folder holding exactly one. Before anything is loaded the
file's header is read (`gguf.GGUFReader`, memory-mapped, a few seconds): a file that is not a GGUF,
or is truncated, or holds an architecture peftrun has no family for, is a one-line error and
nothing is written. The key is the file's sha256 (0.4 s for SmolLM2's 98 MB), computed once per
process for each (path, size, mtime). A file with the hash of the converted SmolLM2 folder
(`smollm2-135m`) reuses that folder instead of converting again.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from peftrun import smollm2
from peftrun.errors import PeftrunError
from peftrun.files import digest

SUFFIX = ".gguf"
# GGUF architecture names that differ from the HF model_type of the same layout.
MODEL_TYPES = {"command-r": "cohere", "qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe"}


def gguf_in(name: str) -> Path | None:
    """The GGUF file `name` points at: a `.gguf` file, or a folder holding exactly one (a folder
    holding none, or holding a config.json, is an ordinary HF folder: None). Anything else (a hub
    name): None."""
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() == SUFFIX:
        return path
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == SUFFIX and p.is_file())
    if len(found) > 1:
        listed = ", ".join(p.name for p in found[:4])
        raise PeftrunError(f"{path} holds {len(found)} GGUF files ({listed}); set model.name to one of them")
    return found[0] if found else None


def architecture(gguf: Path) -> str:
    """The HF model_type of the GGUF's `general.architecture`; a file that is not a readable GGUF
    (wrong magic, truncated tensor data, no architecture) is a one-line error. Read once per
    process for each (path, size, mtime): a run resolves its model name several times."""
    stat = gguf.stat()
    return _architecture(gguf, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=32)
def _architecture(gguf: Path, size: int, mtime_ns: int) -> str:
    try:
        from gguf import GGUFReader
    except ImportError:
        raise PeftrunError(f"reading {gguf.name} needs the gguf package; run: pip install gguf") from None
    try:
        field = GGUFReader(gguf).fields["general.architecture"]
        name = bytes(field.parts[field.data[0]]).decode("utf-8")
    except (ValueError, OSError, KeyError, IndexError, UnicodeDecodeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise PeftrunError(f"cannot read {gguf} as a GGUF model ({first[:160]}); replace the file") from None
    return MODEL_TYPES.get(name, name)


def converted_folder(gguf: Path, families) -> Path:
    """The plain HF folder of `gguf`, converting it (once) when the cache has none. `families`:
    the model types peftrun can run; another architecture is refused before any conversion."""
    model_type = architecture(gguf)
    if model_type not in families:
        raise PeftrunError(
            f"{gguf.name} is a {model_type} model; peftrun has families for {', '.join(families)}"
        )
    key = digest(gguf)
    for folder in (smollm2.cache_root() / smollm2.FOLDER, smollm2.cache_root() / f"gguf-{key[:24]}"):
        if smollm2.is_complete(folder) and source_digest(folder) == key:
            return folder
    smollm2.convert_gguf(gguf, folder, fix="replace the file", digest=key)
    return folder


def source_digest(folder: Path) -> str | None:
    """The sha256 of the GGUF a converted folder was made from (None when it does not say)."""
    try:
        return json.loads((folder / "peftrun-source.json").read_text()).get("sha256")
    except (OSError, ValueError):
        return None
