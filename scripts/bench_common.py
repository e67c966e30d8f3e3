"""What the benchmarks share: a base model built from its config (random weights, no downloads),
E2E training pairs and sources, peak memory, and the machine and versions for the record."""

from __future__ import annotations

import platform
import time
from importlib import metadata
from pathlib import Path

import torch

from peftrun import models


def load_base(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """The base from its config with random weights (no downloads); real sizes get the tiny BPE,
    whose ids fit any GPT-2 or BART vocabulary."""
    if name in models.BUILTIN:
        loaded = models.load(name, seed=0)
    else:
        import transformers

        torch.manual_seed(0)
        config = models.hf_config(name)
        auto = (
            transformers.AutoModelForSeq2SeqLM
            if config.is_encoder_decoder
            else transformers.AutoModelForCausalLM
        )
        model = auto.from_config(config, attn_implementation="sdpa")
        tiny = "tiny-bart" if config.is_encoder_decoder else "tiny-gpt2"
        loaded = models.LoadedModel(model, models.load_tokenizer(tiny), models.arch_summary(config), name)
    loaded.model.to(device=device, dtype=dtype).eval()
    loaded.model.requires_grad_(False)
    return loaded


def e2e_pairs(n: int, seed: int = 0):
    """`n` E2E training pairs (the project's shipped sample), in a seeded order."""
    import random

    from peftrun.config import DataConfig
    from peftrun.data import load_pairs

    pairs = list(load_pairs(DataConfig(dataset="e2e"), "train"))
    random.Random(seed).shuffle(pairs)
    return [pairs[i % len(pairs)] for i in range(n)]


class PeakMemory:
    """Peak memory of what runs inside: CUDA's peak allocation, or on CPU the process's peak
    resident set, reset at entry (Linux: /proc/self/clear_refs) so each row has its own peak."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_mb = float("nan")

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
        return self

    def __exit__(self, *exc) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                self.peak_mb = int(line.split()[1]) / 1024


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def clock(device: str) -> float:
    sync(device)
    return time.perf_counter()


def machine(device: str) -> str:
    """One line for the record: date, machine, versions."""

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    where = (
        torch.cuda.get_device_name()
        if device.startswith("cuda")
        else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    )
    packages = ", ".join(f"{p} {version(p)}" for p in ("torch", "transformers", "peft"))
    return f"{time.strftime('%Y-%m-%d')} · {where} · {packages}"


def row(*cells) -> None:
    """One Markdown table row."""
    print("| " + " | ".join(str(c) for c in cells) + " |")
