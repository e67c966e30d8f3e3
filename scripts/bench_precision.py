"""CPU training speed by precision and torch threads on a real base: peftrun's `train.precision`
(fp32, bf16-frozen, bf16 autocast) against HF peft's prefix and LoRA on the same batches, in one
process.

    python scripts/bench_precision.py [--model smollm2-135m] [--batch 8] [--steps 3] [--threads 1 2]
                                      [--prefix-len 10] [--rank 8]

Every row trains from a freshly loaded base for `--steps` AdamW updates on the same E2E rows
(peftrun's token format; the first update is a warm-up, not timed) and prints seconds per update.
peftrun's rows go through the real driver (`assembly.load_base` / `attach_method`, `train.Trainee`,
`train.step_together`), so bf16-frozen is exactly what `peftrun train` does. HF peft's rows wrap a
base loaded in fp32, or in bf16 (for LoRA: peft keeps its adapter weights in fp32 beside it,
`autocast_adapter_dtype`), and train with the same AdamW and token-mean loss. The "loss 1" column
is the first update's loss (LoRA starts at the base: both sides must agree there).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from bench_common import PeakMemory, clock, e2e_pairs, machine, row

from peftrun import config
from peftrun.assembly import attach_method, load_base
from peftrun.distributed import Processes
from peftrun.train import Trainee, sequence_losses, step_together, to_device

DEVICE = "cpu"
NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16"}


def build(model: str, method: dict, precision: str, batch: int):
    return config.build(
        {
            "model": {"name": model},
            "method": method,
            "train": {"precision": precision, "batch_size": batch, "lr": 5e-5, "device": DEVICE},
        }
    )


def timed(step, batches) -> tuple[list[float], list[float], float]:
    """`step(batch) -> loss` over the batches: losses, seconds of each update after the first, peak MB."""
    losses, seconds = [], []
    with PeakMemory(DEVICE) as memory:
        for k, batch in enumerate(batches):
            started = clock(DEVICE)
            losses.append(step(batch))
            if k:
                seconds.append(clock(DEVICE) - started)
    return losses, seconds, memory.peak_mb


def ours(
    model: str, method: dict, precision: str, pairs: list
) -> tuple[list[float], list[float], float, float]:
    cfg = build(model, method, precision, len(pairs[0]))
    loaded = load_base(cfg, torch.device(DEVICE))
    torch.manual_seed(0)
    attached, fmt = attach_method(loaded, cfg)
    trainee = Trainee(
        loaded.model,
        attached,
        pairs[0],
        [],
        fmt.training_batch,
        cfg.train,
        None,
        torch.device(DEVICE),
        Processes(),
    )
    attached.set_training(True)

    def step(examples):
        (value,) = step_together([(trainee, examples)])
        trainee.optimizer.step()
        trainee.optimizer.zero_grad(set_to_none=True)
        return value

    losses, seconds, peak = timed(step, pairs)
    base = loaded.model.get_input_embeddings().weight.dtype
    return losses, seconds, peak, attached.counts().trainable, {p.dtype for p in trainee.params}, base


def peft_run(model: str, kind: str, dtype: torch.dtype, pairs: list, args) -> tuple:
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model

    cfg = build(model, {"kind": "lora", "rank": args.rank, "targets": ["q", "v"]}, "fp32", len(pairs[0]))
    loaded = load_base(cfg, torch.device(DEVICE))
    _, fmt = attach_method(load_base(cfg, torch.device(DEVICE)), cfg)  # the token format only
    loaded.model.to(dtype)
    loaded.model.requires_grad_(False)
    if kind == "prefix":
        peft_cfg = PrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=args.prefix_len,
            prefix_projection=True,
            encoder_hidden_size=512,
        )
    else:
        peft_cfg = LoraConfig(
            task_type="CAUSAL_LM", r=args.rank, lora_alpha=args.rank, target_modules=["q_proj", "v_proj"]
        )
    torch.manual_seed(0)
    wrapped = get_peft_model(loaded.model, peft_cfg)
    wrapped.train()
    loaded.model.eval()  # the frozen base without dropout, as ours
    params = [p for p in wrapped.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-5)
    batches = [to_device(fmt.training_batch(examples), torch.device(DEVICE)) for examples in pairs]

    def step(batch):
        sums, counts = sequence_losses(wrapped(**batch["inputs"]).logits, batch["labels"])
        loss = sums.sum() / counts.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    losses, seconds, peak = timed(step, batches)
    base = loaded.model.get_input_embeddings().weight.dtype
    return losses, seconds, peak, sum(p.numel() for p in params), {p.dtype for p in params}, base


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="updates per row, the first a warm-up")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--prefix-len", type=int, default=10)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--skip-full", action="store_true")
    args = parser.parse_args()
    everything = e2e_pairs(args.batch * args.steps)
    pairs = [everything[i * args.batch : (i + 1) * args.batch] for i in range(args.steps)]
    prefix = {"kind": "prefix", "prefix_len": args.prefix_len, "mlp_hidden": 512}
    lora = {"kind": "lora", "rank": args.rank, "alpha": args.rank, "targets": ["q", "v"]}
    rows = [
        ("prefix", "peftrun", lambda: ours(args.model, prefix, "fp32", pairs), "fp32"),
        ("prefix", "peftrun", lambda: ours(args.model, prefix, "bf16-frozen", pairs), "bf16-frozen"),
        ("prefix", "HF peft", lambda: peft_run(args.model, "prefix", torch.float32, pairs, args), "fp32"),
        (
            "prefix",
            "HF peft",
            lambda: peft_run(args.model, "prefix", torch.bfloat16, pairs, args),
            "bf16 base",
        ),
        (f"lora r{args.rank} q,v", "peftrun", lambda: ours(args.model, lora, "fp32", pairs), "fp32"),
        (
            f"lora r{args.rank} q,v",
            "peftrun",
            lambda: ours(args.model, lora, "bf16-frozen", pairs),
            "bf16-frozen",
        ),
        (
            f"lora r{args.rank} q,v",
            "HF peft",
            lambda: peft_run(args.model, "lora", torch.float32, pairs, args),
            "fp32",
        ),
        (
            f"lora r{args.rank} q,v",
            "HF peft",
            lambda: peft_run(args.model, "lora", torch.bfloat16, pairs, args),
            "bf16 base",
        ),
    ]
    if not args.skip_full:
        rows += [
            ("full", "peftrun", lambda: ours(args.model, {"kind": "full"}, "fp32", pairs), "fp32"),
            ("full", "peftrun", lambda: ours(args.model, {"kind": "full"}, "bf16", pairs), "bf16 autocast"),
        ]
    probe = build(args.model, lora, "fp32", args.batch)
    loaded = load_base(probe, torch.device(DEVICE))
    _, fmt = attach_method(loaded, probe)
    tokens = [int(fmt.training_batch(p)["inputs"]["attention_mask"].sum(dim=1).float().mean()) for p in pairs]
    del loaded
    print(f"# bench_precision · {machine(DEVICE)}")
    print(
        f"# {args.model}, batch {args.batch} E2E rows "
        f"(mean {statistics.mean(tokens):.0f} real tokens a row), "
        f"{args.steps} updates per row (the first a warm-up), prefix {args.prefix_len} (MLP 512), "
        f"LoRA r{args.rank} alpha {args.rank} on q,v"
    )
    print()
    row(
        "method",
        "who",
        "precision",
        "threads",
        "s / update",
        "trained params",
        "trained dtype",
        "base weights",
        "loss 1",
        "peak MB",
    )
    print("|---|---|---|---:|---:|---:|---|---|---:|---:|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for method, who, run, precision in rows:
            try:
                got = run()
            except Exception as err:  # a side that cannot run this setting says why, the table goes on
                row(
                    method,
                    who,
                    precision,
                    threads,
                    "–",
                    "–",
                    "–",
                    "–",
                    "–",
                    f"failed: {type(err).__name__}: {err}"[:120],
                )
                continue
            losses, seconds, peak, count, trained, base = got
            dtype = "/".join(sorted(NAMES.get(d, str(d)) for d in trained))
            row(
                method,
                who,
                precision,
                threads,
                f"{statistics.mean(seconds):.2f}",
                f"{count:,}",
                dtype,
                NAMES.get(base, str(base)),
                f"{losses[0]:.3f}",
                f"{peak:,.0f}",
            )


if __name__ == "__main__":
    main()
