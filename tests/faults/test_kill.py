"""SIGKILL at any moment loses nothing: a tiny run is killed again and again at moments spread over
its whole life (start-up, training steps, checkpoint writes, the adapter save, decoding, scoring),
resumed with `peftrun train` each time, and its final adapter, predictions and metrics must be
byte-identical to an uninterrupted run's. Default size for CI; `pytest --large` kills four runs so."""

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

# Kill points in the order a run passes them: a name, and a test of the run directory that says
# the run is there. Brief moments (a checkpoint or adapter being written) may pass between two
# looks; each has a fallback, a later point that a run always reaches (counted lines of a file that
# a resume trims back, so a resumed run reaches them again), so every kill point is a kill.
KILL_POINTS = [
    ("start-up", lambda run: True, None),
    ("training step", lambda run: _loss_lines(run) >= 3, None),
    ("checkpoint write", lambda run: any(p.name.endswith(".tmp") for p in _ls(run / "checkpoints")),
     lambda run: _loss_lines(run) >= 6),
    ("training step", lambda run: _loss_lines(run) >= 9, None),
    ("adapter save", lambda run: (run / ".adapter.tmp").is_dir(),
     lambda run: _partial_lines(run) >= 1),
    ("decoding", lambda run: _partial_lines(run) >= 3, None),
    ("scoring", lambda run: (run / "predictions" / "dev.jsonl").is_file(), None),
]  # fmt: skip
ALWAYS = 6  # every kill point but scoring (which can end before a look) is a kill


def _lines(path: Path, needle: str = "") -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if needle in line)
    except OSError:
        return 0


def _loss_lines(run: Path) -> int:
    return _lines(run / "train_log.jsonl", '"loss"')


def _partial_lines(run: Path) -> int:
    return _lines(run / "predictions" / ".dev.partial.jsonl")


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


def kill_during(config: Path, run: Path, point: tuple, rng: random.Random) -> bool:
    """Start (or resume) the run, SIGKILL it at `point` (or its fallback); False if it finished
    first."""
    name, seen_at, fallback = point
    child = subprocess.Popen(command(config, run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    delay = rng.uniform(0.5, 3.0) if name == "start-up" else rng.uniform(0.0, 0.05)
    seen = None
    while child.poll() is None:
        if seen is None and (seen_at(run) or (fallback is not None and fallback(run))):
            seen = time.monotonic() if name != "start-up" else started
        if seen is not None and time.monotonic() - seen >= delay:
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
    for life in range(4 if large else 1):  # --large: four runs, each killed at every point
        run, kills, finished = tmp_path / f"killed{life}", [], False
        for point in KILL_POINTS:
            if kill_during(config, run, point, rng):
                kills.append(point[0])
            else:
                finished = True
                break
        if not finished:
            subprocess.run(command(config, run), check=True, capture_output=True)
        assert len(kills) >= ALWAYS, kills
        assert (run / "DONE").is_file()
        assert final_files(run) == expected, f"killed during: {kills}"
        log = (run / "train_log.jsonl").read_text().splitlines()
        steps = [line for line in log if '"loss"' in line]
        assert len(steps) == len({line.split(",")[0] for line in steps})  # no update logged twice
