"""A whole small study, end to end, as `peftrun sweep` runs it: training, dev-loss evaluations,
decoding and scoring, before and after the speed work. Each arm is the same sweep (prefix and
LoRA on SmolLM2-135M, --seeds each, --steps updates of 8 pairs, bf16-frozen, decoding --decode dev
MRs greedily and scoring them) into a fresh folder, one arm after the other:

    random · 1 worker x C threads     the baseline: plain shuffled batches (data.group_by_length: false)
    grouped · 1 worker x C threads    length-grouped batches
    grouped · C workers x 1 thread    the same, C runs at a time (`peftrun sweep --workers C`)

    python scripts/bench_study.py                       # SmolLM2-135M: 4 runs of 100 updates
    python scripts/bench_study.py --model tiny-gpt2 --steps 20 --decode 8   # the machinery, in minutes

The table gives each arm's wall time for the whole sweep, its speed-up over the baseline, the sum of
the runs' own training seconds, and the mean dev BLEU and dev loss (the arms train on different
batches, so these agree only roughly: they show nothing broke). C is the cores this process may
use. Run it on a quiet machine: another job on the cores changes the answer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = """
name: study
base: base.yaml
set: {{data.group_by_length: {grouped}}}
cases:
  - {{method: {{kind: prefix, prefix_len: 10}}, train.lr: 5e-3}}
  - {{method: {{kind: lora, rank: 4, alpha: 32, targets: [q, v]}}, train.lr: 1e-3}}
seeds: {seeds}
"""

BASE = """
model: {{name: {model}}}
data: {{dataset: e2e, reference_style: raw, train_size: 2000, subset_seed: 0, dev_loss_size: 64}}
method: {{kind: prefix, prefix_len: 10}}
train: {{lr: 5e-3, epochs: 1, max_steps: {steps}, batch_size: 8, warmup_steps: 10, loss_reduction: token_mean,
        precision: {precision}, eval_every: {half}, log_every: 10}}
decode: {{splits: [dev], limit: {decode}, num_beams: 1, max_new_tokens: 60, batch_size: 16}}
"""


def arm(folder: Path, name: str, grouped: bool, workers: int, threads: int, seeds: list[int]) -> dict:
    """Wall seconds of `peftrun sweep --workers N` (OMP_NUM_THREADS=threads), and its runs' results."""
    sweep = folder / f"{name}.yaml"
    sweep.write_text(SWEEP.format(grouped=str(grouped).lower(), seeds=seeds), encoding="utf-8")
    root = folder / f"runs-{name}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "peftrun",
        "sweep",
        str(sweep),
        "--root",
        str(root),
        "--workers",
        str(workers),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(f"peftrun sweep failed ({name}):\n{done.stderr[-2000:]}")
    wall = time.perf_counter() - start
    metas = [json.loads(p.read_text()) for p in root.rglob("meta.json")]
    scores = [json.loads(p.read_text()) for p in root.rglob("metrics/dev.json")]
    return {
        "wall": wall,
        "train": sum(m["train_seconds"] for m in metas),
        "runs": len(metas),
        "bleu": statistics.mean(s["scores"]["BLEU"] for s in scores) if scores else float("nan"),
        "dev_loss": statistics.mean(m["best_dev_loss"] for m in metas),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per method (2 methods)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--decode", type=int, default=32, help="dev MRs decoded and scored per run")
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here (default: a temp folder)")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    precision = "bf16-frozen" if args.model == "smollm2-135m" else "fp32"
    folder = args.work or Path(tempfile.mkdtemp(prefix="bench-study-"))
    folder.mkdir(parents=True, exist_ok=True)
    base = BASE.format(
        model=args.model, steps=args.steps, half=args.steps // 2, precision=precision, decode=args.decode
    )
    (folder / "base.yaml").write_text(base, encoding="utf-8")
    seeds = list(range(101, 101 + args.seeds))
    arms = [
        (f"random · 1 worker x {cores} threads (baseline)", "random-w1", False, 1, cores),
        (f"grouped · 1 worker x {cores} threads", "grouped-w1", True, 1, cores),
        (f"grouped · {cores} workers x 1 thread", f"grouped-w{cores}", True, cores, 1),
    ]
    print(
        f"# bench_study · {2 * args.seeds} runs of {args.model} (prefix and LoRA x {args.seeds} seeds), "
        f"{args.steps} updates of 8, dev loss twice, {args.decode} dev MRs decoded greedily and scored; "
        f"{cores} cores; runs in {folder}"
    )
    print("| arm | wall s | speed-up | train s (sum over runs) | mean dev BLEU | mean dev loss |")
    print("|---|---:|---:|---:|---:|---:|")
    baseline = None
    for label, name, grouped, workers, threads in arms:
        got = arm(folder, name, grouped, workers, threads, seeds)
        baseline = baseline or got["wall"]
        print(
            f"| {label} | {got['wall']:.0f} | {baseline / got['wall']:.2f}× | {got['train']:.0f} | "
            f"{got['bleu']:.4f} | {got['dev_loss']:.3f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
