"""Training speed on a real base, as users run it: `peftrun train` (random or length-grouped
batches, eager or `train.compile`) against HF peft (random padded batches, eager), the same 800
E2E pairs, 100 updates of 8, prefix and LoRA, on SmolLM2-135M (frozen bf16 base); and the
machine's ceiling (scripts/bench_ceiling.py) in the same run.

    python scripts/bench_vs_peft.py [--methods prefix lora] [--pairs 800] [--batch 8]
                                    [--no-compile] [--no-ceiling] [--work DIR]

peftrun's arms are real `peftrun train` runs (a config each, in a fresh process); their train
seconds and dev loss are the run's own (meta.json: `train_seconds`, `best_dev_loss`, one dev-loss
evaluation at the last update), their steady s/update the log's between update 10 and the last.
HF peft's arm runs here: the base loaded by transformers in bf16, `get_peft_model` with
PrefixTuningConfig (10 virtual tokens, MLP 512) or LoraConfig (r 4, alpha 32, q and v), AdamW,
transformers' linear schedule with the same warmup, clipping at 1.0, and the same batches as
peftrun's random arm (the same token layout: peftrun's format; the same order: its seed), so the
two random arms see identical batches. Its dev loss is the token-mean loss over the same 64 dev
pairs. Real tokens exclude padding; "padding" is the share of pad positions in the batches.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ceiling import ceiling_rows  # noqa: E402
from bench_common import machine  # noqa: E402

from peftrun import config  # noqa: E402
from peftrun.batch_order import epoch_batches, example_lengths, grouped_batches  # noqa: E402

METHODS = {
    "prefix": ("{kind: prefix, prefix_len: 10, mlp_hidden: 512}", 5e-3),
    "lora": ("{kind: lora, rank: 4, alpha: 32, targets: [q, v]}", 1e-3),
}
SEED, WARMUP = 101, 10
CONFIG = """model: {{name: smollm2-135m}}
data: {{dataset: e2e, reference_style: raw, train_size: {pairs}, subset_seed: 0, dev_loss_size: 64,
       group_by_length: {grouped}}}
method: {method}
train: {{lr: {lr}, epochs: 1, max_steps: {steps}, batch_size: {batch}, warmup_steps: {warmup}, seed: {seed},
        loss_reduction: token_mean, precision: bf16-frozen, eval_every: {steps}, log_every: 10,
        compile: {compiled}}}
