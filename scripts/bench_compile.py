"""`train.compile` against eager training: the warm-up (compiling) and the speed after it, per case,
each mode in a fresh process (a run pays its warm-up once per process), the compiled mode twice:
with an empty inductor cache (cold) and again with the cache that run left on disk (warm).

    python scripts/bench_compile.py [--cases tiny-gpt2:prefix:fp32:8 smollm2-135m:prefix:bf16-frozen:8]
                                    [--steps 12] [--warmup 2]

A case is MODEL:METHOD:PRECISION:BATCH. Every mode trains the same E2E batches (their lengths vary
from batch to batch, as in a run) through the real driver (`train.Trainee`, `train.step_together`,
AdamW). "warm-up s" is the time of the first `--warmup` updates (the compiled mode compiles on the
first, and once more with dynamic sizes on the first batch of another length); "s/step" the mean of
the updates after them; "break-even" how many updates a run needs before compiling has paid for
its warm-up. "graphs" counts what dynamo compiled (2: static, then dynamic; more means recompiles).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = {
    "prefix": {"kind": "prefix", "prefix_len": 10},
    "lora": {"kind": "lora", "rank": 8},
    "prompt": {"kind": "prompt", "prompt_len": 10},
    "full": {"kind": "full"},
    "adapter": {"kind": "adapter", "bottleneck": 16},
}


def one(case: str, compiled: bool, steps: int, warmup: int) -> dict:
    """Train `steps` updates of `case` in this process; times and dynamo's counts."""
    import torch
    from bench_common import e2e_pairs
    from torch._dynamo.utils import counters

    from peftrun import config
    from peftrun.assembly import attach_method, load_base
    from peftrun.distributed import Processes
    from peftrun.train import Trainee, step_together

    model, method, precision, batch = case.split(":")
    batch = int(batch)
    cfg = config.build(
        {
            "model": {"name": model},
            "method": METHODS[method],
            "train": {"precision": precision, "batch_size": batch, "device": "cpu", "compile": compiled},
        }
    )
    loaded = load_base(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    attached, fmt = attach_method(loaded, cfg)
    everything = e2e_pairs(batch * steps)
    batches = [everything[i * batch : (i + 1) * batch] for i in range(steps)]
    trainee = Trainee(
        loaded.model,
        attached,
        batches[0],
        [],
        fmt.training_batch,
        cfg.train,
        None,
        torch.device("cpu"),
        Processes(),
    )
    attached.set_training(True)
    seconds, losses = [], []
    for examples in batches:
        started = time.perf_counter()
        (value,) = step_together([(trainee, examples)])
        trainee.optimizer.step()
        trainee.optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - started)
        losses.append(value)
    return {
        "warmup_s": sum(seconds[:warmup]),
        "per_step_s": sum(seconds[warmup:]) / max(1, len(seconds) - warmup),
        "graphs": int(counters["stats"]["unique_graphs"]),
        "breaks": int(sum(counters["graph_break"].values())),
        "loss": losses[-1],
    }


def in_process(case: str, compiled: bool, args, cache: Path) -> dict:
    """`one` in a fresh Python process whose inductor cache is `cache`."""
    command = [
        sys.executable,
        __file__,
        "--one",
        case,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    if compiled:
        command.append("--compiled")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": tail}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cases", nargs="+", default=["tiny-gpt2:prefix:fp32:8", "smollm2-135m:prefix:bf16-frozen:8"]
    )
    parser.add_argument("--steps", type=int, default=12, help="updates per mode, the first --warmup untimed")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.compiled, args.steps, args.warmup)))
        return
    from bench_common import machine, row

    print(
        f"eager vs compiled (train.compile) · {machine('cpu')} · "
        f"{args.steps} updates, {args.warmup} warm-up\n"
    )
    row(
        "case",
        "mode",
        "warm-up s",
        "s/step after warm-up",
        "speedup",
        "break-even updates",
        "graphs",
        "breaks",
    )
    row(*["---"] * 8)
    for case in args.cases:
        with tempfile.TemporaryDirectory() as cache:
            eager = in_process(case, False, args, Path(cache))
            results = [("eager", eager)]
            results.append(("compiled, cold cache", in_process(case, True, args, Path(cache))))
            results.append(("compiled, warm cache", in_process(case, True, args, Path(cache))))
        for mode, result in results:
            if "error" in result:
                row(case, mode, "error", result["error"][:120], "", "", "", "")
                continue
            speedup = eager.get("per_step_s", float("nan")) / result["per_step_s"]
            gain = eager.get("per_step_s", float("nan")) - result["per_step_s"]
            extra = result["warmup_s"] - eager.get("warmup_s", 0.0)
            even = "-" if mode == "eager" else (f"{extra / gain:.0f}" if gain > 0 else "never")
            row(
                case,
                mode,
                f"{result['warmup_s']:.1f}",
                f"{result['per_step_s']:.3f}",
                f"{speedup:.2f}x",
                even,
                result["graphs"] if mode != "eager" else "-",
                result["breaks"] if mode != "eager" else "-",
            )


if __name__ == "__main__":
    main()
