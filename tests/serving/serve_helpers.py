"""A live `peftrun serve` for the tests: a subprocess on 127.0.0.1 (a free port, read from its
start-up line), and tiny run directories to serve."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import write_config

from peftrun import experiment

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on (http://[\d.]+:\d+)")

# Greedy, exactly 10 new tokens (min_new_tokens holds the EOS back), so every output is 10 tokens
# of text whatever the adapter, and a row in the wrong adapter's context shows. float64: a row's
# greedy output does not depend on what else shares its batch (padding changes the summation
# order in the last bits).
CONFIG = """
model: {name: MODEL, seed: 0}
data: {dataset: e2e, train_size: 16, dev_loss_size: 4}
method: METHOD
train: {lr: 1e-2, epochs: 1, max_steps: 2, batch_size: 8, seed: SEED, loss_reduction: token_mean,
        precision: fp64}
decode: {splits: [], num_beams: 1, max_new_tokens: 10, min_new_tokens: 10}
"""
METHODS = {
    "prefix": "{kind: prefix, prefix_len: 3, mlp_hidden: 16}",
    "prompt": "{kind: prompt, prompt_len: 3}",
    "lora": "{kind: lora, rank: 2}",
    "ptuning": "{kind: ptuning, prompt_len: 2, encoder_hidden: 16}",
    "embedding": "{kind: prefix, variant: embedding-only, prefix_len: 2, mlp_hidden: 16}",
}
SOURCES = [
    "name[Aromi], eatType[pub], area[city centre]",
    "name[The Punter], food[Thai], priceRange[cheap]",
    "name[Zizzi], eatType[coffee shop], near[The Bakers]",
    "name[Cotto], area[riverside], familyFriendly[yes], customer rating[5 out of 5]",
    "name[Blue Spice]",
]


def make_run(folder: Path, model: str, method: str, seed: int = 101) -> Path:
    """A finished tiny run (2 updates) of `method` (a METHODS key) on `model`."""
    folder.mkdir(parents=True, exist_ok=True)
    text = CONFIG.replace("MODEL", model).replace("METHOD", METHODS[method]).replace("SEED", str(seed))
    run, _ = experiment.train(write_config(folder, text), [], str(folder / "run"))
    return run


class LiveServer:
    """`peftrun serve ARGS --port 0` in a subprocess; `url` once it listens."""

    def __init__(self, *args: str, timeout: float = 120) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }
        command = [sys.executable, "-m", "peftrun", "serve", *args, "--port", "0"]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.lines: list[str] = []
        self.url: str | None = None
        ready = threading.Event()

        def read():
            for line in self.process.stderr:
                self.lines.append(line.rstrip("\n"))
                found = LISTENING.search(line)
                if found:
                    self.url = found.group(1)
                    ready.set()
            ready.set()  # the process ended

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not ready.wait(timeout) or self.url is None:
            self.process.kill()
            raise RuntimeError("peftrun serve did not start:\n" + "\n".join(self.lines))

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM, and the exit code once it has ended."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.reader.join(timeout=10)
            self.process.stderr.close()

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the server's output:\n" + "\n".join(self.lines))
            time.sleep(0.05)
