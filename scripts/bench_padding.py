"""Padding fraction of training batches: plain shuffled vs grouped by length vs packed (no training).

python scripts/bench_padding.py                     E2E train under the built-in tiny-gpt2 tokenizer
python scripts/bench_padding.py --model smollm2-135m   under SmolLM2's (converted once, offline)
python scripts/bench_padding.py --model smollm2-135m --row-tokens 256
python scripts/bench_padding.py --model tiny-llama --time 12   also time 12 batches, grouped vs packed

For each batch size (8 and 32): the share of the padded tensor (rows x longest row) that is
padding, over one epoch of the E2E train pairs (the layout peftrun trains on: prompt, separator,
target, EOS) in the order `peftrun.train` gives them: `random` is plain shuffled batches
(`data.group_by_length: false`), `grouped` the length-grouped ones (`true`: mega-batches of 50
batches sorted inside). `packed` concatenates each random batch's examples into rows of at most
--row-tokens (first fit, longest first): what padding-free packing would leave.

--time N: forward and backward (the frozen base, gradients through every layer, as a prefix, LoRA
or prompt needs them) over N grouped batches, right-padded with a padding mask, against the same
examples packed one row per batch (positions restarting per example, a block-diagonal causal 4D
boolean mask): real tokens per second of each, twice in turn. Padding-free packing was measured this
way and not built (docs/methods.md#length-grouped-batches): over grouped batches it saves ~1% of
the tokens and its long rows cost more attention than that.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from peftrun import models
from peftrun.batch_order import epoch_batches, example_lengths, grouped_batches
from peftrun.config import DataConfig
from peftrun.data import load_pairs
from peftrun.data.formats import DecoderOnlyFormat


def padding(batches: list[list[int]], lengths: list[int]) -> float:
    """Padding share of right-padded batches: 1 − real tokens / (rows × longest)."""
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - real / padded


def packed_padding(batches: list[list[int]], lengths: list[int], row_tokens: int) -> float:
    """Padding share when each batch's examples are packed into rows of at most `row_tokens`
    (first fit, longest first; an example longer than that is a row of its own)."""
    real = padded = 0
    for batch in batches:
        rows: list[int] = []
        for length in sorted((lengths[i] for i in batch), reverse=True):
            fit = next((k for k, used in enumerate(rows) if used + length <= row_tokens), None)
            if fit is None:
                rows.append(length)
            else:
                rows[fit] += length
        real += sum(rows)
        padded += len(rows) * max(rows)
    return 1 - real / padded


def time_packing(name: str, fmt, pairs, lengths: list[int], size: int, count: int) -> None:
    """Real tokens/s of `count` grouped batches, padded vs packed (see the module docstring)."""
    loaded = models.load(name) if name not in models.BUILTIN else models.load(name, seed=0)
    model = loaded.model.float().train().requires_grad_(False)
    embed = model.get_input_embeddings()
    batches = grouped_batches(lengths, size, 101, 0)[:count]

    def padded(batch):
        inputs = fmt.training_batch([pairs[i] for i in batch])["inputs"]
        return inputs["input_ids"], inputs["attention_mask"], None

    def packed(batch):
        rows = [fmt.training_batch([pairs[i]])["inputs"]["input_ids"][0] for i in batch]
        ids = torch.cat(rows)[None]
        positions = torch.cat([torch.arange(len(row)) for row in rows])[None]
        example = torch.cat([torch.full((len(row),), k) for k, row in enumerate(rows)])
        causal = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).tril()
        return ids, ((example[:, None] == example[None, :]) & causal)[None, None], positions

    def step(ids, mask, positions):
        embeddings = embed(ids).detach().requires_grad_(True)
        extra = {} if positions is None else {"position_ids": positions}
        logits = model(inputs_embeds=embeddings, attention_mask=mask, **extra).logits
        logits.float().logsumexp(-1).sum().backward()

    real = sum(lengths[i] for batch in batches for i in batch)
    for label, make in (("grouped", padded), ("packed", packed)) * 2:
        inputs = [make(batch) for batch in batches]
        step(*inputs[0])  # warm-up
        started = time.perf_counter()
        for item in inputs:
            step(*item)
        seconds = time.perf_counter() - started
        cells = sum(item[0].numel() for item in inputs)
        print(
            f"{name} batch {size} {label:>8}: {real / seconds:8.0f} real tokens/s, "
            f"padding {1 - real / cells:.1%} ({seconds:.2f} s, {torch.get_num_threads()} threads)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-gpt2", help="tokenizer: tiny-gpt2 (offline) or smollm2-135m")
    parser.add_argument("--batch-sizes", default="8,32")
    parser.add_argument("--row-tokens", type=int, default=512, help="packed: tokens per row")
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--time", type=int, default=0, metavar="N", help="time N batches: grouped vs packed")
    args = parser.parse_args()
    tokenizer = models.load_tokenizer(args.model)
    positions = models.arch_summary(models.hf_config(args.model)).max_positions
    fmt = DecoderOnlyFormat(tokenizer, positions, None, None)
    pairs = load_pairs(DataConfig(dataset="e2e"), "train")
    lengths = example_lengths(fmt.training_batch, pairs)
    print(
        f"E2E train, {len(pairs)} pairs under {args.model}'s tokenizer: {min(lengths)}-{max(lengths)} "
        f"tokens, mean {statistics.mean(lengths):.1f}"
    )
    header = f"{'batch':>5}  {'random':>7}  {'grouped':>7}  {'packed':>7}"
    print(f"{header}  (padding share; packed rows <= {args.row_tokens} tokens)")
    for size in (int(s) for s in args.batch_sizes.split(",")):
        plain = epoch_batches(len(pairs), size, args.seed, 0)
        grouped = grouped_batches(lengths, size, args.seed, 0)
        print(
            f"{size:>5}  {padding(plain, lengths):>7.1%}  {padding(grouped, lengths):>7.1%}  "
            f"{packed_padding(plain, lengths, args.row_tokens):>7.1%}"
        )
    if args.time:
        for size in (int(s) for s in args.batch_sizes.split(",")):
            time_packing(args.model, fmt, pairs, lengths, size, args.time)


if __name__ == "__main__":
    main()
