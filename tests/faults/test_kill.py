"""SIGKILL at any moment loses nothing: a tiny run is killed again and again at moments spread over
its whole life (start-up, training steps, checkpoint writes, the adapter save, decoding, scoring),
resumed with `peftrun train` each time, and its final adapter, predictions and metrics must be
byte-identical to an uninterrupted run's. Default size for CI; `pytest --large` kills 24 times."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import write_config

from peftrun import experiment

CONFIG = """
model: {name: tiny-gpt2}
data: {dataset: e2e, train_size: 48, dev_loss_size: 8}
method: {kind: prefix, prefix_len: 3, mlp_hidden: 16}
train: {lr: 1e-2, epochs: 1, batch_size: 4, loss_reduction: sequence_sum, checkpoint_every: 1, eval_every: 4,
        select: best, log_every: 1}
decode: {splits: [dev], limit: 12, num_beams: 2, max_new_tokens: 10, min_length: 100, batch_size: 2}
"""

# Phase → a test of the run directory that says the run is in (or just past the start of) it.
PHASES = {
    "start-up": lambda run: True,
    "training step": lambda run: (run / "checkpoints" / "last.pt").is_file(),
    "checkpoint write": lambda run: any(p.name.endswith(".tmp") for p in _ls(run / "checkpoints")),
    "adapter save": lambda run: (run / ".adapter.tmp").is_dir(),
    "decoding": lambda run: (run / "predictions" / ".dev.partial.jsonl").is_file(),
    "scoring": lambda run: (run / "predictions" / "dev.jsonl").is_file(),
}


def _ls(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except OSError:
        return []


def command(config: Path, run: Path) -> list[str]:
    return [sys.executable, "-m", "peftrun", "train", str(config), "--run-dir", str(run)]


def final_files(run: Path) -> dict[str, bytes]:
    names = [p for p in sorted(run.rglob("*")) if p.is_file() and p.relative_to(run).parts[0] in
             ("adapter", "predictions", "metrics")]  # fmt: skip
    return {str(p.relative_to(run)): p.read_bytes() for p in names}


def kill_during(config: Path, run: Path, phase: str, rng: random.Random) -> bool:
    """Start (or resume) the run, SIGKILL it once `phase` is seen; False if it finished first."""
    child = subprocess.Popen(command(config, run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    delay = rng.uniform(0.5, 6.0) if phase == "start-up" else rng.uniform(0.0, 0.05)
    seen = None
    while child.poll() is None:
        if (
            seen is None
            and PHASES[phase](run)
            and (phase != "start-up" or time.monotonic() - started > delay)
        ):
            seen = time.monotonic()
        if seen is not None and time.monotonic() - seen >= (0 if phase == "start-up" else delay):
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            return True
        time.sleep(0.001)
    return False


def test_sigkill_at_any_moment_resumes_to_identical_files(tmp_path, large):
    config = write_config(tmp_path, CONFIG)
    reference = tmp_path / "reference"
    experiment.train(config, [], str(reference))  # in process: the same files, sooner
    expected = final_files(reference)
    assert any(name.startswith("adapter/") for name in expected) and "metrics/dev.json" in expected

    rng = random.Random(0)
    run, kills, finished = tmp_path / "killed", [], False
    rounds = 4 if large else 1
    for phase in [p for _ in range(rounds) for p in PHASES]:
        if kill_during(config, run, phase, rng):
            kills.append(phase)
        else:
            finished = True
            break
    if not finished:
        subprocess.run(command(config, run), check=True, capture_output=True)
    assert len(kills) >= (20 if large else 5), kills
    assert (run / "DONE").is_file()
    assert final_files(run) == expected, f"killed during: {kills}"
    log = (run / "train_log.jsonl").read_text().splitlines()
    steps = [line for line in log if '"loss"' in line]
    assert len(steps) == len({line.split(",")[0] for line in steps})  # no update logged twice
