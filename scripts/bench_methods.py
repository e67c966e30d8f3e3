"""Training cost of every method against full fine-tuning, in the same run.

    python scripts/bench_methods.py [--model gpt2] [--batch 4] [--steps 6] [--device cpu|cuda]

For each method: a real-size model built from its config (random weights: no downloads), the
method attached, the real token format and loss on E2E training pairs, and `--steps` AdamW
updates (forward, backward, step) after one warm-up update. Printed per method: seconds per
update (median), tokens per second, peak memory (CUDA: max allocated; CPU: the process's peak
RSS, each method in its own process), trainable parameters, and time and memory relative to
`full` (the baseline). Li & Liang report prefix-tuning ~30% faster per epoch than fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

METHODS = {
    "full": {"kind": "full"},
    "top-k": {"kind": "top-k", "k": 2},
    "bitfit": {"kind": "bitfit"},
    "feature-extraction": {"kind": "feature-extraction"},
    "adapter": {"kind": "adapter", "bottleneck": 6},
    "lora": {"kind": "lora", "rank": 4},
    "prefix": {"kind": "prefix", "prefix_len": 5},
    "prefix-embedding-only": {"kind": "prefix", "variant": "embedding-only", "prefix_len": 10},
    "prompt": {"kind": "prompt", "prompt_len": 20},
    "ptuning": {"kind": "ptuning", "prompt_len": 20},
}


def measure(model_name: str, method_name: str, batch_size: int, steps: int, device: str) -> dict:
    import torch

    from peftrun import data, models
    from peftrun.config import DataConfig
    from peftrun.data.formats import text_format
    from peftrun.methods import options_for
    from peftrun.methods.base import attach
    from peftrun.train import batch_loss, to_device

    config = models.hf_config(model_name)
    family = config.model_type
    torch.manual_seed(0)
    tokenizer = models.load_tokenizer(f"tiny-{family}")  # its ids fit any GPT-2/BART vocabulary
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = auto.from_config(config, attn_implementation="sdpa").to(device)
    loaded = models.LoadedModel(model, tokenizer, models.arch_summary(config), model_name)
    method = attach(loaded, options_for(**METHODS[method_name]))
    data_cfg = DataConfig(dataset="e2e", train_size=batch_size * (steps + 1), subset_seed=0)
    fmt = text_format(loaded, data_cfg, method.room)
    pairs = data.load_pairs(data_cfg, "train")
    params = method.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    method.set_training(True)
    times, tokens = [], 0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(steps + 1):
        batch = to_device(fmt.training_batch(pairs[step * batch_size : (step + 1) * batch_size]), device)
        started = time.perf_counter()
        loss = batch_loss(model, method, batch, "token_mean", nullcontext())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if step:  # the first update warms up kernels and allocator
            times.append(time.perf_counter() - started)
            tokens += int(batch["inputs"]["attention_mask"].sum())
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "method": method_name,
        "s_per_update": statistics.median(times),
        "tokens_per_s": tokens / sum(times),
        "peak_mib": peak,
        "trainable": method.counts().trainable,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="gpt2")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.model, args.one, args.batch, args.steps, args.device)))
        return
    rows = []
    for name in ["full", *[m for m in args.methods.split(",") if m != "full"]]:
        command = [sys.executable, __file__, "--one", name, "--model", args.model, "--batch", str(args.batch)]
        command += ["--steps", str(args.steps), "--device", args.device]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    base = rows[0]
    print(f"model {args.model}, batch {args.batch}, {args.steps} timed updates, device {args.device}")
    header = (
        ("s/update", 10),
        ("tok/s", 10),
        ("peak MiB", 10),
        ("trainable", 14),
        ("time/full", 11),
        ("mem/full", 10),
    )
    print(f"{'method':<24}" + "".join(f"{name:>{width}}" for name, width in header))
    for row in rows:
        print(
            f"{row['method']:<24}{row['s_per_update']:>10.3f}{row['tokens_per_s']:>10.0f}{row['peak_mib']:>10.0f}"
            f"{row['trainable']:>14,}{row['s_per_update'] / base['s_per_update']:>11.2f}"
            f"{row['peak_mib'] / base['peak_mib']:>10.2f}"
        )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
