"""Training throughput: peftrun against HF peft on the same batches, and runs packed on one base
against the same runs one after another, in one process.

    python scripts/bench_train.py [--models tiny-gpt2 gpt2] [--batch 10] [--steps 8] [--packs 1 4 8]
                                  [--prefix-len 10] [--device cpu|cuda] [--bf16]

Models are built from their configs (random weights, no downloads); rows are E2E training pairs
in peftrun's token format (the paper's GPT-2 prefix: length 10, MLP 512, sequence-summed loss).

- `single`: one prefix run, peftrun (its attention-interface prefix, `train.forward_losses`) against
  HF peft's PrefixTuning (`prefix_projection=True`, the same MLP), both from the same initial
  weights (ours copied into peft's PrefixEncoder) and fed the same batches with the same AdamW:
  the two loss curves must agree (max |difference| printed).
- `packed N`: N prefix runs (their own seeds, data orders and optimizers) trained packed
  (`train.step_together`: one forward and backward for all) against the same N runs trained
  one after another with peftrun (the same, one run at a time); their loss curves must agree.
  The ratio column compares the N runs' aggregate tokens/s with one HF peft run's.

Tokens/s counts real tokens (padding excluded); the first step of each is a warm-up, not timed.
Peak memory: CUDA's peak allocation, or the process's peak RSS (reset before each row) on CPU.
"""

from __future__ import annotations

import argparse
import tempfile
from contextlib import nullcontext
from pathlib import Path

import torch
from bench_common import PeakMemory, clock, e2e_pairs, load_base, machine, row

from peftrun.config import DataConfig, TrainConfig
from peftrun.data.formats import text_format
from peftrun.distributed import Processes
from peftrun.methods import options_for
from peftrun.methods.base import attach
from peftrun.runs import Run
from peftrun.train import Trainee, sequence_losses, step_together, to_device


def prefix_options(length: int):
    return options_for("prefix", prefix_len=length, mlp_hidden=512)


def batches_for(loaded, method, pairs, batch: int, steps: int, device: str) -> list[dict]:
    fmt = text_format(loaded, DataConfig(dataset="e2e"), method.room)
    return [to_device(fmt.training_batch(pairs[i * batch : (i + 1) * batch]), device) for i in range(steps)]


def real_tokens(batches: list[dict]) -> int:
    return sum(int(b["inputs"]["attention_mask"].sum()) for b in batches[1:])


def sequence_sum_loss(logits, labels) -> torch.Tensor:
    sums, _ = sequence_losses(logits, labels)
    return sums.mean()  # the paper's GPT-2 reduction: sum over a sequence's tokens, mean over sequences


def train_steps(step, batches: list[dict], device: str) -> tuple[list[float], float]:
    """Run `step(batch) -> loss value` over the batches; seconds of all but the first (warm-up)."""
    losses, started = [], None
    for k, batch in enumerate(batches):
        if k == 1:
            started = clock(device)
        losses.append(step(batch))
    return losses, clock(device) - started


def single_peftrun(loaded, batches, lr, autocast, device):
    torch.manual_seed(1)
    method = attach(loaded, prefix_options(PREFIX_LEN))
    initial = {k: v.clone() for k, v in method.tables.state_dict().items()}
    method.set_training(True)

    def forward(batch):
        with autocast, method.active(batch["labels"].shape[0]):
            return loaded.model(**batch["inputs"]).logits

    losses, seconds, peak_mb = adamw_steps(forward, method.trainable_parameters(), batches, lr, device)
    return losses, seconds, peak_mb, initial


def adamw_steps(forward, params, batches, lr, device) -> tuple[list[float], float, float]:
    """AdamW on `params` over the batches (`forward(batch)` → logits): losses, seconds, peak MB."""
    optimizer = torch.optim.AdamW(params, lr=lr, fused=device.startswith("cuda") or None)

    def step(batch):
        loss = sequence_sum_loss(forward(batch), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    with PeakMemory(device) as memory:
        losses, seconds = train_steps(step, batches, device)
    return losses, seconds, memory.peak_mb


def single_peft(loaded, batches, lr, autocast, device, initial):
    """HF peft's prefix-tuning from our initial weights: its PrefixEncoder is the same MLP."""
    from peft import PrefixTuningConfig, get_peft_model

    config = PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=PREFIX_LEN, prefix_projection=True, encoder_hidden_size=512
    )
    peft_model = get_peft_model(loaded.model, config)
    encoder = peft_model.prompt_encoder["default"]
    with torch.no_grad():
        encoder.embedding.weight.copy_(initial["self.embedding"])  # our table of GPT-2's one stack
        for layer in (0, 2):  # Linear, Tanh, Linear on both sides
            encoder.transform[layer].weight.copy_(initial[f"self.mlp.{layer}.weight"])
            encoder.transform[layer].bias.copy_(initial[f"self.mlp.{layer}.bias"])
    peft_model.train()
    loaded.model.eval()  # the frozen base without dropout, as ours
    params = [p for p in peft_model.parameters() if p.requires_grad]

    def forward(batch):
        with autocast:
            return peft_model(**batch["inputs"]).logits

    return adamw_steps(forward, params, batches, lr, device)