decode: {{splits: []}}
"""


def resolved(method: str, args, grouped: bool = False, compiled: bool = False) -> tuple[str, config.Config]:
    spec, lr = METHODS[method]
    text = CONFIG.format(
        pairs=args.pairs, grouped=str(grouped).lower(), method=spec, lr=lr, steps=args.pairs // args.batch,
        batch=args.batch, warmup=WARMUP, seed=SEED, compiled=str(compiled).lower(),
    )  # fmt: skip
    import yaml

    return text, config.build(yaml.safe_load(text))


def peftrun_arm(method: str, args, grouped: bool, compiled: bool, work: Path) -> dict:
    """One `peftrun train` in a fresh process; its own timings and dev loss."""
    text, _ = resolved(method, args, grouped, compiled)
    name = f"{method}-{'grouped' if grouped else 'random'}-{'compiled' if compiled else 'eager'}"
    (work / f"{name}.yaml").write_text(text)
    run = work / name
    command = [sys.executable, "-m", "peftrun", "train", str(work / f"{name}.yaml"), "--run-dir", str(run)]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    meta = json.loads((run / "meta.json").read_text())
    logged = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    rates = {entry["step"]: entry["tokens_per_s"] for entry in logged if "tokens_per_s" in entry}
    return {"train_s": meta["train_seconds"], "dev_loss": meta["best_dev_loss"], "wall_s": wall,
            "tokens": meta["train_tokens"], "rates": rates}  # fmt: skip


def batches_of(method: str, args, grouped: bool):
    """(the token format, the epoch's micro-batches of examples, the dev-loss pairs) as peftrun
    lays them out (the format from a base of its own: attaching a method changes the base)."""
    from peftrun.assembly import attach_method, load_base
    from peftrun.data import load_pairs

    _, cfg = resolved(method, args, grouped)
    loaded = load_base(cfg, torch.device("cpu"))
    _, fmt = attach_method(loaded, cfg)
    train = load_pairs(cfg.data, "train")
    if grouped:
        order = grouped_batches(example_lengths(fmt.training_batch, train), args.batch, SEED, 0)
    else:
        order = epoch_batches(len(train), args.batch, SEED, 0)
    return fmt, [[train[i] for i in batch] for batch in order], load_pairs(cfg.data, "dev")


def padding(fmt, batches) -> tuple[int, float]:
    """(real tokens, share of pad positions) of the batches."""
    real = total = 0
    for examples in batches:
        mask = fmt.training_batch(examples)["inputs"]["attention_mask"]
        real, total = real + int(mask.sum()), total + mask.numel()
    return real, 1 - real / total


def peft_arm(method: str, args) -> dict:
    """HF peft as its users run it: random padded batches, eager, a bf16 base."""
    import transformers
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model

    from peftrun.assembly import load_base
    from peftrun.train import sequence_losses

    fmt, batches, dev = batches_of(method, args, grouped=False)
    _, cfg = resolved(method, args)
    model = load_base(cfg, torch.device("cpu")).model.to(torch.bfloat16).requires_grad_(False)
    if method == "prefix":
        spec = PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=10, prefix_projection=True, encoder_hidden_size=512
        )
    else:
        spec = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"])
    torch.manual_seed(SEED)
    wrapped = get_peft_model(model, spec)
    wrapped.train()
    model.eval()  # SmolLM2 has no dropout; the frozen base as ours
    params = [p for p in wrapped.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=METHODS[method][1])
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, WARMUP, len(batches))

    def loss_of(examples):
        batch = fmt.training_batch(examples)
        sums, counts = sequence_losses(wrapped(**batch["inputs"]).logits, batch["labels"])
        return sums.sum(), counts.sum()

    seconds = []
    for examples in batches:
        started = time.perf_counter()
        total, count = loss_of(examples)
        (total / count).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - started)
    wrapped.eval()
    with torch.no_grad():
        sums = [loss_of(dev[i : i + 16]) for i in range(0, len(dev), 16)]
    dev_loss = float(sum(s for s, _ in sums) / sum(c for _, c in sums))
    real, _ = padding(fmt, batches)
    return {"train_s": sum(seconds), "dev_loss": dev_loss, "steady": sum(seconds[10:]) / len(seconds[10:]),
            "tokens": real}  # fmt: skip


def steady_from_log(arm: dict, tokens_at: dict[int, int]) -> float:
    """s/update between update 10 and the last, from the log's cumulative tokens/s."""
    last = max(arm["rates"])
    at = {step: tokens_at[step] / rate for step, rate in arm["rates"].items()}
    return (at[last] - at[10]) / (last - 10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--pairs", type=int, default=800)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-ceiling", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here (default: a temp folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-vs-peft-"))
    work.mkdir(parents=True, exist_ok=True)
    updates = args.pairs // args.batch
    print(f"# bench_vs_peft · {machine('cpu')}")
    print(f"# SmolLM2-135M, frozen bf16 base, {args.pairs} E2E pairs, {updates} updates of {args.batch}, "
          f"{torch.get_num_threads()} threads; run folders in {work}")  # fmt: skip
    if not args.no_ceiling:
        print(
            "\nceiling (scripts/bench_ceiling.py: plain transformers, batch 8 × 70, no padding, no prefix)\n"
        )
        print("| mode | s / step | real tok/s | 2 warm-up steps, s |\n|---|---|---:|---:|")
        for r in ceiling_rows(8, 70, 8, not args.no_compile):
            print(
                f"| {r['mode']} | {r['s/step']:.3f} | {r['tok/s']:.0f} | {r['warm-up s']:.1f} |", flush=True
            )
    print(
        "\n| method | who | batches | compiled | padding | train s | s/update (10→last) | real tok/s "
        "| warm-up s | wall s | dev loss | vs HF peft |\n"
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for method in args.methods:
        base = peft_arm(method, args)
        rate = base["tokens"] / base["train_s"]
        print(
            f"| {method} | HF peft | random | no | – | {base['train_s']:.0f} | {base['steady']:.2f} | "
            f"{rate:.0f} | – | – | {base['dev_loss']:.3f} | 1.00× |",
            flush=True,
        )
        arms = [(False, False), (True, False)] + ([] if args.no_compile else [(True, True)])
        for grouped, compiled in arms:
            fmt, batches, _ = batches_of(method, args, grouped)
            real, share = padding(fmt, batches)
            cumulative, tokens_at = 0, {}
            for step, examples in enumerate(batches, 1):
                cumulative += int(fmt.training_batch(examples)["inputs"]["attention_mask"].sum())
                tokens_at[step] = cumulative
            arm = peftrun_arm(method, args, grouped, compiled, work)
            steady = steady_from_log(arm, tokens_at)
            warm_up = arm["train_s"] - steady * updates
            batches_kind, compiled_kind = ("grouped" if grouped else "random"), ("yes" if compiled else "no")
            print(
                f"| {method} | peftrun | {batches_kind} | {compiled_kind} | "
                f"{share:.1%} | {arm['train_s']:.0f} | {steady:.2f} | {arm['tokens'] / arm['train_s']:.0f} | "
                f"{warm_up:.0f} | {arm['wall_s']:.0f} | {arm['dev_loss']:.3f} | "
                f"{base['train_s'] / arm['train_s']:.2f}× |",
                flush=True,
            )


if __name__ == "__main__":
    main()
