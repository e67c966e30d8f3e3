"""Decoding throughput: peftrun against batched HF `generate` + peft on the same prompts and the
same prefix, in one process, at the paper's decoding settings.

    python scripts/bench_decode.py [--models tiny-gpt2 gpt2] [--rows 40] [--batch 10] [--beams 5]
                                   [--max-new-tokens 32] [--prefix-len 10] [--device cpu|cuda]

A prefix (length 10, MLP 512, random weights with a visible effect) is attached the peftrun way
and copied into HF peft's PrefixTuning (`prefix_projection=True`: the same MLP). Both decode the
same E2E sources in the same length-sorted batches with the same GenerationConfig (beam search,
`min_length` high enough that every row writes `--max-new-tokens` tokens, so both do the same
work). Printed: generated tokens/s for each, the ratio, peak memory (CUDA peak allocation, or the
process's peak RSS reset before each row on CPU), and how many outputs are identical.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext

import torch
from bench_common import PeakMemory, clock, e2e_pairs, load_base, machine, row

from peftrun.config import DataConfig, DecodeConfig
from peftrun.data.formats import text_format
from peftrun.decode import generate, generation_config
from peftrun.methods import options_for
from peftrun.methods.base import attach


def prefix_method(loaded, length: int):
    torch.manual_seed(1)
    method = attach(loaded, options_for("prefix", prefix_len=length, mlp_hidden=512))
    with torch.no_grad():
        method.tables["self"].embedding.mul_(50)  # a prefix that changes what is written
    method.set_training(False)
    return method


def peft_twin(loaded, method, length: int):
    """HF peft's prefix-tuning holding our prefix's weights."""
    from peft import PrefixTuningConfig, get_peft_model

    config = PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=length, prefix_projection=True, encoder_hidden_size=512
    )
    peft_model = get_peft_model(loaded.model, config)
    encoder = peft_model.prompt_encoder["default"]
    table = method.tables["self"]
    with torch.no_grad():
        encoder.embedding.weight.copy_(table.embedding)
        for layer in (0, 2):
            encoder.transform[layer].weight.copy_(table.mlp[layer].weight)
            encoder.transform[layer].bias.copy_(table.mlp[layer].bias)
    peft_model.eval()
    return peft_model


def peft_generate(peft_model, fmt, sources, cfg: DecodeConfig, device, use_cache: bool = True) -> list[str]:
    """Batched HF generate through peft, in peftrun's length-sorted batches (the same padding)."""
    gen_cfg = generation_config(cfg, fmt.tokenizer, peft_model.base_model.config)
    gen_cfg.use_cache = use_cache
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    outputs = {}
    for start in range(0, len(order), cfg.batch_size):
        chunk = order[start : start + cfg.batch_size]
        prompt = {
            k: v.to(device) for k, v in fmt.pad_prompts([fmt.prompt_ids(sources[i]) for i in chunk]).items()
        }
        with torch.no_grad():
            generated = peft_model.generate(**prompt, generation_config=gen_cfg)
        for i, ids in zip(chunk, fmt.generated_ids(generated, prompt), strict=True):
            outputs[i] = fmt.tokenizer.decode(ids, skip_special_tokens=True).strip()
    return [outputs[i] for i in range(len(sources))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny-gpt2", "gpt2"])
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--prefix-len", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()
    device = args.device
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if args.bf16 else nullcontext()
    print(
        f"# bench_decode · {machine(device)} · {args.rows} rows · batch {args.batch} · beams {args.beams} · "
        f"{args.max_new_tokens} new tokens · prefix {args.prefix_len}"
    )
    print()
    row(
        "model",
        "beams",
        "batch",
        "gen tok/s ours",
        "gen tok/s HF peft",
        "peft KV cache",
        "ratio",
        "peak MB ours",
        "peak MB peft",
        "same outputs",
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---|")
    sources = [pair.source for pair in e2e_pairs(args.rows, seed=1)]
    cfg = DecodeConfig(
        num_beams=args.beams, batch_size=args.batch, max_new_tokens=args.max_new_tokens, min_length=10_000
    )
    for name in args.models:
        loaded = load_base(name, device)
        method = prefix_method(loaded, args.prefix_len)
        fmt = text_format(loaded, DataConfig(dataset="e2e"), method.room)
        generate(loaded.model, method, fmt, sources[: args.batch], cfg, torch.device(device))  # warm-up
        with PeakMemory(device) as ours_memory, autocast:
            started = clock(device)
            ours = generate(loaded.model, method, fmt, sources, cfg, torch.device(device))
            ours_s = clock(device) - started
        peft_model = peft_twin(load_base(name, device), method, args.prefix_len)
        tokens = len(sources) * args.max_new_tokens  # min_length: every row writes them all
        # HF peft's prefix with generate()'s KV cache, and without it (every step re-reads the
        # whole sequence): on transformers 5.24 + peft 0.21 only the latter writes what the
        # prefixed model does (checked against a step-by-step greedy loop over peft's forward).
        for use_cache in (True, False):
            peft_generate(peft_model, fmt, sources[: args.batch], cfg, device, use_cache)  # warm-up
            with PeakMemory(device) as peft_memory, autocast:
                started = clock(device)
                theirs = peft_generate(peft_model, fmt, sources, cfg, device, use_cache)
                peft_s = clock(device) - started
            same = sum(a == b for a, b in zip(ours, theirs, strict=True))
            row(
                name,
                args.beams,
                args.batch,
                f"{tokens / ours_s:,.0f}",
                f"{tokens / peft_s:,.0f}",
                "yes" if use_cache else "no",
                f"{peft_s / ours_s:.2f}×",
                f"{ours_memory.peak_mb:,.0f}",
                f"{peft_memory.peak_mb:,.0f}",
                f"{same}/{len(sources)}",
            )


if __name__ == "__main__":
    main()
