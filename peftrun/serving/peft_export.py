"""Export a run's adapter as an HF peft adapter folder (`export`); reading one back is
peftrun.serving.peft_import.

Export (`peftrun export RUN --to peft --out DIR`) writes `adapter_config.json` and
`adapter_model.safetensors`, which `PeftModel.from_pretrained(base, DIR)` loads. A built-in tiny
base is on no hub, so the export also writes it to DIR/base (the exact weights the run trained
on, `models.load(name, seed=cfg.base_seed())`, with its tokenizer) and names that folder by its
absolute path as `base_model_name_or_path`: peft opens that path from the working directory, not
from DIR, so `AutoPeftModelForCausalLM.from_pretrained(DIR)` works from anywhere (a moved DIR
needs its base passed explicitly). Peft then gives the same logits as peftrun on the same token
ids (tests/serving/test_peft_export.py); the ids are peftrun's token format (data/formats.py),
less the soft prompt's filler tokens, which peft prepends itself.

    peftrun (adapter/)                         peft (adapter_model.safetensors)
    prefix, GPT-2 (every-layer)                PREFIX_TUNING, prefix_projection false
      (n_layer, 2, n_kv_head, L, hd)     ──►     prompt_embeddings (L, n_layer·2·n_kv_head·hd):
                                                 permute(3, 0, 1, 2, 4), then flatten; peft
                                                 passes it as past keys/values, so real tokens
                                                 sit at positions L…, as our position offset
                                                 (token_dim n_kv_head·hd, num_attention_heads
                                                 n_kv_head: what peft itself saves for a model
                                                 with fewer key/value heads than query heads)
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
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from peftrun import models
from peftrun.errors import PeftrunError
from peftrun.files import make_dir, write_json
from peftrun.methods.finetune import SUBSET_WEIGHTS
from peftrun.serving.peft_files import PEFT_CONFIG, PEFT_MODULE_PREFIX, PEFT_WEIGHTS

TARGETS = ("peft",)


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
    where it will be, out/base), a local folder by its absolute path (a converted GGUF's folder
    for `smollm2-135m` and GGUF files), or the hub name."""
    name = cfg.model.name
    if name in models.BUILTIN:
        loaded = models.load(name, seed=cfg.base_seed())  # the very weights the run trained on
        loaded.model.save_pretrained(folder / "base")
        loaded.tokenizer.save_pretrained(folder / "base")
        return str((out / "base").resolve())
    source = models.weights_source(name)  # smollm2-135m, a GGUF file: the converted folder
    return str(Path(source).resolve()) if Path(source).exists() else source


def _prefix(arch: models.ArchSummary, adapter_dir: Path) -> tuple[dict, dict]:
    from peftrun.methods.prefix import WEIGHTS

    kv = load_file(str(adapter_dir / WEIGHTS))["self"]  # (n_layer, 2, n_kv_head, L, head_dim)
    length = kv.shape[3]
    flat = kv.permute(3, 0, 1, 2, 4).reshape(length, -1)  # (L, n_layer·2·width), layer-major, then k/v
    config = {
        "peft_type": "PREFIX_TUNING",
        "num_virtual_tokens": length,
        # peft's prefix width is the keys'/values' (it saves these two so on a grouped-query model)
        "token_dim": arch.n_kv_head * arch.head_dim,
        "num_layers": arch.n_layer,
        "num_attention_heads": arch.n_kv_head,
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
    from peftrun.methods.lora_options import family_targets

    family = models.FAMILIES[arch.family]
    slices = family.projection_slices(arch)  # target → (attribute, first, end column)
    stored = load_file(str(adapter_dir / WEIGHTS))  # "<module path>.lora_{A,B}.<target>"
    chosen: dict[str, set[str]] = defaultdict(set)
    for name in stored:
        path, _, target = name.rpartition(".")
        chosen[path.removesuffix(".lora_A").removesuffix(".lora_B")].add(target)
    tensors, stacked = {}, {}
    for path, targets in chosen.items():
        ordered = [t for t in family_targets(arch) if t in targets]
        attribute = path.rsplit(".", 1)[-1]
        rank = stored[f"{path}.lora_A.{ordered[0]}"].shape[0]
        # A feed-forward projection (gate/up/down) is adapted whole: its B is as wide as its output.
        whole = {t: ("", 0, stored[f"{path}.lora_B.{t}"].shape[0]) for t in ordered if t not in slices}
        width = max(end for name, _, end in (*slices.values(), *whole.values()) if name in (attribute, ""))
        a = torch.cat([stored[f"{path}.lora_A.{t}"] for t in ordered])  # (k·r, in)
        b = a.new_zeros(width, len(ordered) * rank)  # (out, k·r)
        for j, target in enumerate(ordered):
            _, start, end = whole.get(target) or slices[target]
            b[start:end, j * rank : (j + 1) * rank] = stored[f"{path}.lora_B.{target}"]
        tensors[f"{PEFT_MODULE_PREFIX}{path}.lora_A.weight"] = a
        tensors[f"{PEFT_MODULE_PREFIX}{path}.lora_B.weight"] = b
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
        "fan_in_fan_out": family.conv1d,  # weights stored (in, out), as GPT-2's Conv1D
        "bias": "none",
        "use_rslora": False,
    }
    return config, tensors
