"""Interop with Hugging Face peft: export a run's adapter as a peft adapter folder (`export`), and
read a peft adapter folder into peftrun's own layouts (`read_peft`).

Export (`peftrun export RUN --to peft --out DIR`) writes `adapter_config.json` and
`adapter_model.safetensors`, which `PeftModel.from_pretrained(base, DIR)` loads. A built-in tiny
base is on no hub, so the export also writes it to DIR/base (the exact weights the run trained
on, `models.load(name, seed=cfg.base_seed())`, with its tokenizer) and names that folder by its
absolute path as `base_model_name_or_path`: peft opens that path from the working directory, not
from DIR, so `AutoPeftModelForCausalLM.from_pretrained(DIR)` works from anywhere (a moved DIR
needs its base passed explicitly). Peft then gives the same logits as peftrun on the same token
ids (tests/serving/test_peft_interop.py); the ids are peftrun's token format (data/formats.py),
less the soft prompt's filler tokens, which peft prepends itself.

    peftrun (adapter/)                         peft (adapter_model.safetensors)
    prefix, GPT-2 (every-layer)                PREFIX_TUNING, prefix_projection false
      (n_layer, 2, n_head, L, hd)        ──►     prompt_embeddings (L, n_layer·2·d):
                                                 permute(3, 0, 1, 2, 4), then flatten; peft
                                                 passes it as past keys/values, so real tokens
                                                 sit at positions L…, as our position offset
    prefix, GPT-2 embedding-only (L, d)  ──►   PROMPT_TUNING (L, d): the same model (with the
                                                 offset, the prefix's keys/values are the frozen
                                                 model's on those embeddings at positions 0…L−1)
    prompt, ptuning (L, d)               ──►   PROMPT_TUNING prompt_embeddings (L, d)
                                                 (BART: num_transformer_submodules 1, the encoder)
    lora, BART q/k/v/o                   ──►   LORA on {self_attn,encoder_attn}.{q,k,v,out}_proj
    lora, GPT-2 o                        ──►   LORA on attn.c_proj (Conv1D: fan_in_fan_out)
    lora, GPT-2: k of q/k/v on c_attn    ──►   LORA on the whole attn.c_attn, rank k·r:
      A_t (r, d), B_t (d, r) on t's               A = [A_t1; …; A_tk]            (k·r, d)
      output columns [s_t, e_t)                   B[s_t:e_t, j·r:(j+1)·r] = B_tj (3d, k·r), else 0
                                                 lora_alpha = k·alpha: peft's scale
                                                 lora_alpha / (k·r) = alpha / r, ours

(B A x with the stacked A and the block B is Σ_t pad(B_t A_t x): the same update, exactly. With o
as well as some of q/k/v on GPT-2, `rank_pattern`/`alpha_pattern` give c_attn its k·r and k·alpha.)
P-tuning's stored embeddings are what its encoder produced; peft's P_TUNING would run a fresh
encoder over them whenever the adapter is loaded trainable, so they export as PROMPT_TUNING.

Refused in one line, saying what would be lost (`refusal`): BART prefixes (peft's PREFIX_TUNING
reaches the decoder's self-attention only; an embedding-only one's decoder table has no place in
PROMPT_TUNING), infixes, GPT-2 prefixes with position_offset off (peft numbers real tokens from L),
bottleneck adapters (no peft type), full / top-k / bitfit / feature-extraction (not adapters peft
has: the run's adapter folder already holds the weights), icl (nothing trained).

Import (`read_peft`): PREFIX_TUNING on a decoder-only model, LORA, PROMPT_TUNING and P_TUNING
(whose saved embeddings are its encoder's output, used as they are by a loaded peft model) become a
`PeftAdapter` in the layouts peftrun's mechanisms take (see its docstring); other types are refused
in one line naming the type. This module needs no peft installed; the tests check it against peft.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file

from peftrun import models
from peftrun.errors import PeftrunError
from peftrun.files import make_dir, read_json, write_json
from peftrun.methods.finetune import SUBSET_WEIGHTS

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
TARGETS = ("peft",)
_PEFT_PREFIX = "base_model.model."  # how peft names the wrapped model's modules in its file


# ----------------------------------------------------------------------------- the description


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
    """A peft adapter in peftrun's layouts.

    kind      tensors
    "prefix"  {"self": (n_layer, 2, n_head, L, head_dim)}: prefix_kv's layout (`prefix_kv.install(model)`,
              `.active({"self": kv[None]})`); real tokens are numbered from L (options["position_offset"])
    "prompt"  (L, d): input embeddings in front of the input (BART: of the encoder's); `SoftInput`
              takes them with L filler tokens prepended to the ids
    "lora"    list[LoRAUpdate], one per adapted module

    `base_model` is peft's `base_model_name_or_path`; `options` holds peft_type and task_type, and
    prefix_len / prompt_len, or rank, alpha, target_modules and fan_in_fan_out.
    """

    kind: Literal["prefix", "lora", "prompt"]
    base_model: str
    tensors: dict[str, torch.Tensor] | torch.Tensor | list[LoRAUpdate]
    options: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- export


def refusal(method, arch: models.ArchSummary, adapter_dir: Path) -> str | None:
    """Why this run's adapter has no peft equivalent (what would be lost), or None."""
    kind = method.kind
    if kind == "prefix":
        if arch.is_encoder_decoder and method.variant == "embedding-only":
            return (
                "an embedding-only BART prefix has an encoder and a decoder table; peft's PROMPT_TUNING "
                "holds the encoder's alone (numbering real tokens from L), so the decoder table would be lost"
            )
        if arch.is_encoder_decoder:
            return (
                "peft's PREFIX_TUNING reaches only the decoder's self-attention (as its past keys/values), "
                "so this BART prefix's encoder self-attention and cross-attention parts would be lost"
            )
        if method.variant == "infix":
            return (
                "an infix sits between the source and the target ([x; INFIX; y]); peft's prefixes and "
                "prompts come before the whole input, so where it sits would be lost"
            )
        offset = method.position_offset if method.position_offset is not None else arch.shifts_positions
        if not offset:
            return (
                "position_offset is off (real tokens numbered from 0), but peft passes a prefix as past "
                "keys/values and numbers them from the prefix length L, so every position would change"
            )
        return None
    if kind in ("lora", "prompt", "ptuning"):
        return None
    if kind == "adapter":
        return "peft has no bottleneck adapter type (Lin et al. / Houlsby); the adapters would be lost"
    if kind == "full":
        return (
            f"full fine-tuning is not an adapter: {adapter_dir} already is an HF model folder "
            "(from_pretrained loads it)"
        )
    if kind == "icl":
        return f"icl trains nothing: there is nothing to export (its demonstrations: {adapter_dir}/icl.json)"
    return (
        f"{kind} is not an adapter peft has: {adapter_dir / SUBSET_WEIGHTS} already holds the trained "
        "weights (HF parameter names, load_state_dict(strict=False))"
    )


def export(run_dir: str | Path, out: str | Path, to: str = "peft") -> Path:
    """Write the run's adapter as a peft adapter folder `out` (new or empty); returns `out`."""
    from peftrun.scoring import open_run

    if to not in TARGETS:
        raise PeftrunError(f"--to {to!r}: the only export target is peft")
    run, cfg = open_run(run_dir)
    if not run.has_adapter:
        raise PeftrunError(f"{run.path} has no trained adapter yet; finish it with `peftrun train`")
    arch = models.arch_summary(models.hf_config(cfg.model.name))
    why = refusal(cfg.method, arch, run.adapter_dir)
    if why is not None:
        raise PeftrunError(f"cannot export {run.path} to peft: {why}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PeftrunError(f"--out {out} exists and is not an empty folder; name a new one")
    if cfg.method.kind == "lora":
        config, tensors = _lora(cfg.method, arch, run.adapter_dir)
    elif cfg.method.kind == "prefix" and cfg.method.variant == "every-layer":
        config, tensors = _prefix(arch, run.adapter_dir)
    else:  # prompt, ptuning, GPT-2 embedding-only prefix: (L, d) input embeddings
        config, tensors = _prompt(arch, run.adapter_dir, cfg.method.kind)
    # Written beside `out` and renamed into place: the folder is whole or absent.
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    make_dir(partial)
    try:
        config = {
            "peft_type": config.pop("peft_type"),
            "task_type": "SEQ_2_SEQ_LM" if arch.is_encoder_decoder else "CAUSAL_LM",
            "base_model_name_or_path": _base_model(cfg, partial, out),
            "inference_mode": True,
            **config,
        }
        tensors = {name: tensor.contiguous() for name, tensor in tensors.items()}
        save_file(tensors, str(partial / PEFT_WEIGHTS), metadata={"format": "pt"})
        write_json(partial / PEFT_CONFIG, config)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def _base_model(cfg, folder: Path, out: Path) -> str:
    """What peft should load as the base: a built-in tiny model saved into folder/base (named by
    where it will be, out/base), a local folder by its absolute path, or the hub name."""
    name = cfg.model.name
    if name in models.BUILTIN:
        loaded = models.load(name, seed=cfg.base_seed())  # the very weights the run trained on
        loaded.model.save_pretrained(folder / "base")
        loaded.tokenizer.save_pretrained(folder / "base")
        return str((out / "base").resolve())
    return str(Path(name).resolve()) if Path(name).exists() else name


def _prefix(arch: models.ArchSummary, adapter_dir: Path) -> tuple[dict, dict]:
    from peftrun.methods.prefix import WEIGHTS

    kv = load_file(str(adapter_dir / WEIGHTS))["self"]  # (n_layer, 2, n_head, L, head_dim)
    length = kv.shape[3]
    flat = kv.permute(3, 0, 1, 2, 4).reshape(length, -1)  # (L, n_layer·2·d), layer-major, then k/v
    config = {
        "peft_type": "PREFIX_TUNING",
        "num_virtual_tokens": length,
        "token_dim": arch.hidden,
        "num_layers": arch.n_layer,
        "num_attention_heads": arch.n_head,
        "num_transformer_submodules": 1,
        "encoder_hidden_size": arch.hidden,
        "prefix_projection": False,
    }
    return config, {"prompt_embeddings": flat}


def _prompt(arch: models.ArchSummary, adapter_dir: Path, kind: str) -> tuple[dict, dict]:
    if kind == "prefix":  # embedding-only: one (L, d) table on GPT-2
        from peftrun.methods.prefix import WEIGHTS

        prompt = load_file(str(adapter_dir / WEIGHTS))["self"]
    else:
        from peftrun.methods.soft_prompt import WEIGHTS

        prompt = load_file(str(adapter_dir / WEIGHTS))["prompt"]
    config = {
        "peft_type": "PROMPT_TUNING",
        "num_virtual_tokens": prompt.shape[0],
        "token_dim": arch.hidden,
        "num_layers": arch.n_layer,
        "num_attention_heads": arch.n_head,
        # One set of L embeddings, in front of the (encoder) input; peft's seq2seq default of 2
        # would store L more rows that its prompt tuning never reads.
        "num_transformer_submodules": 1,
        "prompt_tuning_init": "RANDOM",
    }
    return config, {"prompt_embeddings": prompt}


def _lora(options, arch: models.ArchSummary, adapter_dir: Path) -> tuple[dict, dict]:
    from peftrun.methods.lora import WEIGHTS
    from peftrun.methods.lora_options import LORA_TARGETS

    family = models.FAMILIES[arch.family]
    slices = family.projection_slices(arch)  # target → (attribute, first, end column)
    stored = load_file(str(adapter_dir / WEIGHTS))  # "<module path>.lora_{A,B}.<target>"
    chosen: dict[str, set[str]] = defaultdict(set)
    for name in stored:
        path, _, target = name.rpartition(".")
        chosen[path.removesuffix(".lora_A").removesuffix(".lora_B")].add(target)
    tensors, stacked = {}, {}
    for path, targets in chosen.items():
        ordered = [t for t in LORA_TARGETS if t in targets]
        attribute = path.rsplit(".", 1)[-1]
        rank = stored[f"{path}.lora_A.{ordered[0]}"].shape[0]
        width = max(end for name, _, end in slices.values() if name == attribute)  # output features
        a = torch.cat([stored[f"{path}.lora_A.{t}"] for t in ordered])  # (k·r, in)
        b = a.new_zeros(width, len(ordered) * rank)  # (out, k·r)
        for j, target in enumerate(ordered):
            _, start, end = slices[target]
            b[start:end, j * rank : (j + 1) * rank] = stored[f"{path}.lora_B.{target}"]
        tensors[f"{_PEFT_PREFIX}{path}.lora_A.weight"] = a
        tensors[f"{_PEFT_PREFIX}{path}.lora_B.weight"] = b
        # "attn.c_attn", "self_attn.q_proj", "encoder_attn.v_proj": the module's own name would
        # also match GPT-2's mlp.c_proj for o.
        stacked[".".join(path.split(".")[-2:])] = len(ordered)
    # One rank for all when every module stacks alike; else r for most, patterns for c_attn.
    common = stacked[next(iter(stacked))] if len(set(stacked.values())) == 1 else 1
    config = {
        "peft_type": "LORA",
        "r": common * options.rank,
        "lora_alpha": common * options.alpha,
        "target_modules": sorted(stacked),
        "rank_pattern": {name: k * options.rank for name, k in stacked.items() if k != common},
        "alpha_pattern": {name: k * options.alpha for name, k in stacked.items() if k != common},
        "lora_dropout": options.dropout,
        "fan_in_fan_out": arch.family == "gpt2",  # GPT-2's Conv1D stores its weight (in, out)
        "bias": "none",
        "use_rslora": False,
    }
    return config, tensors


# ----------------------------------------------------------------------------------- import


def read_peft(folder: str | Path) -> PeftAdapter:
    """An HF peft adapter folder (adapter_config.json + adapter_model.safetensors) in peftrun's
    layouts: PREFIX_TUNING (decoder-only), LORA, PROMPT_TUNING or P_TUNING."""
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
    kind, tensors, options = readers[peft_type](config, weights)
    options = {"peft_type": peft_type, "task_type": config.get("task_type"), **options}
    return PeftAdapter(kind, config.get("base_model_name_or_path") or "", tensors, options)


def _read_prefix(config: dict, weights: dict) -> tuple:
    from peftrun.methods.prefix import kv_layout

    if config.get("task_type") != "CAUSAL_LM" or config.get("num_transformer_submodules", 1) != 1:
        raise PeftrunError(
            "peft PREFIX_TUNING is read for decoder-only models (task_type CAUSAL_LM) only; on an "
            "encoder-decoder it prefixes the decoder's self-attention alone and shifts its positions, which "
            "peftrun's BART prefix does not"
        )
    length, n_layer = config["num_virtual_tokens"], config["num_layers"]
    n_head, width = config["num_attention_heads"], config["token_dim"]
    flat = weights["prompt_embeddings"]
    # Saved peft prefixes are the final keys/values, whether prefix_projection trained them or not.
    if tuple(flat.shape) != (length, n_layer * 2 * width):
        raise PeftrunError(
            f"peft prefix has shape {tuple(flat.shape)}, its config says ({length}, {n_layer * 2 * width})"
        )
    kv = kv_layout(flat, n_layer, n_head).contiguous()  # (n_layer, 2, n_head, L, head_dim)
    return "prefix", {"self": kv}, {"prefix_len": length, "position_offset": True}


def _read_prompt(config: dict, weights: dict) -> tuple:
    length = config["num_virtual_tokens"]
    rows = weights["prompt_embeddings"]
    if rows.dim() != 2 or rows.shape[0] < length:
        raise PeftrunError(f"peft prompt has shape {tuple(rows.shape)}, its config says {length} tokens")
    # peft keeps L rows per transformer submodule (seq2seq default: 2L) but prepends the first L,
    # in forward and generate alike.
    return "prompt", rows[:length].contiguous(), {"prompt_len": length}


def _read_lora(config: dict, weights: dict) -> tuple:
    for flag, what in (("use_dora", "DoRA magnitudes"), ("modules_to_save", "fully trained modules")):
        if config.get(flag):
            raise PeftrunError(f"peft LORA with {flag} has {what}, which peftrun's LoRA cannot hold")
    if config.get("bias", "none") != "none":
        raise PeftrunError(
            f"peft LORA with bias={config['bias']!r} trains biases, which peftrun's LoRA cannot hold"
        )
    modules: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for name, tensor in weights.items():
        match = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])\.weight", name)
        if match is None:
            raise PeftrunError(f"peft LORA tensor {name!r} is not a lora_A/lora_B weight peftrun can place")
        modules[match[1]][match[2]] = tensor
    updates = []
    for path, pair in sorted(modules.items()):
        a, b = pair["A"], pair["B"]
        rank = a.shape[0]
        alpha = _pattern(config.get("alpha_pattern") or {}, path, config["lora_alpha"])
        scale = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
        updates.append(LoRAUpdate(path, a, b, scale, 0, b.shape[0]))
    options = {
        "rank": config["r"],
        "alpha": config["lora_alpha"],
        "target_modules": config.get("target_modules"),
        "fan_in_fan_out": bool(config.get("fan_in_fan_out")),
    }
    return "lora", updates, options


def _pattern(patterns: dict, path: str, default):
    """peft's per-module override: the first key matching the end of the module's path."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return default
