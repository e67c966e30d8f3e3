"""Read an HF peft adapter folder into what peftrun serves per row (`read_peft`).

PREFIX_TUNING on a decoder-only model, LORA, PROMPT_TUNING and P_TUNING (whose saved embeddings are
its encoder's output, used as they are by a loaded peft model) become a `PeftAdapter`: what the
adapter adds to a row of a batch shared with other adapters (`RowInputs`: prefix keys/values and
the position offset, or an (L, d) prompt), the room its token format leaves, and LoRA updates to
wrap around the base's modules (gated to its rows). Other types are refused in one line naming the
type. This module needs no peft installed; tests/serving/test_peft_import.py checks it against peft.

    peft (adapter_model.safetensors)             peftrun
    PREFIX_TUNING prompt_embeddings              key_values {"self": (n_layer, 2, n_kv_head, L, head_dim)}
      (L, n_layer·2·token_dim)                     (peft's token_dim is n_kv_head·head_dim, its
                                                   num_attention_heads n_kv_head); real tokens
                                                   numbered from L, as peft's past keys/values
    PROMPT_TUNING, P_TUNING (≥ L, d)             prompt (L, d), the first L rows (a seq2seq peft
                                                   model stores L per submodule but prepends the first)
    LORA lora_A (r, in), lora_B (out, r)         LoRAUpdate per module: scale lora_alpha / r (rsLoRA:
                                                   / √r), r and alpha per module after rank_pattern /
                                                   alpha_pattern
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from peftrun.data.formats import Room
from peftrun.errors import PeftrunError
from peftrun.files import read_json
from peftrun.methods.inject.rows import RowInputs
from peftrun.serving.peft_files import PEFT_CONFIG, PEFT_MODULE_PREFIX, PEFT_WEIGHTS


@dataclass(frozen=True)
class LoRAUpdate:
    """h = W x + scale · B A x, added to output features [start, end) of the module `module`
    (a path from the HF model: `model.get_submodule(module)`, an nn.Linear or GPT-2 Conv1D)."""

    module: str
    A: torch.Tensor  # (r, in_features)
    B: torch.Tensor  # (end - start, r)
    scale: float
    start: int
    end: int


@dataclass(frozen=True)
class PeftAdapter:
    """A peft adapter as peftrun serves it on a shared frozen base.

    `rows`: what it adds to each of its rows (`RowInputs`: prefix keys/values per attention kind
    and their position offset, or an (L, d) prompt); `room`: what its token format leaves (a
    prompt's L filler tokens, a prefix's L reserved positions); `lora`: updates to wrap around the
    base's modules, applied to its rows only. `base_model` is peft's `base_model_name_or_path`;
    `options` holds peft_type and task_type, and prefix_len / prompt_len, or rank, alpha,
    target_modules and fan_in_fan_out.
    """

    base_model: str
    rows: RowInputs
    room: Room = Room()
    lora: list[LoRAUpdate] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def to(self, device) -> PeftAdapter:
        """The same adapter with its tensors on `device`."""
        rows = replace(
            self.rows,
            key_values={kind: kv.to(device) for kind, kv in self.rows.key_values.items()},
            prompt=None if self.rows.prompt is None else self.rows.prompt.to(device),
        )
        lora = [replace(u, A=u.A.to(device), B=u.B.to(device)) for u in self.lora]
        return replace(self, rows=rows, lora=lora)


def read_peft(folder: str | Path) -> PeftAdapter:
    """An HF peft adapter folder (adapter_config.json + adapter_model.safetensors) as peftrun
    serves it: PREFIX_TUNING (decoder-only), LORA, PROMPT_TUNING or P_TUNING."""
    folder = Path(folder)
    if not (folder / PEFT_CONFIG).is_file():
        raise PeftrunError(f"{folder} is not a peft adapter folder (no {PEFT_CONFIG})")
    if not (folder / PEFT_WEIGHTS).is_file():
        raise PeftrunError(f"{folder} has no {PEFT_WEIGHTS}; peftrun reads peft's safetensors files only")
    config = read_json(folder / PEFT_CONFIG)
    peft_type = config.get("peft_type")
    readers = {"PREFIX_TUNING": _read_prefix, "LORA": _read_lora, "PROMPT_TUNING": _read_prompt}
    readers["P_TUNING"] = _read_prompt
    if peft_type not in readers:
        raise PeftrunError(
            f"peft adapter type {peft_type} ({folder}) has no peftrun layout; peftrun reads "
            f"{', '.join(readers)}"
        )
    weights = load_file(str(folder / PEFT_WEIGHTS))
    adapter = readers[peft_type](config, weights)
    options = {"peft_type": peft_type, "task_type": config.get("task_type"), **adapter.options}
    base = config.get("base_model_name_or_path") or ""
    return PeftAdapter(base, adapter.rows, adapter.room, adapter.lora, options)


def _read_prefix(config: dict, weights: dict) -> PeftAdapter:
    from peftrun.methods.prefix import kv_layout

    if config.get("task_type") != "CAUSAL_LM" or config.get("num_transformer_submodules", 1) != 1:
        raise PeftrunError(
            "peft PREFIX_TUNING is read for decoder-only models (task_type CAUSAL_LM) only; on an "
            "encoder-decoder it prefixes the decoder's self-attention alone and shifts its positions, which "
            "peftrun's BART prefix does not"
        )
    # peft saves token_dim and num_attention_heads as the keys'/values' own (n_kv_head·head_dim and
    # n_kv_head on a grouped-query model), so the saved table is laid out by them.
    length, n_layer = config["num_virtual_tokens"], config["num_layers"]
    n_kv_head, width = config["num_attention_heads"], config["token_dim"]
    flat = weights["prompt_embeddings"]
    # Saved peft prefixes are the final keys/values, whether prefix_projection trained them or not.
    if tuple(flat.shape) != (length, n_layer * 2 * width):
        raise PeftrunError(
            f"peft prefix has shape {tuple(flat.shape)}, its config says ({length}, {n_layer * 2 * width})"
        )
    kv = kv_layout(flat, n_layer, n_kv_head).contiguous()  # (n_layer, 2, n_kv_head, L, head_dim)
    rows = RowInputs(key_values={"self": kv}, position_offset=length)  # peft numbers real tokens from L
    return PeftAdapter("", rows, Room(reserved_positions=length), options={"prefix_len": length})


def _read_prompt(config: dict, weights: dict) -> PeftAdapter:
    length = config["num_virtual_tokens"]
    prompt = weights["prompt_embeddings"]
    if prompt.dim() != 2 or prompt.shape[0] < length:
        raise PeftrunError(f"peft prompt has shape {tuple(prompt.shape)}, its config says {length} tokens")
    # peft keeps L rows per transformer submodule (seq2seq default: 2L) but prepends the first L,
    # in forward and generate alike.
    rows = RowInputs(prompt=prompt[:length].contiguous())
    return PeftAdapter("", rows, Room(leading=length), options={"prompt_len": length})


def _read_lora(config: dict, weights: dict) -> PeftAdapter:
    for flag, what in (("use_dora", "DoRA magnitudes"), ("modules_to_save", "fully trained modules")):
        if config.get(flag):
            raise PeftrunError(f"peft LORA with {flag} has {what}, which peftrun's LoRA cannot hold")
    if config.get("bias", "none") != "none":
        raise PeftrunError(
            f"peft LORA with bias={config['bias']!r} trains biases, which peftrun's LoRA cannot hold"
        )
    modules: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    prefix = re.escape(PEFT_MODULE_PREFIX)
    for name, tensor in weights.items():
        match = re.fullmatch(rf"(?:{prefix})?(.+)\.lora_([AB])\.weight", name)
        if match is None:
            raise PeftrunError(f"peft LORA tensor {name!r} is not a lora_A/lora_B weight peftrun can place")
        modules[match[1]][match[2]] = tensor
    updates = []
    for path, pair in sorted(modules.items()):
        a, b = pair["A"], pair["B"]
        rank = a.shape[0]  # the module's own r: rank_pattern's, where it names the module
        alpha = _pattern(config.get("alpha_pattern") or {}, path, config["lora_alpha"])
        scale = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
        updates.append(LoRAUpdate(path, a, b, scale, 0, b.shape[0]))
    options = {
        "rank": config["r"],
        "alpha": config["lora_alpha"],
        "target_modules": config.get("target_modules"),
        "fan_in_fan_out": bool(config.get("fan_in_fan_out")),
    }
    return PeftAdapter("", RowInputs(), lora=updates, options=options)


def _pattern(patterns: dict, path: str, default):
    """peft's per-module override: the first key matching the end of the module's path."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return default
