"""Throughput of serving k adapters from one frozen base: mixed batches vs grouping by adapter vs
one adapter at a time (a fresh base model per adapter, as separate `peftrun decode` runs do).

    python scripts/bench_generate.py [--model tiny-gpt2] [--rows 96] [--k 1 4 16] [--beams 5] [--batch 16]

Adapters are random prefixes (lengths 2-10) and LoRAs (rank 2-8) on a base built from its config
(random weights: no downloads); rows are E2E dev MRs, each given an adapter in turn. Every
strategy's outputs are compared with the mixed batches' (they must be identical). Prints one table:
k, strategy, seconds, outputs/s, speed-up over one-at-a-time.
"""

from __future__ import annotations

import argparse
import time

import torch

from peftrun import models
from peftrun.config import DataConfig, DecodeConfig
from peftrun.data import e2e
from peftrun.data.formats import text_format
from peftrun.decode import decode_rows
from peftrun.methods import options_for
from peftrun.methods.base import attach
from peftrun.methods.inject.rows import active_rows


def adapter_specs(k: int) -> list[tuple[str, dict]]:
    specs = []
    for i in range(k):
        if i % 2 == 0:
            specs.append(("prefix", {"prefix_len": 2 + (i * 3) % 9, "mlp_hidden": 32}))
        else:
            specs.append(("lora", {"rank": 2 + (i * 2) % 7}))
    return specs


def attach_random(loaded, spec, seed: int):
    method = attach(loaded, options_for(spec[0], **spec[1]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in method.trainable_parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.2)
    method.set_training(False)
    return method


def load_base(name: str):
    """The base from its config with random weights (no downloads); real sizes get the tiny BPE,
    whose ids fit any GPT-2 vocabulary."""
    if name in models.BUILTIN:
        loaded = models.load(name, seed=0)
    else:
        import transformers

        torch.manual_seed(0)
        config = models.hf_config(name)
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
        loaded = models.LoadedModel(
            model, models.load_tokenizer("tiny-gpt2"), models.arch_summary(config), name
        )
    loaded.model.eval()
    return loaded


def decode(loaded, methods, names, sources, cfg):
    data = DataConfig(dataset="e2e")
    formats = [text_format(loaded, data, methods[n].room) for n in names]
    with torch.no_grad():
        rows = {n: methods[n].row_inputs() for n in set(names) if n is not None}
    inputs = [rows.get(n) for n in names]
    return decode_rows(
        loaded.model, formats, sources, lambda chunk: active_rows(loaded.model, [inputs[i] for i in chunk]),
        cfg, torch.device("cpu"),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny-gpt2")
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=20)
    args = parser.parse_args()
    sources = [i.source for i in e2e.load_instances("dev")][: args.rows]
    cfg = DecodeConfig(num_beams=args.beams, max_new_tokens=args.new_tokens, batch_size=args.batch)
    settings = f"beam {args.beams}, batch {args.batch}, {args.new_tokens} new tokens"
    print(f"model {args.model}, {args.rows} rows, {settings}")
    print(f"{'k':>3} {'strategy':<22} {'seconds':>8} {'outputs/s':>10} {'speed-up':>9}  same outputs")
    for k in args.k:
        specs = adapter_specs(k)
        names = [i % k for i in range(len(sources))]
        shared = load_base(args.model)
        methods = {i: attach_random(shared, spec, i) for i, spec in enumerate(specs)}
        started = time.perf_counter()
        mixed = decode(shared, methods, names, sources, cfg)
        t_mixed = time.perf_counter() - started

        started = time.perf_counter()
        grouped = [None] * len(sources)
        for a in range(k):
            rows = [i for i, n in enumerate(names) if n == a]
            for i, out in zip(
                rows, decode(shared, methods, [a] * len(rows), [sources[i] for i in rows], cfg), strict=True
            ):
                grouped[i] = out
        t_grouped = time.perf_counter() - started

        started = time.perf_counter()
        alone = [None] * len(sources)
        for a, spec in enumerate(specs):
            fresh = load_base(args.model)
            method = attach_random(fresh, spec, a)
            rows = [i for i, n in enumerate(names) if n == a]
            outs = decode(fresh, {a: method}, [a] * len(rows), [sources[i] for i in rows], cfg)
            for i, out in zip(rows, outs, strict=True):
                alone[i] = out
        t_alone = time.perf_counter() - started
        for strategy, seconds, outputs in (
            ("mixed batches", t_mixed, mixed),
            ("grouped by adapter", t_grouped, grouped),
            ("one adapter at a time", t_alone, alone),
        ):
            differ = sum(a != b for a, b in zip(outputs, mixed, strict=True))
            same = "yes" if not differ else f"NO ({differ} differ)"
            rate, speedup = len(sources) / seconds, t_alone / seconds
            print(f"{k:>3} {strategy:<22} {seconds:>8.2f} {rate:>10.1f} {speedup:>8.2f}x  {same}")


if __name__ == "__main__":
    main()
