"""The training ceiling on this machine: plain transformers, SmolLM2-135M frozen in bf16, one
forward and backward of a full batch (no padding, no prefix) down to the input embeddings, eager
and compiled. No peftrun code touches the step: what a PEFT method's update cannot beat.

    python scripts/bench_ceiling.py [--batch 8] [--length 70] [--steps 8] [--no-compile]

The batch is real E2E text (SmolLM2's tokenizer over training pairs, cut into rows of --length
tokens). Each mode times --steps steps after 2 untimed ones (the compiled mode compiles on the
first). scripts/bench_vs_peft.py prints these rows beside peftrun's and HF peft's.
"""

from __future__ import annotations

import argparse
import time

import torch


def ceiling_rows(batch: int, length: int, steps: int, compile: bool = True) -> list[dict]:
    """[{"mode", "s/step", "tok/s", "warm-up s"}] for eager (and compiled) steps."""
    import transformers

    from peftrun.data.e2e import load_pairs
    from peftrun.smollm2 import smollm2_folder

    folder = smollm2_folder()
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    model.requires_grad_(False).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    stream = []
    for pair in load_pairs("train")[: 4 * batch * length // 20]:
        stream += tokenizer(f"{pair.source} {pair.target}\n")["input_ids"]
    ids = torch.tensor(stream[: batch * length]).view(batch, length)
    embed = model.get_input_embeddings()

    def step(forward) -> None:
        inputs = embed(ids).detach().requires_grad_(True)
        logits = forward(inputs)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()

    def eager(inputs):
        return model(inputs_embeds=inputs).logits

    modes = [("eager", eager)] + ([("compiled", torch.compile(eager))] if compile else [])
    rows = []
    for name, forward in modes:
        started = time.perf_counter()
        for _ in range(2):
            step(forward)
        warm_up = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(steps):
            step(forward)
        seconds = (time.perf_counter() - started) / steps
        rows.append(
            {"mode": name, "s/step": seconds, "tok/s": batch * length / seconds, "warm-up s": warm_up}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=70)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    print(
        f"# ceiling · SmolLM2-135M bf16 frozen · batch {args.batch} × {args.length} · "
        f"{torch.get_num_threads()} threads"
    )
    print("| mode | s / step | tok/s | 2 warm-up steps, s |\n|---|---:|---:|---:|")
    for r in ceiling_rows(args.batch, args.length, args.steps, not args.no_compile):
        print(f"| {r['mode']} | {r['s/step']:.3f} | {r['tok/s']:.0f} | {r['warm-up s']:.1f} |")


if __name__ == "__main__":
    main()
