"""Threads or workers: on a CPU with C cores, is a sweep faster as one run at a time with C torch
threads, or C runs at a time with one thread each? (`peftrun sweep --workers N` gives each of N
runs cores / N threads.)

    python scripts/bench_workers.py                       # 4 SmolLM2-135M prefix runs, 40 updates each
    python scripts/bench_workers.py --model tiny-gpt2     # the machinery, in a minute

Both arms run the same sweep (RUNS prefix runs differing by seed, `--steps` updates of batch 8,
bf16-frozen, no decoding) through `peftrun sweep` into fresh folders, in the same invocation, one
after the other; the table gives each arm's wall time for the whole sweep and the speed-up of the
faster one. Run it on a quiet machine: another job on the cores changes the answer.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = """
name: workers
base: base.yaml
seeds: {seeds}
cases: [{{}}]
"""

BASE = """
model: {{name: {model}}}
data: {{dataset: e2e, train_size: {pairs}, dev_loss_size: 8, group_by_length: true}}
method: {{kind: prefix, prefix_len: 10}}
train: {{lr: 5e-3, epochs: 1, max_steps: {steps}, batch_size: 8, precision: {precision},
        eval_every: 0, log_every: 10}}
decode: {{splits: []}}
"""


def arm(folder: Path, workers: int, threads: int) -> float:
    """Wall seconds of `peftrun sweep --workers N` with OMP_NUM_THREADS=threads in its environment."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "peftrun", "sweep", str(folder / "sweep.yaml"), "--root",
               str(folder / f"runs-w{workers}"), "--workers", str(workers)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    precision = "bf16-frozen" if args.model == "smollm2-135m" else "fp32"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "base.yaml").write_text(
            BASE.format(model=args.model, pairs=8 * args.steps, steps=args.steps, precision=precision),
            encoding="utf-8",
        )
        seeds = list(range(101, 101 + args.runs))
        (folder / "sweep.yaml").write_text(SWEEP.format(seeds=seeds), encoding="utf-8")
        one = arm(folder, 1, cores)
        many = arm(folder, cores, cores)  # the sweep gives each of `cores` workers one thread
    print(f"{args.runs} runs of {args.model}, {args.steps} updates of 8 pairs each, {cores} cores")
    print("| arm | wall s | speed-up over 1 worker |")
    print("|---|---:|---:|")
    print(f"| 1 worker x {cores} threads (baseline) | {one:.0f} | 1.00 |")
    print(f"| {cores} workers x 1 thread | {many:.0f} | {one / many:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