def packed_and_sequential(loaded, pairs, batch, steps, n, lr, autocast, device, folder):
    """N prefix runs: packed (one forward/backward for all) and one after another (each alone)."""
    trainees = []
    for k in range(n):
        torch.manual_seed(100 + k)
        method = attach(loaded, prefix_options(PREFIX_LEN))
        fmt = text_format(loaded, DataConfig(dataset="e2e"), method.room)
        cfg = TrainConfig(lr=lr, batch_size=batch, seed=100 + k, loss_reduction="sequence_sum")
        run = Run(Path(folder) / f"run{k}")
        trainee = Trainee(
            loaded.model, method, pairs, [], fmt.training_batch, cfg, run, torch.device(device), Processes()
        )
        trainee.autocast = autocast
        trainee.initial = {name: v.clone() for name, v in method.tables.state_dict().items()}
        trainees.append(trainee)
    for trainee in trainees:  # attaching froze everything: each run's own table trains
        for p in trainee.method.trainable_parameters():
            p.requires_grad_(True)
    orders = [
        [pairs[(k * 7 + s * batch + i) % len(pairs)] for i in range(batch)]
        for k in range(n)
        for s in range(steps)
    ]
    examples = [[orders[k * steps + s] for s in range(steps)] for k in range(n)]
    tokens = sum(
        int(t.make_batch(examples[k][s])["inputs"]["attention_mask"].sum())
        for k, t in enumerate(trainees)
        for s in range(1, steps)
    )

    def reset():
        for t in trainees:
            t.method.tables.load_state_dict(t.initial)
            t.optimizer = torch.optim.AdamW(t.params, lr=lr, fused=device.startswith("cuda") or None)
            t.method.set_training(True)

    reset()
    with PeakMemory(device) as sequential_memory:
        curves_alone, started = [[] for _ in trainees], None
        for s in range(steps):
            if s == 1:
                started = clock(device)
            for k, t in enumerate(trainees):
                (value,) = step_together([(t, examples[k][s])])  # its forward and backward
                t.optimizer.step()
                t.optimizer.zero_grad(set_to_none=True)
                curves_alone[k].append(value)
        sequential = clock(device) - started
    reset()
    with PeakMemory(device) as packed_memory:
        curves_packed, started = [[] for _ in trainees], None
        for s in range(steps):
            if s == 1:
                started = clock(device)
            parts = [(t, examples[k][s]) for k, t in enumerate(trainees)]
            values = step_together(parts)  # one forward and backward for all
            for k, (t, value) in enumerate(zip(trainees, values, strict=True)):
                t.optimizer.step()
                t.optimizer.zero_grad(set_to_none=True)
                curves_packed[k].append(value)
        packed = clock(device) - started
    differences = [
        abs(a - b)
        for ca, cb in zip(curves_alone, curves_packed, strict=True)
        for a, b in zip(ca, cb, strict=True)
    ]
    return tokens, sequential, sequential_memory.peak_mb, packed, packed_memory.peak_mb, max(differences)


PREFIX_LEN = 10


def main() -> None:
    global PREFIX_LEN
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny-gpt2", "gpt2"])
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--prefix-len", type=int, default=10)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (both sides)")
    args = parser.parse_args()
    PREFIX_LEN = args.prefix_len
    device = args.device
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if args.bf16 else nullcontext()
    precision = "bf16" if args.bf16 else "fp32"
    print(f"# bench_train · {machine(device)}")
    print(f"# batch {args.batch}, {args.steps} steps (the first a warm-up), prefix {PREFIX_LEN}, {precision}")
    print()
    row(
        "model",
        "what",
        "batch",
        "packed runs",
        "real tok/s ours",
        "tok/s HF peft",
        "ratio",
        "peak MB ours",
        "peak MB peft",
        "max loss diff",
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in args.models:
        pairs = e2e_pairs(max(args.batch * args.steps * 2, 200))
        loaded = load_base(name, device)
        probe = attach(load_base(name, device), prefix_options(PREFIX_LEN))  # only its token format
        batches = batches_for(loaded, probe, pairs, args.batch, args.steps, device)
        tokens = real_tokens(batches)
        ours, ours_s, ours_mb, initial = single_peftrun(loaded, batches, args.lr, autocast, device)
        loaded = load_base(name, device)  # a fresh base: peft wraps the model it is given
        theirs, peft_s, peft_mb = single_peft(loaded, batches, args.lr, autocast, device, initial)
        peft_rate = tokens / peft_s
        diff = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
        rate = tokens / ours_s
        row(
            name,
            "single prefix run",
            args.batch,
            1,
            f"{rate:,.0f}",
            f"{peft_rate:,.0f}",
            f"{rate / peft_rate:.2f}×",
            f"{ours_mb:,.0f}",
            f"{peft_mb:,.0f}",
            f"{diff:.1e} (vs peft)",
        )
        for n in args.packs:
            loaded = load_base(name, device)
            with tempfile.TemporaryDirectory() as folder:
                got = packed_and_sequential(
                    loaded, pairs, args.batch, args.steps, n, args.lr, autocast, device, folder
                )
            n_tokens, sequential, seq_mb, packed, packed_mb, diff = got
            one_by_one, together = n_tokens / sequential, n_tokens / packed
            row(
                name,
                f"{n} runs one after another",
                args.batch,
                1,
                f"{one_by_one:,.0f}",
                f"{peft_rate:,.0f}",
                f"{one_by_one / peft_rate:.2f}×",
                f"{seq_mb:,.0f}",
                "–",
                "–",
            )
            row(
                name,
                f"{n} runs packed",
                args.batch,
                n,
                f"{together:,.0f}",
                f"{peft_rate:,.0f}",
                f"{together / peft_rate:.2f}×",
                f"{packed_mb:,.0f}",
                "–",
                f"{diff:.1e} (vs one after another)",
            )
        del loaded


if __name__ == "__main__":
    main()
